//! `GET /ws?token=…&protocol=binary`: the client's one socket per sandbox object, multiplexed
//! by channel. The client sends binary frames (`u8` kind: 1 subscribe, 2 unsubscribe, 3 data;
//! then the channel and the message type, each with a `u16` length; then a `u32`-long
//! payload, key-value encoded for objects), or JSON text frames under `protocol=json`. It
//! sends `subscribe`, `unsubscribe`, `terminal:input`, `terminal:resize` and
//! `command:start`. This server answers in JSON text frames `{type, channel, data}`, which
//! the client parses in either protocol, whereas it key-value-decodes binary ones only for
//! some message types (not `command:*` or `terminal:created`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::auth::Daemon;
use super::process::{self, Ending, Sink, Stream, Utf8};
use super::run::command_channel;
use super::{ComputeState, Refused};

/// Largest frame a client may send: keystrokes and pastes, not uploads.
const MAX_CLIENT_FRAME: usize = 1024 * 1024;
/// Messages queued for one socket before their senders wait for it.
const OUTBOX: usize = 256;
/// Sockets one sandbox may have open.
const MAX_SOCKETS: usize = 64;

/// An open socket, for messages that are not on a channel it asked for (`terminal:created`).
#[derive(Debug)]
pub(super) struct Socket {
    pub tx: mpsc::Sender<Value>,
}

pub(super) async fn connect(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => {
            return Refused(
                StatusCode::BAD_REQUEST,
                format!("this route speaks WebSocket only: {e}"),
            )
            .into_response()
        }
    };
    upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| serve(state, id, socket))
}

