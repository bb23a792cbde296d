//! `hearth run -d`: record the sandbox, hand it to a supervisor process, print its id.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hearth_engine::state::{Health, SandboxRecord, SandboxState, StateDb};
use hearth_engine::supervisor::{self, DetachedSpec, HealthCheck};
use hearth_engine::{Engine, ExecRequest, SandboxConfig};

use crate::cli::args::RunArgs;

const POLL: Duration = Duration::from_millis(50);

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "deft", "eager", "fond", "glad", "hardy", "keen", "lucid", "merry",
    "noble", "proud", "quick", "rapid", "sage", "tidy", "vivid", "warm", "zesty",
];
const NOUNS: &[&str] = &[
    "otter", "heron", "lynx", "badger", "falcon", "marten", "wren", "bison", "ibis", "koala",
    "lemur", "moose", "newt", "orca", "puffin", "quail", "raven", "stoat", "tapir", "vole",
];

/// A docker-like name such as `brave-otter`, picked from the id so it is stable for it.
fn generated_name(id: &str) -> String {
    let n = u64::from_str_radix(id, 16).unwrap_or_default();
    let adjective = ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize];
    let noun = NOUNS[((n / ADJECTIVES.len() as u64) % NOUNS.len() as u64) as usize];
    format!("{adjective}-{noun}-{}", &id[..4.min(id.len())])
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid || name.len() > 64 {
        bail!("invalid name `{name}`: use up to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit");
    }
    Ok(())
}

/// Flags that only mean something for a detached sandbox are refused without `-d`, rather than
/// silently ignored.
pub fn refuse_detached_flags(args: &RunArgs) -> anyhow::Result<()> {
    let given = [
        ("--name", args.name.is_some()),
        ("--rm", args.rm),
        ("--timeout", args.timeout.is_some()),
        ("--health-cmd", args.health_cmd.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
        bail!("{flag} needs -d (a detached sandbox) or `hearth create`");
    }
    Ok(())
}

pub async fn start(
    engine: &Engine,
    args: &RunArgs,
    config: SandboxConfig,
    main: Option<ExecRequest>,
) -> anyhow::Result<i32> {
    let state = engine.state();
    hearth_engine::gc::collect(state).context("garbage collection before start failed")?;
    let db = StateDb::open(&state.database())?;
    let id = hearth_engine::new_id();
    let name = args.name.clone().unwrap_or_else(|| generated_name(&id));
    check_name(&name)?;
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let command = main.as_ref().map(|m| m.argv.clone()).unwrap_or_default();
    db.insert(&SandboxRecord {
        id: id.clone(),
        name,
        image: args.image.clone().unwrap_or_else(|| "default".to_owned()),
        command,
        state: if args.create_only {
            SandboxState::Created
        } else {
            SandboxState::Starting
        },
        created_at,
        vcpus: config.vcpus,
        mem_size_mib: config.mem_size_mib,
        backend: engine.backend().to_string(),
        supervisor_pid: None,
        exit_code: None,
        error: None,
        auto_remove: args.rm,
        health: args.health_cmd.as_ref().map(|_| Health::Starting),
    })?;
    let spec = DetachedSpec {
        config,
        main,
        timeout: args.timeout,
        health: args.health_cmd.as_ref().map(|command| HealthCheck {
            command: command.clone(),
            interval: args.health_interval,
            retries: args.health_retries,
        }),
    };
    if args.create_only {
        if let Err(e) = supervisor::write_spec(state, &id, &spec) {
            db.remove(&id)?;
            return Err(e.into());
        }
        println!("{id}");
        return Ok(0);
    }
    let supervisor = match spawn_supervisor(state, &id, &spec) {
        Ok(child) => child,
        Err(e) => {
            db.remove(&id)?;
            let _ = std::fs::remove_dir_all(state.sandbox_dir(&id));
            return Err(e);
        }
    };
    let log = state.sandbox_dir(&id).join("supervisor.log");
    wait_started(&db, &id, supervisor, &log, args.wait_healthy).await
}

/// `hearth start`: a new supervisor for each created or ended sandbox, from its stored spec.
pub async fn start_existing(
    state: &hearth_engine::paths::StateDir,
    args: &crate::cli::args::SandboxesArgs,
) -> anyhow::Result<i32> {
    hearth_engine::gc::collect(state)?;
    let db = StateDb::open(&state.database())?;
    for query in &args.sandboxes {
        let record = db.find(query)?;
        if record.state.is_live() {
            bail!("sandbox {} is already {:?}", record.name, record.state);
        }
        db.set_starting(&record.id)?;
        let child = launch(state, &record.id)?;
        let log = state.sandbox_dir(&record.id).join("supervisor.log");
        wait_started(&db, &record.id, child, &log, false).await?;
    }
    Ok(0)
}

fn spawn_supervisor(
    state: &hearth_engine::paths::StateDir,
    id: &str,
    spec: &DetachedSpec,
) -> anyhow::Result<std::process::Child> {
    supervisor::write_spec(state, id, spec)?;
    launch(state, id)
}

/// Starts `hearth supervise ID` for a sandbox whose spec is written.
fn launch(state: &hearth_engine::paths::StateDir, id: &str) -> anyhow::Result<std::process::Child> {
    let log_path = state.sandbox_dir(id).join("supervisor.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the hearth binary")?;
    // Its own process group: a Ctrl-C in this terminal must not reach the supervisor.
    std::os::unix::process::CommandExt::process_group(
        std::process::Command::new(exe)
            .arg("--state-dir")
            .arg(state.root())
            .arg("supervise")
            .arg(id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
        0,
    )
    .spawn()
    .context("starting the sandbox supervisor")
}

/// Waits until the supervisor reports the sandbox running (or failed), then prints its id.
async fn wait_started(
    db: &StateDb,
    id: &str,
    mut supervisor: std::process::Child,
    log: &std::path::Path,
    wait_healthy: bool,
) -> anyhow::Result<i32> {
    loop {
        let record = db.find(id)?;
        match record.state {
            SandboxState::Starting => {
                if let Some(status) = supervisor.try_wait()? {
                    let output = std::fs::read_to_string(log).unwrap_or_default();
                    db.set_ended(id, SandboxState::Failed, None, Some("its supervisor died"))?;
                    bail!(
                        "the supervisor of sandbox {id} exited ({status}) before it started: {}",
                        output.trim()
                    );
                }
                tokio::time::sleep(POLL).await;
            }
            SandboxState::Running if wait_healthy && record.health != Some(Health::Healthy) => {
                if record.health == Some(Health::Unhealthy) {
                    bail!(
                        "sandbox {id} is running but unhealthy: its health command keeps failing"
                    );
                }
                tokio::time::sleep(POLL).await;
            }
            SandboxState::Exited if wait_healthy => {
                bail!("sandbox {id} ended before it became healthy")
            }
            SandboxState::Running | SandboxState::Exited => {
                println!("{id}");
                return Ok(0);
            }
            SandboxState::Created => bail!("sandbox {id} went back to created"),
            SandboxState::Failed => bail!(
                "sandbox {id} failed to start: {}",
                record.error.as_deref().unwrap_or("no reason recorded")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_generated_names_are_valid_and_stable() {
        let name = generated_name("0123456789ab");
        assert_eq!(name, generated_name("0123456789ab"));
        assert!(check_name(&name).is_ok(), "{name}");
    }

    #[test]
    fn test_bad_names_are_refused() {
        for name in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
    }
}
