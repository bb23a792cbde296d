//! `hearth supervise ID` (hidden): the supervisor process of a detached sandbox.

use hearth_engine::Engine;

use crate::cli::args::SandboxArgs;

pub async fn supervise(engine: &Engine, args: &SandboxArgs) -> anyhow::Result<i32> {
    hearth_engine::supervisor::supervise(engine, &args.sandbox).await?;
    Ok(0)
}
