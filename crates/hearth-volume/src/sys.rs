//! The one conversion nix 0.29 leaves unsafe: taking ownership of a descriptor it returned.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Wraps a descriptor that a successful nix `open`/`openat2` call just returned.
pub(crate) fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass only a descriptor fresh from a successful open call, which this
    // process owns and which nothing else has wrapped or will close.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
