//! One exec: spawn the process, then carry host input to it while [`crate::output`] carries
//! its output back.

use std::io::{self, BufReader};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hearth_agent_proto::{
    read_frame, write_frame, ErrorCode, ExecRequest, FrameError, GuestMessage, HostMessage,
    RemoteError,
};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::connection::{kind, shut_down, Connection};
use crate::output::{self, Source, Stream};
use crate::pty;
use crate::reaper::{Reaper, SignalTarget};
use crate::spawn::{self, ChildStdio, Spawned};

/// How often a blocked stdin write or a half-closed connection looks again at whether the exec
/// has finished (a safety net: the output side's shutdown normally wakes them at once).
const RECHECK_MS: u16 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("failed to send the exec reply")]
    Reply(#[source] FrameError),
    #[error("failed to start the output pump thread")]
    Thread(#[source] io::Error),
    #[error("the output pump thread panicked")]
    PumpPanicked,
}

/// Runs `request` to completion over the connection; `reader` may already hold buffered frames
/// that follow the request.
pub fn run<C: Connection>(
    reader: &mut BufReader<C>,
    mut writer: C,
    request: &ExecRequest,
) -> Result<(), ExecError> {
    let Spawned { pid, exit, stdio } = match spawn::spawn(request) {
        Ok(spawned) => spawned,
        Err(e) => {
            let reply = GuestMessage::Error(e.to_remote());
            return write_frame(&mut writer, &reply).map_err(ExecError::Reply);
        }
    };
    let reaper = Reaper::global();
    let kill_job = || {
        if let Err(e) = reaper.signal(pid, SignalTarget::Group, Signal::SIGKILL) {
            log!("exec: failed to kill process group {pid}: {e}");
        }
    };
    let (mut input, sources) = match split_stdio(stdio) {
        Ok(split) => split,
        Err(e) => {
            kill_job();
            let reply = GuestMessage::Error(RemoteError {
                code: ErrorCode::Internal,
                chain: vec![
                    "exec: failed to set up the process's stdio".to_owned(),
                    e.to_string(),
                ],
            });
            return write_frame(&mut writer, &reply).map_err(ExecError::Reply);
        }
    };
    let started = GuestMessage::Started {
        pid: pid.as_raw().unsigned_abs(),
    };
    if let Err(e) = write_frame(&mut writer, &started) {
        kill_job();
        return Err(ExecError::Reply(e));
    }
    let done = Arc::new(AtomicBool::new(false));
    let pump_done = Arc::clone(&done);
    let pump = std::thread::Builder::new()
        .name(format!("exec-{pid}"))
        .spawn(move || output::pump(writer, sources, &exit, &pump_done));
    let pump = match pump {
        Ok(pump) => pump,
        Err(e) => {
            kill_job();
            return Err(ExecError::Thread(e));
        }
    };

    let session = Session { pid, done: &done };
    session.forward_input(reader, &mut input);
    if session.wait_for_hang_up_or_done(reader.get_ref().as_fd()) {
        log!("exec: host hung up; killing process group {pid}");
        kill_job();
    }
    pump.join().map_err(|_| ExecError::PumpPanicked)
}

/// The agent's handle on the child's input.
enum Input {
    Pipe(Option<OwnedFd>),
    Pty(PtyMaster),
}

fn split_stdio(stdio: ChildStdio) -> io::Result<(Input, Vec<Source>)> {
    match stdio {
        ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            if let Some(stdin) = &stdin {
                set_nonblocking(stdin.as_fd())?;
            }
            let sources = vec![
                Source {
                    fd: stdout,
                    stream: Stream::Stdout,
                },
                Source {
                    fd: stderr,
                    stream: Stream::Stderr,
                },
            ];
            Ok((Input::Pipe(stdin), sources))
        }
        ChildStdio::Pty { master } => {
            set_nonblocking(master.as_fd())?;
            let output = master.as_fd().try_clone_to_owned()?;
            let sources = vec![Source {
                fd: output,
                stream: Stream::Stdout,
            }];
            Ok((Input::Pty(master), sources))
        }
    }
}

/// Input writes are non-blocking so a child that never reads its stdin cannot pin the input
/// thread after the exec is over.
fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

struct Session<'a> {
    pid: Pid,
    done: &'a AtomicBool,
}

