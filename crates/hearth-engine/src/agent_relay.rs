//! The sandbox owner's agent socket, `vms/<id>/agent.sock`. Only one host process can hold the
//! guest's stream (QEMU's chardev serves one client), so the owner (a one-shot `hearth run`, or
//! a detached sandbox's supervisor) holds it and relays each local client that connects here
//! as one channel of the session. Clients then speak the per-operation protocol as if they had
//! the guest to themselves. Access is the run dir's (private to the owner's user) plus a peer
//! credential check: the owner's uid, or root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::AgentError;
use crate::agent_session::AgentSession;

/// How long a host that reconnects to a running guest waits for the agent's Ready.
pub(crate) const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a session on the guest's stream, whose host end is the Unix socket `stream`. Waits for
/// the agent's Ready without a deadline of its own.
pub(crate) async fn connect(stream: &Path) -> Result<AgentSession, AgentError> {
    let stream = UnixStream::connect(stream)
        .await
        .map_err(|source| AgentError::Connect {
            path: stream.to_owned(),
            source,
        })?;
    AgentSession::start(stream).await
}

/// The listening agent socket and the session its clients are relayed to.
#[derive(Debug)]
pub(crate) struct AgentRelay {
    path: PathBuf,
    session: watch::Sender<Option<Arc<AgentSession>>>,
    accept: JoinHandle<()>,
}

impl AgentRelay {
    /// Listens on `path` and relays every client to `session`.
    pub(crate) fn bind(path: &Path, session: AgentSession) -> std::io::Result<AgentRelay> {
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let (sender, current) = watch::channel(Some(Arc::new(session)));
        let accept = tokio::spawn(accept_loop(listener, current));
        Ok(AgentRelay {
            path: path.to_owned(),
            session: sender,
            accept,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Ends the current session: its channels are reset and the guest's stream is let go, so
    /// another session can take it. Clients that connect meanwhile are turned away.
    pub(crate) fn end_session(&self) {
        if let Some(old) = self.session.send_replace(None) {
            old.end();
        }
    }

    /// Relays clients to `session` from now on.
    pub(crate) fn set_session(&self, session: AgentSession) {
        self.end_session();
        self.session.send_replace(Some(Arc::new(session)));
    }
}

impl Drop for AgentRelay {
    fn drop(&mut self) {
        self.accept.abort();
        self.end_session();
    }
}

async fn accept_loop(listener: UnixListener, session: watch::Receiver<Option<Arc<AgentSession>>>) {
    // The same rule as entering the run dir: the owner's user, or root.
    let owner = nix::unistd::geteuid().as_raw();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(error = %e, "agent socket: accept failed");
                // Out of fds, most likely: let running operations finish rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match client.peer_cred() {
            Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "agent socket: refusing a client of another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent socket: cannot read the client's credentials");
                continue;
            }
        }
        // A client arriving between two sessions is dropped: it sees the connection close.
        let Some(session) = session.borrow().clone() else {
            continue;
        };
        tokio::spawn(async move { session.relay(client).await });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::fd::AsFd;
    use std::path::PathBuf;

    use hearth_agent::server::Context;
    use hearth_agent_proto::session::{encode_session_frame, SessionDecoder, SessionFrame};
    use hearth_agent_proto::{ExecRequest, ExitStatus, PROTOCOL_VERSION};

    use super::*;
    use crate::exec::{self, ExecEvent, ExecOutput};

    /// Set in the child process that plays the guest.
    const GUEST_PORT_ENV: &str = "HEARTH_TEST_GUEST_PORT";

    /// The real guest session loop serving connections on a Unix socket, one at a time, as
    /// QEMU's chardev hands the guest's port to one host client at a time. It runs in a child
    /// process (this test binary re-run as [`test_guest_process`]): the agent reaps every child
    /// of its process, which would steal the children of other tests running in this one.
    struct Guest {
        dir: tempfile::TempDir,
        process: std::process::Child,
    }

