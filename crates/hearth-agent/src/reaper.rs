//! The one place that waits for child processes.
//!
//! As PID 1 the agent must reap every zombie, orphans included, yet each exec needs its own
//! child's status. One thread peeks at the next zombie with `waitid(WNOWAIT)`, then reaps it
//! under the registry lock and hands the status to the exec that registered that pid. Spawns
//! run under the same lock and register before releasing it, so the reaper can never reap a
//! child nobody has claimed yet; and when std reaps a child whose exec failed (it does, inside
//! `Command::spawn`), it does so under the lock too, so the two never race for it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use hearth_agent_proto::ExitStatus;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("failed to create an exit notification pipe")]
    Pipe(#[source] Errno),
    #[error("failed to start the reaper thread")]
    Thread(#[source] io::Error),
}

/// Which processes a signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalTarget {
    Process,
    /// The process group the child leads.
    Group,
}

#[derive(Debug)]
pub struct Reaper {
    state: Mutex<State>,
    spawned: Condvar,
}

#[derive(Debug, Default)]
struct State {
    waiting: HashMap<Pid, Waiter>,
    thread_started: bool,
    /// Set by each spawn so a reaper that found no children knows to look again.
    spawned_since_idle: bool,
}

#[derive(Debug)]
struct Waiter {
    status: Sender<ExitStatus>,
    /// Closed after the status is sent, which wakes whoever polls the read end.
    _wake: OwnedFd,
}

/// One child's exit, as seen by the exec that spawned it.
#[derive(Debug)]
pub struct ExitWatch {
    status: Receiver<ExitStatus>,
    wake: OwnedFd,
}

impl ExitWatch {
    /// Becomes readable (hung up) once the child has been reaped.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The child's status, once `wake_fd` has fired.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status.try_recv().ok()
    }
}

/// An exit watch set up before the spawn, so nothing can fail between fork and registration.
#[derive(Debug)]
pub struct PendingWatch {
    reaper: &'static Reaper,
    wake_read: OwnedFd,
    wake_write: OwnedFd,
}

impl Reaper {
    /// The process's reaper; there must be only one, or they would steal each other's children.
    pub fn global() -> &'static Reaper {
        static REAPER: OnceLock<Reaper> = OnceLock::new();
        REAPER.get_or_init(|| Reaper {
            state: Mutex::new(State::default()),
            spawned: Condvar::new(),
        })
    }

    /// Prepares to spawn a child, starting the reaper thread on first use.
    pub fn prepare(&'static self) -> Result<PendingWatch, ReaperError> {
        let (wake_read, wake_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ReaperError::Pipe)?;
        let mut state = self.lock();
        if !state.thread_started {
            std::thread::Builder::new()
                .name("reaper".into())
                .spawn(move || self.run())
                .map_err(ReaperError::Thread)?;
            state.thread_started = true;
        }
        Ok(PendingWatch {
            reaper: self,
            wake_read,
            wake_write,
        })
    }

    /// Sends `signal` to a child (or its group) that has not been reaped yet, and returns whether
    /// it did. Checking under the lock means the pid cannot have been reaped and reused.
    pub fn signal(&self, pid: Pid, target: SignalTarget, signal: Signal) -> nix::Result<bool> {
        let state = self.lock();
        if !state.waiting.contains_key(&pid) {
            return Ok(false);
        }
        match target {
            SignalTarget::Process => kill(pid, signal)?,
            SignalTarget::Group => killpg(pid, signal)?,
        }
        Ok(true)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        loop {
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.reap(pid);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => self.wait_for_spawn(),
                Err(e) => {
                    log!("reaper: waitid failed: {e}");
                    self.wait_for_spawn();
                }
            }
        }
    }

    fn reap(&self, pid: Pid) {
        let mut state = self.lock();
        let status = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => ExitStatus::Signal(signal as i32),
            // Already reaped by std after a failed exec, under the lock we now hold.
            Err(Errno::ECHILD) => return,
            other => {
                log!("reaper: unexpected wait result for pid {pid}: {other:?}");
                return;
            }
        };
        if let Some(waiter) = state.waiting.remove(&pid) {
            // The exec may have given up on its child already; then nobody needs the status.
            let _ = waiter.status.send(status);
        }
    }

    fn wait_for_spawn(&self) {
        let mut state = self.lock();
        while !state.spawned_since_idle {
            state = self
                .spawned
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.spawned_since_idle = false;
    }
}

impl PendingWatch {
    /// Runs `start` (which spawns a child and returns it with its pid) under the reaper's lock
    /// and registers the pid before anyone can reap it.
    pub fn spawn<T>(
        self,
        start: impl FnOnce() -> io::Result<(T, Pid)>,
    ) -> io::Result<(T, Pid, ExitWatch)> {
        let mut state = self.reaper.lock();
        let (child, pid) = start()?;
        let (status_tx, status_rx) = mpsc::channel();
        state.waiting.insert(
            pid,
            Waiter {
                status: status_tx,
                _wake: self.wake_write,
            },
        );
        state.spawned_since_idle = true;
        self.reaper.spawned.notify_one();
        let watch = ExitWatch {
            status: status_rx,
            wake: self.wake_read,
        };
        Ok((child, pid, watch))
    }
}

/// Whether any child, live or zombie, is left; as PID 1, whether any process is left at all.
pub fn has_children() -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::All, flags), Err(Errno::ECHILD))
}
