//! `/v1/sandboxes/{sandbox}/exec`: a command run to its end with its output in the answer, and
//! `.../exec/stream`, its output as NDJSON events while it runs. A client that goes away ends
//! the guest process: the agent kills a process whose connection closes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hearth_engine::{EngineError, ExecError, ExecEvent, ExecRequest, ExitStatus, Started};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::extract::{Json, Path};
use crate::routes::sandboxes::{env_entries, SandboxPath};
use crate::server::AppState;

const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// An hour: longer work belongs in a sandbox's main process, not a request.
const MAX_TIMEOUT_SECS: u64 = 3600;
const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;
/// The most of each stream one answer holds; the answer sits in memory until it is sent.
const MAX_MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// Events a slow stream reader may fall behind by before the guest's output waits for it.
const STREAM_BUFFER: usize = 64;

/// A command to run in a running sandbox.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments; the program is looked up in `PATH` when it has no `/`.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default `/`).
    pub cwd: Option<String>,
    /// `name`, `uid`, `name:group` or `uid:gid` (default root).
    pub user: Option<String>,
    /// The process's whole stdin, in `encoding`; without it stdin is empty.
    pub stdin: Option<String>,
    /// How `stdin` and the output are carried: `utf8` (output decoded lossily) or `base64`
    /// (binary-safe).
    #[serde(default)]
    pub encoding: Encoding,
    /// Seconds before the process is killed (default 60, at most 3600).
    pub timeout_secs: Option<u64>,
    /// Bytes of stdout and of stderr kept in the answer (default 1 MiB, at most 16 MiB); the
    /// rest is read and dropped. Not used by the stream.
    pub max_output_bytes: Option<usize>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

/// How a command ended and what it printed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResult {
    /// The exit code; 127 when the program was not found, 126 when it could not be run.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It ran past its timeout and was killed.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// One line of the NDJSON stream; `exit` or `error` is last.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
    Error {
        error: ErrorDetail,
    },
}

/// A checked request, ready for the engine.
struct Prepared {
    request: ExecRequest,
    stdin: Option<Vec<u8>>,
    encoding: Encoding,
    timeout: Duration,
    max_output: usize,
}

/// How a run ended, as far as the host saw it.
enum Ending {
    Exited(ExitStatus),
    TimedOut,
    /// The output's reader went away.
    Abandoned,
}

#[utoipa::path(post, path = "/v1/sandboxes/{sandbox}/exec", tag = "exec", params(SandboxPath),
    request_body = ExecBody,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "sandbox not running", body = ErrorBody)))]
pub async fn exec(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
    Json(body): Json<ExecBody>,
) -> Result<axum::Json<ExecResult>, ApiError> {
    Ok(axum::Json(run_to_end(&app, &path.sandbox, body).await?))
}

/// Runs `body` in `sandbox` to its end (or timeout) and collects its output: the exec route,
/// and the MCP `run_command` tool.
pub(crate) async fn run_to_end(
    app: &AppState,
    sandbox: &str,
    body: ExecBody,
) -> Result<ExecResult, ApiError> {
    let prepared = prepare(body)?;
    let mut result = ExecResult {
        exit_code: None,
        signal: None,
        timed_out: false,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
    };
    let started = match start(app, sandbox, prepared.request.clone()).await? {
        Ok(started) => started,
        Err((code, message)) => {
            result.exit_code = Some(code);
            result.stderr = message;
            return Ok(result);
        }
    };
    // The run is a task of its own so that a client that hangs up (which drops this handler)
    // still gets its process killed: dropping `guard` tells the task.
    let (guard, hung_up) = tokio::sync::oneshot::channel::<()>();
    let limit = prepared.max_output;
    let task = tokio::spawn(async move {
        let mut kept = Collect {
            limit,
            ..Collect::default()
        };
        let abandoned = async move {
            let _ = hung_up.await;
        };
        let ending = drive(
            started,
            prepared.stdin,
            prepared.timeout,
            &mut kept,
            abandoned,
        )
        .await;
        (ending, kept)
    });
    let (ending, kept) = task.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the exec task failed: {e}"),
        )
    })?;
    drop(guard);
    let ending = ending?;
    (result.exit_code, result.signal, result.timed_out) = outcome(&ending);
    result.stdout = prepared.encoding.encode(&kept.stdout);
    result.stderr = prepared.encoding.encode(&kept.stderr);
    result.stdout_truncated = kept.stdout_truncated;
    result.stderr_truncated = kept.stderr_truncated;
    Ok(result)
}

