//! Tracked commands: `runCommand(…, {background: true})` and `{timeout}`, and an exec-mode
//! terminal's `command.run`. Each runs on in its own task, its output kept (up to
//! [`MAX_KEPT`] bytes a stream), and is read with
//! `GET /terminals/{terminal}/commands[/{cmd}[/wait]]`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::auth::Daemon;
use super::process::{self, Ending, Sink, Stream};
use super::{data, Answer, ComputeState, Refused, WAIT_SECS};

/// Commands kept per sandbox; a new one pushes out the oldest finished one.
const MAX_COMMANDS: usize = 256;
/// Bytes of stdout and of stderr kept per command; the rest is read and dropped.
const MAX_KEPT: usize = 1024 * 1024;
/// The terminal `runCommand`'s background commands belong to: the client wants one to
/// wait on them, and they have no other.
pub(super) const BACKGROUND_TERMINAL: &str = "background";

#[derive(Debug)]
pub(super) struct Command {
    id: String,
    terminal_id: String,
    command: String,
    started_at: DateTime<Utc>,
    started: Instant,
    progress: Mutex<Progress>,
    done: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Progress {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i32>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<u128>,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Command {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finished(&self) -> bool {
        *self.done.borrow()
    }

    /// `CommandListItem` (the list leaves out the output).
    fn summary(&self) -> Value {
        let progress = self.progress();
        let status = match progress.exit_code {
            None => "running",
            Some(0) => "completed",
            Some(_) => "failed",
        };
        let mut item = json!({
            "cmd_id": self.id,
            "terminal_id": self.terminal_id,
            "command": self.command,
            "status": status,
            "started_at": timestamp(self.started_at),
        });
        // Absent, not null, while it runs: the client maps a missing `exit_code` to 0 only
        // where it has to.
        if let (Some(code), Some(at), Some(ms)) = (
            progress.exit_code,
            progress.finished_at,
            progress.duration_ms,
        ) {
            item["exit_code"] = json!(code);
            item["finished_at"] = json!(timestamp(at));
            item["duration_ms"] = json!(ms);
        }
        item
    }

    /// `CommandDetailsResponse.data`: the summary and the output so far.
    pub fn details(&self) -> Value {
        let mut details = self.summary();
        let progress = self.progress();
        details["stdout"] = json!(String::from_utf8_lossy(&progress.stdout));
        details["stderr"] = json!(String::from_utf8_lossy(&progress.stderr));
        details
    }

    /// Waits up to `limit` for the command to finish; true when it has.
    pub async fn wait(&self, limit: Duration) -> bool {
        let mut done = self.done.subscribe();
        let finished = tokio::time::timeout(limit, done.wait_for(|finished| *finished)).await;
        matches!(finished, Ok(Ok(_)))
    }
}

/// Keeps output in the command's record as it arrives.
struct Keep(Arc<Command>);

impl Sink for Keep {
    async fn chunk(&mut self, stream: Stream, data: Vec<u8>) -> bool {
        let mut progress = self.0.progress();
        let kept = match stream {
            Stream::Stdout => &mut progress.stdout,
            Stream::Stderr => &mut progress.stderr,
        };
        let room = MAX_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&data[..room.min(data.len())]);
        true
    }
}

/// Starts `command` (a shell line) as a tracked command of `terminal_id` and returns at once.
pub(super) async fn spawn(
    state: &ComputeState,
    sandbox: &str,
    terminal_id: &str,
    command: String,
    shell: Option<String>,
    cwd: Option<String>,
    env: BTreeMap<String, String>,
) -> Result<Arc<Command>, Refused> {
    let argv = process::shell_argv(shell, command.clone());
    let (_pid, mut input, mut output) =
        process::start(state, sandbox, argv, env, cwd, None).await?;
    let (done, _) = watch::channel(false);
    let record = Arc::new(Command {
        id: super::new_id("cmd"),
        terminal_id: terminal_id.to_owned(),
        command,
        started_at: Utc::now(),
        started: Instant::now(),
        progress: Mutex::default(),
        done,
    });
    let inserted = state.live.commands.insert(
        sandbox,
        record.id.clone(),
        Arc::clone(&record),
        MAX_COMMANDS,
        Command::finished,
    );
    if let Err(refused) = inserted {
        // Nobody could ever read it: it does not run either.
        let _ = input.signal(libc::SIGKILL).await;
        return Err(refused);
    }
    // Dropping the input half-closes the connection; the process runs on and its output
    // keeps coming, until it exits or its sandbox ends.
    drop(input);
    let tracked = Arc::clone(&record);
    tokio::spawn(async move {
        let ending = process::pump(&mut output, &mut Keep(Arc::clone(&tracked))).await;
        let code = match ending {
            Ending::Exited(code) => code,
            // docker's status for a failure of its own, as hearth's exec gives.
            Ending::Lost(why) => {
                tracked.progress().stderr.extend_from_slice(why.as_bytes());
                125
            }
            // `Keep` always takes more.
            Ending::Abandoned => 125,
        };
        {
            let mut progress = tracked.progress();
            progress.exit_code = Some(code);
            progress.finished_at = Some(Utc::now());
            progress.duration_ms = Some(tracked.started.elapsed().as_millis());
        }
        tracked.done.send_replace(true);
    });
    Ok(record)
}

fn find(
    state: &ComputeState,
    sandbox: &str,
    terminal: &str,
    cmd: &str,
) -> Result<Arc<Command>, Refused> {
    state
        .live
        .commands
        .get(sandbox, cmd)
        .filter(|command| command.terminal_id == terminal)
        .ok_or_else(|| {
            Refused(
                StatusCode::NOT_FOUND,
                format!("terminal `{terminal}` has no command `{cmd}`"),
            )
        })
}

pub(super) async fn list(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Path((_, terminal)): Path<(String, String)>,
) -> Answer {
    let commands: Vec<Value> = state
        .live
        .commands
        .all(&id)
        .iter()
        .filter(|command| command.terminal_id == terminal)
        .map(|command| command.summary())
        .collect();
    data(json!({ "count": commands.len(), "commands": commands }))
}

pub(super) async fn get_command(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Path((_, terminal, cmd)): Path<(String, String, String)>,
) -> Answer {
    data(find(&state, &id, &terminal, &cmd)?.details())
}

#[derive(Debug, Deserialize)]
pub(super) struct WaitQuery {
    /// Seconds; 0 or none is "no timeout", which here is [`WAIT_SECS`].
    timeout: Option<f64>,
}

pub(super) async fn wait(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Path((_, terminal, cmd)): Path<(String, String, String)>,
    Query(query): Query<WaitQuery>,
) -> Answer {
    let command = find(&state, &id, &terminal, &cmd)?;
    let limit = wait_limit(query.timeout);
    if command.wait(limit).await {
        return data(command.details());
    }
    Err(Refused(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "command `{cmd}` is still running after {} s (hearth answers a wait within \
             {WAIT_SECS} s, before the client's own 30 s timeout); wait again",
            limit.as_secs_f64()
        ),
    ))
}

/// The client's seconds, capped so that the answer beats the client's timeout.
fn wait_limit(timeout: Option<f64>) -> Duration {
    let cap = WAIT_SECS as f64;
    let secs = match timeout {
        Some(t) if t.is_finite() && t > 0.0 => t.min(cap),
        _ => cap,
    };
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_waits_are_capped_under_the_clients_timeout() {
        assert_eq!(wait_limit(Some(10.0)), Duration::from_secs(10));
        assert_eq!(wait_limit(Some(300.0)), Duration::from_secs(WAIT_SECS));
        assert_eq!(wait_limit(Some(0.0)), Duration::from_secs(WAIT_SECS));
        assert_eq!(wait_limit(None), Duration::from_secs(WAIT_SECS));
    }
}
