//! A fake host driving the real connection handler over a Unix socket pair.

#![allow(
    dead_code,
    reason = "each test binary uses its own subset of these helpers"
)]

use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use hearth_agent::server::{handle_connection, ConnectionError, Context};
use hearth_agent_proto::{
    read_frame, write_frame, ExecRequest, ExitStatus, GuestMessage, HostMessage, RemoteError,
    PROTOCOL_VERSION,
};

pub struct Host {
    pub stream: UnixStream,
    handler: JoinHandle<Result<(), ConnectionError>>,
}

#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Opens a connection to a fresh handler whose shutdown action does nothing.
pub fn connect() -> Host {
    connect_with(Context::new(|| {}))
}

pub fn connect_with(context: Context) -> Host {
    let (host, guest) = UnixStream::pair().unwrap();
    let handler = std::thread::spawn(move || handle_connection(guest, &context));
    Host {
        stream: host,
        handler,
    }
}

pub fn request(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..ExecRequest::default()
    }
}

impl Host {
    pub fn send(&mut self, message: &HostMessage) {
        write_frame(&mut self.stream, message).unwrap();
    }

    pub fn recv(&mut self) -> Option<GuestMessage> {
        read_frame(&mut self.stream).unwrap()
    }

    pub fn hello(&mut self) {
        self.send(&HostMessage::Hello {
            version: PROTOCOL_VERSION,
        });
        match self.recv() {
            Some(GuestMessage::Hello { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    /// Hello, then the exec request; the pid from `Started` or the agent's error.
    pub fn exec(&mut self, request: ExecRequest) -> Result<u32, RemoteError> {
        self.hello();
        self.send(&HostMessage::Exec(request));
        match self.recv() {
            Some(GuestMessage::Started { pid }) => Ok(pid),
            Some(GuestMessage::Error(e)) => Err(e),
            other => panic!("expected Started or Error, got {other:?}"),
        }
    }

    /// Reads output until `Exited`, then checks the agent closes the connection.
    pub fn wait(&mut self) -> (Output, ExitStatus) {
        let mut output = Output::default();
        loop {
            match self.recv() {
                Some(GuestMessage::Stdout(data)) => output.stdout.extend(data),
                Some(GuestMessage::Stderr(data)) => output.stderr.extend(data),
                Some(GuestMessage::Exited(status)) => {
                    assert_eq!(self.recv(), None, "the agent closes after Exited");
                    return (output, status);
                }
                other => panic!("expected output or Exited, got {other:?}"),
            }
        }
    }

    /// Waits for the handler to return and checks it did not fail.
    pub fn finish(self) {
        drop(self.stream);
        self.handler.join().unwrap().unwrap();
    }

    /// Closes the host side and waits for the handler, whatever it returned.
    pub fn hang_up(self) {
        drop(self.stream);
        let _ = self.handler.join().unwrap();
    }
}

/// Runs `argv` to completion with no stdin.
pub fn run(argv: &[&str]) -> (Output, ExitStatus) {
    run_request(request(argv))
}

pub fn run_request(request: ExecRequest) -> (Output, ExitStatus) {
    let mut host = connect();
    host.exec(request).unwrap();
    let result = host.wait();
    host.finish();
    result
}

/// Whether `pid` still exists (as anything but a zombie of ours it would be reaped).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
