//! envd's `process.Process` service. Processes belong to the server, not to the request that
//! started them: a `Start` stream is their first watcher, `Connect` adds more, and a process
//! runs on when its watchers leave, as under envd, until it exits or its sandbox ends. Each
//! process is keyed by its guest pid within its sandbox.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use base64::Engine as _;
use hearth_engine::{ExecEvent, ExecInput, ExecOutput, ExecRequest, ExitStatus, TermSize};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::connect::{self, Code, RpcError};
use super::{user_of, E2bState, PerSandbox, SandboxId};

/// Output events a watcher may fall behind by before the process's output waits for it.
const WATCHER_BUFFER: usize = 64;
/// Processes one sandbox may have running through this server.
const MAX_PROCESSES: usize = 256;

pub fn router() -> Router<E2bState> {
    Router::new()
        .route("/process.Process/Start", post(start))
        .route("/process.Process/Connect", post(connect_process))
        .route("/process.Process/List", post(list))
        .route("/process.Process/SendInput", post(send_input))
        .route("/process.Process/StreamInput", post(stream_input))
        .route("/process.Process/SendSignal", post(send_signal))
        .route("/process.Process/CloseStdin", post(close_stdin))
        .route("/process.Process/Update", post(update))
}

/// Every process started through this server, by sandbox and pid.
#[derive(Debug, Clone, Default)]
pub struct Table {
    inner: Arc<Mutex<PerSandbox<u32, Process>>>,
}

