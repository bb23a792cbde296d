//! Host directories in sandboxes (`-v HOST:GUEST[:ro]`, `-v NAME:GUEST`): parsing what a client
//! asks for, resolving it to a host dir, and serving it to the guest.
//!
//! The guest mounts a FUSE filesystem whose requests come to the sandbox's owner over one agent
//! channel per mount; a [`hearth_volume::VolumeServer`] on a thread of its own answers them
//! beneath the mapped dir. One design for every backend (the channel is the agent's stream,
//! whatever carries it), and nothing in the VM's device model, so the machine stays the one its
//! template saved. See docs/architecture.md for why not virtio-fs.

use std::io::BufReader;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Component, Path, PathBuf};

use hearth_agent_proto::volume::MountRequest;
use hearth_agent_proto::{GuestMessage, HostMessage};
use hearth_volume::VolumeServer;
use serde::{Deserialize, Serialize};

use crate::agent::{self, AgentError};
use crate::volumes::{self, VolumeError};

/// A mount as a client gave it: `SOURCE:TARGET[:ro|:rw]`, or its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// A host directory (an absolute path, or one starting with `.`), or a named volume
    /// (`hearth volume create`; made on first use).
    pub source: String,
    /// Absolute path in the guest.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl std::str::FromStr for MountSpec {
    type Err = VolumeError;

    /// Parses docker's `-v` syntax.
    fn from_str(text: &str) -> Result<MountSpec, VolumeError> {
        let bad = |reason: &str| VolumeError::BadSpec {
            spec: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = text.split(':');
        let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
            return Err(bad("give SOURCE:TARGET, e.g. \"$PWD\":/work or data:/data"));
        };
        let read_only = match parts.next() {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => return Err(bad(&format!("unknown option `{other}` (ro or rw)"))),
        };
        if parts.next().is_some() {
            return Err(bad("too many `:`; host paths with `:` are not supported"));
        }
        if source.is_empty() || target.is_empty() {
            return Err(bad("SOURCE and TARGET must not be empty"));
        }
        Ok(MountSpec {
            source: source.to_owned(),
            target: target.to_owned(),
            read_only,
        })
    }
}

/// A mount resolved to a host dir: what a sandbox's config keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The dir served, canonical.
    pub host_dir: PathBuf,
    /// Normalized absolute guest path.
    pub target: String,
    pub read_only: bool,
    /// The named volume `host_dir` belongs to.
    #[serde(default)]
    pub volume: Option<String>,
}

impl MountSpec {
    /// Checks the target and finds the host dir: a path must be an existing directory; a
    /// named volume is created when missing, as docker does.
    pub(crate) fn resolve(&self, volumes: &volumes::VolumeStore) -> Result<Mount, VolumeError> {
        let target = guest_target(&self.target)?;
        let (host_dir, volume) = if self.names_host_path() {
            (host_dir(Path::new(&self.source))?, None)
        } else {
            let meta = volumes.ensure(&self.source)?;
            (meta.path, Some(meta.name))
        };
        Ok(Mount {
            host_dir,
            target,
            read_only: self.read_only,
            volume,
        })
    }
}

impl MountSpec {
    /// Docker's rule: a source with a `/` or starting with `.` or `~` is a host path, anything
    /// else a volume name. Clients that restrict host paths must ask this, not a rule of
    /// their own, or a source one side takes for a name the other would mount as a path.
    pub fn names_host_path(&self) -> bool {
        is_host_path(&self.source)
    }
}

fn is_host_path(source: &str) -> bool {
    source.contains('/') || source.starts_with('.') || source.starts_with('~')
}

fn host_dir(path: &Path) -> Result<PathBuf, VolumeError> {
    let canonical = std::fs::canonicalize(path).map_err(|source| VolumeError::HostDir {
        path: path.to_owned(),
        source,
    })?;
    if !canonical.is_dir() {
        return Err(VolumeError::NotADirectory(path.to_owned()));
    }
    Ok(canonical)
}

