//! Messages exchanged over one agent connection.

use serde::{Deserialize, Serialize};

use crate::volume::{MountRequest, VolumeOp, VolumeResult};

/// What the host sends to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMessage {
    /// First frame of every host-initiated connection, and the reply to the agent's ready hello.
    Hello { version: u32 },
    /// Start a process; the agent answers `Started` or `Error`.
    Exec(ExecRequest),
    /// Bytes for the process's stdin (or the PTY).
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Close the process's stdin.
    StdinEof,
    /// New terminal size for a PTY process.
    Resize(TermSize),
    /// Deliver a signal (Linux number) to the process (its process group when on a PTY).
    Signal(i32),
    /// Sync filesystems and power the guest off.
    Shutdown,
    /// Liveness probe; the agent answers `Pong`.
    Ping,
    /// A filesystem operation in the guest; see [`FsRequest`] for each one's answer.
    Fs(FsRequest),
    /// A chunk of the file being written by [`FsRequest::Write`].
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The file being written is complete.
    DataEnd,
    /// Make a guest restored from a snapshot its own machine before anything runs in it:
    /// answered by `Done`.
    Refresh(Identity),
    /// Mount a host directory (see [`crate::volume`]): answered by `Done`, then the channel
    /// carries the mount's calls and replies.
    Mount(MountRequest),
    /// The answer to the [`GuestMessage::VolumeCall`] with the same `id`.
    VolumeReply { id: u64, result: VolumeResult },
}

/// What makes one restored guest differ from the others restored from the same snapshot, and
/// what a cold boot would have read from its kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The host's wall clock, nanoseconds since the Unix epoch: the guest's resumes where it
    /// was saved.
    pub unix_nanos: u64,
    /// Fresh host randomness credited to the guest's pool before a reseed: every clone of a
    /// snapshot would otherwise produce the same random bytes.
    #[serde(with = "serde_bytes")]
    pub entropy: Vec<u8>,
    pub hostname: String,
    /// DNS server for `/etc/resolv.conf`, when the guest has a network.
    pub nameserver: Option<String>,
}

/// What the agent sends to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMessage {
    /// The agent's hello: the reply to the host's, and the first frame on the ready connection.
    Hello { version: u32, agent_version: String },
    /// The process was spawned.
    Started { pid: u32 },
    /// Output from the process's stdout (or the PTY).
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Output from the process's stderr.
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The process ended and all of its output has been sent.
    Exited(ExitStatus),
    /// The operation failed; the connection closes after this frame.
    Error(RemoteError),
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Shutdown`, sent just before the guest powers off.
    ShuttingDown,
    /// Metadata of one path.
    Stat(FileStat),
    /// A batch of directory entries; a listing may take several, then `Done`.
    Entries(Vec<FileStat>),
    /// A chunk of the file being read.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The file to write was created; the host may send its data now.
    ReadyForData,
    /// A filesystem operation finished.
    Done,
    /// A request of a mounted host directory's filesystem, answered by
    /// [`HostMessage::VolumeReply`] with the same `id`.
    VolumeCall { id: u64, op: VolumeOp },
}

/// A filesystem operation on an absolute guest path. Paths are not confined: the guest is the
/// isolation boundary, and the agent acts as root in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsRequest {
    /// Metadata of the path itself (a symlink is not followed): answered by `Stat`.
    Stat { path: String },
    /// The entries of a directory, sorted by name: `Entries` frames, then `Done`.
    List { path: String },
    /// Creates a directory (with its missing parents if `parents`): `Done`.
    Mkdir {
        path: String,
        mode: u32,
        parents: bool,
    },
    /// Removes a file, symlink or empty directory (any directory tree if `recursive`): `Done`.
    Remove { path: String, recursive: bool },
    /// Reads a regular file: `Stat`, then `Data` chunks, then `Done`.
    Read { path: String },
    /// Renames `path` to `to` (replacing a file there, as rename(2) does): `Done`. Both must be
    /// absolute.
    Rename { path: String, to: String },
    /// Replaces a file: the agent answers `ReadyForData` (or an `Error`, e.g. no such
    /// directory), the host sends `Data` chunks up to `DataEnd`, the agent answers `Done` or the
    /// `Error` met while writing. The content goes to a temporary file that is renamed over
    /// `path` only when complete, so a failed write (a full disk, a lost connection) leaves the
    /// old file or nothing.
    Write { path: String, mode: u32 },
}

impl FsRequest {
    pub fn path(&self) -> &str {
        match self {
            FsRequest::Stat { path }
            | FsRequest::List { path }
            | FsRequest::Mkdir { path, .. }
            | FsRequest::Remove { path, .. }
            | FsRequest::Read { path }
            | FsRequest::Rename { path, .. }
            | FsRequest::Write { path, .. } => path,
        }
    }
}

/// What kind of file a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of a guest path, as `lstat` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileStat {
    /// The last component of the path (`/` for the root).
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits, including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time in seconds since the Unix epoch.
    pub mtime: i64,
    /// Where a symlink points.
    pub link_target: Option<String>,
}

/// A process to start in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Environment as `KEY=VALUE`, added to (and overriding) the agent's default environment.
    pub env: Vec<String>,
    /// Working directory; `None` means `/`.
    pub cwd: Option<String>,
    /// Run on a new PTY of this size instead of pipes.
    pub tty: Option<TermSize>,
    /// Whether the host will send stdin; without it the process gets `/dev/null`.
    pub stdin: bool,
    /// User to run as, as in an image config: `name`, `uid`, `name:group` or `uid:gid`, resolved
    /// in the guest's `/etc/passwd` and `/etc/group`. `None` means root.
    pub user: Option<String>,
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

/// How a guest process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The status a shell would report: the code, or 128 + the signal number (as docker does).
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
        }
    }
}

/// A stable code for errors that cross the wire, so the host can map them without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    VersionMismatch,
    /// The program to exec, or the path of a filesystem operation, does not exist.
    NotFound,
    /// The program exists but cannot be executed, or the path may not be accessed.
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    DirectoryNotEmpty,
    /// The guest's filesystem is full.
    NoSpace,
    /// The request was malformed or arrived out of order.
    BadRequest,
    Internal,
}

/// An error reported by the peer: a code and the chain of messages, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub code: ErrorCode,
    pub chain: Vec<String>,
}

impl RemoteError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RemoteError {
            code,
            chain: vec![message.into()],
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.chain.join(": "))
    }
}

impl std::error::Error for RemoteError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exit_status_signal_maps_to_128_plus_signal() {
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
        assert_eq!(ExitStatus::Code(7).shell_code(), 7);
    }
}
