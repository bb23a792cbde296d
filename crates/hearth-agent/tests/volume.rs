//! A real FUSE mount served by the real handler, with a tiny fake host answering its calls from
//! a temporary directory. Needs root and /dev/fuse, hence ignored by default:
//! `cargo test -p hearth-agent --test volume -- --ignored`.

mod common;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::connect;
use hearth_agent_proto::volume::{
    Attr, DirEntry, Entry, MountRequest, StatFs, VolumeOp, VolumeReply, VolumeResult,
    MAX_VOLUME_IO, ROOT_NODE,
};
use hearth_agent_proto::{read_frame, write_frame, ErrorCode, GuestMessage, HostMessage};

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests mount a real FUSE filesystem (modprobe fuse)"
    );
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "these tests mount a real FUSE filesystem and must run as root"
    );
}

fn mounted(target: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = target.to_str().unwrap();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(target))
}

/// Waits (bounded) for `check`, which the agent's teardown makes true asynchronously.
fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// The fake host: answers calls from `root` on the host side of the channel.
struct FakeHost {
    nodes: HashMap<u64, PathBuf>,
    next_node: u64,
    files: HashMap<u64, File>,
    dirs: HashMap<u64, Vec<DirEntry>>,
    next_handle: u64,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn attr_of(meta: &fs::Metadata) -> Attr {
    Attr {
        ino: meta.ino(),
        size: meta.size(),
        blocks: meta.blocks(),
        mode: meta.mode(),
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        atime: (meta.atime(), meta.atime_nsec() as u32),
        mtime: (meta.mtime(), meta.mtime_nsec() as u32),
        ctime: (meta.ctime(), meta.ctime_nsec() as u32),
    }
}

impl FakeHost {
    fn new(root: &Path) -> Self {
        FakeHost {
            nodes: HashMap::from([(ROOT_NODE, root.to_owned())]),
            next_node: ROOT_NODE + 1,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_handle: 1,
        }
    }

    fn path(&self, node: u64) -> Result<PathBuf, i32> {
        self.nodes.get(&node).cloned().ok_or(libc::ESTALE)
    }

    fn child(&self, parent: u64, name: &[u8]) -> Result<PathBuf, i32> {
        Ok(self.path(parent)?.join(std::ffi::OsStr::from_bytes(name)))
    }

    fn entry(&mut self, path: PathBuf) -> VolumeResult {
        let meta = fs::symlink_metadata(&path).map_err(|e| errno(&e))?;
        let node = match self.nodes.iter().find(|(_, p)| **p == path) {
            Some((node, _)) => *node,
            None => {
                let node = self.next_node;
                self.next_node += 1;
                self.nodes.insert(node, path);
                node
            }
        };
        Ok(VolumeReply::Entry(Entry {
            node,
            attr: attr_of(&meta),
        }))
    }

    fn handle(&mut self) -> u64 {
        self.next_handle += 1;
        self.next_handle
    }

