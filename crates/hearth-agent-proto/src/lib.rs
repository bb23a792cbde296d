//! hearth-agent-proto: the wire protocol between the host and the guest agent.
//!
//! One byte stream per VM (a virtio-serial port under QEMU) carries a [`session`] of multiplexed
//! channels with per-channel flow control. Each channel carries one operation as
//! length-prefixed frames (`u32` little-endian length, then a postcard body): the host sends
//! [`HostMessage`]s, the guest answers with [`GuestMessage`]s, and every operation opens with a
//! versioned hello, so a host and an agent built from different releases fail with a clear error
//! instead of misreading frames.
//!
//! - [`frame`]: encoding/decoding of frames, bounded by [`MAX_FRAME_LEN`].
//! - [`message`]: the message types and the exec/exit data they carry.
//! - [`session`]: the multiplexed stream: channels, credit, half-close, reset, session hello.
//! - [`volume`]: host directories mounted in the guest, the guest's FUSE calls and the host's
//!   replies.

pub mod frame;
pub mod message;
pub mod session;
pub mod volume;

pub use frame::{decode_frame, encode_frame, read_frame, write_frame, FrameError, MAX_FRAME_LEN};
#[cfg(feature = "tokio")]
pub use frame::{read_frame_async, write_frame_async};
pub use message::{
    ErrorCode, ExecRequest, ExitStatus, FileKind, FileStat, FsRequest, GuestMessage, HostMessage,
    Identity, RemoteError, TermSize,
};

/// Version of this protocol; bumped on any incompatible change to the messages.
pub const PROTOCOL_VERSION: u32 = 5;

/// Name of the virtio-serial port that carries the agent's session stream (QEMU).
pub const AGENT_PORT_NAME: &str = "org.hearth.agent";

/// The vsock port the agent listens on for its session stream where the VMM has no
/// virtio-serial (Firecracker); the kernel command line says which (`hearth.channel=vsock`).
pub const AGENT_VSOCK_PORT: u32 = 1024;

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
