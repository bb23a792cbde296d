//! The virtio-serial port that carries the agent's session stream, found by its name in sysfs
//! (the guest has no udev, so there is no `/dev/virtio-ports/<name>` link).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

const PORTS_DIR: &str = "/sys/class/virtio-ports";

/// The port's device appears a moment after `virtio_console` loaded.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);
const APPEAR_POLL: Duration = Duration::from_millis(10);

/// While no host is connected the port polls as hung up at once, so the agent looks again at
/// this pace (a reconnecting host waits at most this long for its Ready).
const HOST_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error(
        "no virtio-serial port named `{name}` appeared in {PORTS_DIR} within {APPEAR_TIMEOUT:?}"
    )]
    Missing { name: String },
    #[error("failed to open the virtio-serial port `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to wait for the host on the virtio-serial port")]
    Poll(#[source] Errno),
}

/// An open virtio-serial port, non-blocking.
#[derive(Debug)]
pub struct Port {
    file: File,
    path: PathBuf,
}

impl Port {
    /// Opens the port named `name`, waiting for its device to appear.
    pub fn open(name: &str) -> Result<Port, PortError> {
        let deadline = Instant::now() + APPEAR_TIMEOUT;
        let path = loop {
            if let Some(path) = find(Path::new(PORTS_DIR), name) {
                if path.exists() {
                    break path;
                }
            }
            if Instant::now() > deadline {
                return Err(PortError::Missing {
                    name: name.to_owned(),
                });
            }
            std::thread::sleep(APPEAR_POLL);
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| PortError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(Port { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns once a host is connected, discarding whatever an earlier host left unread.
    pub fn wait_for_host(&self) -> Result<(), PortError> {
        loop {
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(PortError::Poll(e)),
            }
            let hung_up = fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP));
            if !hung_up {
                return Ok(());
            }
            self.discard_input();
            std::thread::sleep(HOST_POLL);
        }
    }

    fn discard_input(&self) {
        let mut buf = [0u8; 4096];
        while let Ok(1..) = nix::unistd::read(self.file.as_raw_fd(), &mut buf) {}
    }
}

impl AsFd for Port {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `/dev/<port>` of the port whose sysfs `name` is `name`.
fn find(ports_dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(ports_dir)
        .ok()?
        .flatten()
        .find(|entry| {
            std::fs::read_to_string(entry.path().join("name")).is_ok_and(|n| n.trim() == name)
        })
        .map(|entry| Path::new("/dev").join(entry.file_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_find_port_by_sysfs_name() {
        let dir = tempfile::tempdir().unwrap();
        for (port, name) in [("vport0p1", "other\n"), ("vport0p2", "org.hearth.agent\n")] {
            std::fs::create_dir(dir.path().join(port)).unwrap();
            std::fs::write(dir.path().join(port).join("name"), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("vport0p3")).unwrap();
        assert_eq!(
            find(dir.path(), "org.hearth.agent"),
            Some(PathBuf::from("/dev/vport0p2"))
        );
        assert_eq!(find(dir.path(), "missing"), None);
    }
}