    fn answer(&mut self, op: VolumeOp) -> Option<VolumeResult> {
        let result = match op {
            VolumeOp::Forget { .. } | VolumeOp::Release { .. } => {
                if let VolumeOp::Release { handle } = op {
                    self.files.remove(&handle);
                    self.dirs.remove(&handle);
                }
                return None;
            }
            VolumeOp::Lookup { parent, name } => {
                self.child(parent, &name).and_then(|p| self.entry(p))
            }
            VolumeOp::GetAttr { node } => self.path(node).and_then(|p| {
                let meta = fs::symlink_metadata(p).map_err(|e| errno(&e))?;
                Ok(VolumeReply::Attr(attr_of(&meta)))
            }),
            VolumeOp::SetAttr {
                node, mode, size, ..
            } => self.path(node).and_then(|p| {
                if let Some(mode) = mode {
                    fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
                        .map_err(|e| errno(&e))?;
                }
                if let Some(size) = size {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .map_err(|e| errno(&e))?;
                    file.set_len(size).map_err(|e| errno(&e))?;
                }
                let meta = fs::symlink_metadata(p).map_err(|e| errno(&e))?;
                Ok(VolumeReply::Attr(attr_of(&meta)))
            }),
            VolumeOp::Mkdir {
                parent, name, mode, ..
            } => self.child(parent, &name).and_then(|p| {
                fs::create_dir(&p).map_err(|e| errno(&e))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| errno(&e))?;
                self.entry(p)
            }),
            VolumeOp::Unlink { parent, name } => self
                .child(parent, &name)
                .and_then(|p| fs::remove_file(p).map_err(|e| errno(&e)))
                .map(|()| VolumeReply::Empty),
            VolumeOp::Rmdir { parent, name } => self
                .child(parent, &name)
                .and_then(|p| fs::remove_dir(p).map_err(|e| errno(&e)))
                .map(|()| VolumeReply::Empty),
            VolumeOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                ..
            } => (|| {
                let from = self.child(parent, &name)?;
                let to = self.child(new_parent, &new_name)?;
                fs::rename(&from, &to).map_err(|e| errno(&e))?;
                for path in self.nodes.values_mut() {
                    if *path == from {
                        *path = to.clone();
                    }
                }
                Ok(VolumeReply::Empty)
            })(),
            VolumeOp::Open { node, flags } => self.path(node).and_then(|p| {
                let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
                let file = OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(p)
                    .map_err(|e| errno(&e))?;
                let handle = self.handle();
                self.files.insert(handle, file);
                Ok(VolumeReply::Opened(handle))
            }),
            VolumeOp::Create {
                parent, name, mode, ..
            } => self.child(parent, &name).and_then(|p| {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .map_err(|e| errno(&e))?;
                file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| errno(&e))?;
                let handle = self.handle();
                self.files.insert(handle, file);
                match self.entry(p)? {
                    VolumeReply::Entry(entry) => Ok(VolumeReply::Created { entry, handle }),
                    _ => Err(libc::EIO),
                }
            }),
            VolumeOp::Read {
                handle,
                offset,
                size,
            } => match self.files.get(&handle) {
                Some(file) => {
                    assert!(size <= MAX_VOLUME_IO, "read of {size} bytes");
                    let mut buf = vec![0; size as usize];
                    let n = file.read_at(&mut buf, offset).map_err(|e| errno(&e));
                    n.map(|n| {
                        buf.truncate(n);
                        VolumeReply::Data(buf)
                    })
                }
                None => Err(libc::EBADF),
            },
            VolumeOp::Write {
                handle,
                offset,
                data,
            } => match self.files.get(&handle) {
                Some(_) if data.len() > MAX_VOLUME_IO as usize => {
                    panic!("write of {} bytes", data.len())
                }
                Some(file) => file
                    .write_all_at(&data, offset)
                    .map(|()| VolumeReply::Written(data.len() as u32))
                    .map_err(|e| errno(&e)),
                None => Err(libc::EBADF),
            },
            VolumeOp::Fsync { .. } => Ok(VolumeReply::Empty),
            VolumeOp::OpenDir { node } => self.path(node).and_then(|p| {
                let mut entries = Vec::new();
                for (i, entry) in fs::read_dir(p).map_err(|e| errno(&e))?.enumerate() {
                    let entry = entry.map_err(|e| errno(&e))?;
                    let meta = entry.metadata().map_err(|e| errno(&e))?;
                    entries.push(DirEntry {
                        ino: meta.ino(),
                        offset: i as u64 + 1,
                        kind: meta.mode() & libc::S_IFMT,
                        name: entry.file_name().as_bytes().to_vec(),
                    });
                }
                let handle = self.handle();
                self.dirs.insert(handle, entries);
                Ok(VolumeReply::Opened(handle))
            }),
            VolumeOp::ReadDir { handle, offset } => match self.dirs.get(&handle) {
                Some(entries) => Ok(VolumeReply::Entries(
                    entries.iter().skip(offset as usize).cloned().collect(),
                )),
                None => Err(libc::EBADF),
            },
            VolumeOp::StatFs => Ok(VolumeReply::StatFs(StatFs {
                blocks: 1000,
                blocks_free: 500,
                blocks_available: 400,
                files: 100,
                files_free: 50,
                block_size: 4096,
                name_len: 255,
                fragment_size: 4096,
            })),
            VolumeOp::ReadLink { .. }
            | VolumeOp::Mknod { .. }
            | VolumeOp::Symlink { .. }
            | VolumeOp::Link { .. } => Err(libc::ENOSYS),
        };
        Some(result)
    }
}

