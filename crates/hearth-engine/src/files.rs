//! Files of a running sandbox through the agent's own filesystem operations: stat, list,
//! mkdir, remove, read and write one file. Unlike `copy`, these need nothing in the image.

use std::path::Path;
use std::time::Duration;

use hearth_agent_proto::{
    write_frame_async, ErrorCode, FileStat, FsRequest, GuestMessage, HostMessage, RemoteError,
    MAX_CHUNK_LEN,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::agent::{self, AgentError};

/// Most entries one listing may return: the host keeps a listing in memory, and a guest (whose
/// agent may be compromised) must not make it grow without end.
pub const MAX_LIST_ENTRIES: usize = 1_000_000;
/// Most bytes of names and link targets one listing may hold, for the same reason.
pub const MAX_LIST_BYTES: usize = 64 << 20;
/// How long the guest's side of a file operation or copy may send nothing before it is given
/// up: a dead agent, or a guest `tar` that never ends, must not hang the host side.
pub const GUEST_SILENCE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The operation failed in the guest; the message names the operation and the path.
    #[error(transparent)]
    Guest(RemoteError),
    #[error("failed to read the local data to send")]
    LocalRead(#[source] std::io::Error),
    #[error("failed to write the file's data locally")]
    LocalWrite(#[source] std::io::Error),
    #[error("the directory listing passed {MAX_LIST_ENTRIES} entries or {MAX_LIST_BYTES} bytes of names")]
    TooManyEntries,
    #[error("the guest sent nothing for {}s", limit.as_secs())]
    GuestSilent { limit: Duration },
}

impl FilesError {
    /// The guest's error code, for callers that map failures (e.g. to HTTP statuses).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FilesError::Guest(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Opens a connection and sends `request`.
async fn send(agent: &Path, request: FsRequest) -> Result<UnixStream, FilesError> {
    Ok(agent::open(agent, &HostMessage::Fs(request)).await?)
}

/// The next reply, with a guest error turned into [`FilesError::Guest`].
async fn next(stream: &mut UnixStream) -> Result<GuestMessage, FilesError> {
    let message = tokio::time::timeout(GUEST_SILENCE_LIMIT, agent::next_message(stream))
        .await
        .map_err(|_| FilesError::GuestSilent {
            limit: GUEST_SILENCE_LIMIT,
        })??;
    match message {
        GuestMessage::Error(e) => Err(FilesError::Guest(e)),
        other => Ok(other),
    }
}

async fn expect_done(stream: &mut UnixStream) -> Result<(), FilesError> {
    match next(stream).await? {
        GuestMessage::Done => Ok(()),
        other => Err(agent::unexpected("done", &other).into()),
    }
}

/// Metadata of `path` itself (symlinks are not followed).
pub async fn stat(agent: &Path, path: &str) -> Result<FileStat, FilesError> {
    let mut stream = send(agent, FsRequest::Stat { path: path.into() }).await?;
    match next(&mut stream).await? {
        GuestMessage::Stat(stat) => Ok(stat),
        other => Err(agent::unexpected("stat", &other).into()),
    }
}

/// The entries of directory `path`, sorted by name.
pub async fn list(agent: &Path, path: &str) -> Result<Vec<FileStat>, FilesError> {
    let mut stream = send(agent, FsRequest::List { path: path.into() }).await?;
    let mut entries = Vec::new();
    let mut bytes = 0;
    loop {
        match next(&mut stream).await? {
            GuestMessage::Entries(batch) => {
                bytes += batch
                    .iter()
                    .map(|e| e.name.len() + e.link_target.as_ref().map_or(0, String::len))
                    .sum::<usize>();
                if entries.len() + batch.len() > MAX_LIST_ENTRIES || bytes > MAX_LIST_BYTES {
                    return Err(FilesError::TooManyEntries);
                }
                entries.extend(batch);
            }
            GuestMessage::Done => return Ok(entries),
            other => return Err(agent::unexpected("directory entries", &other).into()),
        }
    }
}

pub async fn mkdir(agent: &Path, path: &str, mode: u32, parents: bool) -> Result<(), FilesError> {
    let request = FsRequest::Mkdir {
        path: path.into(),
        mode,
        parents,
    };
    expect_done(&mut send(agent, request).await?).await
}

pub async fn remove(agent: &Path, path: &str, recursive: bool) -> Result<(), FilesError> {
    let request = FsRequest::Remove {
        path: path.into(),
        recursive,
    };
    expect_done(&mut send(agent, request).await?).await
}

/// Renames guest `path` to `to`, replacing a file there.
pub async fn rename(agent: &Path, path: &str, to: &str) -> Result<(), FilesError> {
    let request = FsRequest::Rename {
        path: path.into(),
        to: to.into(),
    };
    expect_done(&mut send(agent, request).await?).await
}

/// Copies the guest file `path` into `out`; returns its metadata.
pub async fn read(
    agent: &Path,
    path: &str,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<FileStat, FilesError> {
    let mut stream = send(agent, FsRequest::Read { path: path.into() }).await?;
    let stat = match next(&mut stream).await? {
        GuestMessage::Stat(stat) => stat,
        other => return Err(agent::unexpected("stat", &other).into()),
    };
    loop {
        match next(&mut stream).await? {
            GuestMessage::Data(chunk) => out
                .write_all(&chunk)
                .await
                .map_err(FilesError::LocalWrite)?,
            GuestMessage::Done => break,
            other => return Err(agent::unexpected("file data", &other).into()),
        }
    }
    out.flush().await.map_err(FilesError::LocalWrite)?;
    Ok(stat)
}

/// Replaces the guest file `path` with everything `input` yields; returns the bytes written.
/// The guest only puts the file in place once all of it is written.
pub async fn write(
    agent: &Path,
    path: &str,
    mode: u32,
    input: &mut (impl AsyncRead + Unpin),
) -> Result<u64, FilesError> {
    let request = FsRequest::Write {
        path: path.into(),
        mode,
    };
    let mut stream = send(agent, request).await?;
    match next(&mut stream).await? {
        GuestMessage::ReadyForData => {}
        other => return Err(agent::unexpected("ready for data", &other).into()),
    }
    let mut buf = vec![0; MAX_CHUNK_LEN];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).await.map_err(FilesError::LocalRead)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        write_frame_async(&mut stream, &HostMessage::Data(buf[..n].to_vec()))
            .await
            .map_err(AgentError::from)?;
    }
    write_frame_async(&mut stream, &HostMessage::DataEnd)
        .await
        .map_err(AgentError::from)?;
    expect_done(&mut stream).await?;
    Ok(total)
}
