//! The fleet link's wire protocol: what the controller and agents say to
//! each other over QUIC, and how it is framed.
//!
//! - [`frame`]: length-prefixed bincode frames with a size cap checked
//!   before anything is allocated. The only place bincode is named, so the
//!   encoding can change behind [`PROTOCOL_VERSION`].
//! - [`handshake`]: the fixed 8-byte preamble each stream starts with.
//! - [`messages`]: the message types.
//! - [`parts`]: a desired state as a header, one frame per placement and
//!   an end marker, and its bounded assembly on the agent.
//! - [`codes`]: QUIC application close codes, so a refusal says why.
//! - [`bounds`]: limits on the labels and facts an agent sends.
//! - [`endpoint`]: a QUIC endpoint on a socket with large buffers.

pub mod bounds;
pub mod codes;
pub mod endpoint;
pub mod frame;
pub mod handshake;
pub mod messages;
pub mod parts;

/// The protocol version this build speaks. Bump it whenever a message type
/// or the encoding changes incompatibly. 2: [`messages::Welcome`] carries
/// the agent's REST token; placements carry their pool, its policy and the
/// volume scope. 3: a desired state travels in parts (header, one frame
/// per placement, end) and the agent may refuse a generation. 4: a
/// placement says whether its stack is held stopped; statuses include
/// `stopped`.
pub const PROTOCOL_VERSION: u32 = 4;

/// ALPN of the control connection (mutual TLS).
pub const ALPN_CONTROL: &[u8] = b"flotilla/1";
/// ALPN of the enrollment connection (server-authenticated only).
pub const ALPN_ENROLL: &[u8] = b"flotilla-enroll/1";

/// The DNS name in the controller's certificate, and the name agents verify,
/// whatever address they dial: the CA is private, so the name only has to
/// be agreed on, not resolvable.
pub const CONTROLLER_NAME: &str = "flotilla-controller";

/// Default cap on one frame's payload.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;
