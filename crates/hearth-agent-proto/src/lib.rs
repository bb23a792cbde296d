//! hearth-agent-proto: the wire protocol between the host and the guest agent.
//!
//! Every connection carries length-prefixed frames (`u32` little-endian length, then a postcard
//! body). The host sends [`HostMessage`]s, the guest answers with [`GuestMessage`]s. Each
//! operation uses its own vsock connection and opens with a versioned hello, so a host and an
//! agent built from different releases fail with a clear error instead of misreading frames.
//!
//! - [`frame`]: encoding/decoding of frames, bounded by [`MAX_FRAME_LEN`].
//! - [`message`]: the message types and the exec/exit data they carry.

pub mod frame;
pub mod message;

pub use frame::{decode_frame, encode_frame, read_frame, write_frame, FrameError, MAX_FRAME_LEN};
#[cfg(feature = "tokio")]
pub use frame::{read_frame_async, write_frame_async};
pub use message::{
    ErrorCode, ExecRequest, ExitStatus, FileKind, FileStat, FsRequest, GuestMessage, HostMessage,
    RemoteError, TermSize,
};

/// Version of this protocol; bumped on any incompatible change to the messages.
pub const PROTOCOL_VERSION: u32 = 3;

/// Guest vsock port on which the agent accepts operations from the host.
pub const AGENT_PORT: u32 = 1024;

/// Host vsock port the agent connects to once it is ready to serve (guest-initiated, so the host
/// learns of readiness without polling a guest that may still be booting).
pub const READY_PORT: u32 = 1025;

/// Largest data chunk the agent or host puts in one stdio frame.
pub const MAX_CHUNK_LEN: usize = 64 * 1024;

/// Checks the peer's hello version and explains a mismatch.
pub fn check_version(peer_version: u32) -> Result<(), RemoteError> {
    if peer_version == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(RemoteError::new(
        ErrorCode::VersionMismatch,
        format!(
            "protocol version mismatch: this side speaks v{PROTOCOL_VERSION}, the peer speaks \
             v{peer_version}; rebuild the initramfs with `hearth setup` so host and agent match"
        ),
    ))
}
