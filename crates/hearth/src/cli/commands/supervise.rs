//! `hearth supervise ID` (hidden): the supervisor process of a detached sandbox, started by the
//! engine through [`hearth_engine::ReexecLauncher`].

use hearth_engine::Engine;

use crate::cli::args::SandboxArgs;

pub async fn supervise(engine: &Engine, args: &SandboxArgs) -> anyhow::Result<i32> {
    engine.supervise(&args.sandbox).await?;
    Ok(0)
}
