//! `/terminals`: PTY terminals (`pty: true`, an interactive shell whose bytes travel over the
//! socket as `terminal:output` and `terminal:input` on the terminal's channel) and exec-mode
//! terminals (`pty: false`, a name for tracked commands run by `/execute`). A PTY's output
//! before anyone subscribes (its first prompt, say) is kept, up to [`MAX_BACKLOG`] bytes, for
//! its first subscriber.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use hearth_engine::{ExecInput, TermSize};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::auth::Daemon;
use super::process::{self, Ending, Sink, Stream, Utf8};
use super::{commands, data, Answer, ComputeState, Refused, WAIT_SECS};

/// Terminals kept per sandbox; a new one pushes out the oldest stopped one.
const MAX_TERMINALS: usize = 32;
/// Output a PTY keeps for its first subscriber.
const MAX_BACKLOG: usize = 64 * 1024;
/// Terminal sizes beyond this are mistakes (or attempts to make the guest allocate).
const MAX_CELLS: u16 = 4096;

#[derive(Debug)]
pub(super) struct Terminal {
    id: String,
    /// Output base64-encoded (binary-safe) rather than as text.
    base64: bool,
    /// The shell, for a PTY terminal.
    pty: Option<Pty>,
    stopped: AtomicBool,
}

#[derive(Debug)]
struct Pty {
    channel: String,
    input: tokio::sync::Mutex<ExecInput>,
    out: Mutex<Fanout>,
}

/// Where a PTY's output goes: its subscribed sockets, or the backlog while there are none.
#[derive(Debug, Default)]
struct Fanout {
    backlog: Vec<String>,
    backlog_bytes: usize,
    subscribers: Vec<(String, mpsc::Sender<Value>)>,
}

impl Terminal {
    fn running(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
    }

    /// `TerminalResponse.data`.
    pub fn info(&self) -> Value {
        let mut info = json!({
            "id": self.id,
            "pty": self.pty.is_some(),
            "status": if self.running() { "running" } else { "stopped" },
            "encoding": if self.base64 { "base64" } else { "raw" },
        });
        if let Some(pty) = &self.pty {
            info["channel"] = json!(pty.channel);
        }
        info
    }

    /// The socket channel of a PTY terminal.
    pub fn channel(&self) -> Option<&str> {
        self.pty.as_ref().map(|pty| pty.channel.as_str())
    }

    /// `terminal:created`, which the client waits for (up to 5 s) after making a PTY.
    pub fn created_message(&self) -> Value {
        json!({ "type": "terminal:created", "channel": self.channel(), "data": self.info() })
    }

    fn fanout(pty: &Pty) -> MutexGuard<'_, Fanout> {
        pty.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn output_message(&self, channel: &str, output: &str) -> Value {
        let encoding = if self.base64 { "base64" } else { "raw" };
        json!({
            "type": "terminal:output",
            "channel": channel,
            "data": { "output": output, "encoding": encoding },
        })
    }

    /// Sends this PTY's output on to the socket `socket` (by `tx`); the first subscriber gets
    /// the backlog first.
    pub fn subscribe(&self, socket: &str, tx: &mpsc::Sender<Value>) {
        let Some(pty) = &self.pty else { return };
        let mut out = Self::fanout(pty);
        out.subscribers
            .retain(|(id, tx)| id != socket && !tx.is_closed());
        if out.subscribers.is_empty() && !out.backlog.is_empty() {
            let backlog = std::mem::take(&mut out.backlog);
            out.backlog_bytes = 0;
            // Base64 chunks concatenated are no longer one base64 text, so each goes alone.
            let pieces = if self.base64 {
                backlog
            } else {
                vec![backlog.concat()]
            };
            for piece in pieces {
                if tx
                    .try_send(self.output_message(&pty.channel, &piece))
                    .is_err()
                {
                    tracing::debug!("a terminal backlog did not fit a new socket's queue");
                }
            }
        }
        out.subscribers.push((socket.to_owned(), tx.clone()));
    }