#[derive(Debug)]
struct Process {
    pid: u32,
    tag: Option<String>,
    /// The `ProcessConfig` it was started with, for `List`.
    config: Value,
    pty: bool,
    input: Arc<tokio::sync::Mutex<ExecInput>>,
    watchers: Mutex<Vec<mpsc::Sender<Value>>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, PerSandbox<u32, Process>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, sandbox: &str) -> usize {
        self.lock().get(sandbox).map_or(0, BTreeMap::len)
    }

    fn insert(&self, sandbox: &str, process: Arc<Process>) {
        self.lock()
            .entry(sandbox.to_owned())
            .or_default()
            .insert(process.pid, process);
    }

    fn remove(&self, sandbox: &str, pid: u32) {
        let mut table = self.lock();
        if let Some(processes) = table.get_mut(sandbox) {
            processes.remove(&pid);
            if processes.is_empty() {
                table.remove(sandbox);
            }
        }
    }

    fn all(&self, sandbox: &str) -> Vec<Arc<Process>> {
        self.lock()
            .get(sandbox)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    fn find(&self, sandbox: &str, selector: &Selector) -> Result<Arc<Process>, RpcError> {
        let table = self.lock();
        let processes = table.get(sandbox);
        let found = match selector {
            Selector::Pid(pid) => processes.and_then(|p| p.get(pid)),
            Selector::Tag(tag) => {
                processes.and_then(|p| p.values().find(|p| p.tag.as_deref() == Some(tag.as_str())))
            }
        };
        found.cloned().ok_or_else(|| {
            RpcError::new(
                Code::NotFound,
                format!("process with {} not found", selector.describe()),
            )
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProcessConfig {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PtySize {
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

#[derive(Debug, Deserialize)]
struct Pty {
    size: Option<PtySize>,
}

#[derive(Debug, Deserialize)]
struct StartRequest {
    process: ProcessConfig,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

/// envd's `ProcessSelector`: a oneof of pid and tag.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Selector {
    Pid(u32),
    Tag(String),
}

impl Selector {
    fn describe(&self) -> String {
        match self {
            Selector::Pid(pid) => format!("pid {pid}"),
            Selector::Tag(tag) => format!("tag {tag}"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct SelectorRequest {
    process: Selector,
}

fn term_size(size: Option<&PtySize>) -> TermSize {
    let (rows, cols) = size.map_or((24, 80), |s| (s.rows, s.cols));
    TermSize {
        rows: if rows == 0 { 24 } else { rows },
        cols: if cols == 0 { 80 } else { cols },
    }
}

async fn start(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: StartRequest = match connect::request(&headers, &body) {
        Ok(request) => request,
        Err(e) => return connect::stream_error(e),
    };
    if state.processes.count(&sandbox) >= MAX_PROCESSES {
        return connect::stream_error(RpcError::new(
            Code::ResourceExhausted,
            format!("the sandbox has {MAX_PROCESSES} processes running through this server"),
        ));
    }
    let mut env = match state.app.engine.sandbox_env(&sandbox) {
        Ok(env) => env,
        Err(e) => return connect::stream_error(e.into()),
    };
    for (key, value) in &request.process.envs {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return connect::stream_error(RpcError::invalid(format!(
                "environment variable `{key}` is not a valid name or holds NUL"
            )));
        }
        env.push(format!("{key}={value}"));
    }
    let pty = request.pty.as_ref().map(|p| term_size(p.size.as_ref()));
    let config = json!({
        "cmd": request.process.cmd,
        "args": request.process.args,
        "envs": request.process.envs,
        "cwd": request.process.cwd,
    });
    let mut argv = vec![request.process.cmd];
    argv.extend(request.process.args);
    let exec = ExecRequest {
        argv,
        env,
        cwd: request.process.cwd,
        tty: pty,
        stdin: pty.is_some() || request.stdin.unwrap_or(false),
        user: user_of(&headers, None),
    };
    let (pid, input, output) = match state.app.engine.exec(&sandbox, exec).await {
        Ok(started) => started,
        Err(e) => {
            let code = match e.process_exit_code() {
                Some(127) => Code::NotFound,
                Some(126) => Code::PermissionDenied,
                _ => Code::Internal,
            };
            let message = hearth_engine::error_chain(&e);
            return connect::stream_error(RpcError::new(code, message));
        }
    };
    let process = Arc::new(Process {
        pid,
        tag: request.tag,
        config,
        pty: pty.is_some(),
        input: Arc::new(tokio::sync::Mutex::new(input)),
        watchers: Mutex::new(Vec::new()),
    });
    let watcher = watch(&process);
    state.processes.insert(&sandbox, process.clone());
    tokio::spawn(pump(state.processes.clone(), sandbox, process, output));
    stream_events(pid, watcher, &headers)
}

/// A new watcher of `process`'s events from now on.
fn watch(process: &Process) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
    process
        .watchers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(tx);
    rx
}

/// Reads `process`'s output to its end, handing each event to every watcher still there.
async fn pump(table: Table, sandbox: String, process: Arc<Process>, mut output: ExecOutput) {
    let stream = if process.pty { "pty" } else { "stdout" };
    loop {
        let event = match output.next().await {
            Ok(Some(ExecEvent::Stdout(data))) => data_event(stream, &data),
            Ok(Some(ExecEvent::Stderr(data))) => data_event("stderr", &data),
            Ok(Some(ExecEvent::Exited(status))) => end_event(status, None),
            Ok(None) => break,
            Err(e) => end_event(
                ExitStatus::Code(-1),
                Some(format!(
                    "lost the process: {}",
                    hearth_engine::error_chain(&e)
                )),
            ),
        };
        let last = event["event"].get("end").is_some();
        let watchers: Vec<_> = process
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for watcher in watchers {
            // A watcher that left is dropped below; a slow one makes the guest's output wait.
            let _ = watcher.send(event.clone()).await;
        }
        process
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| !w.is_closed());
        if last {
            break;
        }
    }
    table.remove(&sandbox, process.pid);
}

fn data_event(stream: &str, data: &[u8]) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    json!({ "event": { "data": { stream: encoded } } })
}

/// envd's `EndEvent`, shaped like Go's `ProcessState`: a signal gives exit code -1.
fn end_event(status: ExitStatus, error: Option<String>) -> Value {
    let mut end = match status {
        ExitStatus::Code(code) => json!({
            "exitCode": code,
            "exited": true,
            "status": format!("exit status {code}"),
        }),
        ExitStatus::Signal(signal) => json!({
            "exitCode": -1,
            "exited": false,
            "status": format!("signal: {}", signal_name(signal)),
        }),
    };
    if let Some(error) = error {
        end["error"] = json!(error);
    }
    json!({ "event": { "end": end } })
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "killed".to_owned(),
        libc::SIGTERM => "terminated".to_owned(),
        libc::SIGINT => "interrupt".to_owned(),
        libc::SIGHUP => "hangup".to_owned(),
        other => format!("signal {other}"),
    }
}

/// The response stream of `Start` and `Connect`: the start event, then the process's events
/// to its end, keepalives when asked for, ending early at the caller's deadline.
fn stream_events(pid: u32, mut events: mpsc::Receiver<Value>, headers: &HeaderMap) -> Response {
    let deadline = connect::deadline(headers);
    let keepalive = connect::keepalive_interval(headers);
    let (response, sender) = connect::server_stream();
    tokio::spawn(async move {
        let run = async {
            if !sender
                .send(&json!({ "event": { "start": { "pid": pid } } }))
                .await
            {
                return None;
            }
            let mut ticks = keepalive.map(tokio::time::interval);
            loop {
                let tick = async {
                    match ticks.as_mut() {
                        Some(ticks) => {
                            ticks.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => {
                            let last = event["event"].get("end").is_some();
                            if !sender.send(&event).await || last {
                                return None;
                            }
                        }
                        None => return Some(RpcError::new(Code::Internal, "the process's output ended without an end event")),
                    },
                    () = tick => {
                        if !sender.send(&json!({ "event": { "keepalive": {} } })).await {
                            return None;
                        }
                    }
                    () = sender.closed() => return None,
                }
            }
        };
        let error = match deadline {
            Some(deadline) => tokio::time::timeout(deadline, run)
                .await
                .unwrap_or_else(|_| {
                    Some(RpcError::new(
                        Code::DeadlineExceeded,
                        "the caller's deadline passed; the process runs on",
                    ))
                }),
            None => run.await,
        };
        sender.end(error).await;
    });
    response
}

async fn connect_process(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: SelectorRequest = match connect::request(&headers, &body) {
        Ok(request) => request,
        Err(e) => return connect::stream_error(e),
    };
    match state.processes.find(&sandbox, &request.process) {
        Ok(process) => stream_events(process.pid, watch(&process), &headers),
        Err(e) => connect::stream_error(e),
    }
}

async fn list(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
) -> Response {
    let processes: Vec<Value> = state
        .processes
        .all(&sandbox)
        .iter()
        .map(|p| {
            let mut info = json!({ "config": p.config, "pid": p.pid });
            if let Some(tag) = &p.tag {
                info["tag"] = json!(tag);
            }
            info
        })
        .collect();
    connect::unary(&json!({ "processes": processes }))
}

/// envd's `ProcessInput`: stdin or PTY bytes, base64 in JSON.
#[derive(Debug, Deserialize)]
enum Input {
    #[serde(rename = "stdin")]
    Stdin(String),
    #[serde(rename = "pty")]
    Pty(String),
}

impl Input {
    fn bytes(self) -> Result<Vec<u8>, RpcError> {
        let (Input::Stdin(text) | Input::Pty(text)) = self;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| RpcError::invalid(format!("input is not base64: {e}")))
    }
}

#[derive(Debug, Deserialize)]
struct SendInputRequest {
    process: Selector,
    input: Input,
}

/// Runs one input operation in a task of its own: a request dropped half-way must not leave
/// a frame cut off for the next writer.
async fn with_input<F, Fut>(process: &Process, op: F) -> Result<(), RpcError>
where
    F: FnOnce(tokio::sync::OwnedMutexGuard<ExecInput>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), hearth_engine::ExecError>> + Send,
{
    let input = process.input.clone();
    tokio::spawn(async move { op(input.lock_owned().await).await })
        .await
        .map_err(|e| RpcError::new(Code::Internal, format!("the input task failed: {e}")))?
        .map_err(|e| {
            RpcError::new(
                Code::NotFound,
                format!(
                    "the process no longer takes input: {}",
                    hearth_engine::error_chain(&e)
                ),
            )
        })
}

async fn send_input(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let request: SendInputRequest = connect::request(&headers, &body)?;
        let process = state.processes.find(&sandbox, &request.process)?;
        let data = request.input.bytes()?;
        with_input(&process, |mut input| async move { input.stdin(data).await }).await
    };
    answer(result.await)
}

fn answer(result: Result<(), RpcError>) -> Response {
    match result {
        Ok(()) => connect::unary(&json!({})),
        Err(e) => e.into_response(),
    }
}

/// A message of the `StreamInput` client stream: a oneof of start, data and keepalive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum StreamInputMessage {
    Start { process: Selector },
    Data { input: Input },
    Keepalive {},
}

async fn stream_input(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    body: Body,
) -> Response {
    let mut messages = connect::client_stream::<StreamInputMessage>(body);
    let result = async {
        let process = match messages.recv().await {
            Some(Ok(StreamInputMessage::Start { process })) => {
                state.processes.find(&sandbox, &process)?
            }
            Some(Err(e)) => return Err(e),
            _ => return Err(RpcError::invalid("the stream must begin with `start`")),
        };
        while let Some(message) = messages.recv().await {
            match message? {
                StreamInputMessage::Data { input } => {
                    let data = input.bytes()?;
                    with_input(&process, |mut input| async move { input.stdin(data).await })
                        .await?;
                }
                StreamInputMessage::Keepalive {} => {}
                StreamInputMessage::Start { .. } => {
                    return Err(RpcError::invalid("`start` may come only first"))
                }
            }
        }
        Ok(())
    };
    match result.await {
        Ok(()) => {
            let (response, sender) = connect::server_stream();
            tokio::spawn(async move {
                sender.send(&json!({})).await;
                sender.end(None).await;
            });
            response
        }
        Err(e) => connect::stream_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct SendSignalRequest {
    process: Selector,
    signal: Value,
}

/// envd's `Signal` enum, by name or number.
fn signal_number(signal: &Value) -> Result<i32, RpcError> {
    match signal {
        Value::String(name) => match name.as_str() {
            "SIGNAL_SIGKILL" => Ok(libc::SIGKILL),
            "SIGNAL_SIGTERM" => Ok(libc::SIGTERM),
            other => Err(RpcError::invalid(format!("unknown signal `{other}`"))),
        },
        Value::Number(n) => match n.as_i64() {
            Some(9) => Ok(libc::SIGKILL),
            Some(15) => Ok(libc::SIGTERM),
            _ => Err(RpcError::invalid(format!("unknown signal {n}"))),
        },
        _ => Err(RpcError::invalid("`signal` must be a name or number")),
    }
}

async fn send_signal(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let request: SendSignalRequest = connect::request(&headers, &body)?;
        let signal = signal_number(&request.signal)?;
        let process = state.processes.find(&sandbox, &request.process)?;
        with_input(&process, move |mut input| async move {
            input.signal(signal).await
        })
        .await
    };
    answer(result.await)
}

async fn close_stdin(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let request: SelectorRequest = connect::request(&headers, &body)?;
        let process = state.processes.find(&sandbox, &request.process)?;
        with_input(
            &process,
            |mut input| async move { input.close_stdin().await },
        )
        .await
    };
    answer(result.await)
}

#[derive(Debug, Deserialize)]
struct UpdateRequest {
    process: Selector,
    pty: Option<Pty>,
}

async fn update(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let request: UpdateRequest = connect::request(&headers, &body)?;
        let process = state.processes.find(&sandbox, &request.process)?;
        let Some(pty) = request.pty else {
            return Ok(());
        };
        if !process.pty {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                "the process has no terminal to resize",
            ));
        }
        let size = term_size(pty.size.as_ref());
        with_input(&process, move |mut input| async move {
            input.resize(size).await
        })
        .await
    };
    answer(result.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_selectors_and_signals_read_envd_json() {
        let by_pid: SelectorRequest = serde_json::from_str(r#"{"process":{"pid":42}}"#).unwrap();
        assert!(matches!(by_pid.process, Selector::Pid(42)));
        let by_tag: SelectorRequest = serde_json::from_str(r#"{"process":{"tag":"web"}}"#).unwrap();
        assert!(matches!(by_tag.process, Selector::Tag(ref t) if t == "web"));
        assert_eq!(signal_number(&json!("SIGNAL_SIGKILL")).unwrap(), 9);
        assert_eq!(signal_number(&json!(15)).unwrap(), 15);
        assert!(signal_number(&json!("SIGNAL_SIGSTOP")).is_err());
    }

    #[test]
    fn test_end_events_follow_go_process_state() {
        let end = end_event(ExitStatus::Code(3), None);
        assert_eq!(end["event"]["end"]["exitCode"], 3);
        assert_eq!(end["event"]["end"]["status"], "exit status 3");
        let killed = end_event(ExitStatus::Signal(9), None);
        assert_eq!(killed["event"]["end"]["exitCode"], -1);
        assert_eq!(killed["event"]["end"]["status"], "signal: killed");
        assert_eq!(
            data_event("stdout", b"42\n")["event"]["data"]["stdout"],
            "NDIK"
        );
    }
}
