//! `hearth logs`: the main process output of a detached sandbox.

use std::io::Write;

use anyhow::Context;
use hearth_engine::paths::StateDir;
use hearth_engine::state::StateDb;

use crate::cli::args::SandboxArgs;

pub fn logs(state: &StateDir, args: &SandboxArgs) -> anyhow::Result<i32> {
    let record = StateDb::open(&state.database())?.find(&args.sandbox)?;
    let path = hearth_engine::supervisor::log_path(state, &record.id);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is a normal end.
    let _ = stdout.write_all(&bytes);
    Ok(0)
}