    pub fn unsubscribe(&self, socket: &str) {
        if let Some(pty) = &self.pty {
            Self::fanout(pty).subscribers.retain(|(id, _)| id != socket);
        }
    }

    /// `terminal:input`: keystrokes for the shell.
    pub async fn write(&self, data: Vec<u8>) {
        if let Some(pty) = &self.pty {
            if let Err(e) = pty.input.lock().await.stdin(data).await {
                tracing::debug!(error = %e, "input for a terminal that has ended");
            }
        }
    }

    /// `terminal:resize`.
    pub async fn resize(&self, cols: f64, rows: f64) {
        let cells = |n: f64| (n as u16).clamp(1, MAX_CELLS);
        let size = TermSize {
            rows: cells(rows),
            cols: cells(cols),
        };
        if let Some(pty) = &self.pty {
            if let Err(e) = pty.input.lock().await.resize(size).await {
                tracing::debug!(error = %e, "resize for a terminal that has ended");
            }
        }
    }

    /// Everyone subscribed now.
    fn subscribers(pty: &Pty) -> Vec<mpsc::Sender<Value>> {
        let mut out = Self::fanout(pty);
        out.subscribers.retain(|(_, tx)| !tx.is_closed());
        out.subscribers.iter().map(|(_, tx)| tx.clone()).collect()
    }

    /// Everyone subscribed now, or nobody after keeping `output` for the first subscriber.
    fn deliver(pty: &Pty, output: String) -> Vec<mpsc::Sender<Value>> {
        let mut out = Self::fanout(pty);
        out.subscribers.retain(|(_, tx)| !tx.is_closed());
        if out.subscribers.is_empty() {
            out.backlog_bytes += output.len();
            out.backlog.push(output);
            while out.backlog_bytes > MAX_BACKLOG && !out.backlog.is_empty() {
                let dropped = out.backlog.remove(0);
                out.backlog_bytes -= dropped.len();
            }
            return Vec::new();
        }
        out.subscribers.iter().map(|(_, tx)| tx.clone()).collect()
    }
}

/// Pumps a PTY's output to its subscribers.
struct ToSubscribers {
    terminal: Arc<Terminal>,
    utf8: Utf8,
}

impl Sink for ToSubscribers {
    async fn chunk(&mut self, _: Stream, data: Vec<u8>) -> bool {
        let Some(pty) = &self.terminal.pty else {
            return false;
        };
        let output = if self.terminal.base64 {
            base64::engine::general_purpose::STANDARD.encode(&data)
        } else {
            self.utf8.push(&data)
        };
        if output.is_empty() {
            return true;
        }
        let message = self.terminal.output_message(&pty.channel, &output);
        for tx in Terminal::deliver(pty, output) {
            // A socket that has gone is pruned on the next chunk; the others wait for a slow
            // one, which bounds what is held for it.
            let _ = tx.send(message.clone()).await;
        }
        true
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct NewTerminal {
    #[serde(default)]
    pty: bool,
    shell: Option<String>,
    encoding: Option<String>,
}

pub(super) async fn create(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Json(request): Json<NewTerminal>,
) -> Answer {
    let base64 = match request.encoding.as_deref() {
        None | Some("raw") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                format!("terminal encodings are `raw` and `base64`, not `{other}`"),
            ))
        }
    };
    let terminal_id = super::new_id("term");
    if !request.pty {
        let terminal = Arc::new(Terminal {
            id: terminal_id.clone(),
            base64,
            pty: None,
            stopped: AtomicBool::new(false),
        });
        insert(&state, &id, &terminal)?;
        return data(terminal.info());
    }
    let argv = vec![request.shell.unwrap_or_else(|| "sh".to_owned())];
    let env = [("TERM".to_owned(), "xterm-256color".to_owned())].into();
    let size = TermSize { rows: 24, cols: 80 };
    let (_pid, input, mut output) =
        process::start(&state, &id, argv, env, None, Some(size)).await?;
    let terminal = Arc::new(Terminal {
        base64,
        pty: Some(Pty {
            channel: format!("terminal:{terminal_id}"),
            input: tokio::sync::Mutex::new(input),
            out: Mutex::default(),
        }),
        id: terminal_id,
        stopped: AtomicBool::new(false),
    });
    if let Err(refused) = insert(&state, &id, &terminal) {
        terminal.kill().await;
        return Err(refused);
    }
    let pumped = Arc::clone(&terminal);
    tokio::spawn(async move {
        let mut sink = ToSubscribers {
            terminal: Arc::clone(&pumped),
            utf8: Utf8::default(),
        };
        if let Ending::Lost(why) = process::pump(&mut output, &mut sink).await {
            tracing::debug!(why, "a terminal's connection to the guest broke");
        }
        pumped.stopped.store(true, Ordering::Relaxed);
        if let Some(pty) = &pumped.pty {
            let message = json!({
                "type": "terminal:destroyed",
                "channel": pty.channel,
                "data": { "id": pumped.id },
            });
            for tx in Terminal::subscribers(pty) {
                let _ = tx.send(message.clone()).await;
            }
        }
    });
    // A socket that is already open hears of it now; one opened later, when it connects.
    let created = terminal.created_message();
    for socket in state.live.sockets.all(&id) {
        let _ = socket.tx.try_send(created.clone());
    }
    data(terminal.info())
}

