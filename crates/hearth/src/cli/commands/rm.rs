//! `hearth rm`: forget ended sandboxes and their files; `-f` kills running ones first.

use hearth_engine::Engine;

use crate::cli::args::RmArgs;

pub async fn rm(engine: &Engine, args: &RmArgs) -> anyhow::Result<i32> {
    for query in &args.targets.sandboxes {
        println!("{}", engine.remove(query, args.force).await?.name);
    }
    Ok(0)
}
