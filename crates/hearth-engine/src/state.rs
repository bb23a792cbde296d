//! The state database: one row per sandbox that outlives a command (`run -d`), in SQLite.
//!
//! Every writer opens its own connection; SQLite's locking plus a busy timeout makes concurrent
//! CLI commands safe, and the UNIQUE constraint on `name` decides races between two
//! `run --name x` at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

/// How long a writer waits for another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image TEXT NOT NULL,
        command TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        vcpus INTEGER NOT NULL,
        mem_size_mib INTEGER NOT NULL,
        backend TEXT NOT NULL,
        supervisor_pid INTEGER,
        exit_code INTEGER,
        error TEXT,
        auto_remove INTEGER NOT NULL DEFAULT 0
    )",
    "ALTER TABLE sandboxes ADD COLUMN health TEXT",
    "ALTER TABLE sandboxes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE sandboxes ADD COLUMN expires_at INTEGER",
];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to create the state dir `{}`", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state database `{}` is another user's: you may not act on its sandboxes", path.display())]
    NotYours {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to make `{}` private to its owner", path.display())]
    Private {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the state database `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the state database `{}` is corrupt or not a hearth database; move it away to start afresh", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the state database was written by a newer hearth (schema {found}, this one knows {known})"
    )]
    TooNew { found: usize, known: usize },
    #[error("the name `{0}` is already in use by another sandbox")]
    NameTaken(String),
    #[error("no sandbox is named or has an id starting with `{0}`")]
    NotFound(String),
    #[error("`{query}` matches several sandboxes ({}); give more of the id", ids.join(", "))]
    Ambiguous { query: String, ids: Vec<String> },
    #[error("state database query failed")]
    Query(#[from] rusqlite::Error),
}

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// Recorded by `hearth create`; `hearth start` boots it.
    Created,
    /// Its supervisor is booting the VM.
    Starting,
    Running,
    /// The VM ended; `exit_code` says how when known.
    Exited,
    /// The VM never became ready; `error` says why.
    Failed,
}

impl SandboxState {
    /// Every state, in lifecycle order.
    pub const ALL: [SandboxState; 5] = [
        SandboxState::Created,
        SandboxState::Starting,
        SandboxState::Running,
        SandboxState::Exited,
        SandboxState::Failed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SandboxState::Created => "created",
            SandboxState::Starting => "starting",
            SandboxState::Running => "running",
            SandboxState::Exited => "exited",
            SandboxState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Whether a supervisor should be alive for this state.
    pub fn is_live(self) -> bool {
        matches!(self, SandboxState::Starting | SandboxState::Running)
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sandbox as stored. Field names are the `--json` contract of `ls` and `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub state: SandboxState,
    /// Unix time in seconds.
    pub created_at: i64,
    pub vcpus: u8,
    pub mem_size_mib: u32,
    pub backend: String,
    pub supervisor_pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub auto_remove: bool,
    /// Result of the health command, when the sandbox has one.
    pub health: Option<Health>,
    /// The client's own metadata, to find its sandboxes by.
    pub labels: BTreeMap<String, String>,
    /// Unix time in seconds at which its timeout stops it, while it runs with one.
    pub expires_at: Option<i64>,
}

/// What the health command last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No verdict yet: the command has not passed, nor failed `retries` times in a row.
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Health::Starting, Health::Healthy, Health::Unhealthy]
            .into_iter()
            .find(|health| health.as_str() == text)
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Gives `path` `mode` when it grants more than that to group or others: whatever the umask of
/// whoever made it, state holds secrets (specs, logs, credentials) and sockets that drive guests.
pub fn make_private(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// An open state database.
#[derive(Debug)]
pub struct StateDb {
    /// Behind a mutex so that `&StateDb` may be held across an `.await` in a future that a
    /// multi-threaded server moves between threads; each call holds it only for its query.
    conn: Mutex<Connection>,
}

impl StateDb {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let open_error = |source| StateError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .and_then(|()| make_private(dir, 0o700))
                .map_err(|source| StateError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        // SQLite would only say "unable to open database file".
        if let Err(source) = std::fs::metadata(path) {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(StateError::NotYours {
                    path: path.to_owned(),
                    source,
                });
            }
        }
        let conn = Connection::open(path).map_err(open_error)?;
        // The rows hold specs with the main process's `-e` secrets; SQLite's journals take the
        // database file's mode.
        make_private(path, 0o600).map_err(|source| StateError::Private {
            path: path.to_owned(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        let mut db = StateDb {
            conn: Mutex::new(conn),
        };
        db.migrate().map_err(|e| match e {
            StateError::Query(source) => StateError::Corrupt {
                path: path.to_owned(),
                source,
            },
            other => other,
        })?;
        Ok(db)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-query leaves nothing half-done that SQLite has not rolled back.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        let conn = self.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
        // The common case reads only: a write transaction would cost every command (`exec`
        // included) a journal and an fsync.
        let current: usize = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if current == MIGRATIONS.len() {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(StateError::TooNew {
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for migration in &MIGRATIONS[version..] {
            tx.execute_batch(migration)?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
        tx.commit()?;
        Ok(())
    }

    /// Adds a new sandbox; a taken name is [`StateError::NameTaken`].
    pub fn insert(&self, record: &SandboxRecord) -> Result<(), StateError> {
        let command = serde_json::to_string(&record.command)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let labels = serde_json::to_string(&record.labels)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let inserted = self.conn().execute(
            "INSERT INTO sandboxes (id, name, image, command, state, created_at, vcpus,
                 mem_size_mib, backend, supervisor_pid, exit_code, error, auto_remove, health,
                 labels, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                record.id,
                record.name,
                record.image,
                command,
                record.state.as_str(),
                record.created_at,
                record.vcpus,
                record.mem_size_mib,
                record.backend,
                record.supervisor_pid,
                record.exit_code,
                record.error,
                record.auto_remove,
                record.health.map(Health::as_str),
                labels,
                record.expires_at,
            ],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StateError::NameTaken(record.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Finds a sandbox by exact name, exact id, or unique id prefix.
    pub fn find(&self, query: &str) -> Result<SandboxRecord, StateError> {
        let exact = self
            .conn()
            .query_row(
                "SELECT * FROM sandboxes WHERE name = ?1 OR id = ?1",
                [query],
                record_from_row,
            )
            .optional()?;
        if let Some(record) = exact {
            return Ok(record);
        }
        let conn = self.conn();
        let mut statement =
            conn.prepare("SELECT * FROM sandboxes WHERE id LIKE ?1 || '%' ESCAPE '\\'")?;
        let escaped = query
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let matches = statement
            .query_map([escaped], record_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut matches = matches.into_iter();
        match (matches.next(), matches.next()) {
            (None, _) => Err(StateError::NotFound(query.to_owned())),
            (Some(only), None) => Ok(only),
            (Some(first), Some(second)) => Err(StateError::Ambiguous {
                query: query.to_owned(),
                ids: [first, second]
                    .into_iter()
                    .chain(matches)
                    .map(|r| r.id)
                    .collect(),
            }),
        }
    }

    /// All sandboxes, oldest first.
    pub fn list(&self) -> Result<Vec<SandboxRecord>, StateError> {
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT * FROM sandboxes ORDER BY created_at, id")?;
        let records = statement
            .query_map([], record_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(records)
    }

    /// Back to `starting` for a new supervisor: clears what the last run recorded.
    pub fn set_starting(&self, id: &str) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE sandboxes SET state = 'starting', supervisor_pid = NULL, exit_code = NULL,
                 error = NULL, expires_at = NULL WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    pub fn set_running(&self, id: &str) -> Result<(), StateError> {
        self.conn()
            .execute("UPDATE sandboxes SET state = 'running' WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn set_supervisor(&self, id: &str, pid: u32) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE sandboxes SET supervisor_pid = ?2 WHERE id = ?1",
            params![id, pid],
        )?;
        Ok(())
    }

    /// Records the end of a sandbox: `Exited` with a code when known, or `Failed` with a reason.
    pub fn set_ended(
        &self,
        id: &str,
        state: SandboxState,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE sandboxes SET state = ?2, exit_code = ?3, error = ?4, expires_at = NULL
             WHERE id = ?1",
            params![id, state.as_str(), exit_code, error],
        )?;
        Ok(())
    }

    /// When the timeout of running sandbox `id` stops it (Unix seconds), or `None` for never.
    pub fn set_expires_at(&self, id: &str, expires_at: Option<i64>) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE sandboxes SET expires_at = ?2 WHERE id = ?1",
            params![id, expires_at],
        )?;
        Ok(())
    }

    pub fn set_health(&self, id: &str, health: Health) -> Result<(), StateError> {
        self.conn().execute(
            "UPDATE sandboxes SET health = ?2 WHERE id = ?1",
            params![id, health.as_str()],
        )?;
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        self.conn()
            .execute("DELETE FROM sandboxes WHERE id = ?1", [id])?;
        Ok(())
    }
}

/// Now in Unix seconds, the unit of every time the database holds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<SandboxRecord> {
    let text_error = |index: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("bad {what} in the state database").into(),
        )
    };
    let command: String = row.get("command")?;
    let state: String = row.get("state")?;
    let health: Option<String> = row.get("health")?;
    let labels: String = row.get("labels")?;
    Ok(SandboxRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        image: row.get("image")?,
        command: serde_json::from_str(&command).map_err(|_| text_error(3, "command"))?,
        state: SandboxState::parse(&state).ok_or_else(|| text_error(4, "state"))?,
        created_at: row.get("created_at")?,
        vcpus: row.get("vcpus")?,
        mem_size_mib: row.get("mem_size_mib")?,
        backend: row.get("backend")?,
        supervisor_pid: row.get("supervisor_pid")?,
        exit_code: row.get("exit_code")?,
        error: row.get("error")?,
        auto_remove: row.get("auto_remove")?,
        health: match health {
            Some(text) => Some(Health::parse(&text).ok_or_else(|| text_error(13, "health"))?),
            None => None,
        },
        labels: serde_json::from_str(&labels).map_err(|_| text_error(14, "labels"))?,
        expires_at: row.get("expires_at")?,
    })
}

/// A `starting` row with no supervisor yet, made at `created_at` 1, for tests.
#[cfg(test)]
pub(crate) fn test_record(id: &str, name: &str) -> SandboxRecord {
    SandboxRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        image: "default".to_owned(),
        command: vec!["sh".to_owned()],
        state: SandboxState::Starting,
        created_at: 1,
        vcpus: 1,
        mem_size_mib: 512,
        backend: "qemu".to_owned(),
        supervisor_pid: None,
        exit_code: None,
        error: None,
        auto_remove: false,
        health: None,
        labels: BTreeMap::new(),
        expires_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state::test_record as record;

    fn db() -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("hearth.db")).unwrap();
        (dir, db)
    }

    #[test]
    fn test_insert_then_find_by_name_id_and_prefix() {
        let (_dir, db) = db();
        db.insert(&record("abc123", "web")).unwrap();
        assert_eq!(db.find("web").unwrap().id, "abc123");
        assert_eq!(db.find("abc123").unwrap().name, "web");
        assert_eq!(db.find("ab").unwrap().id, "abc123");
    }

    #[test]
    fn test_taken_name_is_refused() {
        let (_dir, db) = db();
        db.insert(&record("abc123", "web")).unwrap();
        assert!(matches!(
            db.insert(&record("def456", "web")),
            Err(StateError::NameTaken(name)) if name == "web"
        ));
    }

    #[test]
    fn test_ambiguous_prefix_and_unknown_are_errors() {
        let (_dir, db) = db();
        db.insert(&record("abc123", "one")).unwrap();
        db.insert(&record("abd456", "two")).unwrap();
        assert!(matches!(db.find("ab"), Err(StateError::Ambiguous { .. })));
        assert!(matches!(db.find("zz"), Err(StateError::NotFound(_))));
        // LIKE wildcards in a query are literal characters, not patterns.
        assert!(matches!(db.find("%"), Err(StateError::NotFound(_))));
    }

    #[test]
    fn test_state_changes_are_stored() {
        let (_dir, db) = db();
        db.insert(&record("abc123", "web")).unwrap();
        db.set_supervisor("abc123", 42).unwrap();
        db.set_running("abc123").unwrap();
        db.set_health("abc123", Health::Healthy).unwrap();
        assert_eq!(db.find("web").unwrap().health, Some(Health::Healthy));
        db.set_ended("abc123", SandboxState::Exited, Some(3), None)
            .unwrap();
        let found = db.find("web").unwrap();
        assert_eq!(
            (found.state, found.exit_code, found.supervisor_pid),
            (SandboxState::Exited, Some(3), Some(42))
        );
        db.remove("abc123").unwrap();
        assert!(db.list().unwrap().is_empty());
    }

    #[test]
    fn test_reopen_keeps_rows_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        StateDb::open(&path)
            .unwrap()
            .insert(&record("abc123", "web"))
            .unwrap();
        assert_eq!(StateDb::open(&path).unwrap().list().unwrap().len(), 1);
    }

    #[test]
    fn test_garbage_file_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        std::fs::write(&path, vec![0x42; 8192]).unwrap();
        let err = StateDb::open(&path).unwrap_err();
        assert!(
            matches!(err, StateError::Corrupt { .. } | StateError::Open { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("hearth.db"));
    }
}
