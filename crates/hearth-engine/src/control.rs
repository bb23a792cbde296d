//! The control socket of a detached sandbox's supervisor, `sandboxes/<id>/control.sock`: the
//! CLI (and any other client) asks the supervisor to stop or kill its sandbox, waits for its
//! end, or has it save the VM (the supervisor owns the VMM), and hears back when it happened,
//! instead of signalling a pid and polling the database. One JSON request line per connection;
//! one JSON reply line once the request is done.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::paths::StateDir;

/// Longest request line a supervisor reads; real ones are a few dozen bytes.
const MAX_REQUEST_LEN: u64 = 4096;

/// How long a request the supervisor answers at once (not after an end) may take.
const REPLY_LIMIT: Duration = Duration::from_secs(10);

/// What a client asks of a supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Power the guest off cleanly, killing it after `grace_ms`.
    Stop { grace_ms: u64 },
    /// End the VM at once.
    Kill,
    /// Only wait for the end.
    Wait,
    /// Pause the VM and save its state to `state`, then resume it, or end the sandbox with
    /// `stop`. Answered with [`Saved`].
    Snapshot { state: PathBuf, stop: bool },
    /// Stop the running sandbox `secs` from now (replacing any timeout it had). Answered with
    /// the Unix time of that stop.
    SetTimeout { secs: u64 },
}

/// What a supervisor reports of a saved VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The agent's release, as it reported it when the sandbox booted.
    pub agent_version: String,
}