/// Mounts `host_dir` at `target` through the real handler; returns the host's stream.
fn mount(target: &Path, read_only: bool) -> (UnixStream, common::Host) {
    let mut host = connect();
    host.hello();
    host.send(&HostMessage::Mount(MountRequest {
        target: target.to_str().unwrap().to_owned(),
        read_only,
        source: "test-volume".to_owned(),
    }));
    match host.recv() {
        Some(GuestMessage::Done) => {}
        other => panic!("expected Done, got {other:?}"),
    }
    let stream = host.stream.try_clone().unwrap();
    (stream, host)
}

/// Serves calls until the channel ends or `stop` says so (then drops the stream).
fn serve(mut stream: UnixStream, host_dir: PathBuf, stop: mpsc::Receiver<()>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut fake = FakeHost::new(&host_dir);
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = Vec::new();
        loop {
            if stop.try_recv().is_ok() {
                return;
            }
            let mut chunk = [0; 64 * 1024];
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
            while let Some((message, used)) =
                hearth_agent_proto::decode_frame::<GuestMessage>(&buf).unwrap()
            {
                buf.drain(..used);
                let GuestMessage::VolumeCall { id, op } = message else {
                    panic!("expected a call, got {message:?}");
                };
                if let Some(result) = fake.answer(op) {
                    write_frame(&mut stream, &HostMessage::VolumeReply { id, result }).unwrap();
                }
            }
        }
    })
}