async fn serve(state: ComputeState, sandbox: String, socket: WebSocket) {
    let socket_id = super::new_id("ws");
    let (tx, mut rx) = mpsc::channel::<Value>(OUTBOX);
    let (mut to_client, mut from_client) = socket.split();
    let registered = state.live.sockets.insert(
        &sandbox,
        socket_id.clone(),
        Arc::new(Socket { tx: tx.clone() }),
        MAX_SOCKETS,
        |_| false,
    );
    if let Err(Refused(_, message)) = registered {
        let error = json!({ "type": "error", "data": { "error": message } });
        let _ = to_client
            .send(Message::Text(error.to_string().into()))
            .await;
        return;
    }
    // The client waits for `terminal:created` after making a PTY, and opens this socket
    // after the PTY is made.
    for terminal in state.live.terminals.all(&sandbox) {
        if terminal.channel().is_some() {
            let _ = tx.try_send(terminal.created_message());
        }
    }
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let text = message.to_string();
            if to_client.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = from_client.next().await {
        let frame = match message {
            Message::Binary(bytes) => Frame::decode(&bytes),
            Message::Text(text) => Frame::from_json(&text),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match frame {
            Ok(frame) => handle(&state, &sandbox, &socket_id, &tx, frame).await,
            // A bad frame is the client's mistake, not the socket's end.
            Err(e) => tracing::debug!(error = %e, "ignoring a bad ComputeSDK socket frame"),
        }
    }
    state.live.sockets.remove(&sandbox, &socket_id);
    for terminal in state.live.terminals.all(&sandbox) {
        terminal.unsubscribe(&socket_id);
    }
    // Without the writer nothing reads the queue: streamed commands see it close and end.
    writer.abort();
}

async fn handle(
    state: &ComputeState,
    sandbox: &str,
    socket_id: &str,
    tx: &mpsc::Sender<Value>,
    frame: Frame,
) {
    let terminal = |key: &str| {
        let id = frame.text(key)?;
        state.live.terminals.get(sandbox, &id)
    };
    let by_channel = || {
        state
            .live
            .terminals
            .all(sandbox)
            .into_iter()
            .find(|t| t.channel() == Some(frame.channel.as_str()))
    };
    match (frame.kind, frame.msg_type.as_str()) {
        // Command channels need no subscription: a streamed command's output goes to the
        // socket that started it.
        (Kind::Subscribe, _) => {
            if let Some(t) = by_channel() {
                t.subscribe(socket_id, tx);
            }
        }
        (Kind::Unsubscribe, _) => {
            if let Some(t) = by_channel() {
                t.unsubscribe(socket_id);
            }
        }
        (Kind::Data, "terminal:input") => {
            if let (Some(t), Some(input)) = (terminal("terminal_id"), frame.bytes("input")) {
                t.write(input).await;
            }
        }
        (Kind::Data, "terminal:resize") => {
            if let (Some(t), Some(cols), Some(rows)) = (
                terminal("terminal_id"),
                frame.number("cols"),
                frame.number("rows"),
            ) {
                t.resize(cols, rows).await;
            }
        }
        (Kind::Data, "command:start") => {
            if let Some(cmd_id) = frame.text("cmd_id") {
                start_command(state, sandbox, cmd_id, tx.clone()).await;
            }
        }
        (_, other) => tracing::debug!(other, "ignoring a ComputeSDK socket message"),
    }
}

/// Starts a streamed command; its output and exit go to `tx` on its channel.
async fn start_command(
    state: &ComputeState,
    sandbox: &str,
    cmd_id: String,
    tx: mpsc::Sender<Value>,
) {
    let mut sink = ToSocket {
        channel: command_channel(&cmd_id),
        cmd_id,
        tx,
        utf8: [Utf8::default(), Utf8::default()],
    };
    let Some(pending) = state.live.pending.remove(sandbox, &sink.cmd_id) else {
        let message = format!("no streamed command `{}` waits to start\n", sink.cmd_id);
        sink.finish(Some(message), 125).await;
        return;
    };
    let started = process::start(
        state,
        sandbox,
        pending.argv.clone(),
        pending.env.clone(),
        pending.cwd.clone(),
        None,
    )
    .await;
    let (_pid, mut input, mut output) = match started {
        Ok(started) => started,
        Err(Refused(_, message)) => {
            sink.finish(Some(format!("{message}\n")), 125).await;
            return;
        }
    };
    tokio::spawn(async move {
        let gone = sink.tx.clone();
        let ending = tokio::select! {
            ending = process::pump(&mut output, &mut sink) => ending,
            () = gone.closed() => Ending::Abandoned,
        };
        match ending {
            Ending::Exited(code) => sink.finish(None, code).await,
            Ending::Lost(why) => sink.finish(Some(why), 125).await,
            // The client left: nobody reads its output or exit any more.
            Ending::Abandoned => {
                if let Err(e) = input.signal(libc::SIGKILL).await {
                    tracing::debug!(error = %e, "failed to kill an abandoned streamed command");
                }
            }
        }
    });
}

/// A streamed command's output as `command:stdout` and `command:stderr` messages.
struct ToSocket {
    channel: String,
    cmd_id: String,
    tx: mpsc::Sender<Value>,
    utf8: [Utf8; 2],
}

impl ToSocket {
    async fn send(&self, stream: Stream, output: String) -> bool {
        let kind = match stream {
            Stream::Stdout => "command:stdout",
            Stream::Stderr => "command:stderr",
        };
        let message = json!({
            "type": kind,
            "channel": self.channel,
            "data": { "cmd_id": self.cmd_id, "output": output },
        });
        self.tx.send(message).await.is_ok()
    }

    /// Says `why` on stderr, if given, and then how the command exited.
    async fn finish(&self, why: Option<String>, exit_code: i32) {
        if let Some(why) = why {
            self.send(Stream::Stderr, why).await;
        }
        let exit = json!({
            "type": "command:exit",
            "channel": self.channel,
            "data": { "cmd_id": self.cmd_id, "exit_code": exit_code },
        });
        let _ = self.tx.send(exit).await;
    }
}

impl Sink for ToSocket {
    async fn chunk(&mut self, stream: Stream, data: Vec<u8>) -> bool {
        let utf8 = &mut self.utf8[usize::from(stream == Stream::Stderr)];
        let output = utf8.push(&data);
        output.is_empty() || self.send(stream, output).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Subscribe,
    Unsubscribe,
    Data,
}

/// A value in a key-value payload.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Text(String),
    Number(f64),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// One message from the client.
#[derive(Debug, PartialEq)]
struct Frame {
    kind: Kind,
    channel: String,
    msg_type: String,
    data: BTreeMap<String, Field>,
}

#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("the frame ends inside its {0}")]
    Short(&'static str),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("a JSON frame that is not {{type, channel?, data?}}: {0}")]
    Json(String),
}

/// Reads big-endian fields off the front of a frame.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Short(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(1, what)?[0])
    }

    fn len(&mut self, width: usize, what: &'static str) -> Result<usize, FrameError> {
        let bytes = self.take(width, what)?;
        Ok(bytes.iter().fold(0, |n, &b| (n << 8) | usize::from(b)))
    }

    /// A `u16`-long (`width` 2) or `u32`-long (`width` 4) run of bytes.
    fn sized(&mut self, width: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        let n = self.len(width, what)?;
        self.take(n, what)
    }
}

