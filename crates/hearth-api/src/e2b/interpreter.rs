//! The code interpreter (`e2b-code-interpreter`, port 49999): `POST /execute` streams NDJSON
//! events, and contexts hold state between executions. Each context is one long-lived
//! `python3 -u -c DRIVER` process in the guest (`interpreter.py`): requests go to its stdin
//! as JSON lines, events come back on its stdout. A small driver instead of Jupyter because
//! any image with python3 then works, with nothing installed in it; the events are the ones
//! E2B's own server sends. Executions in one context run one at a time, as in a kernel.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use hearth_engine::{ExecEvent, ExecInput, ExecOutput, ExecRequest, ExitStatus};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::control::{error, Refusal};
use super::{E2bState, PerSandbox, SandboxId};

const DRIVER: &str = include_str!("interpreter.py");
/// The context `run_code` uses when it names none.
const DEFAULT_CONTEXT: &str = "default";
const LANGUAGE: &str = "python";
/// Contexts one sandbox may hold.
const MAX_CONTEXTS: usize = 64;
/// Longest event line the driver may send (a result may carry an image).
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Events an execution may be ahead of a slow client before the kernel's output waits.
const EVENT_BUFFER: usize = 64;
/// Bytes of a kernel's stderr kept to explain why it ended.
const STDERR_TAIL: usize = 4096;

pub fn router() -> Router<E2bState> {
    Router::new()
        .route("/execute", post(execute))
        .route("/contexts", post(create_context).get(list_contexts))
        .route("/contexts/{id}", delete(remove_context))
        .route("/contexts/{id}/restart", post(restart_context))
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
}

/// Every context, by sandbox and context id.
#[derive(Debug, Clone, Default)]
pub struct Kernels {
    inner: Arc<Mutex<PerSandbox<String, Context>>>,
}

#[derive(Debug)]
struct Context {
    id: String,
    cwd: Option<String>,
    /// The running driver, started at the first execution and again after it ends.
    session: tokio::sync::Mutex<Option<Session>>,
    /// The driver's input, also kept outside `session`: a restart must reach a driver whose
    /// execution holds the session and never ends.
    input: Mutex<Option<Input>>,
}

type Input = Arc<tokio::sync::Mutex<ExecInput>>;

#[derive(Debug)]
struct Session {
    input: Input,
    output: ExecOutput,
    /// Stdout bytes not yet ending in a newline.
    pending: Vec<u8>,
}

impl Kernels {
    fn lock(&self) -> std::sync::MutexGuard<'_, PerSandbox<String, Context>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, sandbox: &str, id: &str) -> Option<Arc<Context>> {
        let mut table = self.lock();
        let contexts = table.entry(sandbox.to_owned()).or_default();
        if id == DEFAULT_CONTEXT {
            // The default context always exists, as in E2B's server.
            return Some(
                contexts
                    .entry(id.to_owned())
                    .or_insert_with(|| Context::new(id.to_owned(), None))
                    .clone(),
            );
        }
        contexts.get(id).cloned()
    }

    fn create(&self, sandbox: &str, cwd: Option<String>) -> Result<Arc<Context>, Refusal> {
        let mut table = self.lock();
        let contexts = table.entry(sandbox.to_owned()).or_default();
        if contexts.len() >= MAX_CONTEXTS {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the sandbox has {MAX_CONTEXTS} contexts; remove one first"),
            ));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        let context = Context::new(id.clone(), cwd);
        contexts.insert(id, context.clone());
        Ok(context)
    }

    fn remove(&self, sandbox: &str, id: &str) -> Option<Arc<Context>> {
        self.lock().get_mut(sandbox).and_then(|c| c.remove(id))
    }

    fn all(&self, sandbox: &str) -> Vec<Arc<Context>> {
        self.lock()
            .get(sandbox)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops a sandbox's contexts once it is gone (their drivers died with it).
    pub fn forget(&self, sandbox: &str) {
        self.lock().remove(sandbox);
    }
}

impl Context {
    fn new(id: String, cwd: Option<String>) -> Arc<Self> {
        Arc::new(Context {
            id,
            cwd,
            session: tokio::sync::Mutex::new(None),
            input: Mutex::new(None),
        })
    }

    fn body(&self) -> Value {
        json!({ "id": self.id, "language": LANGUAGE, "cwd": self.cwd.as_deref().unwrap_or("") })
    }

    /// Ends the driver, so that the next execution starts with a clean namespace.
    async fn stop(&self) {
        let input = self.input.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(input) = input {
            // An execution in progress then sees its driver end and drops the session itself.
            let _ = input.lock().await.signal(libc::SIGKILL).await;
        }
        if let Ok(mut session) = self.session.try_lock() {
            *session = None;
        }
    }
}

