//! One file per subcommand; each parses nothing and prints everything.

pub mod cp;
pub mod detach;
pub mod doctor;
pub mod exec;
pub mod gc;
pub mod image;
pub mod logs;
pub mod ls;
pub mod pull;
pub mod rm;
pub mod run;
pub mod setup;
pub mod stop;
pub mod supervise;

use anyhow::Context;
use hearth_engine::paths::StateDir;
use hearth_engine::Engine;

/// The engine for this host, with a pointer to `hearth doctor` when something is missing.
pub fn engine(state: StateDir) -> anyhow::Result<Engine> {
    Engine::detect(state).context("hearth cannot run VMs on this host (see `hearth doctor`)")
}
