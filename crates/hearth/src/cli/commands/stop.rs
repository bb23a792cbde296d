//! `hearth stop`, `hearth kill`, `hearth wait`: requests to a sandbox's supervisor over its
//! control socket, answered once the end is recorded.

use std::time::{Duration, Instant};

use hearth_engine::control::{self, ControlError, ControlRequest, Ended};
use hearth_engine::gc::supervisor_alive;
use hearth_engine::paths::StateDir;
use hearth_engine::state::{SandboxRecord, StateDb};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::args::{SandboxesArgs, StopArgs};

const POLL: Duration = Duration::from_millis(50);

/// Extra time past the grace period for the supervisor to kill the VM and record the end.
pub const KILL_MARGIN: Duration = Duration::from_secs(10);

pub async fn stop(state: &StateDir, args: &StopArgs) -> anyhow::Result<i32> {
    let grace = Duration::from_secs(args.time);
    let request = ControlRequest::Stop {
        grace_ms: u64::try_from(grace.as_millis())?,
    };
    end_all(state, &args.targets, request, grace + KILL_MARGIN).await
}

pub async fn kill_now(state: &StateDir, args: &SandboxesArgs) -> anyhow::Result<i32> {
    end_all(state, args, ControlRequest::Kill, KILL_MARGIN).await
}

pub async fn wait(state: &StateDir, args: &SandboxesArgs) -> anyhow::Result<i32> {
    let db = StateDb::open(&state.database())?;
    let mut last = 0;
    for query in &args.sandboxes {
        let record = db.find(query)?;
        last = match ask(state, &db, &record, ControlRequest::Wait, None).await? {
            Some(ended) => ended.exit_code,
            // Ended before we asked, or its supervisor died (gc has recorded that by now).
            None => db.find(&record.id).ok().and_then(|r| r.exit_code),
        }
        .unwrap_or(-1);
        println!("{last}");
    }
    Ok(if last < 0 { 1 } else { 0 })
}

async fn end_all(
    state: &StateDir,
    args: &SandboxesArgs,
    request: ControlRequest,
    limit: Duration,
) -> anyhow::Result<i32> {
    let db = StateDb::open(&state.database())?;
    for query in &args.sandboxes {
        let record = db.find(query)?;
        end_sandbox(state, &db, &record, request, limit).await?;
        println!("{}", record.name);
    }
    Ok(0)
}

/// Asks the sandbox's supervisor to end it with `request` and waits up to `limit` for the
/// recorded end. A supervisor that does not answer in time is killed (its VMM dies with it) and
/// gc records the end.
pub async fn end_sandbox(
    state: &StateDir,
    db: &StateDb,
    record: &SandboxRecord,
    request: ControlRequest,
    limit: Duration,
) -> anyhow::Result<()> {
    match ask(state, db, record, request, Some(limit)).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(sandbox = %record.id, error = %e, "the supervisor did not end its sandbox; killing it");
            if let Some(pid) = record.supervisor_pid.filter(|_| supervisor_alive(record)) {
                let _ = kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL);
                tokio::time::sleep(POLL).await;
            }
            hearth_engine::gc::collect(state)?;
            Ok(())
        }
    }
}

/// Sends `request` to the supervisor of `record`. `None` when there is none to ask: the sandbox
/// has ended, or its supervisor died (then gc has cleaned up after it).
async fn ask(
    state: &StateDir,
    db: &StateDb,
    record: &SandboxRecord,
    request: ControlRequest,
    limit: Option<Duration>,
) -> anyhow::Result<Option<Ended>> {
    let socket = control::socket_path(state, &record.id);
    let start = Instant::now();
    loop {
        let current = match db.find(&record.id) {
            Ok(current) if current.state.is_live() => current,
            _ => return Ok(None),
        };
        match control::request(&socket, request, limit).await {
            Ok(ended) => return Ok(Some(ended)),
            // A supervisor just spawned binds its socket a moment after the row says
            // `starting`; one that is gone (or ends as we connect) leaves the socket unanswered.
            Err(ControlError::NoSupervisor { .. } | ControlError::Closed) => {
                let starting = current.supervisor_pid.is_none() || supervisor_alive(&current);
                if !starting || limit.is_some_and(|limit| start.elapsed() > limit) {
                    hearth_engine::gc::collect(state)?;
                    return Ok(None);
                }
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
