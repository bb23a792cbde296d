//! The supervisor of a detached sandbox: one process per sandbox (hearth re-executed) that
//! boots the VM, runs its main process if it has one, and records every state change, so no
//! CLI process needs to stay alive.
//!
//! Clients talk to it over its control socket ([`crate::control`]): stop (agent power-off
//! within a grace period), kill, or wait, each answered once the end is recorded. SIGTERM
//! (stop) and SIGUSR1 (kill) do the same for tools that only signal. SIGHUP and SIGINT are
//! ignored so a closing terminal does not stop it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_agent_proto::ExecRequest;
use hearth_vmm::console::CappedLog;
use hearth_vmm::Vmm;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::chain::error_chain;
use crate::control::{self, ControlRequest, ControlServer, Ended, Pending};
use crate::exec::{ExecEvent, ExecOutput};
use crate::paths::StateDir;
use crate::sandbox::{Sandbox, SandboxConfig, SHUTDOWN_GRACE};
use crate::state::{Health, SandboxState, StateDb, StateError};

/// Size at which a sandbox's output log is rotated (to `output.log.1`): the newest output is
/// kept, at most twice this.
const OUTPUT_LOG_CAP: u64 = 32 * 1024 * 1024;

/// Everything the supervisor needs, written by the engine next to the sandbox's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetachedSpec {
    pub config: SandboxConfig,
    /// The main process; without one the sandbox stays up until stopped.
    pub main: Option<ExecRequest>,
    /// Stop the sandbox after this long.
    pub timeout: Option<Duration>,
    /// A command whose exit status says whether the sandbox is healthy.
    pub health: Option<HealthCheck>,
    /// `KEY=VALUE`: the image's Env and the sandbox's own, for clients whose processes start
    /// with the sandbox's environment (the E2B protocol's `envVars`).
    #[serde(default)]
    pub env: Vec<String>,
}

