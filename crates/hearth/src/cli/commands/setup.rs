//! `hearth setup`: build the boot assets into the state dir.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_engine::paths::StateDir;
use hearth_engine::setup::{self, SetupConfig, SetupReporter, StepOutcome};

use crate::cli::args::SetupArgs;

/// Where install.sh puts the agent.
const INSTALLED_AGENT: &str = "/usr/local/lib/hearth/hearth-agent";

/// Prints each step as it is built, to stderr.
struct StderrReporter;

impl SetupReporter for StderrReporter {
    fn on_step(&self, message: &str) {
        eprintln!("==> {message}");
    }

    fn on_warning(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}

pub fn setup(state: &StateDir, args: &SetupArgs) -> anyhow::Result<i32> {
    let agent = match &args.agent {
        Some(agent) => agent.clone(),
        None => default_agent()?,
    };
    let mut config = SetupConfig::new(agent);
    config.kernel = args.kernel.clone();
    config.force = args.force;
    let report = setup::setup(state, &config, &StderrReporter)
        .with_context(|| format!("setup of `{}` failed", state.root().display()))?;
    let version = report
        .kernel
        .version
        .as_deref()
        .unwrap_or("unknown version");
    println!(
        "kernel:        {} ({version})",
        report.kernel.path.display()
    );
    for step in &report.steps {
        let outcome = match step.outcome {
            StepOutcome::Built => "built",
            StepOutcome::UpToDate => "up to date",
        };
        println!(
            "{:<14} {} ({outcome})",
            format!("{:?}:", step.step).to_lowercase(),
            step.output.display()
        );
    }
    println!("modules:       {}", report.modules.len());
    Ok(0)
}

/// `hearth-agent` beside this binary (a build tree), else where install.sh put it.
fn default_agent() -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hearth-agent")));
    let candidates = beside.into_iter().chain([PathBuf::from(INSTALLED_AGENT)]);
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no guest agent found beside hearth or at {INSTALLED_AGENT}; run ./install.sh or pass \
         --agent PATH (a static build of the hearth-agent crate)"
    )
}
