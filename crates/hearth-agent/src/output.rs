//! The output side of an exec: pumps the child's stdout/stderr (or PTY) to the host, then
//! reports how it ended.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hearth_agent_proto::{
    write_frame, ErrorCode, FrameError, GuestMessage, RemoteError, MAX_CHUNK_LEN,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::connection::{shut_down, Connection};
use crate::reaper::ExitWatch;

/// After the child exits, how long output may stay silent before the exec is declared over:
/// a background descendant can hold the pipes open indefinitely (`sh -c 'sleep 100 &'`).
pub const DRAIN_IDLE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug)]
pub struct Source {
    pub fd: OwnedFd,
    pub stream: Stream,
}

/// Forwards output until the child has exited and its output is drained, sends `Exited`, marks
/// the exec `done` and shuts the connection down (which ends the input side's read).
///
/// If the host stops taking output the connection is shut down at once, so the input side sees
/// the hang-up and kills the child; the pump still waits for the child to be reaped, so nothing
/// of the exec outlives the connection's threads.
pub fn pump<C: Connection>(mut conn: C, sources: Vec<Source>, exit: &ExitWatch, done: &AtomicBool) {
    let mut sources = sources;
    let mut buf = vec![0; MAX_CHUNK_LEN];
    let mut exited = false;
    let mut connected = true;
    let idle = PollTimeout::try_from(DRAIN_IDLE).unwrap_or(PollTimeout::MAX);
    while !(exited && sources.is_empty()) {
        let mut fds: Vec<PollFd<'_>> = sources
            .iter()
            .map(|s| PollFd::new(s.fd.as_fd(), PollFlags::POLLIN))
            .collect();
        if !exited {
            fds.push(PollFd::new(exit.wake_fd(), PollFlags::POLLIN));
        }
        let timeout = if exited { idle } else { PollTimeout::NONE };
        match poll(&mut fds, timeout) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log!("exec: polling output failed: {e}");
                break;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if !exited && ready.last() == Some(&true) {
            exited = true;
        }
        let mut finished = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            if !ready[index] {
                continue;
            }
            match read_chunk(source, &mut buf) {
                Chunk::Data(len) if connected => {
                    let data = buf[..len].to_vec();
                    let message = match source.stream {
                        Stream::Stdout => GuestMessage::Stdout(data),
                        Stream::Stderr => GuestMessage::Stderr(data),
                    };
                    if let Err(e) = write_frame(&mut conn, &message) {
                        log_unless_hung_up("sending output", &e);
                        connected = false;
                        shut_down(&conn);
                    }
                }
                Chunk::Data(_) | Chunk::Again => {}
                Chunk::End => finished.push(index),
            }
        }
        for index in finished.into_iter().rev() {
            sources.remove(index);
        }
        if !connected {
            // Closing our ends lets a child blocked on output die of SIGPIPE or SIGHUP.
            sources.clear();
        }
    }
    finish(conn, exit, exited, connected, done);
}

fn finish<C: Connection>(
    mut conn: C,
    exit: &ExitWatch,
    exited: bool,
    connected: bool,
    done: &AtomicBool,
) {
    let message = match exit.status() {
        Some(status) => GuestMessage::Exited(status),
        None => {
            log!("exec: output ended before the exit status (exited: {exited})");
            GuestMessage::Error(RemoteError::new(
                ErrorCode::Internal,
                "lost the process's exit status",
            ))
        }
    };
    done.store(true, Ordering::SeqCst);
    if connected {
        if let Err(e) = write_frame(&mut conn, &message) {
            log_unless_hung_up("sending the exit status", &e);
        }
    }
    shut_down(&conn);
}

/// A host that hung up is the input side's business (it kills the job and says so); anything
/// else is worth a line on the console.
fn log_unless_hung_up(doing: &str, error: &FrameError) {
    let hung_up = matches!(error, FrameError::Io(e)
        if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)));
    if !hung_up {
        log!("exec: failed {doing}: {}", crate::log::one_line(error));
    }
}

enum Chunk {
    Data(usize),
    /// Nothing to read after all (a PTY master shares O_NONBLOCK with the input side).
    Again,
    End,
}

fn read_chunk(source: &Source, buf: &mut [u8]) -> Chunk {
    loop {
        return match nix::unistd::read(source.fd.as_raw_fd(), buf) {
            Ok(0) => Chunk::End,
            Ok(len) => Chunk::Data(len),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => Chunk::Again,
            // A PTY master reads EIO once the last slave fd is closed: that is its EOF.
            Err(Errno::EIO) => Chunk::End,
            Err(e) => {
                log!("exec: reading {:?} failed: {e}", source.stream);
                Chunk::End
            }
        };
    }
}
