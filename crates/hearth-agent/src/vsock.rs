//! vsock sockets: the agent's listener and its connections.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    accept4, bind, connect, listen, recv, send, setsockopt, socket, sockopt, AddressFamily,
    Backlog, MsgFlags, SockFlag, SockType, VsockAddr,
};
use nix::sys::time::TimeVal;

use crate::sys;

/// The host's context id.
pub const HOST_CID: u32 = libc::VMADDR_CID_HOST;

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("failed to create a vsock socket")]
    Socket(#[source] nix::Error),
    #[error("failed to listen on vsock port {port}")]
    Listen {
        port: u32,
        #[source]
        source: nix::Error,
    },
    #[error("failed to connect to vsock {cid}:{port}")]
    Connect {
        cid: u32,
        port: u32,
        #[source]
        source: nix::Error,
    },
}

#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// Listens on `port` for connections from any context (the host).
    pub fn bind(port: u32) -> Result<Self, VsockError> {
        let fd = stream_socket()?;
        let addr = VsockAddr::new(libc::VMADDR_CID_ANY, port);
        let listen_error = |source| VsockError::Listen { port, source };
        bind(fd.as_raw_fd(), &addr).map_err(listen_error)?;
        listen(&fd, Backlog::MAXCONN).map_err(listen_error)?;
        Ok(VsockListener { fd })
    }

    pub fn accept(&self) -> io::Result<VsockStream> {
        let fd = accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
        Ok(VsockStream {
            fd: sys::adopt_accepted(fd),
        })
    }
}

/// A connected vsock stream.
#[derive(Debug)]
pub struct VsockStream {
    fd: OwnedFd,
}

impl VsockStream {
    pub fn connect(cid: u32, port: u32) -> Result<Self, VsockError> {
        let fd = stream_socket()?;
        connect(fd.as_raw_fd(), &VsockAddr::new(cid, port))
            .map_err(|source| VsockError::Connect { cid, port, source })?;
        Ok(VsockStream { fd })
    }

    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        let timeout = TimeVal::new(
            i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            i64::from(timeout.subsec_micros()),
        );
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &timeout)?;
        Ok(())
    }
}

fn stream_socket() -> Result<OwnedFd, VsockError> {
    socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(VsockError::Socket)
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(recv(self.fd.as_raw_fd(), buf, MsgFlags::empty())?)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // MSG_NOSIGNAL: a vanished host is an error to handle, not a signal.
        Ok(send(self.fd.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for VsockStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<OwnedFd> for VsockStream {
    fn from(fd: OwnedFd) -> Self {
        VsockStream { fd }
    }
}
