//! The page-fault handler behind Firecracker's `Uffd` memory backend: restoring a snapshot,
//! Firecracker maps guest memory empty, registers it with a userfaultfd and hands that
//! descriptor to this server over a Unix socket, with a JSON list of its regions. Every first
//! touch of a guest page then waits until the server copies the page in from the snapshot's
//! memory file.
//!
//! Each clone gets its own copy of each page it touches (that is what `UFFDIO_COPY` does); what
//! clones share is the one memory file in the page cache that all their servers read from,
//! and only the pages a clone touches are ever copied, so a restore costs no read of the whole
//! file.
//!
//! Firecracker runs untrusted guests, so everything it sends is checked: the handshake is
//! bounded, regions must lie inside the memory file, and a fault outside every region is
//! dropped (that thread of Firecracker stays blocked; nothing on the host is read for it).

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde::Deserialize;

use super::uffd_sys::{self, Event, MappedFile};

/// Largest handshake accepted: a few regions' JSON.
const MAX_HANDSHAKE: usize = 64 * 1024;
/// Most regions a guest memory has (Firecracker makes one or two on x86_64).
const MAX_REGIONS: usize = 64;
/// Pages whose copy the kernel asked to retry (a remove in flight) are tried again this soon.
const RETRY_INTERVAL: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    #[error("failed to open the snapshot memory file `{}`", path.display())]
    Memory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to listen for Firecracker's page faults on `{}`", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Firecracker's page-fault handshake is unusable: {0}")]
    Handshake(String),
    #[error("failed to serve Firecracker's page faults")]
    Serve(#[source] io::Error),
}

/// One region of guest memory as Firecracker describes it (its `GuestRegionUffdMapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Region {
    /// Where the region starts in Firecracker's address space.
    pub base_host_virt_addr: u64,
    pub size: u64,
    /// Where its contents start in the memory file.
    pub offset: u64,
    pub page_size: u64,
}

/// The regions, checked against a memory file of `file_len` bytes.
pub fn parse_regions(json: &[u8], file_len: u64) -> Result<Vec<Region>, UffdError> {
    let bad = |why: String| UffdError::Handshake(why);
    let regions: Vec<Region> =
        serde_json::from_slice(json).map_err(|e| bad(format!("not a region list: {e}")))?;
    if regions.is_empty() || regions.len() > MAX_REGIONS {
        return Err(bad(format!("{} regions", regions.len())));
    }
    for region in &regions {
        let page = region.page_size;
        if !page.is_power_of_two() || page < 4096 {
            return Err(bad(format!("page size {page}")));
        }
        let aligned = [region.base_host_virt_addr, region.size, region.offset]
            .iter()
            .all(|v| v % page == 0);
        let end = region.offset.checked_add(region.size);
        if !aligned || region.size == 0 || end.is_none_or(|end| end > file_len) {
            return Err(bad(format!(
                "region {region:?} is not page-aligned inside the {file_len}-byte memory file"
            )));
        }
        if region
            .base_host_virt_addr
            .checked_add(region.size)
            .is_none()
        {
            return Err(bad(format!("region {region:?} wraps the address space")));
        }
    }
    Ok(regions)
}

/// Where the page holding `address` comes from: the page's address and its bytes' offset and
/// length in the memory file; `None` outside every region.
pub fn locate(regions: &[Region], address: u64) -> Option<(u64, u64, u64)> {
    regions.iter().find_map(|r| {
        let inside = address.checked_sub(r.base_host_virt_addr)?;
        (inside < r.size).then(|| {
            let page = r.base_host_virt_addr + inside / r.page_size * r.page_size;
            (page, r.offset + (page - r.base_host_virt_addr), r.page_size)
        })
    })
}

/// The page server of one restoring Firecracker. Dropping it stops the server; Firecracker
/// keeps the pages it has, and a later fault of a VM still running would hang, so the VM is
/// dropped first.
#[derive(Debug)]
pub(crate) struct PageServer {
    thread: Option<JoinHandle<()>>,
    /// Closing this wakes the server's poll and ends it.
    stop: Option<OwnedFd>,
    path: PathBuf,
}

