//! Host directories mounted in the guest: the guest's FUSE filesystem asks, the host answers.
//!
//! The host opens a channel with [`crate::HostMessage::Mount`]; the agent mounts a FUSE
//! filesystem at the target and answers `Done` (or `Error`). From then on the roles turn: the
//! agent sends [`crate::GuestMessage::VolumeCall`]s, one per FUSE request it cannot answer
//! itself, and the host answers each with a [`crate::HostMessage::VolumeReply`] carrying the
//! same `id`, in any order. Either side closing the channel ends the mount: the agent detaches
//! it and the guest's programs see `ENOTCONN`/`EIO` on it.
//!
//! Everything the guest names is a [`NodeId`] the host handed out, a [`Handle`] the host
//! opened, or one path component ([`Name`]); never a path. The host resolves every one of them
//! beneath the mapped directory, so what the guest can reach is decided on the host.

use serde::{Deserialize, Serialize};

/// A file or directory the host handed out in an [`Entry`]. [`ROOT_NODE`] is the mount's root.
pub type NodeId = u64;

/// The mount's root directory.
pub const ROOT_NODE: NodeId = 1;

/// An open file or directory on the host.
pub type Handle = u64;

/// One path component as the guest sent it (bytes: Linux names need not be UTF-8). The host
/// refuses empty names, `.`, `..`, names with `/` or NUL and names over [`MAX_NAME_LEN`].
pub type Name = Vec<u8>;

/// Longest name a Linux filesystem allows.
pub const MAX_NAME_LEN: usize = 255;

/// Largest read or write one call carries; the FUSE mount's `max_write` and `max_read`.
pub const MAX_VOLUME_IO: u32 = 128 * 1024;

/// What to mount where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// Absolute path in the guest's root; created (with its parents) when missing.
    pub target: String,
    /// Mount read-only in the guest too (the host refuses writes either way).
    pub read_only: bool,
    /// Shown as the mount's source in the guest's `/proc/mounts`, e.g. the host dir or the
    /// volume's name.
    pub source: String,
}

/// A time to set: now (the host's clock) or a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetTime {
    Now,
    At { secs: i64, nanos: u32 },
}

/// One FUSE request, as the guest's kernel made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeOp {
    /// `name` in `parent`: [`VolumeReply::Entry`]. Every entry handed out counts one lookup of
    /// its node, which a later [`VolumeOp::Forget`] gives back.
    Lookup {
        parent: NodeId,
        #[serde(with = "serde_bytes")]
        name: Name,
    },
    /// The guest's kernel dropped `count` lookups of `node`. Not answered.
    Forget { node: NodeId, count: u64 },
    /// [`VolumeReply::Attr`].
    GetAttr { node: NodeId },
    /// Changes what is `Some`: [`VolumeReply::Attr`] with the result. Ownership changes are not
    /// carried: the host decides who owns its files.
    SetAttr {
        node: NodeId,
        /// An open handle of the file, if the change came through one (`ftruncate`).
        handle: Option<Handle>,
        mode: Option<u32>,
        size: Option<u64>,
        atime: Option<SetTime>,
        mtime: Option<SetTime>,
    },
    /// A symlink's target: [`VolumeReply::Data`].
    ReadLink { node: NodeId },
    /// [`VolumeReply::Entry`].
    Mkdir {
        parent: NodeId,
        #[serde(with = "serde_bytes")]
        name: Name,
        mode: u32,
        umask: u32,
    },
    /// Only regular files may be made this way; anything else is `EPERM`.
    /// [`VolumeReply::Entry`].
    Mknod {
        parent: NodeId,
        #[serde(with = "serde_bytes")]
        name: Name,
        mode: u32,
        umask: u32,
    },
    /// [`VolumeReply::Empty`].
    Unlink {
        parent: NodeId,
        #[serde(with = "serde_bytes")]
        name: Name,
    },
    /// [`VolumeReply::Empty`].
    Rmdir {
        parent: NodeId,
        #[serde(with = "serde_bytes")]
        name: Name,
    },
    /// A symlink `name` in `parent` pointing at `target` (stored as is, never followed by the
    /// host). [`VolumeReply::Entry`].
    Symlink {
        parent: NodeId,
        #[serde(with = "serde_bytes")]
        name: Name,
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
    },
    /// `renameat2`; `flags` may hold `RENAME_NOREPLACE` and `RENAME_EXCHANGE`.
    /// [`VolumeReply::Empty`].
    Rename {
        parent: NodeId,
        #[serde(with = "serde_bytes")]
        name: Name,
        new_parent: NodeId,
        #[serde(with = "serde_bytes")]
        new_name: Name,
        flags: u32,
    },
    /// A hard link to `node` named `new_name` in `new_parent`. [`VolumeReply::Entry`].
    Link {
        node: NodeId,
        new_parent: NodeId,
        #[serde(with = "serde_bytes")]
        new_name: Name,
    },
    /// Opens a regular file; `flags` are `open(2)` flags. [`VolumeReply::Opened`].
    Open { node: NodeId, flags: i32 },
    /// Creates and opens a regular file. [`VolumeReply::Created`].
    Create {
        parent: NodeId,
        #[serde(with = "serde_bytes")]
        name: Name,
        mode: u32,
        umask: u32,
        flags: i32,
    },
    /// Up to `size` (at most [`MAX_VOLUME_IO`]) bytes at `offset`: [`VolumeReply::Data`],
    /// shorter at the end of the file.
    Read {
        handle: Handle,
        offset: u64,
        size: u32,
    },
    /// [`VolumeReply::Written`].
    Write {
        handle: Handle,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// `fsync` (`fdatasync` if `datasync`). [`VolumeReply::Empty`].
    Fsync { handle: Handle, datasync: bool },
    /// Closes a handle from `Open`, `Create` or `OpenDir`. Not answered.
    Release { handle: Handle },
    /// Opens a directory for listing. [`VolumeReply::Opened`].
    OpenDir { node: NodeId },
    /// Entries after the one whose `offset` was given (0 for the start):
    /// [`VolumeReply::Entries`], empty at the end.
    ReadDir { handle: Handle, offset: u64 },
    /// The host filesystem's figures. [`VolumeReply::StatFs`].
    StatFs,
}

/// Metadata of a node, as `lstat` on the host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// The host's inode number (what `stat` shows in the guest).
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    /// File type and permission bits, as `st_mode`.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

/// A node handed to the guest, counting one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub node: NodeId,
    pub attr: Attr,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The host's inode number.
    pub ino: u64,
    /// Where a listing continues after this entry.
    pub offset: u64,
    /// File type bits of `st_mode` (`S_IFMT`).
    pub kind: u32,
    #[serde(with = "serde_bytes")]
    pub name: Name,
}

/// `statvfs` of the host filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
    pub block_size: u32,
    pub name_len: u32,
    pub fragment_size: u32,
}

/// The host's answer to a [`VolumeOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeReply {
    Entry(Entry),
    Attr(Attr),
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Written(u32),
    Opened(Handle),
    Created { entry: Entry, handle: Handle },
    Entries(Vec<DirEntry>),
    StatFs(StatFs),
    Empty,
}

/// A [`VolumeOp`]'s outcome: a reply, or a positive Linux `errno` the guest's program sees.
pub type VolumeResult = Result<VolumeReply, i32>;
