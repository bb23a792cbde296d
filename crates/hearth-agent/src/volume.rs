//! A host directory mounted in the guest (see `hearth_agent_proto::volume`): a FUSE filesystem
//! whose every request travels to the host as a `VolumeCall` and comes back as a `VolumeReply`.
//!
//! Threads of one mount:
//! - the channel's handler thread mounts, answers `Done`, then reads the host's replies and
//!   completes the FUSE request each one answers;
//! - fuser's dispatch thread (under a `volume-fuse` thread that runs the session) turns each
//!   kernel request into a call: it parks the request's reply object in [`Pending`], writes the
//!   call frame and returns at once, so slow host answers never stall other requests.
//!
//! Ending: when the host closes the channel (or it breaks), every parked request is answered
//! `EIO`, later ones are answered `EIO` on the spot, the FUSE connection is aborted through
//! fusectl and the mount detached, so no guest program hangs on it and fuser's blocked read
//! of `/dev/fuse` returns. When the guest unmounts it instead, the session ends by itself and its
//! thread shuts the channel down, which the handler reads as end of file and the host as a
//! close.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, Session,
    SessionACL, TimeOrNow, WriteFlags,
};
use hearth_agent_proto::volume::{
    Attr, DirEntry, MountRequest, NodeId, SetTime, StatFs, VolumeOp, VolumeReply, VolumeResult,
    MAX_NAME_LEN, MAX_VOLUME_IO,
};
use hearth_agent_proto::{
    read_frame, write_frame, ErrorCode, FrameError, GuestMessage, HostMessage, RemoteError,
};
use nix::mount::{MntFlags, MsFlags};

use crate::connection::{kind, shut_down, Connection};

/// How long the kernel may cache an entry or attributes before asking again: short, since the
/// host's directory can change under the guest at any time.
const TTL: Duration = Duration::from_secs(1);

/// Requests waiting for the host at once; more are refused with `EAGAIN` rather than held
/// without bound.
const MAX_PENDING: usize = 4096;

/// Longest symlink target the kernel accepts in a readlink reply (a page less the NUL).
const MAX_LINK_LEN: usize = 4095;

/// How long ending a mount waits for its FUSE session to stop after the connection was aborted
/// (or the mount detached) before leaving the thread to finish on its own.
const SESSION_STOP_WAIT: Duration = Duration::from_secs(2);

const DEV_FUSE: &str = "/dev/fuse";
const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("failed to send a reply to the host")]
    Reply(#[source] FrameError),
    #[error("failed to duplicate the connection")]
    Duplicate(#[source] io::Error),
}

/// Why a mount could not be set up; told to the host as an `Error`.
#[derive(Debug, thiserror::Error)]
enum MountError {
    #[error("mount target `{0}` is not an absolute path")]
    NotAbsolute(String),
    #[error("refusing to mount over the root directory (`{0}`)")]
    Root(String),
    #[error("mount target `{0}` exists and is not a directory")]
    NotADirectory(String),
    #[error("failed to create the mount target `{path}`")]
    CreateTarget {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the guest kernel has no FUSE support ({DEV_FUSE} is missing; the fuse module is not loaded)")]
    NoFuse,
    #[error("failed to open {DEV_FUSE}")]
    OpenDevice(#[source] io::Error),
    #[error("failed to mount the FUSE filesystem at `{path}`")]
    Mount {
        path: String,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("the FUSE handshake with the guest kernel failed")]
    Handshake(#[source] io::Error),
}

impl MountError {
    fn to_remote(&self) -> RemoteError {
        let code = match self {
            MountError::NotAbsolute(_) | MountError::Root(_) => ErrorCode::BadRequest,
            MountError::NotADirectory(_) => ErrorCode::NotADirectory,
            MountError::CreateTarget { source, .. } => crate::fs::error_code(source),
            MountError::Mount { source, .. } => match source {
                nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => ErrorCode::PermissionDenied,
                nix::errno::Errno::ENOENT => ErrorCode::NotFound,
                nix::errno::Errno::ENOTDIR => ErrorCode::NotADirectory,
                _ => ErrorCode::Internal,
            },
            MountError::NoFuse | MountError::OpenDevice(_) | MountError::Handshake(_) => {
                ErrorCode::Internal
            }
        };
        RemoteError {
            code,
            chain: crate::log::chain(self),
        }
    }
}

/// Mounts what `request` asks for, answers `Done` (or the `Error` that stopped it), then serves
/// the mount until either side ends it. Only a broken connection before `Done` is an error here.
pub fn run<C: Connection>(
    reader: &mut BufReader<C>,
    mut writer: C,
    request: &MountRequest,
) -> Result<(), VolumeError> {
    // Kept to shut the channel down when the guest ends the mount, waking this thread's read.
    let wake = writer
        .as_fd()
        .try_clone_to_owned()
        .map_err(VolumeError::Duplicate)?;
    let target = match prepare_target(&request.target) {
        Ok(target) => target,
        Err(e) => return refuse(&mut writer, &request.target, &e),
    };
    let device = match open_device() {
        Ok(device) => device,
        Err(e) => return refuse(&mut writer, &request.target, &e),
    };
    let shared = Arc::new(Shared {
        writer: Mutex::new(writer),
        pending: Mutex::new(Pending::new(MAX_PENDING)),
        send_failed: AtomicBool::new(false),
    });
    let mount = match Mounted::mount(device, &target, request, &shared) {
        Ok(mount) => mount,
        Err(e) => {
            let mut writer = lock(&shared.writer);
            return refuse(&mut *writer, &request.target, &e);
        }
    };
    // Done goes out before the session runs, so no call can overtake it.
    if let Err(e) = write_frame(&mut *lock(&shared.writer), &GuestMessage::Done) {
        mount.detach();
        return Err(VolumeError::Reply(e));
    }
    log!(
        "volume: mounted {} at {}{}",
        request.source,
        target.display(),
        if request.read_only {
            " (read-only)"
        } else {
            ""
        }
    );
    let running = mount.serve(wake);
    serve_replies(reader, &shared);
    // The host is gone or closed the channel (or the guest unmounted and we shut it down).
    let unanswered = lock(&shared.pending).close();
    for waiter in unanswered {
        waiter.fail(Errno::EIO);
    }
    running.stop();
    log!("volume: {} at {} ended", request.source, target.display());
    Ok(())
}

fn refuse<W: Write>(writer: &mut W, target: &str, e: &MountError) -> Result<(), VolumeError> {
    log!(
        "volume: mounting at {target} failed: {}",
        crate::log::one_line(e)
    );
    write_frame(writer, &GuestMessage::Error(e.to_remote())).map_err(VolumeError::Reply)
}

/// Checks the target and creates it (with its parents) when missing; returns it with symlinks
/// resolved, which is the path the kernel's mount table shows.
fn prepare_target(target: &str) -> Result<PathBuf, MountError> {
    let path = Path::new(target);
    if !path.is_absolute() {
        return Err(MountError::NotAbsolute(target.to_owned()));
    }
    if !path.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(MountError::Root(target.to_owned()));
    }
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(MountError::NotADirectory(target.to_owned())),
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|source| MountError::CreateTarget {
                path: target.to_owned(),
                source,
            })?,
    }
    let canonical = fs::canonicalize(path).map_err(|source| MountError::CreateTarget {
        path: target.to_owned(),
        source,
    })?;
    if canonical.parent().is_none() {
        return Err(MountError::Root(target.to_owned()));
    }
    Ok(canonical)
}

fn open_device() -> Result<File, MountError> {
    // Rust opens with O_CLOEXEC, so processes the agent spawns never hold the connection.
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV_FUSE)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => MountError::NoFuse,
            _ => MountError::OpenDevice(e),
        })
}

