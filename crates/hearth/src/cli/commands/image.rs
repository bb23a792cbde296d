//! `hearth image ls|rm|prune|import`.

use hearth_engine::{human_size, Engine};

use crate::cli::args::ImageCommand;

pub fn image(engine: &Engine, command: ImageCommand) -> anyhow::Result<i32> {
    match command {
        ImageCommand::Ls { json } => {
            let list = engine.images()?;
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
                let digest = engine.remove_image(&name)?;
                println!("Untagged: {name} ({digest})");
            }
        }
        ImageCommand::Import { file, name } => {
            let imported = engine.import_image(&file, name.as_deref())?;
            if let Some(name) = imported.name {
                eprintln!("Loaded image: {name}");
            }
            println!("{}", imported.record.digest);
        }
        ImageCommand::Prune { json } => {
            let report = engine.prune_images()?;
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
