//! One file per subcommand; each parses nothing and prints everything.

pub mod cp;
pub mod detach;
pub mod doctor;
pub mod exec;
pub mod fs;
pub mod gc;
pub mod image;
pub mod login;
pub mod logs;
pub mod ls;
pub mod pull;
pub mod rm;
pub mod run;
pub mod setup;
pub mod stop;
pub mod supervise;

use anyhow::{bail, Context};
use hearth_engine::paths::StateDir;
use hearth_engine::state::{SandboxRecord, SandboxState, StateDb};
use hearth_engine::Engine;

/// The engine for this host, with a pointer to `hearth doctor` when something is missing.
pub fn engine(state: StateDir) -> anyhow::Result<Engine> {
    Engine::detect(state).context("hearth cannot run VMs on this host (see `hearth doctor`)")
}

/// The record of sandbox `query`, which must be running (for exec, cp, fs).
pub fn running(state: &StateDir, query: &str) -> anyhow::Result<SandboxRecord> {
    let record = StateDb::open(&state.database())?.find(query)?;
    if record.state != SandboxState::Running {
        bail!(
            "sandbox {} ({}) is {:?}, not running; start a new one with `hearth run -d`",
            record.name,
            record.id,
            record.state
        );
    }
    Ok(record)
}
