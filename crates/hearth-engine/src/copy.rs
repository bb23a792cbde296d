//! `hearth cp`: files and directories between the host and a running sandbox, as tar streams
//! through a `tar` process in the guest (started over the agent like any exec).
//!
//! The host side never trusts what the guest sends: every entry is unpacked with the tar
//! crate's `unpack_in`, which refuses `..`, absolute paths and writes through symlinks that
//! lead out of the destination. Nothing it sends becomes a setuid or setgid file or a
//! world-writable directory on the host; the archive is unpacked as it streams (memory stays
//! bounded by a few chunks), stderr is capped, and a guest that goes silent times out.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use hearth_agent_proto::{ExecRequest, MAX_CHUNK_LEN};
use tokio::sync::mpsc;

use crate::exec::{self, ExecError, ExecEvent};
use crate::files::GUEST_SILENCE_LIMIT;

/// The most of the guest's stderr kept for an error message.
const STDERR_CAP: usize = 16 * 1024;
/// Chunks of archive in flight between the agent stream and the unpacker: the memory bound.
const CHUNKS_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("`{}` does not exist on the host", path.display())]
    NoSource { path: PathBuf },
    #[error("`{path}` is not an absolute guest path without `..`")]
    GuestPath { path: String },
    #[error("failed to pack `{}`", path.display())]
    Pack {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to unpack into `{}`", path.display())]
    Unpack {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest refused an entry that would land outside `{}`: `{entry}`", dest.display())]
    Escape { dest: PathBuf, entry: String },
    #[error("tar in the guest failed (exit {code}): {stderr}")]
    GuestTar { code: i32, stderr: String },
    #[error("the guest sent nothing for {}s", limit.as_secs())]
    GuestSilent { limit: Duration },
    #[error("the unpacking task failed")]
    Unpacker(#[source] tokio::task::JoinError),
    #[error("failed to talk to the guest")]
    Exec(#[from] ExecError),
}

/// A guest path: absolute, no `..`.
fn guest_path(path: &str) -> Result<(String, String), CopyError> {
    let p = Path::new(path);
    let bad = || CopyError::GuestPath {
        path: path.to_owned(),
    };
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(bad());
    }
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(bad)?;
    let parent = p
        .parent()
        .map_or_else(|| "/".to_owned(), |d| d.to_string_lossy().into_owned());
    Ok((parent, name))
}

fn tar_request(script: &str, args: &[&str], stdin: bool) -> ExecRequest {
    let mut argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "hearth-cp".to_owned(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    ExecRequest {
        argv,
        stdin,
        ..ExecRequest::default()
    }
}

/// Copies host `src` (file or directory) into the guest: into `dest` when it is a directory
/// there, else as `dest`.
pub async fn to_guest(agent: &Path, src: &Path, dest: &str) -> Result<(), CopyError> {
    let meta = std::fs::symlink_metadata(src).map_err(|_| CopyError::NoSource {
        path: src.to_owned(),
    })?;
    let (parent, name) = guest_path(dest)?;
    // Pack under a fixed top name; the guest script puts it in place.
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let pack = |e| CopyError::Pack {
        path: src.to_owned(),
        source: e,
    };
    if meta.is_dir() {
        builder.append_dir_all("payload", src).map_err(pack)?;
    } else {
        builder
            .append_path_with_name(src, "payload")
            .map_err(pack)?;
    }
    let archive = builder.into_inner().map_err(pack)?;
    let src_name = src.file_name().map_or_else(
        || "payload".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    // $1 dest, $2 its parent, $3 its name, $4 the source's name.
    let script = "set -e; t=$(mktemp -d \"$2/.hearth-cp.XXXXXX\"); trap 'rm -rf \"$t\"' EXIT; \
                  tar -x -C \"$t\"; \
                  if [ -d \"$1\" ]; then mv \"$t/payload\" \"$1/$4\"; else mv \"$t/payload\" \"$2/$3\"; fi";
    let request = tar_request(script, &[dest, &parent, &name, &src_name], true);
    let (_pid, mut input, output) = exec::start(agent, request).await?;
    for chunk in archive.chunks(MAX_CHUNK_LEN) {
        input.stdin(chunk.to_vec()).await?;
    }
    input.close_stdin().await?;
    let (stderr, code) = collect(output, None).await?;
    if code != 0 {
        return Err(CopyError::GuestTar { code, stderr });
    }
    Ok(())
}

/// Copies guest `src` to the host: into `dest` when it is a directory, else as `dest`.
pub async fn from_guest(agent: &Path, src: &str, dest: &Path) -> Result<(), CopyError> {
    let (parent, name) = guest_path(src)?;
    let (into, rename_to) = if dest.is_dir() {
        (dest.to_owned(), None)
    } else {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (parent.to_owned(), dest.file_name().map(|n| n.to_owned()))
    };
    // Unpack into a fresh dir beside the destination, then move the one top entry in place, so
    // a refused archive leaves nothing behind.
    let staging = tempfile::Builder::new()
        .prefix(".hearth-cp.")
        .tempdir_in(&into)
        .map_err(|source| CopyError::Unpack {
            path: into.clone(),
            source,
        })?;
    let request = tar_request("tar -c -C \"$1\" \"$2\"", &[&parent, &name], false);
    let (_pid, _input, output) = exec::start(agent, request).await?;
    let (chunks, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let staging_path = staging.path().to_owned();
    let unpacker = tokio::task::spawn_blocking(move || {
        unpack_checked(ChannelReader::new(receiver), &staging_path)
    });
    let finished = collect(output, Some(chunks)).await;
    let unpacked = unpacker.await.map_err(CopyError::Unpacker)?;
    let (stderr, code) = finished?;
    if code != 0 {
        return Err(CopyError::GuestTar { code, stderr });
    }
    unpacked?;
    let top = staging.path().join(&name);
    let target = into.join(rename_to.unwrap_or_else(|| name.clone().into()));
    std::fs::rename(&top, &target).map_err(|source| CopyError::Unpack {
        path: target,
        source,
    })
}

/// Reads what the exec stream hands over, chunk by chunk, for the blocking unpacker.
struct ChannelReader {
    receiver: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    read: usize,
}

impl ChannelReader {
    fn new(receiver: mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            receiver,
            chunk: Vec::new(),
            read: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.read == self.chunk.len() {
            match self.receiver.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.read = 0;
                }
                None => return Ok(0),
            }
        }
        let len = buf.len().min(self.chunk.len() - self.read);
        buf[..len].copy_from_slice(&self.chunk[self.read..self.read + len]);
        self.read += len;
        Ok(len)
    }
}

/// Unpacks `archive` in `dest`, refusing any entry that would land outside it. Modes keep
/// their permission bits but never setuid, setgid or sticky (the tar crate masks them to 0o777
/// when it does not preserve them), and directories lose world write.
fn unpack_checked(archive: impl Read, dest: &Path) -> Result<(), CopyError> {
    let unpack = |source| CopyError::Unpack {
        path: dest.to_owned(),
        source,
    };
    let mut tar = tar::Archive::new(archive);
    tar.set_preserve_permissions(false);
    tar.set_preserve_mtime(true);
    for entry in tar.entries().map_err(unpack)? {
        let mut entry = entry.map_err(unpack)?;
        let path = entry.path().map_err(unpack)?.into_owned();
        // false means the entry was skipped for pointing outside `dest`.
        if !entry.unpack_in(dest).map_err(unpack)? {
            return Err(CopyError::Escape {
                dest: dest.to_owned(),
                entry: path.to_string_lossy().into_owned(),
            });
        }
        if entry.header().entry_type().is_dir() {
            close_world_write(&dest.join(&path)).map_err(unpack)?;
        }
    }
    Ok(())
}

/// Takes world write off the directory at `path` (not through a symlink).
fn close_world_write(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode();
    if meta.is_dir() && mode & 0o002 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o775))?;
    }
    Ok(())
}

