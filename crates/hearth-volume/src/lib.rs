//! hearth-volume: the host side of a host directory mounted in the guest.
//!
//! The guest runs a FUSE filesystem that forwards every request as a
//! [`VolumeOp`](hearth_agent_proto::volume::VolumeOp); [`VolumeServer`] executes them against
//! one host directory and [`serve`] runs it over a channel. The guest is assumed hostile.
//!
//! Containment rests on one rule: nothing is ever opened by an absolute path or through a
//! symlink. The directory is opened once as an `O_PATH` descriptor; a node the guest holds is
//! only a name in a parent node, and its relative path is rebuilt from the node table and
//! opened with `openat2(root, path, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` on every use. A directory swapped for a symlink on the host, or a
//! path renamed away, therefore fails (`ELOOP`, `ENOENT`, `EXDEV`) instead of escaping. Calls
//! that create or remove names open the parent that way and pass the `*at` syscalls one
//! validated component that is never followed. Files are opened only after an `O_PATH`
//! descriptor showed a regular file, by reopening that pinned inode, so FIFOs and devices are
//! never opened; set-ID bits and device nodes are never created; what the guest creates
//! belongs to the directory's owner. The node and handle tables are bounded, so a guest
//! cannot grow the host's memory or descriptor use without limit.

mod handles;
mod nodes;
mod resolve;
mod serve;
mod server;
mod sys;

use std::path::PathBuf;

pub use serve::{serve, ServeError};
pub use server::VolumeServer;

/// Why a volume directory could not be served.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("failed to resolve volume directory `{}`", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume source `{}` is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("failed to open volume directory `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("failed to stat volume directory `{}`", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("the kernel lacks openat2 (Linux 5.6 or later is needed to confine a volume)")]
    NoOpenat2,
    #[error("`{}` is not usable; volumes need /proc mounted", path.display())]
    NoProc {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
}
