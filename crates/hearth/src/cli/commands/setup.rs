//! `hearth setup`: build the boot assets into the state dir.

use std::path::PathBuf;

use anyhow::{bail, Context};
use hearth_engine::setup::{
    BackendKind, BackendSetup, FetchedRelease, FirecrackerVersion, ReleaseFetch, SetupConfig,
    SetupReporter, Step, StepOutcome, DEFAULT_RELEASE,
};
use hearth_engine::Engine;

use crate::cli::args::SetupArgs;

/// Where install.sh puts the agent.
const INSTALLED_AGENT: &str = "/usr/local/lib/hearth/hearth-agent";

/// Downloads the official release `args` name into the state dir.
async fn fetch_firecracker(engine: &Engine, args: &SetupArgs) -> anyhow::Result<FetchedRelease> {
    let version = match &args.firecracker_version {
        Some(version) => {
            let line = format!("Firecracker v{}", version.trim_start_matches('v'));
            FirecrackerVersion::from_version_line(&line)
                .with_context(|| format!("`{version}` is not a version like 1.16.1"))?
        }
        None => DEFAULT_RELEASE,
    };
    let mut fetch = ReleaseFetch::official(version, engine.state().firecracker_dir());
    fetch.sha256 = args.firecracker_sha256.clone();
    eprintln!("==> fetching Firecracker {version} from {}", fetch.base_url);
    Ok(engine.fetch_firecracker(&fetch).await?)
}

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

pub async fn setup(
    engine: &Engine,
    args: &SetupArgs,
    backend: Option<&str>,
) -> anyhow::Result<i32> {
    // The backend's binaries first: a wrong one fails before minutes of asset building.
    let fetched = match args.fetch_firecracker {
        true => Some(fetch_firecracker(engine, args).await?),
        false => None,
    };
    if backend.is_some()
        || args.firecracker_bin.is_some()
        || args.jailer_bin.is_some()
        || args.firecracker_memory.is_some()
        || fetched.is_some()
    {
        let backend = backend.map(str::parse::<BackendKind>).transpose()?;
        let (firecracker, jailer) = match fetched {
            Some(release) => (Some(release.firecracker), Some(release.jailer)),
            None => (args.firecracker_bin.clone(), args.jailer_bin.clone()),
        };
        let recorded = engine.record_backend(&BackendSetup {
            backend,
            firecracker,
            jailer,
            firecracker_memory: args.firecracker_memory,
        })?;
        let default = recorded.backend.unwrap_or_default();
        eprintln!(
            "==> default backend {default}, recorded in {}",
            engine.state().host_config().display()
        );
        for (name, path) in [
            ("firecracker", &recorded.firecracker),
            ("jailer", &recorded.jailer),
        ] {
            if let Some(path) = path {
                eprintln!("==> {name} {}", path.display());
            }
        }
    }
    let agent = match &args.agent {
        Some(agent) => agent.clone(),
        None => default_agent()?,
    };
    let mut config = SetupConfig::new(agent);
    config.kernel = args.kernel.clone();
    if let (Some(url), Some(sha256)) = (
        &args.fetch_firecracker_kernel,
        &args.firecracker_kernel_sha256,
    ) {
        eprintln!("==> fetching the guest kernel {url}");
        config.kernel = Some(engine.fetch_firecracker_kernel(url, sha256).await?);
    }
    config.force = args.force;
    let report = engine.setup(&config, &StderrReporter)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let version = report
        .kernel
        .version
        .as_deref()
        .unwrap_or("unknown version");
    println!(
        "guest kernel   {} ({version})",
        report.kernel.path.display()
    );
    println!("modules        {} in the initramfs", report.modules.len());
    for step in &report.steps {
        let name = match step.step {
            Step::Kernel => "kernel",
            Step::Initramfs => "initramfs",
            Step::DefaultImage => "default image",
            Step::FirecrackerKernel => "vmlinux",
        };
        let outcome = match step.outcome {
            StepOutcome::Built => "built",
            StepOutcome::UpToDate => "up to date",
        };
        println!("{name:<14} {} ({outcome})", step.output.display());
    }
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