impl PageServer {
    /// Listens on `socket` (mode 0600, owned by `owner` when given: a jailed Firecracker's
    /// uid and gid) and serves faults from `memory` to the first process that connects.
    pub(crate) fn spawn(
        socket: &Path,
        memory: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<PageServer, UffdError> {
        let memory_err = |source| UffdError::Memory {
            path: memory.to_owned(),
            source,
        };
        let file = File::open(memory).map_err(memory_err)?;
        let len = file.metadata().map_err(memory_err)?.len();
        let len = NonZeroUsize::new(usize::try_from(len).unwrap_or(usize::MAX))
            .ok_or_else(|| memory_err(io::Error::new(io::ErrorKind::InvalidData, "it is empty")))?;
        let map = MappedFile::map(&file, len).map_err(|e| memory_err(e.into()))?;
        let listen_err = |source| UffdError::Listen {
            path: socket.to_owned(),
            source,
        };
        match std::fs::remove_file(socket) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(listen_err(e)),
            _ => {}
        }
        let listener = UnixListener::bind(socket).map_err(listen_err)?;
        std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(listen_err)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(socket, Some(uid), Some(gid)).map_err(listen_err)?;
        }
        listener.set_nonblocking(true).map_err(listen_err)?;
        let (stop_read, stop_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| listen_err(e.into()))?;
        let thread = std::thread::Builder::new()
            .name("uffd".into())
            .spawn(move || {
                if let Err(e) = serve(&listener, &stop_read, &map) {
                    tracing::warn!(error = %e, "page server ended");
                }
            })
            .map_err(listen_err)?;
        Ok(PageServer {
            thread: Some(thread),
            stop: Some(stop_write),
            path: socket.to_owned(),
        })
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_err(e: Errno) -> UffdError {
    UffdError::Serve(e.into())
}

/// Whether `fd` is readable (or closed), waiting at most `timeout`; `stop` readable means the
/// owner went away.
fn wait(fd: BorrowedFd<'_>, stop: BorrowedFd<'_>, timeout: PollTimeout) -> Result<Wake, Errno> {
    let mut fds = [
        PollFd::new(fd, PollFlags::POLLIN),
        PollFd::new(stop, PollFlags::POLLIN),
    ];
    match poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e),
    }
    let events = |i: usize| fds[i].revents().unwrap_or(PollFlags::empty());
    if !events(1).is_empty() {
        return Ok(Wake::Stop);
    }
    if events(0).intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
        return Ok(Wake::Closed);
    }
    Ok(if events(0).is_empty() {
        Wake::Timeout
    } else {
        Wake::Ready
    })
}

enum Wake {
    Ready,
    Timeout,
    Closed,
    Stop,
}

fn serve(listener: &UnixListener, stop: &OwnedFd, map: &MappedFile) -> Result<(), UffdError> {
    let stream = loop {
        match wait(listener.as_fd(), stop.as_fd(), PollTimeout::NONE).map_err(serve_err)? {
            Wake::Stop | Wake::Closed => return Ok(()),
            Wake::Timeout => continue,
            Wake::Ready => match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(UffdError::Serve(e)),
            },
        }
    };
    let (regions, uffd) = handshake(&stream, map.bytes().len() as u64)?;
    tracing::debug!(regions = regions.len(), "serving page faults");
    Faults {
        uffd,
        regions,
        removed: Vec::new(),
        retry: Vec::new(),
        memory: map.bytes(),
    }
    .run(stop.as_fd())
}

/// Reads the regions and the userfaultfd Firecracker sends as one message.
fn handshake(stream: &UnixStream, file_len: u64) -> Result<(Vec<Region>, OwnedFd), UffdError> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| UffdError::Handshake(e.to_string()))?;
    let mut buf = vec![0u8; MAX_HANDSHAKE];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(stream),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| UffdError::Handshake(format!("reading it failed: {e}")))?;
    let mut uffd = None;
    for message in msg
        .cmsgs()
        .map_err(|e| UffdError::Handshake(e.to_string()))?
    {
        if let ControlMessageOwned::ScmRights(fds) = message {
            // Owning every descriptor received closes any extra one.
            for fd in fds {
                uffd.get_or_insert(crate::sys::received_fd(fd));
            }
        }
    }
    let len = msg.bytes;
    let uffd = uffd.ok_or_else(|| UffdError::Handshake("it carried no userfaultfd".into()))?;
    let regions = parse_regions(&buf[..len], file_len)?;
    Ok((regions, uffd))
}

