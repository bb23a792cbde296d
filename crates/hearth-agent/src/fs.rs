//! Filesystem operations for the host: stat, list, mkdir, remove, read and write one file. They
//! work in images without any userland (no `ls`, `cat` or `tar` needed), which is what an API
//! client expects of a sandbox's files.

use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hearth_agent_proto::{
    read_frame, write_frame, ErrorCode, FileKind, FileStat, FrameError, FsRequest, GuestMessage,
    HostMessage, RemoteError, MAX_CHUNK_LEN,
};

use crate::connection::{self, Connection};

/// Bytes of entries per `Entries` frame, well below the frame limit even for long names.
const ENTRIES_BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("failed to send a reply to the host")]
    Reply(#[source] FrameError),
    #[error("failed to read the file's data from the host")]
    Read(#[source] FrameError),
}

/// Serves one filesystem request to completion; failures of the operation itself are replied
/// to the host as an `Error`, only a broken connection is an error here.
pub fn run<C: Connection>(
    reader: &mut BufReader<C>,
    writer: &mut C,
    request: &FsRequest,
) -> Result<(), FsError> {
    let path = request.path();
    if !path.starts_with('/') {
        let error = RemoteError::new(
            ErrorCode::BadRequest,
            format!("`{path}` is not an absolute path"),
        );
        return reply(writer, &GuestMessage::Error(error));
    }
    let result = match request {
        FsRequest::Stat { path } => fs::symlink_metadata(path)
            .map_err(|e| op_error("stat", path, &e))
            .and_then(|meta| {
                reply(writer, &GuestMessage::Stat(stat(path, &meta))).map_err(Into::into)
            }),
        FsRequest::List { path } => list(writer, path),
        FsRequest::Mkdir {
            path,
            mode,
            parents,
        } => mkdir(path, *mode, *parents).and_then(|()| done(writer)),
        FsRequest::Remove { path, recursive } => {
            remove(path, *recursive).and_then(|()| done(writer))
        }
        FsRequest::Read { path } => read(writer, path),
        FsRequest::Rename { path, to } => rename(path, to).and_then(|()| done(writer)),
        FsRequest::Write { path, mode } => {
            write(reader, writer, path, *mode).and_then(|()| done(writer))
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Remote(error)) => reply(writer, &GuestMessage::Error(error)),
        Err(Failure::Connection(e)) => Err(e),
    }
}

fn rename(path: &str, to: &str) -> Result<(), Failure> {
    if !to.starts_with('/') {
        return Err(Failure::Remote(RemoteError::new(
            ErrorCode::BadRequest,
            format!("`{to}` is not an absolute path"),
        )));
    }
    fs::rename(path, to).map_err(|e| op_error(&format!("rename `{path}` to"), to, &e))
}

/// Why an operation stopped: the operation failed (told to the host), or the connection broke.
enum Failure {
    Remote(RemoteError),
    Connection(FsError),
}

impl From<FsError> for Failure {
    fn from(e: FsError) -> Self {
        Failure::Connection(e)
    }
}

fn reply<C: Connection>(writer: &mut C, message: &GuestMessage) -> Result<(), FsError> {
    write_frame(writer, message).map_err(FsError::Reply)
}

fn done<C: Connection>(writer: &mut C) -> Result<(), Failure> {
    Ok(reply(writer, &GuestMessage::Done)?)
}

/// An I/O error as the host sees it: a stable code and a message naming the path.
fn op_error(op: &str, path: &str, e: &io::Error) -> Failure {
    Failure::Remote(RemoteError::new(
        error_code(e),
        format!("failed to {op} `{path}`: {e}"),
    ))
}

/// The wire code of an I/O error on a guest path (shared with the volume mounts).
pub(crate) fn error_code(e: &io::Error) -> ErrorCode {
    match e.raw_os_error() {
        Some(libc::ENOENT) => ErrorCode::NotFound,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => ErrorCode::PermissionDenied,
        Some(libc::EEXIST) => ErrorCode::AlreadyExists,
        Some(libc::ENOTDIR) => ErrorCode::NotADirectory,
        Some(libc::EISDIR) => ErrorCode::IsADirectory,
        Some(libc::ENOTEMPTY) => ErrorCode::DirectoryNotEmpty,
        Some(libc::ENOSPC | libc::EDQUOT) => ErrorCode::NoSpace,
        _ => ErrorCode::Internal,
    }
}

fn stat(path: &str, meta: &Metadata) -> FileStat {
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        FileKind::Symlink
    } else if file_type.is_dir() {
        FileKind::Dir
    } else if file_type.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let link_target = (kind == FileKind::Symlink)
        .then(|| fs::read_link(path).ok())
        .flatten()
        .map(|target| target.to_string_lossy().into_owned());
    let name = Path::new(path)
        .file_name()
        .map_or_else(|| "/".to_owned(), |n| n.to_string_lossy().into_owned());
    FileStat {
        name,
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        link_target,
    }
}

