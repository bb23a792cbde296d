//! [`VolumeServer`]: executes one [`VolumeOp`] at a time against the volume's directory.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use hearth_agent_proto::volume::{
    Attr, Entry, Handle, NodeId, SetTime, StatFs, VolumeOp, VolumeReply, VolumeResult,
    MAX_VOLUME_IO, ROOT_NODE,
};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{readlinkat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{
    fchmodat, fstat, fstatat, mkdirat, utimensat, FchmodatFlags, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::statvfs::fstatvfs;
use nix::sys::time::TimeSpec;
use nix::sys::uio::{pread, pwrite};
use nix::unistd::{
    fchownat, fdatasync, fsync, ftruncate, linkat, symlinkat, unlinkat, write, Gid, Uid,
    UnlinkatFlags,
};

use crate::handles::{File, Handles, Listing, Open};
use crate::nodes::Nodes;
use crate::{resolve, sys, VolumeError};

/// Longest symlink target accepted, as `symlink(2)` allows (`PATH_MAX` with its NUL).
const MAX_SYMLINK_TARGET: usize = libc::PATH_MAX as usize - 1;

/// The only permission bits a guest may set: never set-user-ID or set-group-ID on the host.
const ALLOWED_PERMS: u32 = 0o1777;

/// The only flags of the guest's `open(2)` that reach the host, besides the access mode.
const ALLOWED_OPEN_FLAGS: i32 = libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC;

/// One host directory served to a guest.
#[derive(Debug)]
pub struct VolumeServer {
    root: OwnedFd,
    root_ino: u64,
    read_only: bool,
    /// Who owns what the guest creates: the directory's owner as read at open.
    owner: (Uid, Gid),
    nodes: Nodes,
    handles: Handles,
}

impl VolumeServer {
    /// Opens `dir` (must be an existing directory; resolve it once, then everything is
    /// relative to an `O_PATH`/`O_DIRECTORY` fd of it).
    ///
    /// New files/dirs/symlinks the guest makes are chowned to `dir`'s owner uid/gid (as read
    /// at open).
    pub fn open(dir: &Path, read_only: bool) -> Result<VolumeServer, VolumeError> {
        let resolved = std::fs::canonicalize(dir).map_err(|source| VolumeError::Resolve {
            path: dir.to_path_buf(),
            source,
        })?;
        let fd = nix::fcntl::open(
            &resolved,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| match source {
            Errno::ENOTDIR => VolumeError::NotADirectory {
                path: resolved.clone(),
            },
            source => VolumeError::Open {
                path: resolved.clone(),
                source,
            },
        })?;
        let root = sys::own(fd);
        let st = fstat(root.as_raw_fd()).map_err(|source| VolumeError::Stat {
            path: resolved.clone(),
            source,
        })?;
        // Fail here rather than on the guest's first call if the kernel or /proc cannot give
        // the guarantees the server relies on.
        resolve::beneath(&root, Path::new("."), OFlag::O_PATH).map_err(|source| match source {
            Errno::ENOSYS => VolumeError::NoOpenat2,
            source => VolumeError::Open {
                path: resolved.clone(),
                source,
            },
        })?;
        let proc = resolve::proc_path(&root);
        fstatat(None, &proc, AtFlags::empty())
            .map_err(|source| VolumeError::NoProc { path: proc, source })?;
        Ok(VolumeServer {
            root,
            root_ino: st.st_ino,
            read_only,
            owner: (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid)),
            nodes: Nodes::new(st.st_ino),
            handles: Handles::new(),
        })
    }

    /// Executes one op. Returns None for ops that get no answer (Forget, Release).
    pub fn call(&mut self, op: VolumeOp) -> Option<VolumeResult> {
        match op {
            VolumeOp::Forget { node, count } => {
                self.nodes.forget(node, count);
                None
            }
            VolumeOp::Release { handle } => {
                self.handles.remove(handle);
                None
            }
            op => Some(self.execute(op).map_err(errno)),
        }
    }

    fn execute(&mut self, op: VolumeOp) -> Result<VolumeReply, Errno> {
        match op {
            VolumeOp::Lookup { parent, name } => self.lookup(parent, &name).map(VolumeReply::Entry),
            VolumeOp::GetAttr { node } => {
                let fd = self.open_node(node, OFlag::O_PATH)?;
                Ok(VolumeReply::Attr(attr(&stat(&fd)?)))
            }
            VolumeOp::SetAttr {
                node,
                handle,
                mode,
                size,
                atime,
                mtime,
            } => self
                .set_attr(node, handle, mode, size, (atime, mtime))
                .map(VolumeReply::Attr),
            VolumeOp::ReadLink { node } => self.read_link(node).map(VolumeReply::Data),
            VolumeOp::Mkdir {
                parent,
                name,
                mode,
                umask,
            } => self
                .mkdir(parent, &name, create_perms(mode, umask))
                .map(VolumeReply::Entry),
            VolumeOp::Mknod {
                parent,
                name,
                mode,
                umask,
            } => self
                .mknod(parent, &name, mode, umask)
                .map(VolumeReply::Entry),
            VolumeOp::Unlink { parent, name } => self
                .remove(parent, &name, UnlinkatFlags::NoRemoveDir)
                .map(|()| VolumeReply::Empty),
            VolumeOp::Rmdir { parent, name } => self
                .remove(parent, &name, UnlinkatFlags::RemoveDir)
                .map(|()| VolumeReply::Empty),
            VolumeOp::Symlink {
                parent,
                name,
                target,
            } => self.symlink(parent, &name, &target).map(VolumeReply::Entry),
            VolumeOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => self
                .rename(parent, &name, new_parent, &new_name, flags)
                .map(|()| VolumeReply::Empty),
            VolumeOp::Link {
                node,
                new_parent,
                new_name,
            } => self
                .link(node, new_parent, &new_name)
                .map(VolumeReply::Entry),
            VolumeOp::Open { node, flags } => self.open_file(node, flags).map(VolumeReply::Opened),
            VolumeOp::Create {
                parent,
                name,
                mode,
                umask,
                flags,
            } => self
                .create(parent, &name, create_perms(mode, umask), flags)
                .map(|(entry, handle)| VolumeReply::Created { entry, handle }),
            VolumeOp::Read {
                handle,
                offset,
                size,
            } => self.read(handle, offset, size).map(VolumeReply::Data),
            VolumeOp::Write {
                handle,
                offset,
                data,
            } => self.write(handle, offset, &data).map(VolumeReply::Written),
            VolumeOp::Fsync { handle, datasync } => {
                self.fsync(handle, datasync).map(|()| VolumeReply::Empty)
            }
            VolumeOp::OpenDir { node } => self.open_dir(node).map(VolumeReply::Opened),
            VolumeOp::ReadDir { handle, offset } => self
                .handles
                .read_dir(handle, offset)
                .map(VolumeReply::Entries),
            VolumeOp::StatFs => self.stat_fs().map(VolumeReply::StatFs),
            // Answered in `call`; kept here so a new unanswered op cannot slip through.
            VolumeOp::Forget { .. } | VolumeOp::Release { .. } => Err(Errno::EINVAL),
        }
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.read_only {
            return Err(Errno::EROFS);
        }
        Ok(())
    }

    /// Opens the node's current path beneath the root; never follows a symlink on the way.
    fn open_node(&self, node: NodeId, flags: OFlag) -> Result<OwnedFd, Errno> {
        let path = self.nodes.path(node)?;
        resolve::beneath(&self.root, &path, flags)
    }

    /// The directory a name-based op works in, as an `O_PATH` descriptor for the `*at` calls.
    fn open_parent(&self, parent: NodeId) -> Result<OwnedFd, Errno> {
        self.open_node(parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
    }

    /// The entry for `name` in `parent`, whose inode `fd` holds.
    fn entry(&mut self, parent: NodeId, name: &[u8], fd: &OwnedFd) -> Result<Entry, Errno> {
        let attr = attr(&stat(fd)?);
        let node = self.nodes.intern(parent, name, attr.ino)?;
        Ok(Entry { node, attr })
    }

    /// Gives something the guest created to the directory's owner and sets its exact
    /// permissions (the server's umask and the owner change may have altered them).
    fn adopt(&self, fd: &OwnedFd, perms: Option<u32>) -> Result<(), Errno> {
        let (uid, gid) = self.owner;
        fchownat(
            Some(fd.as_raw_fd()),
            "",
            Some(uid),
            Some(gid),
            AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if let Some(perms) = perms {
            chmod(fd, perms)?;
        }
        Ok(())
    }

    fn lookup(&mut self, parent: NodeId, name: &[u8]) -> Result<Entry, Errno> {
        let name = resolve::name(name)?;
        let dir = self.open_parent(parent)?;
        let fd = resolve::beneath(&dir, Path::new(name), OFlag::O_PATH)?;
        self.entry(parent, name.as_bytes(), &fd)
    }

    /// Runs the steps after `name` was created in `dir`; if one fails the new name is removed
    /// again, so a failed call leaves no half-made (e.g. root-owned) file behind.
    fn finish_create<T>(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        is_dir: bool,
        steps: impl FnOnce(&mut Self) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let result = steps(self);
        if result.is_err() {
            let flag = if is_dir {
                UnlinkatFlags::RemoveDir
            } else {
                UnlinkatFlags::NoRemoveDir
            };
            // Best effort: the original error is what the guest needs to see.
            let _ = unlinkat(Some(dir.as_raw_fd()), name, flag);
        }
        result
    }

    fn mkdir(&mut self, parent: NodeId, name: &[u8], perms: u32) -> Result<Entry, Errno> {
        self.writable()?;
        let name = resolve::name(name)?;
        self.nodes.check_room()?;
        let dir = self.open_parent(parent)?;
        mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(perms))?;
        self.finish_create(&dir, name, true, |server| {
            let fd = resolve::beneath(&dir, Path::new(name), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            server.adopt(&fd, Some(perms))?;
            server.entry(parent, name.as_bytes(), &fd)
        })
    }

    fn mknod(
        &mut self,
        parent: NodeId,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Result<Entry, Errno> {
        self.writable()?;
        let name = resolve::name(name)?;
        // `mknod(2)` treats a zero type as a regular file; everything else (devices, FIFOs,
        // sockets) would be a host object the guest has no business making.
        let kind = mode & SFlag::S_IFMT.bits();
        if kind != 0 && kind != SFlag::S_IFREG.bits() {
            return Err(Errno::EPERM);
        }
        let perms = create_perms(mode, umask);
        self.nodes.check_room()?;
        let dir = self.open_parent(parent)?;
        let fd = resolve::create(&dir, name, OFlag::O_RDONLY, Mode::from_bits_truncate(perms))?;
        self.finish_create(&dir, name, false, |server| {
            server.adopt(&fd, Some(perms))?;
            server.entry(parent, name.as_bytes(), &fd)
        })
    }

    fn remove(&mut self, parent: NodeId, name: &[u8], flag: UnlinkatFlags) -> Result<(), Errno> {
        self.writable()?;
        let name = resolve::name(name)?;
        let dir = self.open_parent(parent)?;
        unlinkat(Some(dir.as_raw_fd()), name, flag)?;
        self.nodes.detach(parent, name.as_bytes());
        Ok(())
    }

    fn symlink(&mut self, parent: NodeId, name: &[u8], target: &[u8]) -> Result<Entry, Errno> {
        self.writable()?;
        let name = resolve::name(name)?;
        if target.len() > MAX_SYMLINK_TARGET {
            return Err(Errno::ENAMETOOLONG);
        }
        if target.contains(&0) {
            return Err(Errno::EINVAL);
        }
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        self.nodes.check_room()?;
        let dir = self.open_parent(parent)?;
        symlinkat(OsStr::from_bytes(target), Some(dir.as_raw_fd()), name)?;
        self.finish_create(&dir, name, false, |server| {
            let fd = resolve::beneath(&dir, Path::new(name), OFlag::O_PATH)?;
            server.adopt(&fd, None)?;
            server.entry(parent, name.as_bytes(), &fd)
        })
    }

    fn rename(
        &mut self,
        parent: NodeId,
        name: &[u8],
        new_parent: NodeId,
        new_name: &[u8],
        flags: u32,
    ) -> Result<(), Errno> {
        self.writable()?;
        let name = resolve::name(name)?;
        let new_name = resolve::name(new_name)?;
        let allowed = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        let flags = RenameFlags::from_bits(flags)
            .filter(|flags| allowed.contains(*flags))
            .ok_or(Errno::EINVAL)?;
        let dir = self.open_parent(parent)?;
        let new_dir = self.open_parent(new_parent)?;
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        // Renaming one hard link onto another of the same inode succeeds without changing
        // anything; the table must not change either.
        let same_inode = !exchange && {
            let old = fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW);
            let new = fstatat(
                Some(new_dir.as_raw_fd()),
                new_name,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            matches!((old, new), (Ok(a), Ok(b)) if a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        };
        renameat2(
            Some(dir.as_raw_fd()),
            name,
            Some(new_dir.as_raw_fd()),
            new_name,
            flags,
        )?;
        let (name, new_name) = (name.as_bytes(), new_name.as_bytes());
        if exchange {
            self.nodes.exchange(parent, name, new_parent, new_name);
        } else if !same_inode {
            self.nodes.rename(parent, name, new_parent, new_name);
        }
        Ok(())
    }

    fn link(&mut self, node: NodeId, new_parent: NodeId, new_name: &[u8]) -> Result<Entry, Errno> {
        self.writable()?;
        let new_name = resolve::name(new_name)?;
        self.nodes.check_room()?;
        let source = self.open_node(node, OFlag::O_PATH)?;
        let kind = file_kind(&stat(&source)?);
        if kind == SFlag::S_IFDIR {
            return Err(Errno::EPERM);
        }
        let dir = self.open_parent(new_parent)?;
        // Linking the pinned inode itself: a name swapped meanwhile cannot redirect the link.
        let linked = linkat(
            Some(source.as_raw_fd()),
            OsStr::new(""),
            Some(dir.as_raw_fd()),
            new_name,
            AtFlags::AT_EMPTY_PATH,
        );
        match linked {
            // Without CAP_DAC_READ_SEARCH the kernel refuses AT_EMPTY_PATH with ENOENT; the
            // magic link reaches the same inode (a symlink would be followed there, so not
            // for those).
            Err(Errno::ENOENT) if kind != SFlag::S_IFLNK => linkat(
                None,
                resolve::proc_path(&source).as_os_str(),
                Some(dir.as_raw_fd()),
                new_name,
                AtFlags::AT_SYMLINK_FOLLOW,
            )?,
            linked => linked?,
        }
        let fd = resolve::beneath(&dir, Path::new(new_name), OFlag::O_PATH)?;
        self.entry(new_parent, new_name.as_bytes(), &fd)
    }

    fn open_file(&mut self, node: NodeId, flags: i32) -> Result<Handle, Errno> {
        let flags = open_flags(flags, self.read_only)?;
        self.handles.check_room()?;
        let pinned = self.open_node(node, OFlag::O_PATH)?;
        only_regular(&stat(&pinned)?)?;
        let fd = resolve::reopen(&pinned, flags)?;
        self.handles.insert(Open::File(File {
            fd,
            append: flags.contains(OFlag::O_APPEND),
        }))
    }

    fn create(
        &mut self,
        parent: NodeId,
        name: &[u8],
        perms: u32,
        flags: i32,
    ) -> Result<(Entry, Handle), Errno> {
        self.writable()?;
        let name = resolve::name(name)?;
        let flags = open_flags(flags, self.read_only)?;
        self.nodes.check_room()?;
        self.handles.check_room()?;
        let dir = self.open_parent(parent)?;
        let fd = resolve::create(&dir, name, flags, Mode::from_bits_truncate(perms))?;
        let entry = self.finish_create(&dir, name, false, |server| {
            server.adopt(&fd, Some(perms))?;
            server.entry(parent, name.as_bytes(), &fd)
        })?;
        let handle = self.handles.insert(Open::File(File {
            fd,
            append: flags.contains(OFlag::O_APPEND),
        }))?;
        Ok((entry, handle))
    }

    fn read(&self, handle: Handle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let file = self.handles.file(handle)?;
        let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let size = size.min(MAX_VOLUME_IO) as usize;
        let mut data = vec![0; size];
        let mut filled = 0;
        while filled < size {
            let at = offset.checked_add(filled as i64).ok_or(Errno::EINVAL)?;
            match pread(&file.fd, &mut data[filled..], at) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(Errno::EINTR) => {}
                // What was read is still the guest's; the error recurs on its next read.
                Err(_) if filled > 0 => break,
                Err(e) => return Err(e),
            }
        }
        data.truncate(filled);
        Ok(data)
    }

    fn write(&self, handle: Handle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.writable()?;
        let file = self.handles.file(handle)?;
        if data.len() > MAX_VOLUME_IO as usize {
            return Err(Errno::EINVAL);
        }
        let offset = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
        let mut done = 0;
        while done < data.len() {
            let written = if file.append {
                write(&file.fd, &data[done..])
            } else {
                let at = offset.checked_add(done as i64).ok_or(Errno::EFBIG)?;
                pwrite(&file.fd, &data[done..], at)
            };
            match written {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        u32::try_from(done).map_err(|_| Errno::EINVAL)
    }

    fn fsync(&mut self, handle: Handle, datasync: bool) -> Result<(), Errno> {
        let fd = match self.handles.get_mut(handle)? {
            Open::File(file) => file.fd.as_raw_fd(),
            Open::Dir(listing) => listing.raw_fd(),
        };
        if datasync {
            fdatasync(fd)
        } else {
            fsync(fd)
        }
    }

    fn open_dir(&mut self, node: NodeId) -> Result<Handle, Errno> {
        self.handles.check_room()?;
        // O_DIRECTORY is checked before anything is opened, so a FIFO here cannot block.
        let fd = self.open_node(node, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let dir = Dir::from(fd)?;
        let root_ino = (node == ROOT_NODE).then_some(self.root_ino);
        self.handles.insert(Open::Dir(Listing::new(dir, root_ino)))
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, Errno> {
        let fd = self.open_node(node, OFlag::O_PATH)?;
        if file_kind(&stat(&fd)?) != SFlag::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        Ok(readlinkat(Some(fd.as_raw_fd()), "")?.into_vec())
    }

    fn set_attr(
        &mut self,
        node: NodeId,
        handle: Option<Handle>,
        mode: Option<u32>,
        size: Option<u64>,
        (atime, mtime): (Option<SetTime>, Option<SetTime>),
    ) -> Result<Attr, Errno> {
        self.writable()?;
        let times = match (atime, mtime) {
            (None, None) => None,
            (atime, mtime) => Some((timespec(atime)?, timespec(mtime)?)),
        };
        let size = size
            .map(|size| i64::try_from(size).map_err(|_| Errno::EINVAL))
            .transpose()?;
        if let Some(handle) = handle {
            self.handles.file(handle)?;
        }
        let pinned = self.open_node(node, OFlag::O_PATH)?;
        let kind = file_kind(&stat(&pinned)?);
        // Refused before anything changes, so a failed call does not apply half its changes.
        if size.is_some() && handle.is_none() {
            match kind {
                SFlag::S_IFREG => {}
                SFlag::S_IFDIR => return Err(Errno::EISDIR),
                _ => return Err(Errno::EINVAL),
            }
        }
        if let Some(mode) = mode {
            // A symlink's own mode means nothing on Linux, and chmod through it would follow.
            if kind != SFlag::S_IFLNK {
                chmod(&pinned, mode & ALLOWED_PERMS)?;
            }
        }
        if let Some(size) = size {
            match handle {
                Some(handle) => ftruncate(&self.handles.file(handle)?.fd, size)?,
                None => ftruncate(resolve::reopen(&pinned, OFlag::O_WRONLY)?, size)?,
            }
        }
        if let Some((atime, mtime)) = times {
            if kind == SFlag::S_IFLNK {
                // The magic link might lead on through the symlink; its own name, not
                // followed, in its parent cannot.
                let (parent, name) = self.nodes.location(node)?;
                let name = PathBuf::from(OsStr::from_bytes(name));
                let dir = self.open_parent(parent)?;
                utimensat(
                    Some(dir.as_raw_fd()),
                    &name,
                    &atime,
                    &mtime,
                    UtimensatFlags::NoFollowSymlink,
                )?;
            } else {
                utimensat(
                    None,
                    &resolve::proc_path(&pinned),
                    &atime,
                    &mtime,
                    UtimensatFlags::FollowSymlink,
                )?;
            }
        }
        Ok(attr(&stat(&pinned)?))
    }

    fn stat_fs(&self) -> Result<StatFs, Errno> {
        let st = fstatvfs(&self.root)?;
        Ok(statfs(&st))
    }
}

/// The errno the guest sees; nix's catch-all `UnknownErrno` is 0, which would read as success.
fn errno(e: Errno) -> i32 {
    match e as i32 {
        n if n > 0 => n,
        _ => libc::EIO,
    }
}

/// Permission bits for something new: the guest's mode and umask, minus set-ID bits.
fn create_perms(mode: u32, umask: u32) -> u32 {
    mode & !umask & ALLOWED_PERMS
}

/// The host flags for the guest's `open(2)` flags: the access mode and the few flags that
/// only change how data is written. Everything about resolution or creation is the server's.
fn open_flags(flags: i32, read_only: bool) -> Result<OFlag, Errno> {
    let access = flags & libc::O_ACCMODE;
    if ![libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR].contains(&access) {
        return Err(Errno::EINVAL);
    }
    let extra = flags & ALLOWED_OPEN_FLAGS;
    // O_TRUNC truncates even with O_RDONLY on Linux.
    if read_only && (access != libc::O_RDONLY || extra & libc::O_TRUNC != 0) {
        return Err(Errno::EROFS);
    }
    Ok(OFlag::from_bits_truncate(access | extra))
}

fn only_regular(st: &FileStat) -> Result<(), Errno> {
    match file_kind(st) {
        SFlag::S_IFREG => Ok(()),
        SFlag::S_IFDIR => Err(Errno::EISDIR),
        SFlag::S_IFLNK => Err(Errno::ELOOP),
        // FIFOs would block the server, devices are the host's devices, sockets cannot be
        // opened at all.
        _ => Err(Errno::EPERM),
    }
}

fn chmod(fd: impl AsFd, perms: u32) -> Result<(), Errno> {
    fchmodat(
        None,
        &resolve::proc_path(fd),
        Mode::from_bits_truncate(perms),
        FchmodatFlags::FollowSymlink,
    )
}

fn stat(fd: &OwnedFd) -> Result<FileStat, Errno> {
    fstat(fd.as_raw_fd())
}

fn file_kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn timespec(time: Option<SetTime>) -> Result<TimeSpec, Errno> {
    match time {
        None => Ok(TimeSpec::UTIME_OMIT),
        Some(SetTime::Now) => Ok(TimeSpec::UTIME_NOW),
        // The special nanosecond values UTIME_NOW/UTIME_OMIT are above this too.
        Some(SetTime::At { nanos, .. }) if nanos >= 1_000_000_000 => Err(Errno::EINVAL),
        Some(SetTime::At { secs, nanos }) => Ok(TimeSpec::new(secs, i64::from(nanos))),
    }
}

/// The kernel's 32-bit device encoding (`new_encode_dev`), which FUSE's `rdev` carries.
fn encode_dev(dev: u64) -> u32 {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn attr(st: &FileStat) -> Attr {
    let nanos = |n: i64| u32::try_from(n).unwrap_or(0);
    Attr {
        ino: st.st_ino,
        size: u64::try_from(st.st_size).unwrap_or(0),
        blocks: u64::try_from(st.st_blocks).unwrap_or(0),
        mode: st.st_mode,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_dev(st.st_rdev),
        blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
        atime: (st.st_atime, nanos(st.st_atime_nsec)),
        mtime: (st.st_mtime, nanos(st.st_mtime_nsec)),
        ctime: (st.st_ctime, nanos(st.st_ctime_nsec)),
    }
}

// The statvfs field types differ between architectures; on some the casts are no-ops.
#[allow(clippy::unnecessary_cast)]
fn statfs(st: &nix::sys::statvfs::Statvfs) -> StatFs {
    StatFs {
        blocks: st.blocks() as u64,
        blocks_free: st.blocks_free() as u64,
        blocks_available: st.blocks_available() as u64,
        files: st.files() as u64,
        files_free: st.files_free() as u64,
        block_size: u32::try_from(st.block_size()).unwrap_or(u32::MAX),
        name_len: u32::try_from(st.name_max()).unwrap_or(u32::MAX),
        fragment_size: u32::try_from(st.fragment_size()).unwrap_or(u32::MAX),
    }
}
