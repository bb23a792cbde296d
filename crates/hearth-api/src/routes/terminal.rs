//! `GET /v1/sandboxes/{sandbox}/terminal`: an interactive PTY over a WebSocket. Binary frames
//! carry bytes both ways (keystrokes in, terminal output out); text frames carry JSON control
//! messages: `{"type":"resize","rows","cols"}` and `{"type":"signal","signal"}` from the
//! client, one `{"type":"exit",...}` (or `{"type":"error",...}`) from the server before it
//! closes. Each connection is its own guest process, so a sandbox takes several at once. A
//! client that goes away gets its process group killed.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hearth_engine::{ExecEvent, ExecInput, ExecOutput, ExecRequest, ExitStatus, TermSize};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Path, Query};
use crate::routes::sandboxes::SandboxPath;
use crate::server::AppState;

/// Largest frame a client may send: keystrokes and pastes, not uploads.
const MAX_CLIENT_FRAME: usize = 1024 * 1024;
/// Terminal sizes beyond this are mistakes (or attempts to make the guest allocate).
const MAX_CELLS: u16 = 4096;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TerminalQuery {
    /// A shell command line, run with `sh -c`; without it an interactive `sh`.
    pub command: Option<String>,
    /// Rows of the terminal (default 24).
    pub rows: Option<u16>,
    /// Columns of the terminal (default 80).
    pub cols: Option<u16>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

/// What the client may send in a text frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Control {
    Resize { rows: u16, cols: u16 },
    Signal { signal: i32 },
}

/// What the server sends in a text frame, last before it closes.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Final {
    Exit {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    Error {
        message: String,
    },
}

#[utoipa::path(get, path = "/v1/sandboxes/{sandbox}/terminal", tag = "exec",
    params(SandboxPath, TerminalQuery),
    responses((status = 101, description = "a WebSocket: binary frames are terminal bytes, \
                 text frames JSON control (`resize`, `signal` in; `exit`, `error` out)"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "sandbox not running", body = ErrorBody)))]
pub async fn terminal(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
    Query(query): Query<TerminalQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let size = TermSize {
        rows: ApiError::in_range("rows", query.rows.unwrap_or(24), 1..=MAX_CELLS)?,
        cols: ApiError::in_range("cols", query.cols.unwrap_or(80), 1..=MAX_CELLS)?,
    };
    // Refused as HTTP errors while that is still possible; the process starts once upgraded,
    // so an upgrade that never completes leaves nothing running.
    let record = app.engine.running(&path.sandbox)?;
    let upgrade = upgrade
        .map_err(|e| ApiError::invalid_input(format!("this route speaks WebSocket only: {e}")))?;
    let argv = match query.command {
        Some(command) => vec!["sh".to_owned(), "-c".to_owned(), command],
        None => vec!["sh".to_owned()],
    };
    let request = ExecRequest {
        argv,
        env: vec!["TERM=xterm-256color".to_owned()],
        cwd: query.cwd,
        tty: Some(size),
        stdin: true,
        user: query.user,
    };
    Ok(upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| async move {
            let last = match app.engine.exec(&record.id, request).await {
                Ok((_pid, input, output)) => relay(socket, input, output).await,
                Err(e) => Some((
                    socket,
                    Final::Error {
                        message: hearth_engine::error_chain(&e),
                    },
                )),
            };
            if let Some((socket, last)) = last {
                say_last(socket, &last).await;
            }
        }))
}

/// Moves bytes both ways until the process exits (then the socket and how it ended are
/// returned) or the client goes away (then the process group is killed and `None` returned).
async fn relay(
    socket: WebSocket,
    mut input: ExecInput,
    mut output: ExecOutput,
) -> Option<(WebSocket, Final)> {
    let (mut to_client, mut from_client) = socket.split();
    // Output has its own task: a process's next event is awaited whole, never cancelled.
    let pump = tokio::spawn(async move {
        loop {
            let data = match output.next().await {
                Ok(Some(ExecEvent::Stdout(data) | ExecEvent::Stderr(data))) => data,
                Ok(Some(ExecEvent::Exited(status))) => {
                    let (exit_code, signal) = match status {
                        ExitStatus::Code(code) => (Some(code), None),
                        ExitStatus::Signal(signal) => (None, Some(signal)),
                    };
                    return Ok((to_client, Final::Exit { exit_code, signal }));
                }
                Ok(None) => {
                    let message = "the guest ended the terminal without an exit status";
                    return Ok((
                        to_client,
                        Final::Error {
                            message: message.into(),
                        },
                    ));
                }
                Err(e) => {
                    let message = hearth_engine::error_chain(&e);
                    return Ok((to_client, Final::Error { message }));
                }
            };
            if to_client.send(Message::Binary(data.into())).await.is_err() {
                return Err(());
            }
        }
    });
    tokio::pin!(pump);
    let ended = loop {
        tokio::select! {
            pumped = &mut pump => break pumped.ok().and_then(Result::ok),
            message = from_client.next() => {
                let delivered = match message {
                    Some(Ok(Message::Binary(data))) => input.stdin(data.to_vec()).await.is_ok(),
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<Control>(&text) {
                            Ok(Control::Resize { rows, cols }) => {
                                let size = TermSize {
                                    rows: rows.clamp(1, MAX_CELLS),
                                    cols: cols.clamp(1, MAX_CELLS),
                                };
                                input.resize(size).await.is_ok()
                            }
                            Ok(Control::Signal { signal }) => input.signal(signal).await.is_ok(),
                            // A bad control message is the client's mistake, not an end.
                            Err(e) => {
                                tracing::debug!(error = %e, "ignoring a bad terminal control message");
                                true
                            }
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => true,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break None,
                };
                if !delivered {
                    // The process is ending; its exit status is on the way.
                    break pump.await.ok().and_then(Result::ok);
                }
            }
        }
    };
    match ended {
        Some((to_client, last)) => match to_client.reunite(from_client) {
            Ok(socket) => Some((socket, last)),
            Err(_) => None,
        },
        None => {
            if let Err(e) = input.signal(libc::SIGKILL).await {
                tracing::debug!(error = %e, "failed to kill an abandoned terminal's process");
            }
            None
        }
    }
}

/// Sends the last text frame and a normal close; a client already gone is no error.
async fn say_last(mut socket: WebSocket, last: &Final) {
    if let Ok(text) = serde_json::to_string(last) {
        let _ = socket.send(Message::Text(text.into())).await;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}
