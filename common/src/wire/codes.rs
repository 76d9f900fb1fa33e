//! QUIC application error codes used when closing a connection, so both
//! sides can log why without parsing free text.

use quinn::VarInt;

/// Orderly close.
pub const CLOSED: VarInt = VarInt::from_u32(0);
/// The peer sent bytes that are not the protocol (bad magic, undecodable
/// frame, unexpected message).
pub const PROTOCOL_ERROR: VarInt = VarInt::from_u32(1);
/// The peer speaks a protocol version this side does not.
pub const UNSUPPORTED_VERSION: VarInt = VarInt::from_u32(2);
/// A frame was larger than the cap.
pub const FRAME_TOO_LARGE: VarInt = VarInt::from_u32(3);
/// The client certificate is not one the controller issued, or was revoked.
pub const UNAUTHORIZED: VarInt = VarInt::from_u32(4);
/// Enrollment refused (token unknown, expired, revoked or used up).
pub const ENROLL_REFUSED: VarInt = VarInt::from_u32(5);
/// A newer connection from the same agent replaced this one.
pub const SUPERSEDED: VarInt = VarInt::from_u32(6);
/// The controller is shutting down.
pub const SHUTTING_DOWN: VarInt = VarInt::from_u32(7);
/// The peer stayed silent too long.
pub const TIMED_OUT: VarInt = VarInt::from_u32(8);

/// The peer's hello or heartbeat broke a bound (too many labels, a key,
/// value or fact too long; see `wire::bounds`).
pub const LIMIT_EXCEEDED: VarInt = VarInt::from_u32(9);

/// A name for a close code, for log lines.
pub fn describe(code: VarInt) -> &'static str {
    match code.into_inner() {
        0 => "closed",
        1 => "protocol error",
        2 => "unsupported protocol version",
        3 => "frame too large",
        4 => "unauthorized",
        5 => "enrollment refused",
        6 => "superseded by a newer connection",
        7 => "controller shutting down",
        8 => "timed out",
        9 => "labels or facts past the bounds",
        _ => "unknown code",
    }
}