/// How a sandbox ended, as its supervisor recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub exit_code: Option<i32>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ended(Ended),
    Saved(Saved),
    ExpiresAt(i64),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("failed to listen on the control socket `{}`", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No supervisor listens: it ended (with its sandbox) or died.
    #[error("no supervisor answers on `{}`", path.display())]
    NoSupervisor {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket is there but not ours to use: another user's sandbox.
    #[error("you may not act on this sandbox: its control socket `{}` refuses you", path.display())]
    Denied {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the supervisor did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the supervisor closed the control connection without an answer")]
    Closed,
    #[error("the supervisor refused the request: {0}")]
    Refused(String),
    #[error("the supervisor answered with something else than {0}")]
    Unexpected(&'static str),
    #[error("control connection failed")]
    Io(#[from] std::io::Error),
    #[error("the supervisor sent an unreadable reply")]
    Json(#[from] serde_json::Error),
}

/// `sandboxes/<id>/control.sock`.
pub fn socket_path(state: &StateDir, id: &str) -> PathBuf {
    state.sandbox_dir(id).join("control.sock")
}

/// Sends `request` to the supervisor listening on `path` and waits for the end, up to `limit`
/// if given.
pub async fn request(
    path: &Path,
    request: &ControlRequest,
    limit: Option<Duration>,
) -> Result<Ended, ControlError> {
    match exchange(path, request, limit).await? {
        Reply::Ended(ended) => Ok(ended),
        _ => Err(ControlError::Unexpected("the end of the sandbox")),
    }
}

/// Asks the supervisor listening on `path` to save its VM to `state` and waits until it did.
pub async fn snapshot(path: &Path, state: &Path, stop: bool) -> Result<Saved, ControlError> {
    let request = ControlRequest::Snapshot {
        state: state.to_owned(),
        stop,
    };
    match exchange(path, &request, None).await? {
        Reply::Saved(saved) => Ok(saved),
        _ => Err(ControlError::Unexpected("a saved state")),
    }
}

/// Asks the supervisor listening on `path` to stop its sandbox `after` from now; returns the
/// Unix time it will.
pub async fn set_timeout(path: &Path, after: Duration) -> Result<i64, ControlError> {
    let request = ControlRequest::SetTimeout {
        secs: after.as_secs(),
    };
    match exchange(path, &request, Some(REPLY_LIMIT)).await? {
        Reply::ExpiresAt(at) => Ok(at),
        _ => Err(ControlError::Unexpected("a new timeout")),
    }
}

async fn exchange(
    path: &Path,
    request: &ControlRequest,
    limit: Option<Duration>,
) -> Result<Reply, ControlError> {
    let mut stream = UnixStream::connect(path).await.map_err(|source| {
        let path = path.to_owned();
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ControlError::Denied { path, source }
        } else {
            ControlError::NoSupervisor { path, source }
        }
    })?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    let mut reply = String::new();
    let mut reader = BufReader::new(stream);
    let read = reader.read_line(&mut reply);
    let read = match limit {
        Some(limit) => tokio::time::timeout(limit, read)
            .await
            .map_err(|_| ControlError::Timeout(limit))?,
        None => read.await,
    };
    match read {
        Err(e) => Err(e.into()),
        Ok(0) => Err(ControlError::Closed),
        Ok(_) => match serde_json::from_str(&reply)? {
            Reply::Error(message) => Err(ControlError::Refused(message)),
            reply => Ok(reply),
        },
    }
}

/// A request as the supervisor receives it; answer it with [`Pending::answer`] (or
/// [`Pending::answer_saved`] for a snapshot).
#[derive(Debug)]
pub struct Pending {
    pub request: ControlRequest,
    reply: oneshot::Sender<Reply>,
}

impl Pending {
    /// Tells the client how the sandbox ended (a client that went away is no error).
    pub fn answer(self, ended: &Ended) {
        let _ = self.reply.send(Reply::Ended(ended.clone()));
    }

    /// Tells the client when the sandbox's new timeout stops it, or why it has none.
    pub fn answer_timeout(self, expires_at: Result<i64, String>) {
        let _ = self.reply.send(match expires_at {
            Ok(at) => Reply::ExpiresAt(at),
            Err(message) => Reply::Error(message),
        });
    }

    /// Tells the client the VM was saved, or why not.
    pub fn answer_saved(self, saved: Result<Saved, String>) {
        let _ = self.reply.send(match saved {
            Ok(saved) => Reply::Saved(saved),
            Err(message) => Reply::Error(message),
        });
    }
}

/// The supervisor's end of the socket: accepts clients on a task and hands their requests over
/// the returned channel. Removes the socket when dropped.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    accept: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    pub fn bind(path: &Path) -> Result<(Self, mpsc::Receiver<Pending>), ControlError> {
        let listen_error = |source| ControlError::Listen {
            path: path.to_owned(),
            source,
        };
        // A socket file left by a supervisor that died is in the way; nobody listens on it.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(listen_error(e)),
            _ => {}
        }
        let listener = UnixListener::bind(path).map_err(listen_error)?;
        crate::state::make_private(path, 0o600).map_err(listen_error)?;
        let (sender, receiver) = mpsc::channel(16);
        let accept = tokio::spawn(accept_loop(listener, sender));
        let server = ControlServer {
            path: path.to_owned(),
            accept,
        };
        Ok((server, receiver))
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, sender: mpsc::Sender<Pending>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, sender.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Whether the peer of `stream` may control this supervisor's sandbox: its own uid, or root.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let own = nix::unistd::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own || cred.uid() == 0 => Ok(()),
        Ok(cred) => Err(format!(
            "uid {} may not act on a sandbox of uid {own}",
            cred.uid()
        )),
        Err(e) => Err(format!("the peer's credentials are unreadable: {e}")),
    }
}

async fn serve_client(stream: UnixStream, sender: mpsc::Sender<Pending>) {
    let denied = peer_allowed(&stream).err();
    let (read, mut write) = stream.into_split();
    if let Some(why) = denied {
        send_reply(&mut write, &Reply::Error(why)).await;
        return;
    }
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_LEN));
    let reply = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<ControlRequest>(&line) {
            Ok(request) => {
                let (reply, answered) = oneshot::channel();
                if sender.send(Pending { request, reply }).await.is_err() {
                    return;
                }
                match answered.await {
                    Ok(reply) => reply,
                    // The supervisor is going away without an answer; the client sees a close.
                    Err(_) => return,
                }
            }
            Err(e) => Reply::Error(format!("not a control request: {e}")),
        },
        Err(e) => Reply::Error(format!("unreadable request: {e}")),
    };
    send_reply(&mut write, &reply).await;
}

