//! The per-host settings `hearth setup` records in the state dir (`host.json`): which backend
//! to use by default, where the Firecracker and jailer binaries are, and how Firecracker
//! restores get guest memory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::StateDir;

/// `<state dir>/host.json`. Every field is optional: an absent file means all defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The backend when neither `--backend` nor `HEARTH_BACKEND` says; `auto` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    /// The `firecracker` binary; searched for like other programs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firecracker: Option<PathBuf>,
    /// The `jailer` binary of the same release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jailer: Option<PathBuf>,
    /// How Firecracker restores get guest memory; `file` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firecracker_memory: Option<FirecrackerMemory>,
}

/// Firecracker's memory backend for restores (see `hearth_vmm::firecracker::uffd`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirecrackerMemory {
    /// Firecracker maps the snapshot's memory file: clones share its pages in the page cache.
    #[default]
    File,
    /// hearth's page server copies each page in on its first touch.
    Uffd,
}

impl FirecrackerMemory {
    pub fn backend_type(self) -> hearth_vmm::firecracker::snapshot::BackendType {
        use hearth_vmm::firecracker::snapshot::BackendType;
        match self {
            FirecrackerMemory::File => BackendType::File,
            FirecrackerMemory::Uffd => BackendType::Uffd,
        }
    }
}

impl std::str::FromStr for FirecrackerMemory {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "file" => Ok(FirecrackerMemory::File),
            "uffd" => Ok(FirecrackerMemory::Uffd),
            other => Err(format!(
                "`{other}` is not a memory backend; use `file` or `uffd`"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    #[error("failed to read the host settings `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the host settings `{}` are not valid; fix or remove the file, or run `hearth setup` again", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to write the host settings `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl HostConfig {
    /// The settings of `state`, all defaults when the file does not exist.
    pub fn load(state: &StateDir) -> Result<Self, HostConfigError> {
        Self::load_from(&state.host_config())
    }

    fn load_from(path: &Path) -> Result<Self, HostConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostConfig::default()),
            Err(source) => {
                return Err(HostConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        serde_json::from_str(&text).map_err(|source| HostConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the settings of `state` whole, through a temporary file so a reader never sees
    /// half of them.
    pub fn save(&self, state: &StateDir) -> Result<(), HostConfigError> {
        let path = state.host_config();
        let write = |source| HostConfigError::Write {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| write(e.into()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, text + "\n").map_err(write)?;
        std::fs::rename(&partial, &path).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_an_absent_file_is_all_defaults_and_a_saved_one_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(HostConfig::load(&state).unwrap(), HostConfig::default());
        let config = HostConfig {
            backend: Some(BackendKind::Firecracker),
            firecracker: Some("/opt/fc/firecracker".into()),
            jailer: Some("/opt/fc/jailer".into()),
            firecracker_memory: Some(FirecrackerMemory::Uffd),
        };
        config.save(&state).unwrap();
        assert_eq!(HostConfig::load(&state).unwrap(), config);
        let text = std::fs::read_to_string(state.host_config()).unwrap();
        assert!(text.contains("\"backend\": \"firecracker\""), "{text}");
    }

    #[test]
    fn test_an_unknown_field_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::write(state.host_config(), r#"{"backnd": "qemu"}"#).unwrap();
        let error = HostConfig::load(&state).unwrap_err();
        assert!(matches!(error, HostConfigError::Parse { .. }), "{error:?}");
        assert!(error.to_string().contains("host.json"), "{error}");
    }
}
