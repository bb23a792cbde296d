//! The userfaultfd calls the page server makes, and the read-only map of the memory file it
//! serves from.
//!
//! By hand rather than the `userfaultfd` crate: its `-sys` crate runs bindgen, so building
//! hearth would need libclang; the two ioctls and one message layout used here are stable
//! kernel ABI (`include/uapi/linux/userfaultfd.h`).
#![expect(
    unsafe_code,
    reason = "userfaultfd ioctls and mmap have no safe wrapper in nix 0.29"
)]

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_EVENT_REMOVE: u8 = 0x15;
/// `sizeof(struct uffd_msg)`.
const MSG_LEN: usize = 32;

/// One event read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A thread touched `address`, which has no page yet.
    PageFault { address: u64 },
    /// `madvise(MADV_DONTNEED)` dropped `start..end`; a later fault there wants zeros.
    Remove { start: u64, end: u64 },
    /// Fork, remap, unmap: events Firecracker does not ask for.
    Other(u8),
}

/// Parses a `struct uffd_msg`.
pub(crate) fn parse_event(msg: &[u8; MSG_LEN]) -> Event {
    let u64_at = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&msg[at..at + 8]);
        u64::from_ne_bytes(bytes)
    };
    match msg[0] {
        // pagefault: flags at 8, address at 16.
        UFFD_EVENT_PAGEFAULT => Event::PageFault {
            address: u64_at(16),
        },
        // remove: start at 8, end at 16.
        UFFD_EVENT_REMOVE => Event::Remove {
            start: u64_at(8),
            end: u64_at(16),
        },
        other => Event::Other(other),
    }
}

/// The next event, or `None` when none is queued (the descriptor is non-blocking).
pub(crate) fn read_event(uffd: BorrowedFd<'_>) -> nix::Result<Option<Event>> {
    let mut msg = [0u8; MSG_LEN];
    match nix::unistd::read(uffd.as_raw_fd(), &mut msg) {
        Ok(MSG_LEN) => Ok(Some(parse_event(&msg))),
        // A userfaultfd returns whole messages or nothing.
        Ok(_) => Err(Errno::EIO),
        Err(Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e),
    }
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

nix::ioctl_readwrite!(uffdio_copy, 0xAA, 0x03, UffdioCopy);
nix::ioctl_readwrite!(uffdio_zeropage, 0xAA, 0x04, UffdioZeropage);

/// Fills `len` bytes at `dst` in the faulting process with `src` and wakes its waiting
/// threads.
pub(crate) fn copy(uffd: BorrowedFd<'_>, dst: u64, src: &[u8]) -> nix::Result<()> {
    let mut arg = UffdioCopy {
        dst,
        src: src.as_ptr() as u64,
        len: src.len() as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: the kernel reads `src.len()` bytes from `src`, a live slice, and writes only
    // into the other process's registered range (it checks `dst` itself) and into `arg`.
    unsafe { uffdio_copy(uffd.as_raw_fd(), &mut arg) }.map(drop)
}

/// Maps zero pages at `dst..dst+len` in the faulting process and wakes its threads.
pub(crate) fn zeropage(uffd: BorrowedFd<'_>, dst: u64, len: u64) -> nix::Result<()> {
    let mut arg = UffdioZeropage {
        range: UffdioRange { start: dst, len },
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: the kernel writes only into the other process's registered range (checked by
    // the kernel) and into `arg`.
    unsafe { uffdio_zeropage(uffd.as_raw_fd(), &mut arg) }.map(drop)
}

/// A file mapped read-only and private: clones served from one memory file share its pages
/// through the page cache.
#[derive(Debug)]
pub(crate) struct MappedFile {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; reading it from another
// thread is as safe as reading a `&[u8]`.
unsafe impl Send for MappedFile {}

impl MappedFile {
    /// Maps all of `file`, which must not be empty.
    pub(crate) fn map(file: &File, len: NonZeroUsize) -> nix::Result<Self> {
        // SAFETY: a fresh read-only private mapping of an open file, at an address the kernel
        // picks; nothing aliases it. A file that shrinks under it would fault on access, and
        // hearth's snapshot files are written once and never truncated.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE,
                file,
                0,
            )
        }?;
        Ok(MappedFile {
            ptr,
            len: len.get(),
        })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which no slice outlives.
        if let Err(e) = unsafe { munmap(self.ptr, self.len) } {
            tracing::warn!(error = %e, "could not unmap a snapshot memory file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_events_are_read_from_their_kernel_layout() {
        let mut msg = [0u8; MSG_LEN];
        msg[0] = UFFD_EVENT_PAGEFAULT;
        msg[16..24].copy_from_slice(&0x7f00_1234_5000u64.to_ne_bytes());
        assert_eq!(
            parse_event(&msg),
            Event::PageFault {
                address: 0x7f00_1234_5000
            }
        );
        msg[0] = UFFD_EVENT_REMOVE;
        msg[8..16].copy_from_slice(&0x1000u64.to_ne_bytes());
        msg[16..24].copy_from_slice(&0x3000u64.to_ne_bytes());
        assert_eq!(
            parse_event(&msg),
            Event::Remove {
                start: 0x1000,
                end: 0x3000
            }
        );
        msg[0] = 0x13;
        assert_eq!(parse_event(&msg), Event::Other(0x13));
    }

    #[test]
    fn test_a_mapped_file_reads_as_its_bytes() {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, b"memory of a guest").unwrap();
        let map = MappedFile::map(&file, NonZeroUsize::new(17).unwrap()).unwrap();
        assert_eq!(map.bytes(), b"memory of a guest");
    }
}