struct Faults<'a> {
    uffd: OwnedFd,
    regions: Vec<Region>,
    /// Ranges the guest gave back (balloon): they read as zeros from now on.
    removed: Vec<(u64, u64)>,
    /// Faults whose copy the kernel asked to retry.
    retry: Vec<u64>,
    memory: &'a [u8],
}

impl Faults<'_> {
    fn run(&mut self, stop: BorrowedFd<'_>) -> Result<(), UffdError> {
        loop {
            let timeout = match self.retry.is_empty() {
                true => PollTimeout::NONE,
                false => PollTimeout::try_from(RETRY_INTERVAL).unwrap_or(PollTimeout::ZERO),
            };
            match wait(self.uffd.as_fd(), stop, timeout).map_err(serve_err)? {
                Wake::Stop | Wake::Closed => return Ok(()),
                Wake::Timeout | Wake::Ready => {}
            }
            while let Some(event) = uffd_sys::read_event(self.uffd.as_fd()).map_err(serve_err)? {
                match event {
                    Event::PageFault { address } => self.retry.push(address),
                    Event::Remove { start, end } => self.removed.push((start, end)),
                    Event::Other(kind) => tracing::debug!(kind, "ignoring a userfaultfd event"),
                }
            }
            let pending = std::mem::take(&mut self.retry);
            for address in pending {
                if !self.fill(address)? {
                    self.retry.push(address);
                }
            }
        }
    }

    /// Fills the page at `address`; `false` when the kernel asks to try again.
    fn fill(&self, address: u64) -> Result<bool, UffdError> {
        let Some((page, offset, len)) = locate(&self.regions, address) else {
            tracing::warn!(address, "Firecracker faulted outside its guest memory");
            return Ok(true);
        };
        let zero = self.removed.iter().any(|(s, e)| (*s..*e).contains(&page));
        let filled = if zero {
            uffd_sys::zeropage(self.uffd.as_fd(), page, len)
        } else {
            // parse_regions checked every region lies inside the file.
            let start = offset as usize;
            uffd_sys::copy(
                self.uffd.as_fd(),
                page,
                &self.memory[start..start + len as usize],
            )
        };
        match filled {
            // EEXIST: another fault filled it first.
            Ok(()) | Err(Errno::EEXIST) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            // ESRCH/ENOENT: the faulting process is going away.
            Err(Errno::ESRCH | Errno::ENOENT) => Ok(true),
            Err(e) => Err(serve_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: &str = r#"[{"base_host_virt_addr":1048576,"size":8192,"offset":4096,"page_size":4096,"page_size_kib":4096}]"#;

    #[test]
    fn test_regions_are_read_as_firecracker_sends_them_and_checked_against_the_file() {
        let regions = parse_regions(REGION.as_bytes(), 3 * 4096).unwrap();
        assert_eq!(
            regions,
            [Region {
                base_host_virt_addr: 1 << 20,
                size: 8192,
                offset: 4096,
                page_size: 4096
            }]
        );
        let err = parse_regions(REGION.as_bytes(), 2 * 4096).unwrap_err();
        assert!(
            err.to_string().contains("inside the 8192-byte memory file"),
            "{err}"
        );
        for bad in [
            "[]",
            "{}",
            r#"[{"base_host_virt_addr":1,"size":4096,"offset":0,"page_size":4096}]"#,
            r#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":100}]"#,
            r#"[{"base_host_virt_addr":0,"size":4096,"offset":18446744073709547520,"page_size":4096}]"#,
        ] {
            assert!(parse_regions(bad.as_bytes(), 1 << 30).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_a_fault_is_served_from_its_page_of_the_file() {
        let regions = parse_regions(REGION.as_bytes(), 3 * 4096).unwrap();
        assert_eq!(
            locate(&regions, (1 << 20) + 10),
            Some((1 << 20, 4096, 4096))
        );
        assert_eq!(
            locate(&regions, (1 << 20) + 4096 + 4095),
            Some(((1 << 20) + 4096, 8192, 4096))
        );
        assert_eq!(locate(&regions, (1 << 20) + 8192), None);
        assert_eq!(locate(&regions, 0), None);
    }
}