/// The mount's kernel options: the connection's fd, a directory root (its real attributes come
/// from the host), the kernel checking permissions from the attributes we return, everyone
/// allowed in (guest programs run as any user), and reads no larger than one call carries.
fn mount_data(fd: i32) -> String {
    format!(
        "fd={fd},rootmode={:o},user_id=0,group_id=0,default_permissions,allow_other,\
         max_read={MAX_VOLUME_IO},subtype=hearth",
        libc::S_IFDIR | 0o755
    )
}

fn mount_flags(read_only: bool) -> MsFlags {
    let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOATIME;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    flags
}

/// A mounted, handshaken FUSE filesystem that is not served yet.
struct Mounted<C: Connection> {
    session: Session<VolumeFs<C>>,
    target: PathBuf,
    /// The mount's device (`major:minor`), which names its fusectl directory and tells our
    /// mount from whatever may later be mounted at the same path.
    device: Option<(u64, u64)>,
}

impl<C: Connection> Mounted<C> {
    /// Mounts with mount(2) ourselves rather than through fuser's `Session::new`: its unmount
    /// goes by path (racing with a later mount at the same target), is not lazy, and falls back
    /// to a `fusermount` binary no image has. The fuser session then just wraps the fd.
    fn mount(
        device: File,
        target: &Path,
        request: &MountRequest,
        shared: &Arc<Shared<C>>,
    ) -> Result<Self, MountError> {
        nix::mount::mount(
            Some(request.source.as_str()),
            target,
            Some("fuse"),
            mount_flags(request.read_only),
            Some(mount_data(device.as_raw_fd()).as_str()),
        )
        .map_err(|source| match source {
            // The filesystem type is unknown: FUSE is not in this kernel.
            nix::errno::Errno::ENODEV => MountError::NoFuse,
            source => MountError::Mount {
                path: target.display().to_string(),
                source,
            },
        })?;
        let mount_device = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|info| mount_device(&info, target));
        if mount_device.is_none() {
            log!(
                "volume: {} is missing from /proc/self/mountinfo",
                target.display()
            );
        }
        let filesystem = VolumeFs {
            shared: Arc::clone(shared),
        };
        // The handshake reads the kernel's INIT, queued by the mount; answering it lets
        // requests flow. A failed handshake drops the fd, which aborts the connection.
        let session = Session::from_fd(
            filesystem,
            OwnedFd::from(device),
            SessionACL::All,
            Config::default(),
        );
        let mounted = Mounted {
            session: match session {
                Ok(session) => session,
                Err(e) => {
                    detach(target, mount_device);
                    return Err(MountError::Handshake(e));
                }
            },
            target: target.to_owned(),
            device: mount_device,
        };
        ensure_fusectl(mounted.device);
        Ok(mounted)
    }

    fn detach(self) {
        // Dropping the session closes the connection's only fd, which aborts it.
        drop(self.session);
        detach(&self.target, self.device);
    }

    /// Runs the session on its own thread. When the session ends (the guest unmounted it, or
    /// the connection was aborted) the channel is shut down so the handler's read ends.
    fn serve(self, wake: OwnedFd) -> Running {
        let ended = Arc::new(AtomicBool::new(false));
        let (stopped_tx, stopped) = mpsc::channel();
        let session_ended = Arc::clone(&ended);
        let Mounted {
            session,
            target,
            device,
        } = self;
        let shown = target.display().to_string();
        let wake = Arc::new(wake);
        let session_wake = Arc::clone(&wake);
        let thread = std::thread::Builder::new()
            .name("volume-fuse".to_owned())
            .spawn(move || {
                if let Err(e) = session.run() {
                    log!("volume: the FUSE session of {shown} failed: {e}");
                }
                session_ended.store(true, Ordering::SeqCst);
                shut_down(&*session_wake);
                // The handler may have stopped waiting already.
                let _ = stopped_tx.send(());
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                // The session was moved into the closure and dropped with it, aborting the
                // connection; ending the channel now makes the handler detach the mount.
                log!("volume: failed to start the FUSE session thread: {e}");
                shut_down(&*wake);
                None
            }
        };
        Running {
            thread,
            stopped,
            ended,
            wake,
            target,
            device,
        }
    }
}

