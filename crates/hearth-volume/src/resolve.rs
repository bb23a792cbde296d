//! Containment: every path the server touches is opened beneath the volume's root descriptor
//! with `openat2`, refusing symlinks and magic links anywhere on the way.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use hearth_agent_proto::volume::MAX_NAME_LEN;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::sys;

/// `EAGAIN` from `openat2` means a concurrent rename made the kernel unsure about the walk;
/// retrying a few times is what the man page suggests, endlessly would let the host spin.
const AGAIN_RETRIES: usize = 8;

fn how(flags: OFlag, mode: Mode) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
}

fn open_how<P: ?Sized + nix::NixPath>(
    dir: impl AsFd,
    path: &P,
    how: OpenHow,
) -> Result<OwnedFd, Errno> {
    let dir = dir.as_fd().as_raw_fd();
    let mut tries = 0;
    loop {
        match openat2(dir, path, how) {
            Ok(fd) => return Ok(sys::own(fd)),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if tries < AGAIN_RETRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Opens `path` (relative, `.` for `dir` itself) beneath `dir`. The last component is never
/// followed either: with `O_PATH` a symlink there yields a descriptor of the link itself.
pub(crate) fn beneath(dir: impl AsFd, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    open_how(dir, path, how(flags, Mode::empty()))
}

/// Creates the regular file `name` in `dir`, failing if anything (even a dangling symlink)
/// already has that name, so an existing FIFO or device is never opened.
pub(crate) fn create(
    dir: impl AsFd,
    name: &OsStr,
    flags: OFlag,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    open_how(dir, name, how(flags | OFlag::O_CREAT | OFlag::O_EXCL, mode))
}

/// The magic link through which an `O_PATH` descriptor's inode can be reopened or changed.
/// Safe to follow: the descriptor pins the inode, whatever happens to its names meanwhile.
pub(crate) fn proc_path(fd: impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// Reopens the inode `fd` pins with real access, e.g. an `O_PATH` descriptor for reading.
pub(crate) fn reopen(fd: impl AsFd, flags: OFlag) -> Result<OwnedFd, Errno> {
    let path = proc_path(fd);
    loop {
        match nix::fcntl::open(&path, flags | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => return Ok(sys::own(fd)),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Checks one path component the guest sent.
pub(crate) fn name(name: &[u8]) -> Result<&OsStr, Errno> {
    if name.len() > MAX_NAME_LEN {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Errno::EINVAL);
    }
    Ok(OsStr::from_bytes(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name(b"a").is_ok());
        assert!(name(b"...").is_ok());
        assert!(name(&[b'x'; MAX_NAME_LEN]).is_ok());
        assert_eq!(name(&[b'x'; MAX_NAME_LEN + 1]), Err(Errno::ENAMETOOLONG));
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert_eq!(name(bad), Err(Errno::EINVAL), "{bad:?}");
        }
    }
}