    impl Drop for Guest {
        fn drop(&mut self) {
            // The guest's processes first: killed with the guest, they would live on as orphans.
            let mut family = vec![i32::try_from(self.process.id()).unwrap()];
            let mut i = 0;
            while i < family.len() {
                family.extend(children_of(family[i]));
                i += 1;
            }
            for pid in family.into_iter().rev() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.process.wait();
        }
    }

    /// Pids whose parent is `parent`, from `/proc/PID/stat` (the field after the `)` of the
    /// command name is the state, then the parent pid).
    fn children_of(parent: i32) -> Vec<i32> {
        let entries = std::fs::read_dir("/proc").unwrap();
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let ppid: i32 = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (ppid == parent).then_some(pid)
            })
            .collect()
    }

    /// The guest's half: serves sessions on the port named by the environment. Does nothing in
    /// a normal run.
    #[test]
    fn test_guest_process() {
        let Some(port) = std::env::var_os(GUEST_PORT_ENV) else {
            return;
        };
        let listener = std::os::unix::net::UnixListener::bind(port).unwrap();
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            stream.set_nonblocking(true).unwrap();
            let _ = hearth_agent::session::run(stream.as_fd(), &Context::new(|| {}));
        }
    }

    impl Guest {
        fn start() -> Guest {
            let dir = tempfile::tempdir().unwrap();
            let port = dir.path().join("port");
            let process = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "agent_relay::tests::test_guest_process"])
                .args(["--nocapture", "--test-threads=1"])
                .env(GUEST_PORT_ENV, &port)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !port.exists() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the guest process never listened"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Guest { dir, process }
        }

        fn port(&self) -> PathBuf {
            self.dir.path().join("port")
        }

        async fn relay(&self) -> AgentRelay {
            let session = connect(&self.port()).await.unwrap();
            AgentRelay::bind(&self.dir.path().join("agent.sock"), session).unwrap()
        }
    }

    fn request(argv: &[&str]) -> ExecRequest {
        ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..ExecRequest::default()
        }
    }

    async fn output_of(mut output: ExecOutput) -> (Vec<u8>, ExitStatus) {
        let mut stdout = Vec::new();
        loop {
            match output.next().await.unwrap() {
                Some(ExecEvent::Stdout(data)) => stdout.extend(data),
                Some(ExecEvent::Stderr(_)) => {}
                Some(ExecEvent::Exited(status)) => return (stdout, status),
                None => panic!("no exit status"),
            }
        }
    }

    async fn run(relay: &AgentRelay, argv: &[&str]) -> (Vec<u8>, ExitStatus) {
        let (_pid, _input, output) = exec::start(relay.path(), request(argv)).await.unwrap();
        output_of(output).await
    }

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Held by the tests that run a guest's processes here: the memory test measures this
    /// whole process, so another test's burst of execs must not overlap its window.
    static IN_PROCESS_GUEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_channels_progress_while_one_reader_stalls() {
        let _serial = IN_PROCESS_GUEST.lock().await;
        let guest = Guest::start();
        let relay = guest.relay().await;
        // Its output fills the channel's window and nobody reads it.
        let (_pid, _input, _stalled) = exec::start(relay.path(), request(&["yes"])).await.unwrap();
        let execs: Vec<_> = (0..20)
            .map(|i| {
                let socket = relay.path().to_owned();
                tokio::spawn(async move {
                    let request = request(&["echo", &i.to_string()]);
                    let (_pid, _input, output) = exec::start(&socket, request).await.unwrap();
                    output_of(output).await
                })
            })
            .collect();
        for (i, exec) in execs.into_iter().enumerate() {
            let (stdout, status) = tokio::time::timeout(Duration::from_secs(30), exec)
                .await
                .expect("the other channels finish while one is stalled")
                .unwrap();
            assert_eq!(status, ExitStatus::Code(0));
            assert_eq!(stdout, format!("{i}\n").into_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_endless_output_to_a_stalled_reader_keeps_memory_bounded() {
        let _serial = IN_PROCESS_GUEST.lock().await;
        let guest = Guest::start();
        let relay = guest.relay().await;
        let (_pid, _input, _stalled) = exec::start(relay.path(), request(&["cat", "/dev/zero"]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib();
        // Unbounded buffering of `cat /dev/zero` would grow by gigabytes in two seconds; the
        // windows and socket buffers hold well under a few MiB.
        assert!(
            after < before + 8 * 1024,
            "host RSS grew from {before} KiB to {after} KiB"
        );
        let (stdout, _) = run(&relay, &["echo", "still", "serving"]).await;
        assert_eq!(stdout, b"still serving\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_new_session_after_reconnect_serves_and_old_channels_end() {
        let _serial = IN_PROCESS_GUEST.lock().await;
        let guest = Guest::start();
        let relay = guest.relay().await;
        let (_pid, _input, old) = exec::start(relay.path(), request(&["sleep", "100"]))
            .await
            .unwrap();
        // The guest's port has one host end at a time, so the old session goes first.
        relay.end_session();
        relay.set_session(connect(&guest.port()).await.unwrap());
        let mut old = old;
        let ended = tokio::time::timeout(Duration::from_secs(10), old.next())
            .await
            .expect("the old session's exec ends");
        assert!(ended.is_err(), "{ended:?}");
        let (stdout, status) = run(&relay, &["echo", "fresh"]).await;
        assert_eq!((stdout, status), (b"fresh\n".to_vec(), ExitStatus::Code(0)));
    }

    /// A fake guest that answers the hello with Ready and then sends `then`.
    async fn hostile_guest(then: Vec<u8>) -> (AgentRelay, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let port = dir.path().join("port");
        let listener = std::os::unix::net::UnixListener::bind(&port).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut decoder = SessionDecoder::new();
            let mut buf = [0u8; 4096];
            let session = loop {
                if let Some(SessionFrame::Hello { session, .. }) = decoder.next_frame().unwrap() {
                    break session;
                }
                let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
                decoder.extend(&buf[..n]);
            };
            let mut out = Vec::new();
            let ready = SessionFrame::Ready {
                version: PROTOCOL_VERSION,
                session,
                agent_version: "hostile".to_owned(),
            };
            encode_session_frame(&ready, &mut out).unwrap();
            stream.write_all(&out).unwrap();
            // Wait for the first channel, then misbehave.
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = stream.write_all(&then);
            std::thread::sleep(Duration::from_secs(30));
        });
        let session = connect(&port).await.unwrap();
        let relay = AgentRelay::bind(&dir.path().join("agent.sock"), session).unwrap();
        (relay, dir)
    }

    /// An exec through a misbehaving guest's session fails rather than hangs.
    async fn assert_exec_fails_in_time(relay: &AgentRelay) {
        let started = tokio::time::timeout(
            Duration::from_secs(10),
            exec::start(relay.path(), request(&["true"])),
        )
        .await
        .expect("no hang");
        assert!(started.is_err());
    }

    #[tokio::test]
    async fn test_garbage_from_the_guest_is_an_error_not_a_hang() {
        // A whole frame whose body is no message: a varint that never ends.
        let (relay, _dir) = hostile_guest(vec![4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).await;
        assert_exec_fails_in_time(&relay).await;
    }

    #[tokio::test]
    async fn test_guest_data_beyond_the_window_resets_the_channel() {
        let mut flood = Vec::new();
        let data = SessionFrame::Data {
            channel: 1,
            data: vec![0; hearth_agent_proto::session::CHANNEL_WINDOW as usize + 1],
        };
        encode_session_frame(&data, &mut flood).unwrap();
        let (relay, _dir) = hostile_guest(flood).await;
        assert_exec_fails_in_time(&relay).await;
    }

    #[tokio::test]
    async fn test_silent_guest_never_completes_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let port = dir.path().join("port");
        let _listener = std::os::unix::net::UnixListener::bind(&port).unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), connect(&port)).await;
        assert!(
            waited.is_err(),
            "the caller's deadline bounds the handshake"
        );
    }
}
