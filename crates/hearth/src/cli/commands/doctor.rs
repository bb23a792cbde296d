//! `hearth doctor`: what hearth found on this host and what to install.

use hearth_engine::doctor::CheckStatus;
use hearth_engine::Engine;

use crate::cli::args::DoctorArgs;

pub fn doctor(engine: &Engine, args: &DoctorArgs) -> anyhow::Result<i32> {
    let report = engine.doctor();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("state dir: {}", report.state_dir.display());
        for check in &report.checks {
            let mark = match check.status {
                CheckStatus::Ok => "ok     ",
                CheckStatus::Warn => "warn   ",
                CheckStatus::Missing => "MISSING",
            };
            println!("{mark} {:<19} {}", check.name, check.detail);
            if let Some(fix) = &check.fix {
                println!("        {:<19} fix: {fix}", "");
            }
        }
        if report.ok() {
            println!("\nhearth can run VMs here.");
        } else {
            println!("\nhearth cannot run VMs here until the MISSING items are fixed.");
        }
    }
    Ok(if report.ok() { 0 } else { 1 })
}
