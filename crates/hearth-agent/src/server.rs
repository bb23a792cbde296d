//! The agent's per-operation handler: one thread per channel of the session stream, each
//! carrying one operation.

use std::io::{self, BufReader};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use hearth_agent_proto::{
    check_version, read_frame, write_frame, ErrorCode, FrameError, GuestMessage, HostMessage,
    RemoteError, PROTOCOL_VERSION,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::Shutdown;

use crate::connection::{kind, Connection};
use crate::exec::{self, ExecError};
use crate::fs::{self, FsError};
use crate::identity;
use crate::volume::{self, VolumeError};

/// How long a shutdown waits for the host to close after hearing `ShuttingDown`, so the reply is
/// not lost in a virtqueue when the VM powers off.
const SHUTDOWN_LINGER_MS: u16 = 1000;

/// What the server does outside a single connection.
#[derive(Clone)]
pub struct Context {
    on_shutdown: Arc<dyn Fn() + Send + Sync>,
}

impl Context {
    /// `on_shutdown` runs after a `Shutdown` request was answered: as PID 1 it powers the guest
    /// off and does not return.
    pub fn new(on_shutdown: impl Fn() + Send + Sync + 'static) -> Self {
        Context {
            on_shutdown: Arc::new(on_shutdown),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("failed to duplicate the connection")]
    Duplicate(#[source] io::Error),
    #[error("failed to read a frame from the host")]
    Read(#[source] FrameError),
    #[error("failed to send a reply to the host")]
    Reply(#[source] FrameError),
    #[error("exec failed")]
    Exec(#[from] ExecError),
    #[error("filesystem operation failed")]
    Fs(#[from] FsError),
    #[error("volume mount failed")]
    Volume(#[from] VolumeError),
}

/// Serves one connection: the versioned hello, then one request.
pub fn handle_connection<C: Connection>(conn: C, context: &Context) -> Result<(), ConnectionError> {
    let mut writer = C::from(
        conn.as_fd()
            .try_clone_to_owned()
            .map_err(ConnectionError::Duplicate)?,
    );
    let mut reader = BufReader::new(conn);
    let Some(hello) = read_frame(&mut reader).map_err(ConnectionError::Read)? else {
        return Ok(());
    };
    let version = match hello {
        HostMessage::Hello { version } => version,
        other => {
            let message = format!("expected Hello first, got {}", kind(&other));
            return reply(&mut writer, &bad_request(message));
        }
    };
    if let Err(mismatch) = check_version(version) {
        return reply(&mut writer, &GuestMessage::Error(mismatch));
    }
    reply(&mut writer, &hello_message())?;

    let Some(request) = read_frame(&mut reader).map_err(ConnectionError::Read)? else {
        return Ok(());
    };
    match request {
        HostMessage::Ping => reply(&mut writer, &GuestMessage::Pong),
        HostMessage::Shutdown => {
            log!("shutdown requested by the host");
            reply(&mut writer, &GuestMessage::ShuttingDown)?;
            linger(&writer);
            (context.on_shutdown)();
            Ok(())
        }
        HostMessage::Exec(request) => Ok(exec::run(&mut reader, writer, &request)?),
        HostMessage::Fs(request) => Ok(fs::run(&mut reader, &mut writer, &request)?),
        HostMessage::Mount(request) => Ok(volume::run(&mut reader, writer, &request)?),
        HostMessage::Refresh(identity) => match identity::apply(&identity) {
            Ok(()) => reply(&mut writer, &GuestMessage::Done),
            Err(e) => {
                log!("identity refresh failed: {e}");
                let message = crate::log::one_line(&e);
                reply(
                    &mut writer,
                    &GuestMessage::Error(RemoteError::new(ErrorCode::Internal, message)),
                )
            }
        },
        other => {
            let message = format!(
                "expected Exec, Fs, Mount, Ping, Refresh or Shutdown, got {}",
                kind(&other)
            );
            reply(&mut writer, &bad_request(message))
        }
    }
}

/// The agent's hello, the answer to the hello that opens every operation.
pub fn hello_message() -> GuestMessage {
    GuestMessage::Hello {
        version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn bad_request(message: String) -> GuestMessage {
    GuestMessage::Error(RemoteError::new(ErrorCode::BadRequest, message))
}

fn reply<C: Connection>(writer: &mut C, message: &GuestMessage) -> Result<(), ConnectionError> {
    write_frame(writer, message).map_err(ConnectionError::Reply)
}

/// Half-closes and waits (bounded) for the host to close its side.
fn linger(conn: &impl AsFd) {
    let _ = nix::sys::socket::shutdown(conn.as_fd().as_raw_fd(), Shutdown::Write);
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(SHUTDOWN_LINGER_MS)) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => log!("shutdown: waiting for the host to close failed: {e}"),
    }
}