impl Frame {
    fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let mut reader = Reader(bytes);
        let kind = match reader.u8("kind")? {
            1 => Kind::Subscribe,
            2 => Kind::Unsubscribe,
            3 => Kind::Data,
            other => return Err(FrameError::Kind(other)),
        };
        let channel = String::from_utf8_lossy(reader.sized(2, "channel")?).into_owned();
        let msg_type = String::from_utf8_lossy(reader.sized(2, "message type")?).into_owned();
        let payload = reader.sized(4, "payload")?;
        // A payload that is not key-value encoded (a bare string) carries no fields.
        let data = decode_fields(payload).unwrap_or_default();
        Ok(Frame {
            kind,
            channel,
            msg_type,
            data,
        })
    }

    fn from_json(text: &str) -> Result<Frame, FrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
        let msg_type = value["type"]
            .as_str()
            .ok_or_else(|| FrameError::Json("no `type`".into()))?
            .to_owned();
        let kind = match msg_type.as_str() {
            "subscribe" => Kind::Subscribe,
            "unsubscribe" => Kind::Unsubscribe,
            _ => Kind::Data,
        };
        let data = value["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| {
                let field = match value {
                    Value::String(s) => Field::Text(s.clone()),
                    Value::Number(n) => Field::Number(n.as_f64()?),
                    Value::Bool(b) => Field::Bool(*b),
                    _ => return None,
                };
                Some((key.clone(), field))
            })
            .collect();
        Ok(Frame {
            kind,
            channel: value["channel"].as_str().unwrap_or_default().to_owned(),
            msg_type,
            data,
        })
    }

    fn text(&self, key: &str) -> Option<String> {
        match self.data.get(key)? {
            Field::Text(text) => Some(text.clone()),
            Field::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Field::Number(_) | Field::Bool(_) => None,
        }
    }

    fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        match self.data.get(key)? {
            Field::Text(text) => Some(text.clone().into_bytes()),
            Field::Bytes(bytes) => Some(bytes.clone()),
            Field::Number(_) | Field::Bool(_) => None,
        }
    }

    fn number(&self, key: &str) -> Option<f64> {
        match self.data.get(key)? {
            Field::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// The client's key-value encoding: a `u16` count, then per field a `u16`-long key, a `u8`
/// tag (1 text, 2 f64, 3 bool, 4 bytes) and a `u32`-long value.
fn decode_fields(payload: &[u8]) -> Result<BTreeMap<String, Field>, FrameError> {
    let mut reader = Reader(payload);
    let count = reader.len(2, "field count")?;
    let mut fields = BTreeMap::new();
    for _ in 0..count {
        let key = String::from_utf8_lossy(reader.sized(2, "field key")?).into_owned();
        let tag = reader.u8("field tag")?;
        let value = reader.sized(4, "field value")?;
        let field = match (tag, value.len()) {
            (1, _) => Field::Text(String::from_utf8_lossy(value).into_owned()),
            (2, 8) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(value);
                Field::Number(f64::from_be_bytes(raw))
            }
            (3, 1) => Field::Bool(value[0] != 0),
            (4, _) => Field::Bytes(value.to_vec()),
            _ => return Err(FrameError::Short("field value of its tag")),
        };
        fields.insert(key, field);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `encodeBinaryMessage({type: 'terminal:resize', data: {terminal_id: 't', cols: 100,
    /// rows: 30}})` from computesdk 2.5.4, byte for byte.
    fn resize_frame() -> Vec<u8> {
        let mut frame = vec![3, 0, 0, 0, 15];
        frame.extend_from_slice(b"terminal:resize");
        let mut data = vec![0, 3];
        data.extend_from_slice(&[0, 11]);
        data.extend_from_slice(b"terminal_id");
        data.extend_from_slice(&[1, 0, 0, 0, 1, b't']);
        for (key, n) in [("cols", 100.0f64), ("rows", 30.0)] {
            data.extend_from_slice(&[0, 4]);
            data.extend_from_slice(key.as_bytes());
            data.extend_from_slice(&[2, 0, 0, 0, 8]);
            data.extend_from_slice(&n.to_be_bytes());
        }
        frame.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&data);
        frame
    }

    #[test]
    fn test_binary_frames_decode_to_their_fields() {
        let frame = Frame::decode(&resize_frame()).unwrap();
        assert_eq!(frame.kind, Kind::Data);
        assert_eq!(frame.msg_type, "terminal:resize");
        assert_eq!(frame.text("terminal_id").as_deref(), Some("t"));
        assert_eq!(frame.number("cols"), Some(100.0));
        assert_eq!(frame.number("rows"), Some(30.0));
    }

    #[test]
    fn test_subscribe_frames_name_their_channel() {
        // `subscribe` carries `{}`: a zero field count.
        let mut bytes = vec![1, 0, 6];
        bytes.extend_from_slice(b"term:x");
        bytes.extend_from_slice(&[0, 9]);
        bytes.extend_from_slice(b"subscribe");
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 0]);
        let frame = Frame::decode(&bytes).unwrap();
        assert_eq!(
            (frame.kind, frame.channel.as_str()),
            (Kind::Subscribe, "term:x")
        );
        assert!(frame.data.is_empty());
    }

    #[test]
    fn test_cut_off_frames_are_errors_not_panics() {
        let frame = resize_frame();
        for end in 0..frame.len() {
            let _ = Frame::decode(&frame[..end]);
        }
        assert!(Frame::decode(&frame[..3]).is_err());
        assert!(Frame::decode(&[9, 0, 0]).is_err());
    }

    #[test]
    fn test_json_frames_decode_like_binary_ones() {
        let frame =
            Frame::from_json(r#"{"type":"command:start","data":{"cmd_id":"cmd_1"}}"#).unwrap();
        assert_eq!(frame.kind, Kind::Data);
        assert_eq!(frame.text("cmd_id").as_deref(), Some("cmd_1"));
    }
}
