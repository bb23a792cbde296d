//! Paused E2B sandboxes. A pause saves the sandbox as a hearth snapshot and ends it, so no
//! hearth sandbox is left to carry what E2B still lists. Each paused sandbox is therefore a
//! snapshot (named by [`snapshot_name`]) plus a [`Paused`] record of what a snapshot does not
//! keep (template, metadata, environment, egress): one small JSON file per sandbox in
//! `<state dir>/api/e2b-paused/`. A file beside the token secret rather than a table: the
//! engine's state has no place for a protocol's bookkeeping, and a file per sandbox, written
//! aside and renamed, cannot be half-written. A record counts only while its snapshot exists,
//! so a pause cut short between the two leaves nothing that lists as paused.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest record read back: 32 labels and an environment are far smaller.
const MAX_RECORD: u64 = 1024 * 1024;

/// The snapshot that holds paused E2B sandbox `id`.
pub fn snapshot_name(id: &str) -> String {
    format!("e2b-{id}")
}

/// What a resume needs besides the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Paused {
    /// The E2B sandbox id.
    pub id: String,
    /// The hearth sandbox's labels: E2B metadata and hearth's own `e2b.*` ones.
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE`: the environment its processes start with (it may hold secrets: the
    /// file is 0600 in a 0700 dir).
    pub env: Vec<String>,
    pub vcpus: u8,
    pub mem_size_mib: u32,
    /// Unix seconds.
    pub started_at: i64,
    pub paused_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PausedError {
    #[error("failed to {action} the paused-sandbox record `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the paused-sandbox record `{}` is not valid", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the paused-sandbox record `{}` is over {MAX_RECORD} bytes", path.display())]
    TooLarge { path: PathBuf },
}

/// The records, one file per E2B id (ids are checked to be `[a-z0-9]` before they get here).
#[derive(Debug, Clone)]
pub struct PausedStore {
    dir: PathBuf,
}

impl PausedStore {
    pub fn new(state_root: &Path) -> Self {
        PausedStore {
            dir: state_root.join("api").join("e2b-paused"),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save(&self, record: &Paused) -> Result<(), PausedError> {
        let path = self.path(&record.id);
        let fail = |action, source| PausedError::Io {
            action,
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| fail("create the directory of", e))?;
        let json = serde_json::to_vec(record).map_err(|source| PausedError::Json {
            path: path.clone(),
            source,
        })?;
        let staging = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staging)
            .and_then(|mut file| {
                file.write_all(&json)?;
                file.sync_all()
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staging);
            return Err(fail("write", e));
        }
        std::fs::rename(&staging, &path).map_err(|e| fail("store", e))
    }

    /// The record of `id`, if there is one.
    pub fn get(&self, id: &str) -> Result<Option<Paused>, PausedError> {
        read(&self.path(id))
    }

    /// Removes the record of `id`; one that is not there is no error.
    pub fn remove(&self, id: &str) -> Result<(), PausedError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PausedError::Io {
                action: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every record, oldest pause first; one that cannot be read is skipped (and logged), so
    /// a damaged file does not hide the others.
    pub fn list(&self) -> Result<Vec<Paused>, PausedError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(PausedError::Io {
                    action: "list",
                    path: self.dir.clone(),
                    source: e,
                })
            }
        };
        let mut records: Vec<Paused> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .filter_map(|path| match read(&path) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!("skipping a paused E2B sandbox: {e}");
                    None
                }
            })
            .collect();
        records.sort_by_key(|r| r.paused_at);
        Ok(records)
    }
}

fn read(path: &Path) -> Result<Option<Paused>, PausedError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PausedError::Io {
                action: "open",
                path: path.to_owned(),
                source: e,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| PausedError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_RECORD {
        return Err(PausedError::TooLarge {
            path: path.to_owned(),
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| PausedError::Json {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_records_round_trip_and_removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = PausedStore::new(dir.path());
        assert!(store.list().unwrap().is_empty());
        let record = Paused {
            id: "abc123".into(),
            labels: [("e2b.template".to_owned(), "base".to_owned())].into(),
            env: vec!["A=1".into()],
            vcpus: 1,
            mem_size_mib: 512,
            started_at: 1,
            paused_at: 2,
        };
        store.save(&record).unwrap();
        assert_eq!(store.get("abc123").unwrap().unwrap().env, record.env);
        assert_eq!(store.list().unwrap().len(), 1);
        store.remove("abc123").unwrap();
        store.remove("abc123").unwrap();
        assert!(store.get("abc123").unwrap().is_none());
    }
}