fn list<C: Connection>(writer: &mut C, path: &str) -> Result<(), Failure> {
    let read_dir = fs::read_dir(path).map_err(|e| op_error("list", path, &e))?;
    let mut entries = Vec::new();
    for entry in read_dir {
        let entry = entry.map_err(|e| op_error("list", path, &e))?;
        let entry_path = entry.path();
        let entry_path = entry_path.to_string_lossy();
        // An entry removed while listing is simply not listed.
        match fs::symlink_metadata(&*entry_path) {
            Ok(meta) => entries.push(stat(&entry_path, &meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(op_error("stat", &entry_path, &e)),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for entry in entries {
        batch_bytes += entry.name.len() + entry.link_target.as_ref().map_or(0, String::len) + 64;
        batch.push(entry);
        if batch_bytes >= ENTRIES_BATCH_BYTES {
            reply(writer, &GuestMessage::Entries(std::mem::take(&mut batch)))?;
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        reply(writer, &GuestMessage::Entries(batch))?;
    }
    done(writer)
}

fn mkdir(path: &str, mode: u32, parents: bool) -> Result<(), Failure> {
    if parents && fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(parents)
        .mode(mode)
        .create(path)
        .map_err(|e| op_error("create directory", path, &e))?;
    // The agent's umask would otherwise narrow the mode the host asked for.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| op_error("set the mode of", path, &e))
}

fn remove(path: &str, recursive: bool) -> Result<(), Failure> {
    if Path::new(path).parent().is_none() {
        return Err(Failure::Remote(RemoteError::new(
            ErrorCode::BadRequest,
            "refusing to remove `/`",
        )));
    }
    let meta = fs::symlink_metadata(path).map_err(|e| op_error("remove", path, &e))?;
    let removed = match (meta.is_dir(), recursive) {
        (true, true) => fs::remove_dir_all(path),
        (true, false) => fs::remove_dir(path),
        (false, _) => fs::remove_file(path),
    };
    removed.map_err(|e| op_error("remove", path, &e))
}

fn read<C: Connection>(writer: &mut C, path: &str) -> Result<(), Failure> {
    let mut file = File::open(path).map_err(|e| op_error("open", path, &e))?;
    let meta = file.metadata().map_err(|e| op_error("stat", path, &e))?;
    if meta.is_dir() {
        let e = io::Error::from_raw_os_error(libc::EISDIR);
        return Err(op_error("read", path, &e));
    }
    reply(writer, &GuestMessage::Stat(stat(path, &meta)))?;
    let mut buf = vec![0; MAX_CHUNK_LEN];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(op_error("read", path, &e)),
        };
        reply(writer, &GuestMessage::Data(buf[..n].to_vec()))?;
    }
    done(writer)
}

/// Distinct temporary names for concurrent writes into one directory.
static WRITE_SEQ: AtomicU64 = AtomicU64::new(0);

fn write<C: Connection>(
    reader: &mut BufReader<C>,
    writer: &mut C,
    path: &str,
    mode: u32,
) -> Result<(), Failure> {
    let target = Path::new(path);
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(Failure::Remote(RemoteError::new(
            ErrorCode::BadRequest,
            format!("`{path}` names no file"),
        )));
    };
    let seq = WRITE_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut temp = TempFile {
        path: dir.join(format!(".{}.hearth-{seq}", name.to_string_lossy())),
        keep: false,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp.path)
        .map_err(|e| op_error("create", path, &e))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| op_error("set the mode of", path, &e))?;
    reply(writer, &GuestMessage::ReadyForData)?;
    let mut failure = None;
    loop {
        match read_frame(reader).map_err(FsError::Read)? {
            Some(HostMessage::Data(chunk)) if failure.is_none() => {
                if let Err(e) = file.write_all(&chunk) {
                    failure = Some(op_error("write", path, &e));
                }
            }
            // After a failure the rest of the data is read and dropped, so the host can send
            // everything and then read one answer.
            Some(HostMessage::Data(_)) => {}
            Some(HostMessage::DataEnd) => break,
            Some(other) => {
                return Err(Failure::Remote(RemoteError::new(
                    ErrorCode::BadRequest,
                    format!("expected file data, got {}", connection::kind(&other)),
                )))
            }
            // The host went away mid-file: nothing to answer, the temporary file goes.
            None => return Ok(()),
        }
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    // Data reaches the disk before the name does, so a crash never shows a short file.
    file.sync_all().map_err(|e| op_error("write", path, &e))?;
    fs::rename(&temp.path, target).map_err(|e| op_error("replace", path, &e))?;
    temp.keep = true;
    Ok(())
}

/// Removes the temporary file of an unfinished write.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}