/// Waits for a started exec to finish: stdout goes to `stdout` (dropped when `None`, or when
/// the receiver is gone), stderr is kept up to [`STDERR_CAP`]. Returns stderr and the exit
/// status; fails when the guest sends nothing for [`GUEST_SILENCE_LIMIT`].
async fn collect(
    mut output: exec::ExecOutput,
    mut stdout: Option<mpsc::Sender<Vec<u8>>>,
) -> Result<(String, i32), CopyError> {
    let mut stderr = Vec::new();
    loop {
        let event = tokio::time::timeout(GUEST_SILENCE_LIMIT, output.next())
            .await
            .map_err(|_| CopyError::GuestSilent {
                limit: GUEST_SILENCE_LIMIT,
            })??;
        match event {
            Some(ExecEvent::Stdout(data)) => {
                if let Some(sender) = &stdout {
                    if sender.send(data).await.is_err() {
                        // The unpacker stopped (and says why); the rest is not wanted.
                        return Ok((String::new(), 0));
                    }
                }
            }
            Some(ExecEvent::Stderr(data)) => {
                let room = STDERR_CAP.saturating_sub(stderr.len());
                stderr.extend_from_slice(&data[..data.len().min(room)]);
            }
            Some(ExecEvent::Exited(status)) => {
                // Closing the archive stream tells the unpacker the archive is complete.
                stdout.take();
                let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
                return Ok((stderr, status.shell_code()));
            }
            None => return Err(ExecError::Stream(crate::agent::AgentError::Closed).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_guest_paths_must_be_absolute_without_dotdot() {
        assert_eq!(
            guest_path("/tmp/x").unwrap(),
            ("/tmp".to_owned(), "x".to_owned())
        );
        assert!(guest_path("tmp/x").is_err());
        assert!(guest_path("/tmp/../etc").is_err());
        assert!(guest_path("/").is_err());
    }

    fn entry(builder: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, mode: u32) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(0);
        header.set_path(name).unwrap();
        header.set_cksum();
        builder.append(&header, &b""[..]).unwrap();
    }

    #[test]
    fn test_unpacked_modes_lose_setuid_setgid_sticky_and_world_writable_dirs() {
        let mut builder = tar::Builder::new(Vec::new());
        entry(&mut builder, "x", tar::EntryType::Directory, 0o1777);
        entry(&mut builder, "x/id", tar::EntryType::Regular, 0o4755);
        entry(&mut builder, "x/grp", tar::EntryType::Regular, 0o2775);
        let archive = builder.into_inner().unwrap();
        let dest = tempfile::tempdir().unwrap();

        unpack_checked(&archive[..], dest.path()).unwrap();

        let mode = |p: &str| {
            std::fs::metadata(dest.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("x"), 0o775);
        assert_eq!(mode("x/id"), 0o755);
        assert_eq!(mode("x/grp"), 0o775);
    }

    #[test]
    fn test_escaping_entries_are_refused() {
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let mut builder = tar::Builder::new(Vec::new());
        // `append_data` refuses `..`, so write the name bytes directly as a hostile peer would.
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        builder.append(&header, &b"evil"[..]).unwrap();
        let archive = builder.into_inner().unwrap();
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack_checked(&archive[..], &dest).unwrap_err();
        assert!(matches!(err, CopyError::Escape { .. }), "{err}");
        assert!(!outer.path().join("escape").exists());
    }
}
