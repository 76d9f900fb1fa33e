//! The preamble every stream starts with: 4 magic bytes and a big-endian
//! protocol version. Fixed-size and encoding-independent, so a peer of any
//! version can read it and refuse cleanly.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Magic bytes: "FLOT".
pub const MAGIC: [u8; 4] = *b"FLOT";

/// Why a preamble was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("not a Flotilla peer (bad magic bytes)")]
    BadMagic,
    #[error("peer speaks protocol version {theirs}; this side speaks {ours}")]
    UnsupportedVersion { theirs: u32, ours: u32 },
    #[error("stream ended during the handshake")]
    Truncated,
    #[error("handshake I/O failed: {0}")]
    Io(String),
}

/// Writes this side's preamble.
pub async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: u32,
) -> Result<(), HandshakeError> {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&MAGIC);
    bytes[4..].copy_from_slice(&version.to_be_bytes());
    writer
        .write_all(&bytes)
        .await
        .map_err(|err| HandshakeError::Io(err.to_string()))
}

/// Reads the peer's preamble and checks it against `version`.
pub async fn receive<R: AsyncRead + Unpin>(
    reader: &mut R,
    version: u32,
) -> Result<u32, HandshakeError> {
    let mut bytes = [0u8; 8];
    reader.read_exact(&mut bytes).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            HandshakeError::Truncated
        } else {
            HandshakeError::Io(err.to_string())
        }
    })?;
    if bytes[..4] != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    let theirs = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if theirs != version {
        return Err(HandshakeError::UnsupportedVersion {
            theirs,
            ours: version,
        });
    }
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn matching_versions_pass_and_others_are_named() {
        let mut buffer = Vec::new();
        send(&mut buffer, 1).await.expect("send");
        assert_eq!(receive(&mut buffer.as_slice(), 1).await, Ok(1));
        assert_eq!(
            receive(&mut buffer.as_slice(), 2).await,
            Err(HandshakeError::UnsupportedVersion { theirs: 1, ours: 2 })
        );
        assert_eq!(
            receive(&mut &b"GET / HTTP/1.1"[..], 1).await,
            Err(HandshakeError::BadMagic)
        );
        assert_eq!(
            receive(&mut &b"FLO"[..], 1).await,
            Err(HandshakeError::Truncated)
        );
    }
}
