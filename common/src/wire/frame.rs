//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes
//! of bincode (serde). The length is checked against the cap before a
//! buffer is allocated, and decoding is bounded too, so a hostile peer can
//! neither make this side allocate more than the cap nor panic it.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame cap any configuration may set; also bincode's decode limit.
pub const ABSOLUTE_MAX_FRAME: usize = 16 * 1024 * 1024;

fn config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<ABSOLUTE_MAX_FRAME>,
> {
    bincode::config::standard().with_limit::<ABSOLUTE_MAX_FRAME>()
}

/// What can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    TooLarge { len: usize, max: usize },
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("frame has {0} trailing bytes after the message")]
    Trailing(usize),
    #[error("could not encode message: {0}")]
    Encode(String),
    #[error("stream ended in the middle of a frame")]
    Truncated,
    #[error("stream I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes a message into a frame payload (no length prefix).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    bincode::serde::encode_to_vec(message, config())
        .map_err(|err| FrameError::Encode(err.to_string()))
}

/// Decodes one frame payload; the whole payload must be the message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (message, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|err| FrameError::Decode(err.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Trailing(payload.len() - used));
    }
    Ok(message)
}

/// Writes one message as a frame.
pub async fn write<W, T>(writer: &mut W, message: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let payload = encode(message)?;
    write_payload(writer, &payload, max).await
}

/// Writes an already encoded payload as a frame (to encode once and send
/// to many).
pub async fn write_payload<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    if payload.len() > max.min(ABSOLUTE_MAX_FRAME) {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len(),
        max,
    })?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(payload).await?;
    Ok(())
}

/// Reads one frame and decodes it. `Ok(None)` at a clean end of stream
/// (between frames).
pub async fn read<R, T>(reader: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    let max = max.min(ABSOLUTE_MAX_FRAME);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(err)
        }
    })?;
    decode(&payload).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages::{AgentMessage, ControllerMessage, DesiredPart, Placement};

    #[tokio::test]
    async fn frames_round_trip() {
        let message = ControllerMessage::DesiredPart(Box::new(DesiredPart {
            generation: 7,
            index: 0,
            placement: Placement {
                stack_id: "mo-1-tk".into(),
                flag: "Web01".into(),
                version_id: "v".into(),
                spec_json: "{\"image\":\"nginx\"}".into(),
                auth_token: "secret".into(),
                pool: "team-b".into(),
                policy: crate::policy::Policy {
                    host_paths: vec!["/srv/data".into()],
                    ..Default::default()
                },
                scoped_volumes: true,
                held: false,
            },
        }));
        let mut buffer = Vec::new();
        write(&mut buffer, &message, 1024).await.expect("write");
        let mut reader = buffer.as_slice();
        let back: ControllerMessage = read(&mut reader, 1024).await.expect("read").expect("frame");
        assert_eq!(back, message);
        let end: Option<ControllerMessage> = read(&mut reader, 1024).await.expect("clean end");
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_allocating() {
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let err = read::<_, AgentMessage>(&mut bytes.as_slice(), 1024)
            .await
            .expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { len, .. } if len == u32::MAX as usize));
        let big = AgentMessage::Ack { generation: 1 };
        let mut sink = Vec::new();
        let err = write(&mut sink, &big, 1)
            .await
            .expect_err("cap applies on send");
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors_not_panics() {
        let garbage: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
        for start in 0..64 {
            let mut frame = 32u32.to_be_bytes().to_vec();
            frame.extend_from_slice(&garbage[start..start + 32]);
            let _ = read::<_, AgentMessage>(&mut frame.as_slice(), 1024).await;
            let _ = read::<_, ControllerMessage>(&mut frame.as_slice(), 1024).await;
        }
        // A length claiming far more elements than the frame holds.
        let mut claim = vec![0xFFu8; 9];
        claim.insert(0, 2); // variant index of a vector-bearing message
        let mut frame = (claim.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&claim);
        assert!(read::<_, AgentMessage>(&mut frame.as_slice(), 1024)
            .await
            .is_err());
        let truncated = [0u8, 0, 0, 10, 1, 2];
        let err = read::<_, AgentMessage>(&mut truncated.as_slice(), 1024)
            .await
            .expect_err("truncated");
        assert!(matches!(err, FrameError::Truncated));
        let half_prefix = [0u8, 0];
        let err = read::<_, AgentMessage>(&mut half_prefix.as_slice(), 1024)
            .await
            .expect_err("truncated");
        assert!(matches!(err, FrameError::Truncated));
    }
}
