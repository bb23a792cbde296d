//! Open files and directory listings the guest holds, bounded by [`MAX_HANDLES`].

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use hearth_agent_proto::volume::{DirEntry, Handle};
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, SFlag};

/// Most handles the guest may hold open at once; beyond this it gets `EMFILE`.
pub(crate) const MAX_HANDLES: usize = 4096;

/// A listing longer than this is refused (`EFBIG`) rather than held in memory.
const MAX_LISTING_ENTRIES: usize = 1 << 20;

/// Total name bytes one listing may hold (`ENOMEM` beyond).
const MAX_LISTING_NAME_BYTES: usize = 64 << 20;

/// Memory all listings of one server may hold together (`ENOMEM` beyond): without it a guest
/// could snapshot one huge directory through every handle it may open.
const MAX_LISTED_BYTES: usize = 256 << 20;

/// Budget of one `ReadDir` reply, keeping the frame far below `MAX_FRAME_LEN`.
const BATCH_BYTES: usize = 64 << 10;

/// What an entry costs in a reply besides its name: the varints of `ino`, `offset`, `kind`
/// and the name's length, generously rounded up.
const ENTRY_OVERHEAD: usize = 32;

#[derive(Debug)]
pub(crate) struct File {
    pub(crate) fd: OwnedFd,
    /// Opened with `O_APPEND`: writes go to the end, whatever offset the guest sent.
    pub(crate) append: bool,
}

#[derive(Debug)]
pub(crate) struct Listing {
    dir: Dir,
    /// `..` of the root must not show the host directory's parent.
    root_ino: Option<u64>,
    /// The snapshot the guest's offsets index, taken at the first read from offset 0.
    entries: Option<Vec<DirEntry>>,
    /// Memory the snapshot holds, counted against [`MAX_LISTED_BYTES`].
    cost: usize,
}

impl Listing {
    pub(crate) fn new(dir: Dir, root_ino: Option<u64>) -> Self {
        Listing {
            dir,
            root_ino,
            entries: None,
            cost: 0,
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Entries after `offset`, (re)reading the directory when the guest starts over at 0.
    /// `available` is what the other listings left of the memory budget.
    fn read(&mut self, offset: u64, available: usize) -> Result<Vec<DirEntry>, Errno> {
        if offset == 0 || self.entries.is_none() {
            self.entries = None;
            self.cost = 0;
            let (entries, cost) = self.snapshot(available)?;
            self.entries = Some(entries);
            self.cost = cost;
        }
        let entries = self.entries.as_deref().unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut budget = BATCH_BYTES;
        let mut batch = Vec::new();
        for entry in entries.iter().skip(start) {
            let cost = entry.name.len() + ENTRY_OVERHEAD;
            if cost > budget && !batch.is_empty() {
                break;
            }
            budget = budget.saturating_sub(cost);
            batch.push(entry.clone());
        }
        Ok(batch)
    }

    fn snapshot(&mut self, available: usize) -> Result<(Vec<DirEntry>, usize), Errno> {
        let dir_fd = self.dir.as_raw_fd();
        let root_ino = self.root_ino;
        let mut entries = Vec::new();
        let mut name_bytes = 0usize;
        let mut cost = 0usize;
        // Dropping the iterator rewinds the stream, so the next snapshot starts over.
        for item in self.dir.iter() {
            let item = item?;
            if entries.len() >= MAX_LISTING_ENTRIES {
                return Err(Errno::EFBIG);
            }
            let name = item.file_name().to_bytes();
            name_bytes += name.len();
            cost += name.len() + std::mem::size_of::<DirEntry>();
            if name_bytes > MAX_LISTING_NAME_BYTES || cost > available {
                return Err(Errno::ENOMEM);
            }
            let ino = match root_ino {
                Some(root) if name == b".." => root,
                _ => item.ino(),
            };
            let kind = match item.file_type() {
                Some(kind) => kind_bits(kind),
                // Some filesystems do not fill in d_type; the entry's own inode says it, and
                // a single component is looked up without following it.
                None => fstatat(Some(dir_fd), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map(|st| st.st_mode & SFlag::S_IFMT.bits())
                    .unwrap_or(0),
            };
            entries.push(DirEntry {
                ino,
                offset: entries.len() as u64 + 1,
                kind,
                name: name.to_vec(),
            });
        }
        Ok((entries, cost))
    }
}

fn kind_bits(kind: Type) -> u32 {
    let flag = match kind {
        Type::Fifo => SFlag::S_IFIFO,
        Type::CharacterDevice => SFlag::S_IFCHR,
        Type::Directory => SFlag::S_IFDIR,
        Type::BlockDevice => SFlag::S_IFBLK,
        Type::File => SFlag::S_IFREG,
        Type::Symlink => SFlag::S_IFLNK,
        Type::Socket => SFlag::S_IFSOCK,
    };
    flag.bits()
}

#[derive(Debug)]
pub(crate) enum Open {
    File(File),
    Dir(Listing),
}

#[derive(Debug)]
pub(crate) struct Handles {
    open: HashMap<Handle, Open>,
    next: Handle,
    /// Sum of the listings' costs.
    listed: usize,
}

impl Handles {
    pub(crate) fn new() -> Self {
        Handles {
            open: HashMap::new(),
            next: 1,
            listed: 0,
        }
    }

    /// Checked before opening anything, so a full table costs no host descriptor.
    pub(crate) fn check_room(&self) -> Result<(), Errno> {
        if self.open.len() >= MAX_HANDLES {
            return Err(Errno::EMFILE);
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, open: Open) -> Result<Handle, Errno> {
        self.check_room()?;
        let handle = self.next;
        self.next = handle.checked_add(1).ok_or(Errno::EMFILE)?;
        self.open.insert(handle, open);
        Ok(handle)
    }

    pub(crate) fn get_mut(&mut self, handle: Handle) -> Result<&mut Open, Errno> {
        self.open.get_mut(&handle).ok_or(Errno::EBADF)
    }

    pub(crate) fn file(&self, handle: Handle) -> Result<&File, Errno> {
        match self.open.get(&handle) {
            Some(Open::File(file)) => Ok(file),
            Some(Open::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::EBADF),
        }
    }

    /// `ReadDir` on `handle`, keeping all listings within [`MAX_LISTED_BYTES`].
    pub(crate) fn read_dir(&mut self, handle: Handle, offset: u64) -> Result<Vec<DirEntry>, Errno> {
        let listing = match self.open.get_mut(&handle) {
            Some(Open::Dir(listing)) => listing,
            Some(Open::File(_)) => return Err(Errno::ENOTDIR),
            None => return Err(Errno::EBADF),
        };
        let others = self.listed.saturating_sub(listing.cost);
        let result = listing.read(offset, MAX_LISTED_BYTES.saturating_sub(others));
        self.listed = others + listing.cost;
        result
    }

    pub(crate) fn remove(&mut self, handle: Handle) {
        if let Some(Open::Dir(listing)) = self.open.remove(&handle) {
            self.listed = self.listed.saturating_sub(listing.cost);
        }
    }
}