#[utoipa::path(post, path = "/v1/sandboxes/{sandbox}/exec/stream", tag = "exec",
    params(SandboxPath), request_body = ExecBody,
    responses((status = 200, description = "NDJSON, one StreamEvent a line",
               content_type = "application/x-ndjson", body = StreamEvent),
              (status = 404, body = ErrorBody),
              (status = 409, description = "sandbox not running", body = ErrorBody)))]
pub async fn exec_stream(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
    Json(body): Json<ExecBody>,
) -> Result<Response, ApiError> {
    let prepared = prepare(body)?;
    let encoding = prepared.encoding;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_BUFFER);
    match start(&app, &path.sandbox, prepared.request).await? {
        Err((code, message)) => {
            let _ = tx.try_send(line(&StreamEvent::Stderr {
                data: encoding.encode(message.as_bytes()),
            }));
            let _ = tx.try_send(line(&StreamEvent::Exit {
                exit_code: Some(code),
                signal: None,
                timed_out: false,
            }));
        }
        Ok(started) => {
            tokio::spawn(async move {
                let mut forward = Forward {
                    tx: tx.clone(),
                    encoding,
                };
                let watcher = tx.clone();
                let abandoned = async move { watcher.closed().await };
                let last = match drive(
                    started,
                    prepared.stdin,
                    prepared.timeout,
                    &mut forward,
                    abandoned,
                )
                .await
                {
                    Ok(Ending::Abandoned) => return,
                    Ok(ending) => {
                        let (exit_code, signal, timed_out) = outcome(&ending);
                        StreamEvent::Exit {
                            exit_code,
                            signal,
                            timed_out,
                        }
                    }
                    Err(e) => StreamEvent::Error {
                        error: ApiError::from(e).detail().clone(),
                    },
                };
                let _ = tx.send(line(&last)).await;
            });
        }
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn prepare(body: ExecBody) -> Result<Prepared, ApiError> {
    if body.command.is_empty() {
        return Err(ApiError::invalid_input(
            "`command` needs at least a program",
        ));
    }
    let timeout = ApiError::in_range(
        "timeout_secs",
        body.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
        1..=MAX_TIMEOUT_SECS,
    )?;
    let max_output = ApiError::in_range(
        "max_output_bytes",
        body.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT),
        0..=MAX_MAX_OUTPUT,
    )?;
    let stdin = body
        .stdin
        .map(|text| body.encoding.decode("stdin", text))
        .transpose()?;
    Ok(Prepared {
        request: ExecRequest {
            argv: body.command,
            env: env_entries(body.env)?,
            cwd: body.cwd,
            tty: None,
            stdin: stdin.is_some(),
            user: body.user,
        },
        stdin,
        encoding: body.encoding,
        timeout: Duration::from_secs(timeout),
        max_output,
    })
}

/// Starts the process. A program that is missing or not executable is not a failed request:
/// it ends like it would in a shell, with 127 or 126 and a message on stderr.
async fn start(
    app: &AppState,
    sandbox: &str,
    request: ExecRequest,
) -> Result<Result<Started, (i32, String)>, ApiError> {
    match app.engine.exec(sandbox, request).await {
        Ok(started) => Ok(Ok(started)),
        Err(e) => match e.process_exit_code() {
            Some(code) => Ok(Err((code, format!("{}\n", hearth_engine::error_chain(&e))))),
            None => Err(e.into()),
        },
    }
}

/// Feeds stdin and passes each output event to `sink` until the process exits, the timeout
/// passes, `sink` wants no more, or `abandoned` completes (the client left). A process nobody
/// waits for any more is killed.
async fn drive(
    started: Started,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    sink: &mut impl OutputSink,
    abandoned: impl Future<Output = ()>,
) -> Result<Ending, EngineError> {
    let (_pid, mut input, mut output) = started;
    // A frame cut off half-way would garble the next one, so a kill is sent only once the
    // input side is idle.
    let mut input_idle = stdin.is_none();
    let ending = {
        let run = async {
            let feed = async {
                if let Some(data) = stdin {
                    input.stdin(data).await?;
                    input.close_stdin().await?;
                }
                input_idle = true;
                Ok::<(), ExecError>(())
            };
            let drain = async {
                while let Some(event) = output.next().await? {
                    match event {
                        ExecEvent::Exited(status) => return Ok(Ending::Exited(status)),
                        event => {
                            if !sink.accept(event).await {
                                return Ok(Ending::Abandoned);
                            }
                        }
                    }
                }
                // The output ends only after `Exited`, which returned above.
                Ok::<_, ExecError>(Ending::Abandoned)
            };
            let (fed, drained) = tokio::join!(feed, drain);
            // A process may exit without reading its stdin; that is its business.
            if let Err(e) = fed {
                tracing::debug!(error = %e, "stdin was not all delivered");
            }
            drained
        };
        tokio::select! {
            ran = tokio::time::timeout(timeout, run) => ran.unwrap_or(Ok(Ending::TimedOut))?,
            () = abandoned => Ending::Abandoned,
        }
    };
    if matches!(ending, Ending::TimedOut | Ending::Abandoned) && input_idle {
        // Closing the connection is not enough: the guest does not always learn of it.
        if let Err(e) = input.signal(libc::SIGKILL).await {
            tracing::debug!(error = %e, "failed to kill an abandoned guest process");
        }
    }
    Ok(ending)
}

