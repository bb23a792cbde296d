//! `hearth volume create|ls|inspect|rm`.

use hearth_engine::{human_size, Engine};

use crate::cli::args::VolumeCommand;

pub fn volume(engine: &Engine, command: VolumeCommand) -> anyhow::Result<i32> {
    match command {
        VolumeCommand::Create { name } => {
            let meta = engine.volume_create(&name)?;
            println!("{}", meta.name);
        }
        VolumeCommand::Ls { json } => {
            let list = engine.volumes()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!("{:<24} {:>10}  USED BY", "NAME", "SIZE");
            for info in list {
                let used_by = if info.used_by.is_empty() {
                    "-".to_owned()
                } else {
                    info.used_by.join(",")
                };
                println!(
                    "{:<24} {:>10}  {}",
                    info.meta.name,
                    human_size(info.size),
                    used_by
                );
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut infos = Vec::new();
            for name in &names {
                infos.push(engine.volume_inspect(name)?);
            }
            println!("{}", serde_json::to_string_pretty(&infos)?);
        }
        VolumeCommand::Rm { names } => {
            for name in names {
                engine.volume_remove(&name)?;
                println!("{name}");
            }
        }
    }
    Ok(0)
}
