//! `hearth template ls|rm|prune`.

use hearth_engine::{human_size, Engine};

use crate::cli::args::TemplateCommand;

pub fn template(engine: &Engine, command: TemplateCommand) -> anyhow::Result<i32> {
    match command {
        TemplateCommand::Ls { json } => {
            let list = engine.templates()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:<20} {:<32} {:>4} {:>7} {:<7} {:>10}",
                "NAME", "IMAGE", "CPUS", "MEMORY", "NETWORK", "SIZE"
            );
            for meta in list {
                println!(
                    "{:<20} {:<32} {:>4} {:>6}M {:<7} {:>10}",
                    meta.name,
                    meta.image,
                    meta.vcpus,
                    meta.mem_size_mib,
                    if meta.network { "yes" } else { "none" },
                    human_size(meta.size)
                );
            }
        }
        TemplateCommand::Rm { templates } => {
            for name in templates {
                engine.template_remove(&name)?;
                println!("{name}");
            }
        }
        TemplateCommand::Prune => {
            for name in engine.template_prune()? {
                println!("{name}");
            }
        }
    }
    Ok(0)
}
