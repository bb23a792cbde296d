//! `hearth start`, `hearth stop`, `hearth kill`, `hearth wait`: one engine call per sandbox.

use std::time::Duration;

use hearth_engine::Engine;

use crate::cli::args::{SandboxesArgs, StopArgs};

/// Boots created or ended sandboxes again; prints each id once it runs.
pub async fn start(engine: &Engine, args: &SandboxesArgs) -> anyhow::Result<i32> {
    for query in &args.sandboxes {
        println!("{}", engine.start(query).await?.id);
    }
    Ok(0)
}

pub async fn stop(engine: &Engine, args: &StopArgs) -> anyhow::Result<i32> {
    let grace = Duration::from_secs(args.time);
    for query in &args.targets.sandboxes {
        println!("{}", engine.stop(query, grace).await?.name);
    }
    Ok(0)
}

pub async fn kill(engine: &Engine, args: &SandboxesArgs) -> anyhow::Result<i32> {
    for query in &args.sandboxes {
        println!("{}", engine.kill(query).await?.name);
    }
    Ok(0)
}

/// Prints each sandbox's exit code once it ends (-1 when none is known; then exits 1).
pub async fn wait(engine: &Engine, args: &SandboxesArgs) -> anyhow::Result<i32> {
    let mut last = 0;
    for query in &args.sandboxes {
        last = engine.wait(query).await?.unwrap_or(-1);
        println!("{last}");
    }
    Ok(if last < 0 { 1 } else { 0 })
}