/// Where a running process's output goes.
trait OutputSink {
    /// Takes stdout or stderr; false when nobody wants more.
    async fn accept(&mut self, event: ExecEvent) -> bool;
}

/// Keeps up to `limit` bytes of each stream for the answer.
#[derive(Debug, Default)]
struct Collect {
    limit: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

impl OutputSink for Collect {
    async fn accept(&mut self, event: ExecEvent) -> bool {
        match event {
            ExecEvent::Stdout(data) => {
                keep(
                    &mut self.stdout,
                    &data,
                    self.limit,
                    &mut self.stdout_truncated,
                );
            }
            ExecEvent::Stderr(data) => {
                keep(
                    &mut self.stderr,
                    &data,
                    self.limit,
                    &mut self.stderr_truncated,
                );
            }
            ExecEvent::Exited(_) => {}
        }
        true
    }
}

/// Sends each output event on as an NDJSON line.
struct Forward {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    encoding: Encoding,
}

impl OutputSink for Forward {
    async fn accept(&mut self, event: ExecEvent) -> bool {
        let event = match event {
            ExecEvent::Stdout(data) => StreamEvent::Stdout {
                data: self.encoding.encode(&data),
            },
            ExecEvent::Stderr(data) => StreamEvent::Stderr {
                data: self.encoding.encode(&data),
            },
            ExecEvent::Exited(_) => return true,
        };
        self.tx.send(line(&event)).await.is_ok()
    }
}

/// (exit code, signal, timed out) of an ending.
fn outcome(ending: &Ending) -> (Option<i32>, Option<i32>, bool) {
    match ending {
        Ending::Exited(ExitStatus::Code(code)) => (Some(*code), None, false),
        Ending::Exited(ExitStatus::Signal(signal)) => (None, Some(*signal), false),
        Ending::TimedOut => (None, None, true),
        Ending::Abandoned => (None, None, false),
    }
}

fn keep(buffer: &mut Vec<u8>, data: &[u8], limit: usize, truncated: &mut bool) {
    let room = limit.saturating_sub(buffer.len());
    if data.len() > room {
        *truncated = true;
    }
    buffer.extend_from_slice(&data[..room.min(data.len())]);
}

fn line(event: &StreamEvent) -> Bytes {
    let mut json = serde_json::to_vec(event).unwrap_or_default();
    json.push(b'\n');
    Bytes::from(json)
}

impl Encoding {
    pub(crate) fn encode(self, data: &[u8]) -> String {
        match self {
            Encoding::Utf8 => String::from_utf8_lossy(data).into_owned(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(data),
        }
    }

    /// `what` names the field for the error, like `stdin`.
    pub(crate) fn decode(self, what: &str, text: String) -> Result<Vec<u8>, ApiError> {
        match self {
            Encoding::Utf8 => Ok(text.into_bytes()),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| ApiError::invalid_input(format!("{what} is not base64: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_keep_stops_at_the_limit_and_says_so() {
        let (mut buffer, mut truncated) = (Vec::new(), false);
        keep(&mut buffer, b"abc", 4, &mut truncated);
        assert!(!truncated);
        keep(&mut buffer, b"def", 4, &mut truncated);
        assert_eq!((buffer.as_slice(), truncated), (&b"abcd"[..], true));
    }

    #[test]
    fn test_stream_events_are_tagged_by_type() {
        let exit = StreamEvent::Exit {
            exit_code: Some(3),
            signal: None,
            timed_out: false,
        };
        assert_eq!(
            line(&exit),
            Bytes::from_static(
                b"{\"type\":\"exit\",\"exit_code\":3,\"signal\":null,\"timed_out\":false}\n"
            )
        );
    }
}