impl Session<'_> {
    /// Applies host frames until the host sends no more: it half-closed (it may still be
    /// reading output), hung up, or the output side shut the connection down.
    fn forward_input<C: Connection>(&self, reader: &mut BufReader<C>, input: &mut Input) {
        loop {
            let message = match read_frame::<HostMessage, _>(reader) {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(e) => {
                    // An I/O error is the host going away; anything else is a broken peer.
                    if !matches!(e, FrameError::Io(_)) {
                        log!("exec: dropping connection: {}", crate::log::one_line(&e));
                    }
                    shut_down(reader.get_ref());
                    return;
                }
            };
            let conn = reader.get_ref().as_fd();
            match message {
                HostMessage::Stdin(data) => self.write_input(conn, input, &data),
                HostMessage::StdinEof => {
                    if let Input::Pipe(stdin) = input {
                        *stdin = None;
                    }
                }
                HostMessage::Resize(size) => match input {
                    Input::Pty(master) => {
                        if let Err(e) = pty::resize(master, size) {
                            log!("exec: {}", crate::log::one_line(&e));
                        }
                    }
                    Input::Pipe(_) => log!("exec: ignoring resize of a process without a TTY"),
                },
                HostMessage::Signal(number) => self.signal(input, number),
                other => log!("exec: ignoring unexpected {} during exec", kind(&other)),
            }
        }
    }

    fn write_input(&self, conn: BorrowedFd<'_>, input: &mut Input, data: &[u8]) {
        let result = match input {
            Input::Pipe(Some(stdin)) => self.write_all(conn, stdin.as_fd(), data),
            Input::Pipe(None) => return,
            Input::Pty(master) => self.write_all(conn, master.as_fd(), data),
        };
        if let Err(e) = result {
            // The child closed its stdin or is gone; later input has nowhere to go.
            if let Input::Pipe(stdin) = input {
                *stdin = None;
            }
            if e.raw_os_error() != Some(libc::EPIPE) && e.raw_os_error() != Some(libc::EIO) {
                log!("exec: writing stdin failed: {e}");
            }
        }
    }

    fn write_all(
        &self,
        conn: BorrowedFd<'_>,
        fd: BorrowedFd<'_>,
        mut data: &[u8],
    ) -> io::Result<()> {
        while !data.is_empty() {
            match nix::unistd::write(fd, data) {
                Ok(written) => data = &data[written..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    if self.done.load(Ordering::SeqCst) || hung_up(conn, fd)? {
                        // Nobody will read the rest: the same as a closed reader.
                        return Err(Errno::EPIPE.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn signal(&self, input: &Input, number: i32) {
        let Ok(signal) = Signal::try_from(number) else {
            log!("exec: ignoring unknown signal {number}");
            return;
        };
        // On a PTY the process leads a session and job; elsewhere only the process itself.
        let target = match input {
            Input::Pty(_) => SignalTarget::Group,
            Input::Pipe(_) => SignalTarget::Process,
        };
        if let Err(e) = Reaper::global().signal(self.pid, target, signal) {
            log!("exec: failed to send {signal} to {}: {e}", self.pid);
        }
    }

    /// After the host's last frame: waits until either the host hangs up completely (true) or
    /// the exec is over (false). A half-close alone is not a hang-up: hosts close their write
    /// side once they have no more input.
    fn wait_for_hang_up_or_done(&self, conn: BorrowedFd<'_>) -> bool {
        loop {
            if self.done.load(Ordering::SeqCst) {
                return false;
            }
            let mut fds = [PollFd::new(conn, PollFlags::empty())];
            match poll(&mut fds, PollTimeout::from(RECHECK_MS)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    log!("exec: polling the connection failed: {e}");
                    return !self.done.load(Ordering::SeqCst);
                }
            }
            // POLLHUP: the host closed both directions, or the output side shut us down (and
            // set `done` before doing so).
            return !self.done.load(Ordering::SeqCst);
        }
    }
}

/// Waits briefly for `fd` to take more input; true if the host hung up (or the connection was
/// shut down) meanwhile.
fn hung_up(conn: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [
        PollFd::new(fd, PollFlags::POLLOUT),
        PollFd::new(conn, PollFlags::empty()),
    ];
    match poll(&mut fds, PollTimeout::from(RECHECK_MS)) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(fds[1].revents().is_some_and(|r| !r.is_empty()))
}
