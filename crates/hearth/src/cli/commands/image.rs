//! `hearth image ls|rm|prune|import`.

use anyhow::Context;
use hearth_engine::paths::StateDir;
use hearth_engine::{human_size, image, images};

use crate::cli::args::ImageCommand;

pub fn image(state: &StateDir, command: ImageCommand) -> anyhow::Result<i32> {
    let store = images::store(state);
    match command {
        ImageCommand::Ls { json } => {
            let list = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!("{:<50} {:<14} {:>10}", "NAME", "IMAGE ID", "SIZE");
            for image in list {
                let size = human_size(image.record.size_bytes);
                let id = image.record.digest.short().to_owned();
                if image.names.is_empty() {
                    println!("{:<50} {id:<14} {size:>10}", "<none>");
                }
                for name in &image.names {
                    println!("{name:<50} {id:<14} {size:>10}");
                }
            }
        }
        ImageCommand::Rm { images } => {
            for name in images {
                let digest = store.remove(&name)?;
                println!("Untagged: {name} ({digest})");
            }
        }
        ImageCommand::Import { file, name } => {
            let imported = image::import(&store, &file, name.as_deref())
                .with_context(|| format!("failed to import `{}`", file.display()))?;
            if let Some(name) = imported.name {
                eprintln!("Loaded image: {name}");
            }
            println!("{}", imported.record.digest);
        }
        ImageCommand::Prune { json } => {
            let report = store.prune()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "Removed {} images and {} blobs, freed {}",
                    report.images.len(),
                    report.blobs.len(),
                    human_size(report.bytes_freed)
                );
            }
        }
    }
    Ok(0)
}