#[test]
#[ignore = "needs root and /dev/fuse: mounts a real FUSE filesystem"]
fn test_volume_serves_a_host_directory_and_detaches_when_the_host_closes() {
    require_fuse();
    let host_dir = tempfile::tempdir().unwrap();
    let guest_dir = tempfile::tempdir().unwrap();
    fs::write(host_dir.path().join("hello.txt"), b"from the host\n").unwrap();
    fs::create_dir(host_dir.path().join("sub")).unwrap();
    let target = guest_dir.path().join("mnt/data");

    let (stream, host) = mount(&target, false);
    let (stop_tx, stop) = mpsc::channel();
    let server = serve(stream, host_dir.path().to_owned(), stop);
    assert!(mounted(&target), "the mount is not in mountinfo");

    // Reads, listings and metadata come from the host directory.
    assert_eq!(
        fs::read_to_string(target.join("hello.txt")).unwrap(),
        "from the host\n"
    );
    let mut names: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["hello.txt", "sub"]);
    assert!(fs::metadata(target.join("sub")).unwrap().is_dir());
    assert_eq!(
        fs::metadata(target.join("missing")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    // A file the host makes after a failed lookup is seen (negative lookups are not cached).
    fs::write(host_dir.path().join("missing"), b"now here").unwrap();
    assert_eq!(fs::read(target.join("missing")).unwrap(), b"now here");

    // Writes land on the host, larger than one call.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(target.join("big.bin"), &big).unwrap();
    assert_eq!(fs::read(host_dir.path().join("big.bin")).unwrap(), big);
    assert_eq!(fs::read(target.join("big.bin")).unwrap(), big);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target.join("big.bin"))
        .unwrap();
    file.set_len(10).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut head = Vec::new();
    file.read_to_end(&mut head).unwrap();
    assert_eq!(head, &big[..10]);
    file.write_all(b"!").unwrap();
    drop(file);

    fs::create_dir(target.join("made")).unwrap();
    assert!(host_dir.path().join("made").is_dir());
    fs::rename(target.join("made"), target.join("renamed")).unwrap();
    assert!(host_dir.path().join("renamed").is_dir());
    fs::remove_dir(target.join("renamed")).unwrap();
    fs::remove_file(target.join("missing")).unwrap();
    assert!(!host_dir.path().join("missing").exists());
    fs::set_permissions(target.join("hello.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(host_dir.path().join("hello.txt"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    let statfs = nix::sys::statfs::statfs(&target).unwrap();
    assert_eq!(statfs.blocks(), 1000);

    // A file held open while the host goes away: I/O fails instead of hanging.
    let held = File::open(target.join("hello.txt")).unwrap();
    stop_tx.send(()).unwrap();
    server.join().unwrap();
    host.stream.shutdown(std::net::Shutdown::Both).unwrap();
    host.finish();
    let mut buf = [0; 4];
    assert!(held.read_at(&mut buf, 0).is_err());
    drop(held);
    eventually("the mount to be detached", || !mounted(&target));
}

#[test]
#[ignore = "needs root and /dev/fuse: mounts a real FUSE filesystem"]
fn test_volume_call_pending_when_the_host_leaves_fails_with_eio() {
    require_fuse();
    let guest_dir = tempfile::tempdir().unwrap();
    let target = guest_dir.path().join("mnt");
    let (mut stream, host) = mount(&target, true);

    let stat_target = target.join("anything");
    let guest = std::thread::spawn(move || fs::metadata(stat_target));
    // The call arrives; the host leaves without answering it.
    match read_frame::<GuestMessage, _>(&mut stream).unwrap() {
        Some(GuestMessage::VolumeCall { .. }) => {}
        other => panic!("expected a call, got {other:?}"),
    }
    drop(stream);
    host.stream.shutdown(std::net::Shutdown::Both).unwrap();
    let error = guest.join().unwrap().unwrap_err();
    assert!(
        matches!(error.raw_os_error(), Some(libc::EIO | libc::ENOTCONN)),
        "unexpected error {error}"
    );
    host.finish();
    eventually("the mount to be detached", || !mounted(&target));
}

#[test]
#[ignore = "needs root and /dev/fuse: mounts a real FUSE filesystem"]
fn test_volume_unmounted_in_the_guest_closes_the_channel() {
    require_fuse();
    let host_dir = tempfile::tempdir().unwrap();
    let guest_dir = tempfile::tempdir().unwrap();
    let target = guest_dir.path().join("mnt");
    let (mut stream, host) = mount(&target, false);
    nix::mount::umount(&target).unwrap();
    // The agent closes the channel: end of file, with no further calls that need an answer.
    loop {
        match read_frame::<GuestMessage, _>(&mut stream).unwrap() {
            None => break,
            Some(GuestMessage::VolumeCall { op, .. }) => {
                assert!(matches!(op, VolumeOp::Forget { .. }), "unexpected {op:?}");
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    host.finish();
    assert!(!mounted(&target));
    drop(host_dir);
}

#[test]
fn test_volume_target_that_is_a_file_is_refused() {
    let guest_dir = tempfile::tempdir().unwrap();
    let target = guest_dir.path().join("file");
    fs::write(&target, b"x").unwrap();
    let mut host = connect();
    host.hello();
    host.send(&HostMessage::Mount(MountRequest {
        target: target.to_str().unwrap().to_owned(),
        read_only: false,
        source: "v".to_owned(),
    }));
    match host.recv() {
        Some(GuestMessage::Error(e)) => assert_eq!(e.code, ErrorCode::NotADirectory),
        other => panic!("expected an error, got {other:?}"),
    }
    host.finish();
}