/// Writes `reply` as one JSON line; a client that went away is no error.
async fn send_reply(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) {
    if let Ok(mut text) = serde_json::to_string(reply) {
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_requests_reach_the_supervisor_and_clients_hear_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (server, mut requests) = ControlServer::bind(&path).unwrap();
        let ended = Ended {
            exit_code: Some(143),
            note: None,
        };
        let supervisor = {
            let ended = ended.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..2 {
                    let pending = requests.recv().await.unwrap();
                    seen.push(pending.request.clone());
                    pending.answer(&ended);
                }
                seen
            })
        };
        let limit = Some(Duration::from_secs(5));
        let waited = request(&path, &ControlRequest::Wait, limit).await.unwrap();
        let stopped = request(&path, &ControlRequest::Stop { grace_ms: 10 }, limit)
            .await
            .unwrap();
        assert_eq!((waited, stopped), (ended.clone(), ended));
        assert_eq!(
            supervisor.await.unwrap(),
            vec![ControlRequest::Wait, ControlRequest::Stop { grace_ms: 10 }]
        );
        drop(server);
        assert!(!path.exists(), "the socket outlived its server");
        let err = request(&path, &ControlRequest::Kill, limit)
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::NoSupervisor { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn test_garbage_request_gets_an_error_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (_server, _requests) = ControlServer::bind(&path).unwrap();
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream.write_all(b"{\"op\":\"explode\"}\n").await.unwrap();
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).await.unwrap();
        assert!(reply.contains("not a control request"), "{reply}");
    }

    /// Set for the child that [`test_another_uid_is_refused_even_with_the_socket_open_to_all`]
    /// runs as `nobody`: the socket it connects to.
    const CHILD_SOCKET_ENV: &str = "HEARTH_TEST_CONTROL_SOCKET";

    /// The child's half: asks to kill and prints the reply. Does nothing in a normal run.
    #[test]
    fn test_child_asks_to_kill() {
        use std::io::{BufRead, Write};
        let Some(path) = std::env::var_os(CHILD_SOCKET_ENV) else {
            return;
        };
        let mut stream = std::os::unix::net::UnixStream::connect(path).unwrap();
        // A refused client may find the connection closed before its request is written.
        let _ = stream.write_all(b"{\"op\":\"kill\"}\n");
        let mut reply = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut reply)
            .unwrap();
        println!("REPLY {reply}");
    }

    #[tokio::test]
    async fn test_another_uid_is_refused_even_with_the_socket_open_to_all() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        if !nix::unistd::geteuid().is_root() {
            println!("SKIP test_another_uid_is_refused: needs root to run a child as nobody");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (_server, mut requests) = ControlServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket mode");
        // Open everything, so only the peer-credential check stands in the way.
        for (p, m) in [(dir.path(), 0o755), (path.as_path(), 0o666)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        let child = tokio::task::spawn_blocking(move || {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "control::tests::test_child_asks_to_kill"])
                .args(["--nocapture", "--test-threads=1"])
                .env(CHILD_SOCKET_ENV, &path)
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        });
        let output = child.await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let child_err = String::from_utf8_lossy(&output.stderr);
        assert!(
            stdout.contains("may not act on a sandbox"),
            "{stdout}\n{child_err}"
        );
        assert!(
            requests.try_recv().is_err(),
            "the request reached the supervisor"
        );
    }

    #[test]
    fn test_request_wire_format() {
        assert_eq!(
            serde_json::to_string(&ControlRequest::Stop { grace_ms: 1500 }).unwrap(),
            r#"{"op":"stop","grace_ms":1500}"#
        );
    }
}