/// `--health-cmd` and its timing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Run with `sh -c` in the guest; exit 0 means healthy.
    pub command: String,
    pub interval: Duration,
    /// Consecutive failures before the sandbox counts as unhealthy.
    pub retries: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("failed to {action} `{}`", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the spec `{}` is not valid", path.display())]
    Spec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to record the sandbox's state")]
    State(#[from] StateError),
    #[error("failed to handle signals")]
    Signals(#[source] std::io::Error),
    #[error("failed to open the control socket")]
    Control(#[from] control::ControlError),
}

/// `sandboxes/<id>/spec.json`.
pub fn spec_path(state: &StateDir, id: &str) -> PathBuf {
    state.sandbox_dir(id).join("spec.json")
}

/// `sandboxes/<id>/output.log`: the main process's stdout and stderr.
pub fn log_path(state: &StateDir, id: &str) -> PathBuf {
    state.sandbox_dir(id).join("output.log")
}

/// `sandboxes/<id>/supervisor.log`: the supervisor process's own stdout and stderr.
pub fn supervisor_log_path(state: &StateDir, id: &str) -> PathBuf {
    state.sandbox_dir(id).join("supervisor.log")
}

/// `sandboxes/<id>/console.log`: the guest console, capped and rotated by the VMM backend, kept
/// after the VM ends.
pub fn console_path(state: &StateDir, id: &str) -> PathBuf {
    state.sandbox_dir(id).join("console.log")
}

/// Writes the spec for sandbox `id`, creating its directory.
pub fn write_spec(state: &StateDir, id: &str, spec: &DetachedSpec) -> Result<(), SupervisorError> {
    let path = spec_path(state, id);
    let dir = state.sandbox_dir(id);
    std::fs::create_dir_all(&dir).map_err(|source| SupervisorError::File {
        action: "create",
        path: dir,
        source,
    })?;
    let json = serde_json::to_vec_pretty(spec).map_err(|source| SupervisorError::Spec {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, json).map_err(|source| SupervisorError::File {
        action: "write",
        path,
        source,
    })
}

/// Reads the spec of sandbox `id`.
pub fn read_spec(state: &StateDir, id: &str) -> Result<DetachedSpec, SupervisorError> {
    read_spec_file(&spec_path(state, id))
}

fn read_spec_file(path: &Path) -> Result<DetachedSpec, SupervisorError> {
    let bytes = std::fs::read(path).map_err(|source| SupervisorError::File {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SupervisorError::Spec {
        path: path.to_owned(),
        source,
    })
}

/// Why the supervisor ended the sandbox.
enum Ending {
    MainExited(i32),
    VmExited,
    Stopped(Duration),
    Killed,
    /// Saved with `--stop`: the VM is paused for good.
    Saved(PathBuf),
    TimedOut(Duration),
}

/// A request to end the sandbox, by signal or over the control socket.
enum EndRequest {
    Stop(Duration),
    Kill,
}

/// What a signal or a control client asks of the sandbox.
enum Request {
    End(EndRequest),
    /// Save the VM to `state`; with `stop`, end the sandbox afterwards.
    Snapshot {
        pending: Pending,
        state: PathBuf,
        stop: bool,
    },
    /// Stop the sandbox `after` from now.
    SetTimeout {
        pending: Pending,
        after: Duration,
    },
}

/// Everything that can ask something of a supervised sandbox: SIGTERM (stop), SIGUSR1 (kill)
/// and control clients, whose answers to an end wait in `waiters` until it is recorded.
struct EndRequests {
    term: tokio::signal::unix::Signal,
    kill: tokio::signal::unix::Signal,
    control: mpsc::Receiver<Pending>,
    waiters: Vec<Pending>,
}

impl EndRequests {
    /// The next request; `Wait` requests are kept for the end meanwhile. Cancel-safe.
    async fn next(&mut self) -> Request {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Request::End(EndRequest::Stop(SHUTDOWN_GRACE)),
                _ = self.kill.recv() => return Request::End(EndRequest::Kill),
                Some(pending) = self.control.recv() => {
                    let request = pending.request.clone();
                    match request {
                        ControlRequest::Snapshot { state, stop } => {
                            return Request::Snapshot { pending, state, stop };
                        }
                        ControlRequest::SetTimeout { secs } => {
                            let after = Duration::from_secs(secs);
                            return Request::SetTimeout { pending, after };
                        }
                        _ => {}
                    }
                    self.waiters.push(pending);
                    match request {
                        ControlRequest::Wait
                        | ControlRequest::Snapshot { .. }
                        | ControlRequest::SetTimeout { .. } => {}
                        // No grace at all is a kill, and recorded as one (as `docker stop -t 0`).
                        ControlRequest::Stop { grace_ms: 0 } | ControlRequest::Kill => {
                            return Request::End(EndRequest::Kill);
                        }
                        ControlRequest::Stop { grace_ms } => {
                            return Request::End(EndRequest::Stop(Duration::from_millis(grace_ms)));
                        }
                    }
                }
            }
        }
    }

    /// The next request to end the sandbox, refusing snapshots and timeouts meanwhile (`why`
    /// says why).
    async fn next_end(&mut self, why: &str) -> EndRequest {
        loop {
            match self.next().await {
                Request::End(end) => return end,
                Request::Snapshot { pending, .. } => pending.answer_saved(Err(why.to_owned())),
                Request::SetTimeout { pending, .. } => pending.answer_timeout(Err(why.to_owned())),
            }
        }
    }

    /// Tells every client that asked (also those still queued) how the sandbox ended.
    fn answer_all(&mut self, code: Option<i32>, note: Option<&str>) {
        while let Ok(pending) = self.control.try_recv() {
            self.waiters.push(pending);
        }
        let ended = Ended {
            exit_code: code,
            note: note.map(str::to_owned),
        };
        for pending in self.waiters.drain(..) {
            pending.answer(&ended);
        }
    }
}

/// Runs sandbox `id` to its end, recording each state change in the database.
pub async fn supervise(vmm: &dyn Vmm, state: &StateDir, id: &str) -> Result<(), SupervisorError> {
    let db = StateDb::open(&state.database())?;
    let spec = read_spec(state, id)?;
    db.set_supervisor(id, std::process::id())?;
    // Bound before the boot, so a stop or wait during the boot is heard too.
    let (_control, control) = ControlServer::bind(&control::socket_path(state, id))?;
    let mut requests = EndRequests {
        term: signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?,
        kill: signal(SignalKind::user_defined1()).map_err(SupervisorError::Signals)?,
        control,
        waiters: Vec::new(),
    };
    // Listening is how these are ignored: their default action would end the supervisor.
    let _hup = signal(SignalKind::hangup()).map_err(SupervisorError::Signals)?;
    let _int = signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?;

    let config = SandboxConfig {
        console_log: Some(console_path(state, id)),
        ..spec.config.clone().without_missing_template()
    };
    let vms_dir = state.vms_dir();
    let booted = tokio::select! {
        booted = Sandbox::boot(vmm, &vms_dir, id.to_owned(), &config) => booted,
        _ = requests.next_end("the sandbox is still booting") => {
            let ended = finish(&db, state, id, None, None);
            requests.answer_all(None, None);
            return ended;
        }
    };
    let mut sandbox = match booted {
        Ok(sandbox) => sandbox,
        Err(e) => {
            let reason = error_chain(&e);
            tracing::warn!(sandbox = %id, error = %reason, "boot failed");
            db.set_ended(id, SandboxState::Failed, None, Some(&reason))?;
            requests.answer_all(None, Some(&reason));
            return Ok(());
        }
    };
    // Before anything runs in it, so the template is a fresh boot.
    let image = db.find(id).map(|record| record.image).unwrap_or_default();
    crate::ops::templates::make_template(vmm, state, &mut sandbox, &config, &image).await;
    if let Err(e) = sandbox.attach_mounts(&config.mounts).await {
        let reason = error_chain(&e);
        tracing::warn!(sandbox = %id, error = %reason, "mounting failed");
        sandbox.kill().await;
        db.set_ended(id, SandboxState::Failed, None, Some(&reason))?;
        requests.answer_all(None, Some(&reason));
        return Ok(());
    }
    if spec.health.is_some() {
        db.set_health(id, Health::Starting)?;
    }
    db.set_running(id)?;
    let ending = run_until_end(&mut sandbox, state, &db, id, &spec, &mut requests).await;
    let (code, note) = match ending {
        Ending::MainExited(code) => {
            sandbox.shutdown().await;
            (Some(code), None)
        }
        Ending::VmExited => (None, Some("the VM exited by itself".to_owned())),
        Ending::Stopped(grace) => {
            // A kill still works while the clean stop's grace period runs.
            let shutdown = sandbox.shutdown_within(grace);
            tokio::pin!(shutdown);
            let killed = loop {
                tokio::select! {
                    _ = &mut shutdown => break false,
                    request = requests.next_end("the sandbox is stopping") => {
                        if matches!(request, EndRequest::Kill) {
                            break true;
                        }
                    }
                }
            };
            // An unfinished shutdown is dropped here, and with it the sandbox: its VM is
            // killed and its network removed.
            let signal = if killed { libc::SIGKILL } else { libc::SIGTERM };
            (Some(128 + signal), None)
        }
        Ending::Killed => {
            sandbox.kill().await;
            (Some(128 + libc::SIGKILL), None)
        }
        Ending::Saved(name) => {
            // The VM stays paused after its save; nothing in it is left to stop cleanly.
            sandbox.kill().await;
            let note = format!("stopped after saving snapshot state `{}`", name.display());
            (Some(128 + libc::SIGTERM), Some(note))
        }
        Ending::TimedOut(after) => {
            sandbox.shutdown().await;
            // Stopped as `hearth stop` would have.
            let note = format!("stopped after its timeout of {after:?}");
            (Some(128 + libc::SIGTERM), Some(note))
        }
    };
    let recorded = finish(&db, state, id, code, note.as_deref());
    requests.answer_all(code, note.as_deref());
    recorded
}

async fn run_until_end(
    sandbox: &mut Sandbox,
    state: &StateDir,
    db: &StateDb,
    id: &str,
    spec: &DetachedSpec,
    requests: &mut EndRequests,
) -> Ending {
    let main = match &spec.main {
        Some(request) => match sandbox.exec(request.clone()).await {
            Ok((_pid, input, output)) => Some((input, output)),
            Err(e) => {
                let code = e.exit_code();
                append_log(&log_path(state, id), error_chain(&e).as_bytes()).await;
                return Ending::MainExited(code);
            }
        },
        None => None,
    };
    let agent = sandbox.agent_socket().to_owned();
    let main_done = async {
        match main {
            // The input half stays alive until the end: dropping it early is harmless, but
            // keeping it documents that the main process keeps a closed stdin.
            Some((_input, output)) => copy_output(output, &log_path(state, id)).await,
            None => std::future::pending().await,
        }
    };
    // `limit` is the whole run's length, for the note; a new timeout moves the timer.
    let started = tokio::time::Instant::now();
    let mut limit = spec.timeout;
    let timer = tokio::time::sleep(limit.unwrap_or_default());
    record_expiry(db, id, limit);
    let health = async {
        match &spec.health {
            Some(check) => watch_health(&agent, db, id, check).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(main_done, timer, health);
    loop {
        let request = tokio::select! {
            code = &mut main_done => return Ending::MainExited(code),
            _ = sandbox.wait() => return Ending::VmExited,
            request = requests.next() => request,
            () = &mut timer, if limit.is_some() => {
                return Ending::TimedOut(limit.unwrap_or_default());
            }
            never = &mut health => match never {},
        };
        match request {
            Request::End(EndRequest::Stop(grace)) => return Ending::Stopped(grace),
            Request::End(EndRequest::Kill) => return Ending::Killed,
            Request::Snapshot {
                pending,
                state,
                stop,
            } => {
                // The engine refuses this before asking; the sandbox is the authority.
                if sandbox.has_mounts() {
                    let refusal = crate::snapshots::SnapshotError::HasMounts {
                        sandbox: id.to_owned(),
                    };
                    pending.answer_saved(Err(refusal.to_string()));
                    continue;
                }
                let saved = sandbox.save(&state, !stop).await;
                let saved_ok = saved.is_ok();
                pending.answer_saved(saved.map_err(|e| error_chain(&e)));
                if stop && saved_ok {
                    return Ending::Saved(state);
                }
            }
            Request::SetTimeout { pending, after } => {
                let now = tokio::time::Instant::now();
                timer.as_mut().reset(now + after);
                limit = Some(now.duration_since(started) + after);
                pending.answer_timeout(Ok(record_expiry(db, id, Some(after)).unwrap_or_default()));
            }
        }
    }
}

/// Records when the timeout stops the sandbox, `after` from now; returns that Unix time.
fn record_expiry(db: &StateDb, id: &str, after: Option<Duration>) -> Option<i64> {
    let at = after.map(|after| {
        crate::state::unix_now().saturating_add(i64::try_from(after.as_secs()).unwrap_or(i64::MAX))
    });
    if let Err(e) = db.set_expires_at(id, at) {
        tracing::warn!(sandbox = %id, error = %e, "cannot record the timeout");
    }
    at
}

/// Runs the health command every interval for as long as the sandbox lives, recording each
/// change of verdict.
async fn watch_health(
    agent: &Path,
    db: &StateDb,
    id: &str,
    check: &HealthCheck,
) -> std::convert::Infallible {
    let mut failures = 0u32;
    let mut current = Health::Starting;
    loop {
        tokio::time::sleep(check.interval).await;
        let request = ExecRequest {
            argv: vec!["sh".to_owned(), "-c".to_owned(), check.command.clone()],
            ..ExecRequest::default()
        };
        let passed = match crate::exec::start(agent, request).await {
            Ok((_pid, _input, output)) => exit_status(output).await == 0,
            Err(_) => false,
        };
        failures = if passed { 0 } else { failures + 1 };
        let verdict = match (passed, failures >= check.retries) {
            (true, _) => Health::Healthy,
            (false, true) => Health::Unhealthy,
            (false, false) => current,
        };
        if verdict != current {
            current = verdict;
            if let Err(e) = db.set_health(id, verdict) {
                tracing::warn!(sandbox = %id, error = %e, "cannot record health");
            }
        }
    }
}

/// Drains a process's output and returns its shell exit status (125 if the stream broke).
async fn exit_status(mut output: ExecOutput) -> i32 {
    loop {
        match output.next().await {
            Ok(Some(ExecEvent::Exited(status))) => return status.shell_code(),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return 125,
        }
    }
}

/// Copies the main process's output to its log (capped) and returns its exit status.
async fn copy_output(mut output: ExecOutput, log: &Path) -> i32 {
    let mut file = match CappedLog::open(log, OUTPUT_LOG_CAP) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(log = %log.display(), error = %e, "cannot write the output log");
            None
        }
    };
    loop {
        match output.next().await {
            Ok(Some(ExecEvent::Stdout(data) | ExecEvent::Stderr(data))) => {
                // Small appends to a local file: not worth a blocking-pool round trip each.
                if let Some(Err(e)) = file.as_mut().map(|f| f.write(&data)) {
                    tracing::warn!(log = %log.display(), error = %e, "cannot write the output log");
                }
            }
            Ok(Some(ExecEvent::Exited(status))) => return status.shell_code(),
            Ok(None) | Err(_) => return 125,
        }
    }
}

async fn append_log(log: &Path, line: &[u8]) {
    if let Ok(mut file) = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .await
    {
        let _ = file.write_all(line).await;
        let _ = file.write_all(b"\n").await;
    }
}

fn finish(
    db: &StateDb,
    state: &StateDir,
    id: &str,
    code: Option<i32>,
    note: Option<&str>,
) -> Result<(), SupervisorError> {
    db.set_ended(id, SandboxState::Exited, code, note)?;
    let record = db.find(id)?;
    if record.auto_remove {
        db.remove(id)?;
        let _ = std::fs::remove_dir_all(state.sandbox_dir(id));
    }
    tracing::info!(sandbox = %id, ?code, "sandbox ended");
    Ok(())
}
