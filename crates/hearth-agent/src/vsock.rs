//! The session stream over vsock, for VMMs without virtio-serial (Firecracker). The agent
//! listens on one port; each host connection is one session stream, and a host that goes away
//! (end of file) is followed by the next connection, as on the serial port.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
};

/// `virtio_vsock` registers its transport a moment after its module loaded; until then
/// `socket(AF_VSOCK)` or `bind` fail.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);
const APPEAR_POLL: Duration = Duration::from_millis(10);

/// Any local CID: the VMM chose the guest's.
const VMADDR_CID_ANY: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("failed to listen on vsock port {port} within {APPEAR_TIMEOUT:?} (is the guest kernel's virtio vsock transport loaded?)")]
    Listen {
        port: u32,
        #[source]
        source: Errno,
    },
    #[error("failed to accept a host connection on vsock port {port}")]
    Accept {
        port: u32,
        #[source]
        source: Errno,
    },
}

/// A listening vsock socket.
#[derive(Debug)]
pub struct Listener {
    socket: OwnedFd,
    port: u32,
}

impl Listener {
    /// Listens on `port`, waiting for the vsock transport to come up.
    pub fn bind(port: u32) -> Result<Listener, VsockError> {
        let deadline = Instant::now() + APPEAR_TIMEOUT;
        loop {
            match Self::try_bind(port) {
                Ok(socket) => return Ok(Listener { socket, port }),
                Err(source) if Instant::now() > deadline => {
                    return Err(VsockError::Listen { port, source })
                }
                Err(_) => std::thread::sleep(APPEAR_POLL),
            }
        }
    }

    fn try_bind(port: u32) -> Result<OwnedFd, Errno> {
        let socket = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(socket.as_raw_fd(), &VsockAddr::new(VMADDR_CID_ANY, port))?;
        listen(&socket, Backlog::new(4).unwrap_or(Backlog::MAXCONN))?;
        Ok(socket)
    }

    pub fn port(&self) -> u32 {
        self.port
    }

    /// The next host connection, non-blocking as the session loop wants it.
    pub fn accept(&self) -> Result<Connection, VsockError> {
        loop {
            match crate::sys::accept_nonblocking(self.socket.as_fd()) {
                Ok(socket) => return Ok(Connection { socket }),
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(source) => {
                    return Err(VsockError::Accept {
                        port: self.port,
                        source,
                    })
                }
            }
        }
    }
}

/// One host connection: a session stream.
#[derive(Debug)]
pub struct Connection {
    socket: OwnedFd,
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}