/// A served mount, for ending it.
struct Running {
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: mpsc::Receiver<()>,
    /// The session ended by itself: the mount is gone already, and the path may hold another.
    ended: Arc<AtomicBool>,
    /// The channel, to end it even while a lingering session still holds the writer.
    wake: Arc<OwnedFd>,
    target: PathBuf,
    device: Option<(u64, u64)>,
}

impl Running {
    fn stop(mut self) {
        // The host sees the channel end now, whatever still holds its fds, and a call write
        // blocked on it fails.
        shut_down(&*self.wake);
        if !self.ended.load(Ordering::SeqCst) {
            // Aborting fails every request the kernel still holds (ENOTCONN) and wakes fuser's
            // read of /dev/fuse; detaching takes the path away even while programs are in it.
            if let Some(device) = self.device {
                abort_connection(device);
            }
            detach(&self.target, self.device);
        }
        match self.stopped.recv_timeout(SESSION_STOP_WAIT) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    if thread.join().is_err() {
                        log!("volume: the FUSE session thread panicked");
                    }
                }
            }
            // Without fusectl a busy detached mount lives on until its last user leaves; the
            // session keeps answering EIO until then and its thread ends with it.
            Err(mpsc::RecvTimeoutError::Timeout) => log!(
                "volume: {} is still in use; its FUSE session ends when the last user leaves",
                self.target.display()
            ),
        }
    }
}

/// Lazily unmounts `target` if the mount there is still ours.
fn detach(target: &Path, device: Option<(u64, u64)>) {
    let ours = match (device, fs::read_to_string("/proc/self/mountinfo")) {
        (Some(device), Ok(info)) => mount_device(&info, target) == Some(device),
        // Without a way to tell, the mount we just made is the best guess.
        _ => true,
    };
    if !ours {
        return;
    }
    if let Err(e) = nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
            log!("volume: failed to detach {}: {e}", target.display());
        }
    }
}