/// An absolute guest path without `.`, `..` or repeated slashes, and not `/` itself.
fn guest_target(target: &str) -> Result<String, VolumeError> {
    let bad = |reason: &str| VolumeError::BadTarget {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    if !target.starts_with('/') {
        return Err(bad("it must be an absolute path"));
    }
    let mut parts = Vec::new();
    for component in Path::new(target).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => match part.to_str() {
                Some(part) => parts.push(part),
                None => return Err(bad("it must be UTF-8")),
            },
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(bad("`.` and `..` are not allowed"))
            }
        }
    }
    if parts.is_empty() {
        return Err(bad("the guest's root cannot be a mount"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Two mounts may not share a target.
pub(crate) fn check_distinct(mounts: &[Mount]) -> Result<(), VolumeError> {
    for (i, mount) in mounts.iter().enumerate() {
        if mounts[..i].iter().any(|m| m.target == mount.target) {
            return Err(VolumeError::DuplicateTarget(mount.target.clone()));
        }
    }
    Ok(())
}

/// One mount being served. Dropping it ends the mount: the guest detaches it.
#[derive(Debug)]
pub(crate) struct Attached {
    /// A second handle on the channel, to end it from here.
    stream: StdUnixStream,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // The serving thread sees end of file and returns; fails only if it is gone already.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("failed to open `{}` for the guest", dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: hearth_volume::VolumeError,
    },
    #[error("the guest failed to mount `{}` at {target}", dir.display())]
    Agent {
        dir: PathBuf,
        target: String,
        #[source]
        source: AgentError,
    },
    #[error("failed to record the sandbox's volumes in `{}`", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to hand the channel of {target} to its server")]
    Channel {
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// Mounts `mount` in the guest behind `agent_socket` and serves it on a thread until the
/// channel ends (the sandbox ends, or the returned [`Attached`] is dropped).
pub(crate) async fn attach(agent_socket: &Path, mount: &Mount) -> Result<Attached, AttachError> {
    raise_open_files_limit();
    let dir = mount.host_dir.clone();
    let read_only = mount.read_only;
    let mut server = tokio::task::spawn_blocking(move || VolumeServer::open(&dir, read_only))
        .await
        .map_err(|e| AttachError::Channel {
            target: mount.target.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|source| AttachError::Open {
            dir: mount.host_dir.clone(),
            source,
        })?;
    let agent_error = |source| AttachError::Agent {
        dir: mount.host_dir.clone(),
        target: mount.target.clone(),
        source,
    };
    let request = HostMessage::Mount(MountRequest {
        target: mount.target.clone(),
        read_only: mount.read_only,
        source: mount
            .volume
            .clone()
            .unwrap_or_else(|| mount.host_dir.display().to_string()),
    });
    let mut stream = agent::open(agent_socket, &request)
        .await
        .map_err(agent_error)?;
    match agent::next_message(&mut stream)
        .await
        .map_err(agent_error)?
    {
        GuestMessage::Done => {}
        GuestMessage::Error(e) => return Err(agent_error(AgentError::Remote(e))),
        other => return Err(agent_error(agent::unexpected("done", &other))),
    }
    let channel_error = |source| AttachError::Channel {
        target: mount.target.clone(),
        source,
    };
    let stream = stream.into_std().map_err(channel_error)?;
    stream.set_nonblocking(false).map_err(channel_error)?;
    let handle = stream.try_clone().map_err(channel_error)?;
    let mut writer = stream.try_clone().map_err(channel_error)?;
    let target = mount.target.clone();
    std::thread::Builder::new()
        .name(format!("volume {target}"))
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            if let Err(e) = hearth_volume::serve(&mut server, &mut reader, &mut writer) {
                tracing::warn!(target = %target, error = %crate::chain::error_chain(&e),
                    "volume channel ended with an error");
            }
        })
        .map_err(channel_error)?;
    Ok(Attached { stream: handle })
}

/// Each mount may hold thousands of open files for its guest (`hearth_volume` caps them), more
/// than the usual soft limit of 1024 leaves beside the owner's own sockets: the soft limit goes
/// up to the hard one. Failing that, the guest sees EMFILE, not the owner.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_docker_syntax_parses_source_target_and_mode() {
        let spec: MountSpec = "/srv/data:/data:ro".parse().expect("valid");
        assert_eq!(spec.source, "/srv/data");
        assert_eq!(spec.target, "/data");
        assert!(spec.read_only);
        let spec: MountSpec = "cache:/root/.cache".parse().expect("valid");
        assert!(!spec.read_only);
        for bad in ["", "/a", "/a:/b:rx", "/a:/b:ro:x", ":/b", "/a:"] {
            assert!(bad.parse::<MountSpec>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn test_guest_targets_are_normalized_and_checked() {
        assert_eq!(guest_target("/work//src/").expect("ok"), "/work/src");
        assert_eq!(guest_target("/a/./b").expect("ok"), "/a/b");
        for bad in ["work", "/", "/.", "/a/../b", "./a"] {
            assert!(guest_target(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn test_sources_with_a_slash_or_dot_are_paths() {
        assert!(is_host_path("/srv"));
        assert!(is_host_path("./src"));
        assert!(is_host_path("."));
        assert!(!is_host_path("data"));
    }

    #[test]
    fn test_two_mounts_on_one_target_are_refused() {
        let mount = |target: &str| Mount {
            host_dir: PathBuf::from("/tmp"),
            target: target.to_owned(),
            read_only: false,
            volume: None,
        };
        assert!(check_distinct(&[mount("/a"), mount("/b")]).is_ok());
        assert!(check_distinct(&[mount("/a"), mount("/a")]).is_err());
    }
}
