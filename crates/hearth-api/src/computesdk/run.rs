//! `GET /health`, `POST /run/command` (run to its end, in the background, or streamed over
//! the socket) and `POST /run/code`.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Daemon;
use super::commands::{self, BACKGROUND_TERMINAL};
use super::{data, process, Answer, ComputeState, Refused, WAIT_SECS};
use crate::routes::exec::{run_to_end, Encoding, ExecBody, ExecResult};

/// Streamed commands a sandbox may have waiting for their `command:start`; a new one pushes
/// out the oldest (a client that never started it is gone).
const MAX_PENDING: usize = 64;

pub(super) async fn health(Daemon(_): Daemon) -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[derive(Debug, Deserialize)]
pub(super) struct RunCommand {
    command: String,
    shell: Option<String>,
    #[serde(default)]
    background: bool,
    /// `runCommand` with `onStdout`/`onStderr`: the output goes over the socket.
    #[serde(default)]
    stream: bool,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// A streamed command, made by `POST /run/command` and started by the socket's
/// `command:start` once the client listens on its channel, so no output is missed.
#[derive(Debug)]
pub(super) struct Pending {
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
}

/// The socket channel a streamed command's output goes to.
pub(super) fn command_channel(cmd_id: &str) -> String {
    format!("command:{cmd_id}")
}

pub(super) async fn run_command(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Json(request): Json<RunCommand>,
) -> Answer {
    if request.stream {
        let cmd_id = super::new_id("cmd");
        let pending = Pending {
            argv: process::shell_argv(request.shell, request.command.clone()),
            cwd: request.cwd,
            env: request.env,
        };
        state
            .live
            .pending
            .insert(&id, cmd_id.clone(), pending.into(), MAX_PENDING, |_| true)?;
        return data(json!({
            "cmd_id": cmd_id,
            "channel": command_channel(&cmd_id),
            "command": request.command,
            "status": "running",
            "stdout": "",
            "stderr": "",
        }));
    }
    if request.background {
        let command = commands::spawn(
            &state,
            &id,
            BACKGROUND_TERMINAL,
            request.command,
            request.shell,
            request.cwd,
            request.env,
        )
        .await?;
        return data(command.details());
    }
    let command = process::shell_argv(request.shell, request.command);
    run(
        &state,
        &id,
        command,
        request.cwd,
        request.env,
        |result, ms| {
            json!({
                "stdout": result.stdout,
                "stderr": result.stderr,
                "exit_code": exit_code(&result),
                "duration_ms": ms,
            })
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct RunCode {
    code: String,
    language: Option<String>,
}

pub(super) async fn run_code(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Json(request): Json<RunCode>,
) -> Answer {
    let language = request.language.unwrap_or_else(|| "python".to_owned());
    let command = match language.as_str() {
        "python" | "python3" => vec!["python3".to_owned(), "-c".to_owned(), request.code],
        "node" | "javascript" | "js" => vec!["node".to_owned(), "-e".to_owned(), request.code],
        "bash" | "sh" => vec![language.clone(), "-c".to_owned(), request.code],
        other => {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                format!("hearth runs python, node, bash and sh code, not `{other}`"),
            ))
        }
    };
    run(&state, &id, command, None, BTreeMap::new(), |result, _| {
        json!({
            "output": format!("{}{}", result.stdout, result.stderr),
            "exit_code": exit_code(&result),
            "language": language,
        })
    })
    .await
}

/// How a command run to its end ended; -1 when it was killed at its timeout.
fn exit_code(result: &ExecResult) -> i32 {
    result
        .exit_code
        .or(result.signal.map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Runs `command` to its end, for at most [`WAIT_SECS`], and answers with `answer`'s body.
async fn run(
    state: &ComputeState,
    id: &str,
    command: Vec<String>,
    cwd: Option<String>,
    env: BTreeMap<String, String>,
    answer: impl FnOnce(ExecResult, u128) -> Value,
) -> Answer {
    let started = Instant::now();
    let body = ExecBody {
        command,
        env,
        cwd,
        user: None,
        stdin: None,
        encoding: Encoding::Utf8,
        timeout_secs: Some(WAIT_SECS),
        max_output_bytes: None,
    };
    let result = run_to_end(&state.app, id, body).await?;
    data(answer(result, started.elapsed().as_millis()))
}
