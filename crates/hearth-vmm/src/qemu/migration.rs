//! Saving a VM's device state and memory to a file and loading it into a new QEMU, over QMP.
//!
//! QEMU 7.2 has no `file:` migration URI, and its seccomp sandbox (`spawn=deny`) forbids the
//! `exec:` one, so hearth opens the file itself and hands QEMU the descriptor over QMP (`getfd`,
//! then `fd:NAME`): the jailed QEMU never needs a path into the state dir.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

use super::qmp::{Qmp, QmpError};

/// How often a migration's progress is polled; a save of an idle guest takes well under a second.
const POLL: Duration = Duration::from_millis(10);

/// Longest a save or load may take: a full 512 MiB stream under TCG on a busy host takes
/// seconds, not minutes.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("failed to open migration file `{}`", path.display())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("QEMU's migration {status}: {desc}")]
    Failed { status: String, desc: String },
    #[error("QEMU's migration did not finish within {0:?}")]
    Timeout(Duration),
}

/// The name the migration file's descriptor goes by in QEMU; one migration runs at a time.
const MIGRATION_FD: &str = "hearth-migration";

/// Hands `file` to QEMU and returns the URI that names it.
async fn fd_uri(qmp: &mut Qmp, file: &File) -> Result<String, MigrationError> {
    qmp.send_fd(MIGRATION_FD, file.as_fd()).await?;
    Ok(format!("fd:{MIGRATION_FD}"))
}

/// Pauses the VM and writes its state to `dest`; the VM stays paused, also when this fails.
pub async fn save(qmp: &mut Qmp, dest: &Path) -> Result<(), MigrationError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dest)
        .map_err(|source| MigrationError::Open {
            path: dest.to_owned(),
            source,
        })?;
    qmp.execute("stop", Value::Null).await?;
    let uri = fd_uri(qmp, &file).await?;
    qmp.execute("migrate", json!({ "uri": uri })).await?;
    wait_completed(qmp).await
}

/// Has the next save or load leave out RAM in shared memory files (QEMU's x-ignore-shared):
/// both ends of one stream must say so, the loading end over QMP before `migrate-incoming`.
pub async fn ignore_shared_memory(qmp: &mut Qmp) -> Result<(), MigrationError> {
    set_ignore_shared(qmp, true).await
}

/// Has the next save carry all RAM: a clone keeps x-ignore-shared on from its load, and a full
/// stream saved with it on names the capability, so no VM without it would load the stream.
pub async fn include_shared_memory(qmp: &mut Qmp) -> Result<(), MigrationError> {
    set_ignore_shared(qmp, false).await
}

async fn set_ignore_shared(qmp: &mut Qmp, on: bool) -> Result<(), MigrationError> {
    let capabilities = json!([{ "capability": "x-ignore-shared", "state": on }]);
    qmp.execute(
        "migrate-set-capabilities",
        json!({ "capabilities": capabilities }),
    )
    .await?;
    Ok(())
}

/// Loads the state in `source` into a QEMU started with `-incoming defer`. The VM stays paused
/// (a saved stream carries the paused state it was saved in) until `cont`.
pub async fn load(qmp: &mut Qmp, source: &Path) -> Result<(), MigrationError> {
    let file = File::open(source).map_err(|e| MigrationError::Open {
        path: source.to_owned(),
        source: e,
    })?;
    let uri = fd_uri(qmp, &file).await?;
    qmp.execute("migrate-incoming", json!({ "uri": uri }))
        .await?;
    wait_completed(qmp).await
}

async fn wait_completed(qmp: &mut Qmp) -> Result<(), MigrationError> {
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let info = qmp.execute("query-migrate", Value::Null).await?;
        match migration_status(&info) {
            Progress::Completed => return Ok(()),
            Progress::Failed { status, desc } => {
                return Err(MigrationError::Failed { status, desc })
            }
            Progress::Running => {}
        }
        if Instant::now() > deadline {
            let _ = qmp.execute("migrate_cancel", Value::Null).await;
            return Err(MigrationError::Timeout(MIGRATION_TIMEOUT));
        }
        sleep(POLL).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Running,
    Completed,
    Failed { status: String, desc: String },
}

/// Reads a `query-migrate` reply. A destination that has not started loading yet answers `{}`.
fn migration_status(info: &Value) -> Progress {
    let status = info.get("status").and_then(Value::as_str).unwrap_or("none");
    match status {
        "completed" => Progress::Completed,
        "failed" | "cancelled" | "cancelling" => Progress::Failed {
            status: status.to_owned(),
            desc: info
                .get("error-desc")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_owned(),
        },
        _ => Progress::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_migration_status_from_recorded_replies() {
        assert_eq!(migration_status(&json!({})), Progress::Running);
        assert_eq!(
            migration_status(&json!({"status": "active", "ram": {}})),
            Progress::Running
        );
        assert_eq!(
            migration_status(&json!({"status": "completed", "total-time": 715})),
            Progress::Completed
        );
        assert_eq!(
            migration_status(
                &json!({"status": "failed", "error-desc": "Unable to write to command: Broken pipe"})
            ),
            Progress::Failed {
                status: "failed".into(),
                desc: "Unable to write to command: Broken pipe".into()
            }
        );
    }
}
