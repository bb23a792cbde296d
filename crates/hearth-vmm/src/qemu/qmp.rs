//! The QMP wire protocol: greeting, capabilities handshake, command/return/error, events skipped.
//!
//! Hand-written because the job is ~a page of JSON lines and the available QMP crates pull in a
//! generated schema of the whole QEMU API that hearth does not need.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("failed to connect to QMP socket `{}`", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP connection failed")]
    Io(#[source] io::Error),
    #[error("QMP connection closed by QEMU")]
    Closed,
    #[error("QMP sent a line that is not JSON: {line:?}")]
    Malformed { line: String },
    #[error("QMP sent a greeting without a `QMP` object: {line:?}")]
    NoGreeting { line: String },
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// A negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects, checks the greeting and leaves capabilities negotiation mode.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Qmp::negotiate(stream).await
    }

    /// Checks the greeting on a connected stream and leaves capabilities negotiation mode.
    pub async fn negotiate(stream: UnixStream) -> Result<Self, QmpError> {
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::NoGreeting {
                line: greeting.to_string(),
            });
        }
        qmp.execute("qmp_capabilities", Value::Null).await?;
        Ok(qmp)
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let request = if arguments.is_null() {
            json!({ "execute": command })
        } else {
            json!({ "execute": command, "arguments": arguments })
        };
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(QmpError::Io)?;
        loop {
            let message = self.read_message().await?;
            if let Some(reply) = parse_reply(command, &message) {
                return reply;
            }
        }
    }

    /// Hands `fd` to QEMU under `name` (`getfd`, the fd sent with SCM_RIGHTS along with the
    /// command's bytes), for commands that take `fd:NAME`, such as a migration to a file the
    /// jailed QEMU could not open itself.
    pub async fn send_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        let mut line = json!({ "execute": "getfd", "arguments": { "fdname": name } }).to_string();
        line.push('\n');
        let stream = self.writer.as_ref();
        let raw = [fd.as_raw_fd()];
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                let iov = [io::IoSlice::new(line.as_bytes())];
                let rights = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
                nix::sys::socket::sendmsg::<()>(
                    stream.as_raw_fd(),
                    &iov,
                    &rights,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            })
            .await
            .map_err(QmpError::Io)?;
        if sent != line.len() {
            // The rights went with the first bytes; the rest of the line follows plainly.
            self.writer
                .write_all(&line.as_bytes()[sent..])
                .await
                .map_err(QmpError::Io)?;
        }
        loop {
            let message = self.read_message().await?;
            if let Some(reply) = parse_reply("getfd", &message) {
                return reply.map(|_| ());
            }
        }
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(QmpError::Io)?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Malformed { line })
    }
}

/// Interprets one message received while waiting for `command`'s reply; `None` for events.
fn parse_reply(command: &str, message: &Value) -> Option<Result<Value, QmpError>> {
    if let Some(value) = message.get("return") {
        return Some(Ok(value.clone()));
    }
    let error = message.get("error")?;
    let field = |name: &str| {
        error
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(Err(QmpError::Command {
        command: command.to_owned(),
        class: field("class"),
        desc: field("desc"),
    }))
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;

    #[test]
    fn test_parse_reply_skips_events() {
        let event = json!({"event": "SHUTDOWN", "data": {"guest": true}});
        assert!(parse_reply("quit", &event).is_none());
    }

    #[test]
    fn test_parse_reply_error_keeps_class_and_desc() {
        let reply = json!({"error": {"class": "GenericError", "desc": "no such device"}});
        let err = parse_reply("device_del", &reply).unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "QMP command `device_del` failed: GenericError: no such device"
        );
    }

    /// Replays a transcript recorded from QEMU 7.2 against the client.
    #[tokio::test]
    async fn test_session_against_recorded_transcript() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}}, \"capabilities\": []}}\r\n").await.unwrap();
            assert!(lines
                .next_line()
                .await
                .unwrap()
                .unwrap()
                .contains("qmp_capabilities"));
            write.write_all(b"{\"return\": {}}\r\n").await.unwrap();
            assert!(lines
                .next_line()
                .await
                .unwrap()
                .unwrap()
                .contains("query-status"));
            write.write_all(b"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}}\r\n").await.unwrap();
        });
        let mut qmp = Qmp::connect(&path).await.unwrap();
        let status = qmp.execute("query-status", Value::Null).await.unwrap();
        assert_eq!(status["status"], "running");
        server.await.unwrap();
    }
}
