//! Pseudo-terminals for exec with a TTY.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use hearth_agent_proto::TermSize;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("failed to open a PTY master")]
    Master(#[source] Errno),
    #[error("failed to open the PTY slave {path}")]
    Slave {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set the PTY size to {rows}x{cols}")]
    Size {
        rows: u16,
        cols: u16,
        #[source]
        source: Errno,
    },
}

#[derive(Debug)]
pub struct Pty {
    pub master: PtyMaster,
    pub slave: File,
}

/// Opens a PTY of `size`. Both ends are close-on-exec from the start, so a process spawned
/// concurrently by another exec cannot inherit them (an inherited slave would keep this PTY
/// open after its own process exits).
pub fn open(size: TermSize) -> Result<Pty, PtyError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(PtyError::Master)?;
    grantpt(&master).map_err(PtyError::Master)?;
    unlockpt(&master).map_err(PtyError::Master)?;
    let path = ptsname_r(&master).map_err(PtyError::Master)?;
    // std opens with O_CLOEXEC; O_NOCTTY keeps the agent from acquiring a controlling terminal.
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|source| PtyError::Slave { path, source })?;
    resize(&master, size)?;
    Ok(Pty { master, slave })
}

pub fn resize(master: &PtyMaster, size: TermSize) -> Result<(), PtyError> {
    sys::set_window_size(master.as_fd(), size).map_err(|source| PtyError::Size {
        rows: size.rows,
        cols: size.cols,
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use nix::fcntl::{fcntl, FcntlArg, FdFlag};

    use super::*;

    fn is_cloexec(fd: &impl AsRawFd) -> bool {
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFD).unwrap();
        FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn test_open_pty_ends_are_close_on_exec() {
        let pty = open(TermSize { rows: 24, cols: 80 }).unwrap();
        assert!(is_cloexec(&pty.master));
        assert!(is_cloexec(&pty.slave));
    }
}
