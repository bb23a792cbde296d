//! `hearth snapshot create|ls|inspect|rm`.

use hearth_engine::{human_size, Engine};

use crate::cli::args::SnapshotCommand;

pub async fn snapshot(engine: &Engine, command: SnapshotCommand) -> anyhow::Result<i32> {
    match command {
        SnapshotCommand::Create {
            sandbox,
            name,
            stop,
        } => {
            let meta = engine
                .snapshot_create(&sandbox, name.as_deref(), stop)
                .await?;
            println!("{}", meta.name);
        }
        SnapshotCommand::Ls { json } => {
            let list = engine.snapshots()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:<32} {:<24} {:<24} {:>10}",
                "NAME", "SANDBOX", "IMAGE", "SIZE"
            );
            for meta in list {
                println!(
                    "{:<32} {:<24} {:<24} {:>10}",
                    meta.name,
                    meta.sandbox_name,
                    meta.image,
                    human_size(meta.size)
                );
            }
        }
        SnapshotCommand::Inspect { snapshots } => {
            let mut metas = Vec::new();
            for name in &snapshots {
                metas.push(engine.snapshot(name)?);
            }
            println!("{}", serde_json::to_string_pretty(&metas)?);
        }
        SnapshotCommand::Rm { snapshots } => {
            for name in snapshots {
                engine.snapshot_remove(&name)?;
                println!("{name}");
            }
        }
    }
    Ok(0)
}
