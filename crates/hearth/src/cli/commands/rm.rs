//! `hearth rm`: forget ended sandboxes and their files; `-f` kills running ones first.

use anyhow::bail;
use hearth_engine::control::ControlRequest;
use hearth_engine::paths::StateDir;
use hearth_engine::state::StateDb;

use crate::cli::args::RmArgs;
use crate::cli::commands::stop::{end_sandbox, KILL_MARGIN};

pub async fn rm(state: &StateDir, args: &RmArgs) -> anyhow::Result<i32> {
    let db = StateDb::open(&state.database())?;
    for query in &args.targets.sandboxes {
        let record = db.find(query)?;
        if record.state.is_live() {
            if !args.force {
                bail!(
                    "sandbox {} is {:?}; stop it first or use `hearth rm -f`",
                    record.name,
                    record.state
                );
            }
            end_sandbox(state, &db, &record, ControlRequest::Kill, KILL_MARGIN).await?;
        }
        db.remove(&record.id)?;
        let dir = state.sandbox_dir(&record.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(
                    anyhow::Error::new(e).context(format!("failed to remove {}", dir.display()))
                );
            }
        }
        println!("{}", record.name);
    }
    Ok(0)
}