/// Makes sure fusectl is mounted, so an ending mount can be aborted even while busy.
fn ensure_fusectl(device: Option<(u64, u64)>) {
    let Some(device) = device else { return };
    let dir = Path::new(FUSECTL_DIR);
    if dir.join(connection_name(device)).exists() || !dir.is_dir() {
        return;
    }
    if let Err(e) = nix::mount::mount(
        Some("fusectl"),
        dir,
        Some("fusectl"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        log!("volume: failed to mount fusectl at {FUSECTL_DIR}: {e}");
    }
}

fn abort_connection(device: (u64, u64)) {
    let abort = Path::new(FUSECTL_DIR)
        .join(connection_name(device))
        .join("abort");
    match fs::write(&abort, b"1") {
        Ok(()) => {}
        // Gone already: the mount was released and its connection with it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log!("volume: failed to abort {}: {e}", abort.display()),
    }
}

/// The fusectl directory of the connection on device `major:minor`: the kernel's own dev_t
/// (major in the high 12 bits over a 20-bit minor), in decimal.
fn connection_name((major, minor): (u64, u64)) -> String {
    ((major << 20) | minor).to_string()
}

/// The device of the topmost mount at `target` in a `/proc/self/mountinfo` text.
fn mount_device(mountinfo: &str, target: &Path) -> Option<(u64, u64)> {
    let target = target.as_os_str().as_bytes();
    mountinfo
        .lines()
        // Later lines are mounted on top of earlier ones.
        .rev()
        .find_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let mount_point = fields.nth(1)?;
            if unescape_mount_path(mount_point) != target {
                return None;
            }
            let (major, minor) = device.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
}

/// Undoes the kernel's octal escapes (`\040` for a space) in a mountinfo path.
fn unescape_mount_path(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let digits = bytes.get(i + 1..i + 4);
            let value = digits
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let Some(value) = value {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Reads the host's replies until the channel ends, completing the request each one answers.
fn serve_replies<C: Connection>(reader: &mut BufReader<C>, shared: &Shared<C>) {
    loop {
        let message = match read_frame(reader) {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(e) => {
                if !matches!(e, FrameError::Io(_)) {
                    log!(
                        "volume: dropping the channel after a bad frame: {}",
                        crate::log::one_line(&e)
                    );
                }
                return;
            }
        };
        match message {
            HostMessage::VolumeReply { id, result } => {
                let waiter = lock(&shared.pending).take(id);
                match waiter {
                    Some(waiter) => waiter.complete(result),
                    None => log!("volume: ignoring a reply to unknown call {id}"),
                }
            }
            other => log!("volume: ignoring unexpected {} on a mount", kind(&other)),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these leaves nothing half-updated that matters more than
    // keeping the mount answering.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the filesystem and the handler thread share.
struct Shared<C> {
    writer: Mutex<C>,
    pending: Mutex<Pending<Waiter>>,
    /// Set after the first failed call write, to log it once rather than per request.
    send_failed: AtomicBool,
}

impl<C: Connection> Shared<C> {
    /// Sends a call whose answer `waiter` waits for.
    fn call(&self, op: VolumeOp, waiter: Waiter) {
        // Not matched in place: the lock must be released before answering the kernel.
        let registered = lock(&self.pending).register(waiter);
        let id = match registered {
            Ok(id) => id,
            Err((waiter, refusal)) => return waiter.fail(refusal.errno()),
        };
        if !self.send(id, op) {
            // Unless ending the mount answered it meanwhile.
            if let Some(waiter) = lock(&self.pending).take(id) {
                waiter.fail(Errno::EIO);
            }
        }
    }

    /// Sends a call the host does not answer.
    fn notify(&self, op: VolumeOp) {
        if let Some(id) = lock(&self.pending).next_id() {
            self.send(id, op);
        }
    }

    fn send(&self, id: u64, op: VolumeOp) -> bool {
        let message = GuestMessage::VolumeCall { id, op };
        match write_frame(&mut *lock(&self.writer), &message) {
            Ok(()) => true,
            Err(e) => {
                if !self.send_failed.swap(true, Ordering::Relaxed) {
                    log!(
                        "volume: failed to send a call to the host: {}",
                        crate::log::one_line(&e)
                    );
                }
                false
            }
        }
    }
}

/// Why a call was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The mount is ending.
    Closed,
    /// Too many calls wait already.
    Full,
}

impl Refusal {
    fn errno(self) -> Errno {
        match self {
            Refusal::Closed => Errno::EIO,
            Refusal::Full => Errno::EAGAIN,
        }
    }
}

/// The calls waiting for the host, by id; ids are never reused within a mount.
#[derive(Debug)]
struct Pending<T> {
    next_id: u64,
    closed: bool,
    limit: usize,
    waiting: HashMap<u64, T>,
}

impl<T> Pending<T> {
    fn new(limit: usize) -> Self {
        Pending {
            next_id: 1,
            closed: false,
            limit,
            waiting: HashMap::new(),
        }
    }

    /// A fresh id for a call that waits for nothing; `None` once closed.
    fn next_id(&mut self) -> Option<u64> {
        if self.closed {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(id)
    }

    fn register(&mut self, waiter: T) -> Result<u64, (T, Refusal)> {
        if self.closed {
            return Err((waiter, Refusal::Closed));
        }
        if self.waiting.len() >= self.limit {
            return Err((waiter, Refusal::Full));
        }
        let Some(id) = self.next_id() else {
            return Err((waiter, Refusal::Closed));
        };
        self.waiting.insert(id, waiter);
        Ok(id)
    }

    fn take(&mut self, id: u64) -> Option<T> {
        self.waiting.remove(&id)
    }

    /// Refuses every later call and hands back those still waiting.
    fn close(&mut self) -> Vec<T> {
        self.closed = true;
        self.waiting.drain().map(|(_, waiter)| waiter).collect()
    }
}

/// The answer a call expects, to check the host's reply against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// An entry (lookup, mkdir, mknod, symlink, link).
    Entry,
    /// The attributes of `node` (getattr, setattr).
    Attr {
        node: NodeId,
    },
    /// At most `limit` bytes (read, readlink).
    Data {
        limit: usize,
    },
    /// A count of at most `len` bytes written.
    Written {
        len: u32,
    },
    Opened,
    Created,
    Entries,
    StatFs,
    Empty,
}

/// A host reply checked and converted for the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Entry(FileAttr),
    Attr(FileAttr),
    Data(Vec<u8>),
    Written(u32),
    Opened(u64),
    Created { attr: FileAttr, handle: u64 },
    Entries(Vec<ListEntry>),
    StatFs(StatFs),
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ListEntry {
    ino: u64,
    offset: u64,
    kind: FileType,
    name: OsString,
}

/// Checks a reply against what the call expects: a reply of another shape, or one the kernel
/// would reject anyway (bad file type, oversized data), is `EIO`.
fn answer(expect: Expect, result: VolumeResult) -> Result<Answer, Errno> {
    let reply = result.map_err(Errno::from_i32)?;
    let answer = match (expect, reply) {
        (Expect::Entry, VolumeReply::Entry(entry)) if entry.node != 0 => {
            Answer::Entry(file_attr(entry.node, &entry.attr)?)
        }
        (Expect::Attr { node }, VolumeReply::Attr(attr)) => Answer::Attr(file_attr(node, &attr)?),
        (Expect::Data { limit }, VolumeReply::Data(data)) if data.len() <= limit => {
            Answer::Data(data)
        }
        (Expect::Written { len }, VolumeReply::Written(written)) if written <= len => {
            Answer::Written(written)
        }
        (Expect::Opened, VolumeReply::Opened(handle)) => Answer::Opened(handle),
        (Expect::Created, VolumeReply::Created { entry, handle }) if entry.node != 0 => {
            Answer::Created {
                attr: file_attr(entry.node, &entry.attr)?,
                handle,
            }
        }
        (Expect::Entries, VolumeReply::Entries(entries)) => Answer::Entries(
            entries
                .into_iter()
                .map(list_entry)
                .collect::<Result<_, _>>()?,
        ),
        (Expect::StatFs, VolumeReply::StatFs(statfs)) => Answer::StatFs(statfs),
        (Expect::Empty, VolumeReply::Empty) => Answer::Empty,
        (expect, reply) => {
            log!(
                "volume: the host answered {} to a call expecting {expect:?}",
                reply_kind(&reply)
            );
            return Err(Errno::EIO);
        }
    };
    Ok(answer)
}

fn reply_kind(reply: &VolumeReply) -> &'static str {
    match reply {
        VolumeReply::Entry(_) => "Entry",
        VolumeReply::Attr(_) => "Attr",
        VolumeReply::Data(_) => "Data",
        VolumeReply::Written(_) => "Written",
        VolumeReply::Opened(_) => "Opened",
        VolumeReply::Created { .. } => "Created",
        VolumeReply::Entries(_) => "Entries",
        VolumeReply::StatFs(_) => "StatFs",
        VolumeReply::Empty => "Empty",
    }
}

fn list_entry(entry: DirEntry) -> Result<ListEntry, Errno> {
    let valid_name = !entry.name.is_empty()
        && entry.name.len() <= MAX_NAME_LEN
        && !entry.name.contains(&b'/')
        && !entry.name.contains(&0);
    if !valid_name {
        log!("volume: the host listed an invalid name");
        return Err(Errno::EIO);
    }
    Ok(ListEntry {
        ino: entry.ino,
        offset: entry.offset,
        kind: file_type(entry.kind)?,
        name: OsString::from_vec(entry.name),
    })
}

/// The kernel's view of a node's attributes. fuser's replies give the kernel `ino` as both the
/// node id and `st_ino`, so the node id it is.
fn file_attr(node: NodeId, attr: &Attr) -> Result<FileAttr, Errno> {
    Ok(FileAttr {
        ino: INodeNo(node),
        size: attr.size,
        blocks: attr.blocks,
        atime: system_time(attr.atime)?,
        mtime: system_time(attr.mtime)?,
        ctime: system_time(attr.ctime)?,
        crtime: system_time(attr.ctime)?,
        kind: file_type(attr.mode)?,
        perm: u16::try_from(attr.mode & 0o7777).map_err(|_| Errno::EIO)?,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: attr.blksize,
        flags: 0,
    })
}

fn file_type(mode: u32) -> Result<FileType, Errno> {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Ok(FileType::RegularFile),
        libc::S_IFDIR => Ok(FileType::Directory),
        libc::S_IFLNK => Ok(FileType::Symlink),
        libc::S_IFIFO => Ok(FileType::NamedPipe),
        libc::S_IFSOCK => Ok(FileType::Socket),
        libc::S_IFCHR => Ok(FileType::CharDevice),
        libc::S_IFBLK => Ok(FileType::BlockDevice),
        other => {
            log!("volume: the host sent an unknown file type {other:#o}");
            Err(Errno::EIO)
        }
    }
}

fn system_time((secs, nanos): (i64, u32)) -> Result<SystemTime, Errno> {
    if nanos >= 1_000_000_000 {
        return Err(Errno::EIO);
    }
    let time = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    time.ok_or(Errno::EIO)
}

fn set_time(time: TimeOrNow) -> SetTime {
    match time {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(time) => match time.duration_since(UNIX_EPOCH) {
            Ok(since) => SetTime::At {
                secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
                nanos: since.subsec_nanos(),
            },
            Err(before) => {
                // -1.25 s is secs -2 plus 0.75 s, as timespec has it.
                let before = before.duration();
                let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                match before.subsec_nanos() {
                    0 => SetTime::At {
                        secs: -secs,
                        nanos: 0,
                    },
                    nanos => SetTime::At {
                        secs: -secs - 1,
                        nanos: 1_000_000_000 - nanos,
                    },
                }
            }
        },
    }
}

/// A FUSE request waiting for the host's answer.
enum Waiter {
    Entry(ReplyEntry),
    Attr(ReplyAttr, NodeId),
    Data(ReplyData, usize),
    Written(ReplyWrite, u32),
    Opened(ReplyOpen),
    Created(ReplyCreate),
    Entries(ReplyDirectory),
    StatFs(ReplyStatfs),
    Empty(ReplyEmpty),
}

impl Waiter {
    fn expect(&self) -> Expect {
        match self {
            Waiter::Entry(_) => Expect::Entry,
            Waiter::Attr(_, node) => Expect::Attr { node: *node },
            Waiter::Data(_, limit) => Expect::Data { limit: *limit },
            Waiter::Written(_, len) => Expect::Written { len: *len },
            Waiter::Opened(_) => Expect::Opened,
            Waiter::Created(_) => Expect::Created,
            Waiter::Entries(_) => Expect::Entries,
            Waiter::StatFs(_) => Expect::StatFs,
            Waiter::Empty(_) => Expect::Empty,
        }
    }

    fn complete(self, result: VolumeResult) {
        let answer = match answer(self.expect(), result) {
            Ok(answer) => answer,
            Err(errno) => return self.fail(errno),
        };
        // No FOPEN_KEEP_CACHE: each open drops the page cache, so changes made on the host
        // show up in the guest on the next open.
        let open_flags = FopenFlags::empty();
        match (self, answer) {
            (Waiter::Entry(reply), Answer::Entry(attr)) => reply.entry(&TTL, &attr, Generation(0)),
            (Waiter::Attr(reply, _), Answer::Attr(attr)) => reply.attr(&TTL, &attr),
            (Waiter::Data(reply, _), Answer::Data(data)) => reply.data(&data),
            (Waiter::Written(reply, _), Answer::Written(written)) => reply.written(written),
            (Waiter::Opened(reply), Answer::Opened(handle)) => {
                reply.opened(FileHandle(handle), open_flags);
            }
            (Waiter::Created(reply), Answer::Created { attr, handle }) => {
                reply.created(&TTL, &attr, Generation(0), FileHandle(handle), open_flags);
            }
            (Waiter::Entries(mut reply), Answer::Entries(entries)) => {
                for entry in entries {
                    // Full: the kernel asks again from the last offset it got.
                    if reply.add(INodeNo(entry.ino), entry.offset, entry.kind, &entry.name) {
                        break;
                    }
                }
                reply.ok();
            }
            (Waiter::StatFs(reply), Answer::StatFs(s)) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_available,
                s.files,
                s.files_free,
                s.block_size,
                s.name_len,
                s.fragment_size,
            ),
            (Waiter::Empty(reply), Answer::Empty) => reply.ok(),
            // `answer` only gives what the waiter expects.
            (waiter, _) => waiter.fail(Errno::EIO),
        }
    }

    fn fail(self, errno: Errno) {
        match self {
            Waiter::Entry(reply) => reply.error(errno),
            Waiter::Attr(reply, _) => reply.error(errno),
            Waiter::Data(reply, _) => reply.error(errno),
            Waiter::Written(reply, _) => reply.error(errno),
            Waiter::Opened(reply) => reply.error(errno),
            Waiter::Created(reply) => reply.error(errno),
            Waiter::Entries(reply) => reply.error(errno),
            Waiter::StatFs(reply) => reply.error(errno),
            Waiter::Empty(reply) => reply.error(errno),
        }
    }
}

/// The filesystem fuser dispatches to: every request is a call to the host, except the few
/// the guest can answer itself.
struct VolumeFs<C> {
    shared: Arc<Shared<C>>,
}

fn name(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

impl<C: Connection> Filesystem for VolumeFs<C> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // One write is one call, so it must fit one; the kernel caps readahead at what it
        // offered.
        if let Err(max) = config.set_max_write(MAX_VOLUME_IO) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_VOLUME_IO) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name_: &OsStr, reply: ReplyEntry) {
        // A missing name is answered ENOENT, which the kernel does not cache, so a file the
        // host creates later is found.
        let op = VolumeOp::Lookup {
            parent: parent.0,
            name: name(name_),
        };
        self.shared.call(op, Waiter::Entry(reply));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // fuser's default batch_forget lands here once per node.
        self.shared.notify(VolumeOp::Forget {
            node: ino.0,
            count: nlookup,
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.shared.call(
            VolumeOp::GetAttr { node: ino.0 },
            Waiter::Attr(reply, ino.0),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Ownership is the host's to decide: a chown is sent as a change of nothing, so it
        // "succeeds" and the guest sees the owner unchanged.
        let op = VolumeOp::SetAttr {
            node: ino.0,
            handle: fh.map(|fh| fh.0),
            mode,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
        };
        self.shared.call(op, Waiter::Attr(reply, ino.0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.shared.call(
            VolumeOp::ReadLink { node: ino.0 },
            Waiter::Data(reply, MAX_LINK_LEN),
        );
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let op = VolumeOp::Mknod {
            parent: parent.0,
            name: name(name_),
            mode,
            umask,
        };
        self.shared.call(op, Waiter::Entry(reply));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let op = VolumeOp::Mkdir {
            parent: parent.0,
            name: name(name_),
            mode,
            umask,
        };
        self.shared.call(op, Waiter::Entry(reply));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name_: &OsStr, reply: ReplyEmpty) {
        let op = VolumeOp::Unlink {
            parent: parent.0,
            name: name(name_),
        };
        self.shared.call(op, Waiter::Empty(reply));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name_: &OsStr, reply: ReplyEmpty) {
        let op = VolumeOp::Rmdir {
            parent: parent.0,
            name: name(name_),
        };
        self.shared.call(op, Waiter::Empty(reply));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let op = VolumeOp::Symlink {
            parent: parent.0,
            name: name(link_name),
            target: target.as_os_str().as_bytes().to_vec(),
        };
        self.shared.call(op, Waiter::Entry(reply));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let op = VolumeOp::Rename {
            parent: parent.0,
            name: name(name_),
            new_parent: newparent.0,
            new_name: name(newname),
            flags: flags.bits(),
        };
        self.shared.call(op, Waiter::Empty(reply));
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let op = VolumeOp::Link {
            node: ino.0,
            new_parent: newparent.0,
            new_name: name(newname),
        };
        self.shared.call(op, Waiter::Entry(reply));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let op = VolumeOp::Open {
            node: ino.0,
            flags: flags.0,
        };
        self.shared.call(op, Waiter::Opened(reply));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The mount's max_read keeps the kernel's requests within this already.
        let size = size.min(MAX_VOLUME_IO);
        let op = VolumeOp::Read {
            handle: fh.0,
            offset,
            size,
        };
        self.shared.call(op, Waiter::Data(reply, size as usize));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // max_write bounds `data` to one call's worth.
        let Ok(len) = u32::try_from(data.len()) else {
            return reply.error(Errno::EIO);
        };
        let op = VolumeOp::Write {
            handle: fh.0,
            offset,
            data: data.to_vec(),
        };
        self.shared.call(op, Waiter::Written(reply, len));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes reach the host as they happen (no writeback cache), so there is nothing to
        // flush on close.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // close() never sees release's result, so nobody waits for the host.
        self.shared.notify(VolumeOp::Release { handle: fh.0 });
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = VolumeOp::Fsync {
            handle: fh.0,
            datasync,
        };
        self.shared.call(op, Waiter::Empty(reply));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.shared
            .call(VolumeOp::OpenDir { node: ino.0 }, Waiter::Opened(reply));
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let op = VolumeOp::ReadDir {
            handle: fh.0,
            offset,
        };
        self.shared.call(op, Waiter::Entries(reply));
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.notify(VolumeOp::Release { handle: fh.0 });
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are made on the host as they happen; nothing is held here.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.shared.call(VolumeOp::StatFs, Waiter::StatFs(reply));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checked already (and does not even ask).
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let op = VolumeOp::Create {
            parent: parent.0,
            name: name(name_),
            mode,
            umask,
            flags,
        };
        self.shared.call(op, Waiter::Created(reply));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(mode: u32) -> Attr {
        Attr {
            ino: 77,
            size: 5,
            blocks: 8,
            mode,
            nlink: 1,
            uid: 1000,
            gid: 100,
            rdev: 0,
            blksize: 4096,
            atime: (10, 1),
            mtime: (20, 2),
            ctime: (-2, 500_000_000),
        }
    }

    #[test]
    fn test_file_attr_maps_kind_perm_and_times() {
        let converted = file_attr(9, &attr(libc::S_IFREG | 0o4755)).expect("valid attr");
        assert_eq!(converted.ino, INodeNo(9));
        assert_eq!(converted.kind, FileType::RegularFile);
        assert_eq!(converted.perm, 0o4755);
        assert_eq!(converted.size, 5);
        assert_eq!((converted.uid, converted.gid), (1000, 100));
        assert_eq!(converted.mtime, UNIX_EPOCH + Duration::new(20, 2));
        assert_eq!(
            converted.ctime,
            UNIX_EPOCH - Duration::from_secs(2) + Duration::from_millis(500)
        );
        let dir = file_attr(9, &attr(libc::S_IFDIR | 0o755)).expect("valid attr");
        assert_eq!(dir.kind, FileType::Directory);
        let link = file_attr(9, &attr(libc::S_IFLNK | 0o777)).expect("valid attr");
        assert_eq!(link.kind, FileType::Symlink);
    }

    #[test]
    fn test_file_attr_rejects_unknown_type_and_bad_nanos() {
        assert_eq!(file_attr(9, &attr(0o644)), Err(Errno::EIO));
        let mut bad = attr(libc::S_IFREG | 0o644);
        bad.atime = (1, 1_000_000_000);
        assert_eq!(file_attr(9, &bad), Err(Errno::EIO));
    }

    #[test]
    fn test_set_time_round_trips_before_and_after_the_epoch() {
        let after = UNIX_EPOCH + Duration::new(5, 7);
        assert_eq!(
            set_time(TimeOrNow::SpecificTime(after)),
            SetTime::At { secs: 5, nanos: 7 }
        );
        let before = UNIX_EPOCH - Duration::from_millis(1250);
        assert_eq!(
            set_time(TimeOrNow::SpecificTime(before)),
            SetTime::At {
                secs: -2,
                nanos: 750_000_000
            }
        );
        assert_eq!(system_time((-2, 750_000_000)), Ok(before));
        assert_eq!(set_time(TimeOrNow::Now), SetTime::Now);
    }

    #[test]
    fn test_pending_ids_are_unique_and_taken_once() {
        let mut pending = Pending::new(8);
        let a = pending.register("a").expect("room");
        let forget = pending.next_id().expect("open");
        let b = pending.register("b").expect("room");
        assert!(a != b && a != forget && b != forget);
        assert_eq!(pending.take(b), Some("b"));
        assert_eq!(pending.take(b), None);
        assert_eq!(pending.take(a), Some("a"));
    }

    #[test]
    fn test_pending_refuses_beyond_its_limit() {
        let mut pending = Pending::new(2);
        pending.register(1).expect("room");
        let second = pending.register(2).expect("room");
        assert_eq!(pending.register(3), Err((3, Refusal::Full)));
        pending.take(second);
        pending.register(4).expect("room again");
        assert_eq!(Refusal::Full.errno(), Errno::EAGAIN);
    }

    #[test]
    fn test_pending_close_hands_back_waiters_and_refuses_more() {
        let mut pending = Pending::new(8);
        pending.register(1).expect("room");
        pending.register(2).expect("room");
        let mut left = pending.close();
        left.sort_unstable();
        assert_eq!(left, vec![1, 2]);
        assert_eq!(pending.register(3), Err((3, Refusal::Closed)));
        assert_eq!(pending.next_id(), None);
        assert_eq!(Refusal::Closed.errno(), Errno::EIO);
    }

    fn entry(node: NodeId) -> hearth_agent_proto::volume::Entry {
        hearth_agent_proto::volume::Entry {
            node,
            attr: attr(libc::S_IFREG | 0o644),
        }
    }

    #[test]
    fn test_answer_accepts_the_expected_shapes() {
        let converted = answer(Expect::Entry, Ok(VolumeReply::Entry(entry(5))));
        assert!(matches!(converted, Ok(Answer::Entry(a)) if a.ino == INodeNo(5)));
        let converted = answer(
            Expect::Attr { node: 3 },
            Ok(VolumeReply::Attr(attr(libc::S_IFDIR | 0o755))),
        );
        assert!(matches!(converted, Ok(Answer::Attr(a)) if a.ino == INodeNo(3)));
        assert_eq!(
            answer(
                Expect::Data { limit: 3 },
                Ok(VolumeReply::Data(vec![1, 2, 3]))
            ),
            Ok(Answer::Data(vec![1, 2, 3]))
        );
        assert_eq!(
            answer(Expect::Written { len: 4 }, Ok(VolumeReply::Written(4))),
            Ok(Answer::Written(4))
        );
        assert_eq!(
            answer(Expect::Opened, Ok(VolumeReply::Opened(12))),
            Ok(Answer::Opened(12))
        );
        let created = answer(
            Expect::Created,
            Ok(VolumeReply::Created {
                entry: entry(6),
                handle: 2,
            }),
        );
        assert!(matches!(created, Ok(Answer::Created { handle: 2, .. })));
        assert_eq!(
            answer(Expect::Empty, Ok(VolumeReply::Empty)),
            Ok(Answer::Empty)
        );
        let listed = answer(
            Expect::Entries,
            Ok(VolumeReply::Entries(vec![DirEntry {
                ino: 40,
                offset: 1,
                kind: libc::S_IFDIR,
                name: b"sub".to_vec(),
            }])),
        );
        assert_eq!(
            listed,
            Ok(Answer::Entries(vec![ListEntry {
                ino: 40,
                offset: 1,
                kind: FileType::Directory,
                name: OsString::from("sub"),
            }]))
        );
    }

    #[test]
    fn test_answer_passes_host_errnos_through() {
        assert_eq!(answer(Expect::Entry, Err(libc::ENOENT)), Err(Errno::ENOENT));
        assert_eq!(answer(Expect::Empty, Err(libc::EXDEV)), Err(Errno::EXDEV));
        // Not a valid errno: still an error, never a success.
        assert_eq!(answer(Expect::Empty, Err(0)), Err(Errno::EIO));
    }

    #[test]
    fn test_answer_rejects_wrong_shapes_and_oversized_replies() {
        assert_eq!(
            answer(Expect::Entry, Ok(VolumeReply::Empty)),
            Err(Errno::EIO)
        );
        assert_eq!(
            answer(Expect::Opened, Ok(VolumeReply::Written(1))),
            Err(Errno::EIO)
        );
        assert_eq!(
            answer(Expect::Data { limit: 2 }, Ok(VolumeReply::Data(vec![0; 3]))),
            Err(Errno::EIO)
        );
        assert_eq!(
            answer(Expect::Written { len: 2 }, Ok(VolumeReply::Written(3))),
            Err(Errno::EIO)
        );
        assert_eq!(
            answer(Expect::Entry, Ok(VolumeReply::Entry(entry(0)))),
            Err(Errno::EIO)
        );
        for bad in [&b""[..], b"a/b", b"a\0b"] {
            let listed = answer(
                Expect::Entries,
                Ok(VolumeReply::Entries(vec![DirEntry {
                    ino: 1,
                    offset: 1,
                    kind: libc::S_IFREG,
                    name: bad.to_vec(),
                }])),
            );
            assert_eq!(listed, Err(Errno::EIO));
        }
    }

    #[test]
    fn test_mount_device_finds_the_topmost_mount_and_unescapes() {
        let info = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
40 22 0:50 / /mnt/my\\040data rw,nosuid,nodev - fuse.hearth src rw,user_id=0
41 40 0:51 / /mnt/my\\040data rw,nosuid,nodev - fuse.hearth src rw,user_id=0
";
        assert_eq!(mount_device(info, Path::new("/mnt/my data")), Some((0, 51)));
        assert_eq!(mount_device(info, Path::new("/proc")), Some((0, 21)));
        assert_eq!(mount_device(info, Path::new("/mnt")), None);
    }

    #[test]
    fn test_connection_name_is_the_kernel_dev_t() {
        assert_eq!(connection_name((0, 51)), "51");
        assert_eq!(connection_name((0, 300)), "300");
        assert_eq!(connection_name((1, 2)), ((1u64 << 20) | 2).to_string());
    }

    #[test]
    fn test_prepare_target_refuses_relative_and_root() {
        assert!(matches!(
            prepare_target("mnt/data"),
            Err(MountError::NotAbsolute(_))
        ));
        assert!(matches!(prepare_target("/"), Err(MountError::Root(_))));
        assert!(matches!(prepare_target("//./"), Err(MountError::Root(_))));
    }

    #[test]
    fn test_prepare_target_creates_missing_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("a/b/c");
        let prepared = prepare_target(target.to_str().expect("utf-8")).expect("created");
        assert!(prepared.is_dir());
        let file = dir.path().join("file");
        fs::write(&file, b"x").expect("write");
        assert!(matches!(
            prepare_target(file.to_str().expect("utf-8")),
            Err(MountError::NotADirectory(_))
        ));
    }

    #[test]
    fn test_mount_data_carries_the_connection_and_limits() {
        let data = mount_data(7);
        assert!(data.starts_with("fd=7,rootmode=40755,"), "{data}");
        assert!(data.contains("default_permissions"));
        assert!(data.contains("allow_other"));
        assert!(data.contains(&format!("max_read={MAX_VOLUME_IO}")));
        assert!(mount_flags(true).contains(MsFlags::MS_RDONLY));
        assert!(!mount_flags(false).contains(MsFlags::MS_RDONLY));
    }
}