#[derive(Debug, Deserialize)]
struct ExecuteRequest {
    code: String,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<BTreeMap<String, String>>,
}

async fn execute(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    Json(request): Json<ExecuteRequest>,
) -> Response {
    if request.context_id.is_some() && request.language.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "give a context_id or a language, not both",
        );
    }
    if let Some(language) = request.language.as_deref() {
        if let Err(refusal) = check_language(language) {
            return refusal.into_response();
        }
    }
    let id = request.context_id.as_deref().unwrap_or(DEFAULT_CONTEXT);
    let Some(context) = state.kernels.get(&sandbox, id) else {
        return error(StatusCode::NOT_FOUND, &format!("context `{id}` not found"));
    };
    let line = json!({ "code": request.code, "env_vars": request.env_vars.unwrap_or_default() });
    let (tx, rx) = mpsc::channel::<Value>(EVENT_BUFFER);
    tokio::spawn(async move {
        let mut session = context.session.lock().await;
        let outcome = run(&state, &sandbox, &context, &mut session, &line, &tx).await;
        if outcome.is_err() {
            // The driver is gone or out of step: the next execution starts a new one.
            *session = None;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = event.to_string();
        line.push('\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Interrupts the running cell once its client has gone, as Jupyter does on a timeout or
/// Ctrl-C; the execution reads on to the cell's end so the driver stays in step. Dropped
/// (the execution over), it stops watching.
struct InterruptWhenGone(tokio::task::JoinHandle<()>);

impl InterruptWhenGone {
    fn watch(tx: &mpsc::Sender<Value>, input: &Input) -> Self {
        let (tx, input) = (tx.clone(), input.clone());
        InterruptWhenGone(tokio::spawn(async move {
            tx.closed().await;
            let _ = input.lock().await.signal(libc::SIGINT).await;
        }))
    }
}

impl Drop for InterruptWhenGone {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one execution in `context`, starting its driver first if need be. `Err` means the
/// driver must be replaced; the client has been told why in an error event.
async fn run(
    state: &E2bState,
    sandbox: &str,
    context: &Context,
    session: &mut Option<Session>,
    line: &Value,
    events: &mpsc::Sender<Value>,
) -> Result<(), ()> {
    if session.is_none() {
        match start(state, sandbox, context).await {
            Ok(started) => *session = Some(started),
            Err(message) => {
                let _ = events.send(kernel_error(&message)).await;
                return Err(());
            }
        }
    }
    let Some(session) = session.as_mut() else {
        return Err(());
    };
    let mut request = line.to_string().into_bytes();
    request.push(b'\n');
    let written = session.input.lock().await.stdin(request).await;
    if let Err(e) = written {
        let message = format!("the kernel is gone: {}", hearth_engine::error_chain(&e));
        let _ = events.send(kernel_error(&message)).await;
        return Err(());
    }
    let _interrupt = InterruptWhenGone::watch(events, &session.input);
    let mut stderr_tail = Vec::new();
    loop {
        let event = match session.output.next().await {
            Ok(Some(event)) => event,
            Ok(None) => return Err(()),
            Err(e) => {
                let message = format!("lost the kernel: {}", hearth_engine::error_chain(&e));
                let _ = events.send(kernel_error(&message)).await;
                return Err(());
            }
        };
        match event {
            ExecEvent::Stdout(data) => {
                session.pending.extend_from_slice(&data);
                while let Some(end) = session.pending.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = session.pending.drain(..=end).collect();
                    let Some(event) = parse_event(&raw[..end]) else {
                        let _ = events
                            .send(kernel_error("the kernel sent a line that is not an event"))
                            .await;
                        return Err(());
                    };
                    let last = event["type"] == "end_of_execution";
                    let _ = events.send(event).await;
                    if last {
                        return Ok(());
                    }
                }
                if session.pending.len() > MAX_LINE {
                    let _ = events
                        .send(kernel_error("the kernel sent an event line over 16 MiB"))
                        .await;
                    return Err(());
                }
            }
            ExecEvent::Stderr(data) => {
                // Output of processes the code started, written to the kernel's fd 1 or 2.
                stderr_tail.extend_from_slice(&data);
                let excess = stderr_tail.len().saturating_sub(STDERR_TAIL);
                stderr_tail.drain(..excess);
                let text = String::from_utf8_lossy(&data).into_owned();
                let event = json!({ "type": "stderr", "text": text, "timestamp": now_ns() });
                let _ = events.send(event).await;
            }
            ExecEvent::Exited(status) => {
                let _ = events
                    .send(kernel_error(&ended(status, &stderr_tail)))
                    .await;
                return Err(());
            }
        }
    }
}

async fn start(state: &E2bState, sandbox: &str, context: &Context) -> Result<Session, String> {
    let env = state
        .app
        .engine
        .sandbox_env(sandbox)
        .map_err(|e| hearth_engine::error_chain(&e))?;
    let request = ExecRequest {
        argv: ["python3", "-u", "-c", DRIVER].map(str::to_owned).to_vec(),
        env,
        cwd: context.cwd.clone(),
        tty: None,
        stdin: true,
        user: None,
    };
    match state.app.engine.exec(sandbox, request).await {
        Ok((_, input, output)) => {
            let input = Arc::new(tokio::sync::Mutex::new(input));
            *context.input.lock().unwrap_or_else(|e| e.into_inner()) = Some(input.clone());
            Ok(Session {
                input,
                output,
                pending: Vec::new(),
            })
        }
        Err(e) if e.process_exit_code() == Some(127) => Err(
            "the code interpreter needs python3, and the sandbox's image has none on its PATH"
                .to_owned(),
        ),
        Err(e) => Err(format!(
            "failed to start the kernel: {}",
            hearth_engine::error_chain(&e)
        )),
    }
}

/// Why a driver ended in the middle of an execution.
fn ended(status: ExitStatus, stderr_tail: &[u8]) -> String {
    let how = match status {
        ExitStatus::Code(127) => {
            return "the code interpreter needs python3, and the sandbox's image has none on its PATH"
                .to_owned()
        }
        ExitStatus::Code(code) => format!("exited with status {code}"),
        ExitStatus::Signal(signal) => format!("was killed by signal {signal}"),
    };
    let tail = String::from_utf8_lossy(stderr_tail);
    let tail = tail.trim();
    if tail.is_empty() {
        format!("the kernel {how}; its variables are lost")
    } else {
        format!("the kernel {how}; its variables are lost. Its last output: {tail}")
    }
}

/// One line from the driver, accepted only as an event of a type the SDKs know: it comes
/// from the guest.
fn parse_event(line: &[u8]) -> Option<Value> {
    let event: Value = serde_json::from_slice(line).ok()?;
    let known = [
        "stdout",
        "stderr",
        "result",
        "error",
        "number_of_executions",
        "end_of_execution",
    ];
    let kind = event.get("type")?.as_str()?;
    known.contains(&kind).then_some(event)
}

/// An error event in E2B's shape, for failures of the kernel rather than of the code.
fn kernel_error(message: &str) -> Value {
    json!({ "type": "error", "name": "KernelError", "value": message, "traceback": "" })
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn check_language(language: &str) -> Result<(), Refusal> {
    if language == LANGUAGE {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("hearth's code interpreter runs python only, not `{language}`"),
        ))
    }
}

#[derive(Debug, Deserialize)]
struct CreateContext {
    language: Option<String>,
    cwd: Option<String>,
}

async fn create_context(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    Json(request): Json<CreateContext>,
) -> Response {
    if let Some(language) = request.language.as_deref() {
        if let Err(refusal) = check_language(language) {
            return refusal.into_response();
        }
    }
    match state.kernels.create(&sandbox, request.cwd) {
        Ok(context) => Json(context.body()).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn list_contexts(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
) -> Response {
    state.kernels.get(&sandbox, DEFAULT_CONTEXT);
    let contexts: Vec<Value> = state
        .kernels
        .all(&sandbox)
        .iter()
        .map(|c| c.body())
        .collect();
    Json(contexts).into_response()
}

async fn remove_context(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    Path(id): Path<String>,
) -> Response {
    match state.kernels.remove(&sandbox, &id) {
        Some(context) => {
            context.stop().await;
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, &format!("context `{id}` not found")),
    }
}

async fn restart_context(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    Path(id): Path<String>,
) -> Response {
    match state.kernels.get(&sandbox, &id) {
        Some(context) => {
            context.stop().await;
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, &format!("context `{id}` not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_only_known_events_pass_from_the_guest() {
        assert!(parse_event(br#"{"type":"stdout","text":"x","timestamp":1}"#).is_some());
        assert!(parse_event(br#"{"type":"end_of_execution"}"#).is_some());
        assert!(parse_event(br#"{"type":"rm -rf"}"#).is_none());
        assert!(parse_event(b"not json").is_none());
        assert!(parse_event(br#"["type"]"#).is_none());
    }

    #[test]
    fn test_a_kernel_that_ends_says_why() {
        assert!(ended(ExitStatus::Code(127), b"").contains("needs python3"));
        let message = ended(ExitStatus::Signal(9), b"Killed\n");
        assert!(message.contains("signal 9"), "{message}");
        assert!(message.ends_with("Its last output: Killed"), "{message}");
    }
}