fn insert(state: &ComputeState, sandbox: &str, terminal: &Arc<Terminal>) -> Result<(), Refused> {
    state.live.terminals.insert(
        sandbox,
        terminal.id.clone(),
        Arc::clone(terminal),
        MAX_TERMINALS,
        |t| !t.running(),
    )
}

impl Terminal {
    /// Ends a PTY's shell and what it runs; the pump then says `terminal:destroyed`.
    async fn kill(&self) {
        if let Some(pty) = &self.pty {
            if let Err(e) = pty.input.lock().await.signal(libc::SIGKILL).await {
                tracing::debug!(error = %e, "failed to kill a terminal's shell");
            }
        }
        self.stopped.store(true, Ordering::Relaxed);
    }
}

fn find(state: &ComputeState, sandbox: &str, terminal: &str) -> Result<Arc<Terminal>, Refused> {
    state.live.terminals.get(sandbox, terminal).ok_or_else(|| {
        Refused(
            StatusCode::NOT_FOUND,
            format!("terminal `{terminal}` not found"),
        )
    })
}

pub(super) async fn list(State(state): State<ComputeState>, Daemon(id): Daemon) -> Answer {
    let terminals: Vec<Value> = state
        .live
        .terminals
        .all(&id)
        .iter()
        .map(|t| t.info())
        .collect();
    data(json!({ "terminals": terminals }))
}

pub(super) async fn get_terminal(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Path((_, terminal)): Path<(String, String)>,
) -> Answer {
    data(find(&state, &id, &terminal)?.info())
}

pub(super) async fn destroy(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Path((_, terminal)): Path<(String, String)>,
) -> Answer {
    let found = find(&state, &id, &terminal)?;
    state.live.terminals.remove(&id, &terminal);
    found.kill().await;
    data(json!({ "id": terminal }))
}

#[derive(Debug, Deserialize)]
pub(super) struct Execute {
    command: String,
    #[serde(default)]
    background: bool,
}

/// An exec-mode terminal's `command.run`: a tracked command, answered when it ends (within
/// [`WAIT_SECS`]; after that as `running`, to be waited on) or, in the background, at once.
pub(super) async fn execute(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Path((_, terminal)): Path<(String, String)>,
    Json(request): Json<Execute>,
) -> Answer {
    if find(&state, &id, &terminal)?.pty.is_some() {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            format!("terminal `{terminal}` is a PTY: write() to it; commands run in exec-mode terminals (pty: false)"),
        ));
    }
    let command = commands::spawn(
        &state,
        &id,
        &terminal,
        request.command,
        None,
        None,
        Default::default(),
    )
    .await?;
    if !request.background {
        command.wait(Duration::from_secs(WAIT_SECS)).await;
    }
    data(command.details())
}
