//! Named volumes: host dirs under the state dir (`volumes/<name>/data`) that outlive the
//! sandboxes mounting them, and may be mounted by several at once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest volume name, as for sandbox names.
const MAX_NAME_LEN: usize = 64;

const META_FILE: &str = "volume.json";
const DATA_DIR: &str = "data";

/// A named volume as `volume ls` and `inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    pub name: String,
    /// The host dir the guest sees.
    pub path: PathBuf,
    /// Unix time of creation.
    pub created_at: i64,
}

/// A named volume with what uses it.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    #[serde(flatten)]
    pub meta: VolumeMeta,
    /// Bytes its files take.
    pub size: u64,
    /// Sandboxes (names, or ids of one-shot runs) whose config mounts it.
    pub used_by: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid mount `{spec}`: {reason}")]
    BadSpec { spec: String, reason: String },
    #[error("invalid mount target `{target}`: {reason}")]
    BadTarget { target: String, reason: String },
    #[error("two mounts at {0}")]
    DuplicateTarget(String),
    #[error("cannot mount host dir `{}`", path.display())]
    HostDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount `{}`: not a directory (only directories can be mounted)", .0.display())]
    NotADirectory(PathBuf),
    #[error("invalid volume name `{0}`: use up to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit")]
    InvalidName(String),
    #[error("no volume named `{0}` (hearth volume ls)")]
    NotFound(String),
    #[error("volume `{0}` already exists")]
    Exists(String),
    #[error("volume `{name}` is in use by {}; remove those sandboxes first", used_by.join(", "))]
    InUse { name: String, used_by: Vec<String> },
    #[error("volume `{name}` has a damaged record `{}`", path.display())]
    BadRecord {
        name: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The volumes of one state dir.
#[derive(Debug, Clone)]
pub(crate) struct VolumeStore {
    root: PathBuf,
}

impl VolumeStore {
    pub(crate) fn new(root: PathBuf) -> Self {
        VolumeStore { root }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Makes volume `name`, empty.
    pub(crate) fn create(&self, name: &str) -> Result<VolumeMeta, VolumeError> {
        check_name(name)?;
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| VolumeError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&self.root).map_err(io("create", &self.root))?;
        // Made under a temporary name and renamed, so a volume is there whole or not at all.
        let staging = tempfile::Builder::new()
            .prefix(".creating-")
            .tempdir_in(&self.root)
            .map_err(io("create a directory in", &self.root))?;
        let data = staging.path().join(DATA_DIR);
        std::fs::create_dir(&data).map_err(io("create", &data))?;
        // Guests see it as any other dir they may write; the state dir around it stays private.
        set_mode(&data, 0o755).map_err(io("set the mode of", &data))?;
        let meta = VolumeMeta {
            name: name.to_owned(),
            path: self.dir(name).join(DATA_DIR),
            created_at: crate::state::unix_now(),
        };
        let record = staging.path().join(META_FILE);
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| VolumeError::Io {
            action: "encode",
            path: record.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&record, json).map_err(io("write", &record))?;
        let dest = self.dir(name);
        match std::fs::rename(staging.path(), &dest) {
            Ok(()) => {
                // Renamed away: nothing is left for the guard to remove.
                let _ = staging.keep();
                Ok(meta)
            }
            Err(e) if dest.exists() || e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                Err(VolumeError::Exists(name.to_owned()))
            }
            Err(source) => Err(VolumeError::Io {
                action: "create",
                path: dest,
                source,
            }),
        }
    }

    /// Volume `name`, made if missing (what `-v NAME:/path` does).
    pub(crate) fn ensure(&self, name: &str) -> Result<VolumeMeta, VolumeError> {
        match self.get(name) {
            Err(VolumeError::NotFound(_)) => match self.create(name) {
                Err(VolumeError::Exists(_)) => self.get(name),
                made => made,
            },
            found => found,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Result<VolumeMeta, VolumeError> {
        check_name(name)?;
        let path = self.dir(name).join(META_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_owned()))
            }
            Err(source) => {
                return Err(VolumeError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| VolumeError::BadRecord {
            name: name.to_owned(),
            path,
            source,
        })
    }

    /// Every volume, by name.
    pub(crate) fn list(&self) -> Result<Vec<VolumeMeta>, VolumeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(VolumeError::Io {
                    action: "list",
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut list = Vec::new();
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Staging dirs and strays are not volumes.
            if check_name(&name).is_err() {
                continue;
            }
            match self.get(&name) {
                Ok(meta) => list.push(meta),
                Err(VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    /// Deletes volume `name` and its files; the caller checked it is unused.
    pub(crate) fn remove(&self, name: &str) -> Result<VolumeMeta, VolumeError> {
        let meta = self.get(name)?;
        let dir = self.dir(name);
        // Renamed first, so a half-removed volume is never listed or mounted.
        let doomed = self.root.join(format!(".removing-{name}"));
        std::fs::rename(&dir, &doomed).map_err(|source| VolumeError::Io {
            action: "remove",
            path: dir.clone(),
            source,
        })?;
        std::fs::remove_dir_all(&doomed).map_err(|source| VolumeError::Io {
            action: "remove",
            path: doomed,
            source,
        })?;
        Ok(meta)
    }
}

fn check_name(name: &str) -> Result<(), VolumeError> {
    crate::lifecycle::check_name(name).map_err(|_| VolumeError::InvalidName(name.to_owned()))?;
    if name.len() > MAX_NAME_LEN {
        return Err(VolumeError::InvalidName(name.to_owned()));
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Bytes the files under `dir` take, not following symlinks; unreadable parts count nothing.
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_create_get_list_remove_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = VolumeStore::new(tmp.path().join("volumes"));
        assert!(store.list().expect("empty").is_empty());
        let made = store.create("data").expect("create");
        assert!(made.path.is_dir());
        assert!(matches!(store.create("data"), Err(VolumeError::Exists(_))));
        assert_eq!(store.get("data").expect("get"), made);
        assert_eq!(store.ensure("data").expect("ensure"), made);
        store.ensure("cache").expect("ensure makes it");
        let names: Vec<String> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["cache", "data"]);
        store.remove("data").expect("remove");
        assert!(matches!(store.get("data"), Err(VolumeError::NotFound(_))));
        assert!(!made.path.exists());
    }

    #[test]
    fn test_names_that_could_escape_the_store_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = VolumeStore::new(tmp.path().to_owned());
        for bad in ["", "..", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            assert!(
                matches!(store.create(bad), Err(VolumeError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }
}
