//! `hearth cp`: files and directories between the host and a running sandbox, as tar streams
//! through a `tar` process in the guest (started over the agent like any exec).
//!
//! The host side never trusts what the guest sends: every entry is unpacked with the tar
//! crate's `unpack_in`, which refuses `..`, absolute paths and writes through symlinks that
//! lead out of the destination.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use hearth_agent_proto::{ExecRequest, MAX_CHUNK_LEN};

use crate::exec::{self, ExecError, ExecEvent};

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
    let (_, stderr, code) = collect(output).await?;
    if code != 0 {
        return Err(CopyError::GuestTar { code, stderr });
    }
    Ok(())
}

/// Copies guest `src` to the host: into `dest` when it is a directory, else as `dest`.
pub async fn from_guest(agent: &Path, src: &str, dest: &Path) -> Result<(), CopyError> {
    let (parent, name) = guest_path(src)?;
    let request = tar_request("tar -c -C \"$1\" \"$2\"", &[&parent, &name], false);
    let (_pid, _input, output) = exec::start(agent, request).await?;
    let (archive, stderr, code) = collect(output).await?;
    if code != 0 {
        return Err(CopyError::GuestTar { code, stderr });
    }
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
    unpack_checked(&archive, staging.path())?;
    let top = staging.path().join(&name);
    let target = into.join(rename_to.unwrap_or_else(|| name.clone().into()));
    std::fs::rename(&top, &target).map_err(|source| CopyError::Unpack {
        path: target,
        source,
    })
}

/// Unpacks `archive` in `dest`, refusing any entry that would land outside it.
fn unpack_checked(archive: &[u8], dest: &Path) -> Result<(), CopyError> {
    let unpack = |source| CopyError::Unpack {
        path: dest.to_owned(),
        source,
    };
    let mut tar = tar::Archive::new(archive);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    for entry in tar.entries().map_err(unpack)? {
        let mut entry = entry.map_err(unpack)?;
        let name = entry.path().map_err(unpack)?.to_string_lossy().into_owned();
        // false means the entry was skipped for pointing outside `dest`.
        if !entry.unpack_in(dest).map_err(unpack)? {
            return Err(CopyError::Escape {
                dest: dest.to_owned(),
                entry: name,
            });
        }
    }
    Ok(())
}

/// Stdout, stderr and exit status of a finished exec.
async fn collect(mut output: exec::ExecOutput) -> Result<(Vec<u8>, String, i32), CopyError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        match output.next().await? {
            Some(ExecEvent::Stdout(data)) => stdout.extend(data),
            Some(ExecEvent::Stderr(data)) => {
                let _ = stderr.write_all(&data);
            }
            Some(ExecEvent::Exited(status)) => {
                let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
                return Ok((stdout, stderr, status.shell_code()));
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
        let err = unpack_checked(&archive, &dest).unwrap_err();
        assert!(matches!(err, CopyError::Escape { .. }), "{err}");
        assert!(!outer.path().join("escape").exists());
    }
}
