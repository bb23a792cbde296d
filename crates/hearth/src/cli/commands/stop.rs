//! `hearth stop`, `hearth kill`, `hearth wait`: signals to a sandbox's supervisor, and waiting
//! for the state database to show the end.

use std::time::{Duration, Instant};

use anyhow::bail;
use hearth_engine::gc::supervisor_alive;
use hearth_engine::paths::StateDir;
use hearth_engine::state::{SandboxRecord, StateDb};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::args::{SandboxesArgs, StopArgs};

const POLL: Duration = Duration::from_millis(50);

/// Extra time past the grace period for the supervisor to kill the VM and record the end.
const KILL_MARGIN: Duration = Duration::from_secs(10);

pub async fn stop(state: &StateDir, args: &StopArgs) -> anyhow::Result<i32> {
    let grace = Duration::from_secs(args.time);
    signal_all(state, &args.targets, Signal::SIGTERM, grace + KILL_MARGIN).await
}

pub async fn kill_now(state: &StateDir, args: &SandboxesArgs) -> anyhow::Result<i32> {
    signal_all(state, args, Signal::SIGUSR1, KILL_MARGIN).await
}

pub async fn wait(state: &StateDir, args: &SandboxesArgs) -> anyhow::Result<i32> {
    let db = StateDb::open(&state.database())?;
    let mut last = 0;
    for query in &args.sandboxes {
        let id = db.find(query)?.id;
        let record = wait_ended(&db, &id, None).await?;
        last = record.exit_code.unwrap_or(-1);
        println!("{last}");
    }
    Ok(if last < 0 { 1 } else { 0 })
}

async fn signal_all(
    state: &StateDir,
    args: &SandboxesArgs,
    signal: Signal,
    limit: Duration,
) -> anyhow::Result<i32> {
    let db = StateDb::open(&state.database())?;
    for query in &args.sandboxes {
        let record = db.find(query)?;
        end_sandbox(state, &db, &record, signal, limit).await?;
        println!("{}", record.name);
    }
    Ok(0)
}

/// Sends `signal` to the sandbox's supervisor and waits for the recorded end; past `limit`
/// the supervisor itself is killed (its VMM dies with it) and gc records the end.
pub async fn end_sandbox(
    state: &StateDir,
    db: &StateDb,
    record: &SandboxRecord,
    signal: Signal,
    limit: Duration,
) -> anyhow::Result<()> {
    if !record.state.is_live() {
        return Ok(());
    }
    let Some(pid) = record.supervisor_pid.filter(|_| supervisor_alive(record)) else {
        hearth_engine::gc::collect(state)?;
        return Ok(());
    };
    let pid = Pid::from_raw(i32::try_from(pid)?);
    kill(pid, signal)?;
    if wait_ended(db, &record.id, Some(limit)).await.is_err() {
        let _ = kill(pid, Signal::SIGKILL);
        tokio::time::sleep(POLL).await;
        hearth_engine::gc::collect(state)?;
    }
    Ok(())
}

async fn wait_ended(
    db: &StateDb,
    id: &str,
    limit: Option<Duration>,
) -> anyhow::Result<SandboxRecord> {
    let start = Instant::now();
    loop {
        let record = db.find(id)?;
        if !record.state.is_live() {
            return Ok(record);
        }
        if !supervisor_alive(&record) && record.supervisor_pid.is_some() {
            bail!("the supervisor of {id} is gone; run `hearth gc`");
        }
        if limit.is_some_and(|limit| start.elapsed() > limit) {
            bail!("sandbox {id} did not stop in time");
        }
        tokio::time::sleep(POLL).await;
    }
}
