//! The agent's few raw system calls: terminal ioctls and the hook that runs in a forked child
//! before exec.
#![expect(
    unsafe_code,
    reason = "ioctls, pre-exec hooks and raw fds have no safe wrapper in nix 0.29"
)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use hearth_agent_proto::TermSize;
use nix::errno::Errno;
use nix::sys::signal::{sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};

use crate::user::Credentials;

/// Sets a terminal's size; on a PTY master the kernel then sends SIGWINCH to the foreground
/// process group of the slave.
pub fn set_window_size(terminal: BorrowedFd<'_>, size: TermSize) -> nix::Result<()> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points at a live local
    // for the duration of the call; the fd is borrowed, so it stays open during the call.
    let ret = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
    Errno::result(ret).map(drop)
}

/// Prepares what a child does between fork and exec: clear the signal mask it inherits from the
/// agent (PID 1 blocks the shutdown signals in every thread), and for a PTY process start a new
/// session with stdin (already the PTY slave) as its controlling terminal; then drop to the
/// requested user. The drop happens here rather than through std's `uid`/`gid`, which run before
/// hooks and would leave no privilege for `setsid`'s terminal steal or for `setgroups`.
pub fn prepare_child(
    command: &mut Command,
    controlling_terminal: bool,
    credentials: Option<Credentials>,
) {
    let hook = move || -> io::Result<()> {
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        // Ignored signals stay ignored across exec: a process gets default dispositions, as
        // under a container runtime, whatever the agent inherited (a shell's background job
        // ignores SIGINT and SIGQUIT).
        for signal in [
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGHUP,
            Signal::SIGTERM,
        ] {
            // SAFETY: setting a default disposition installs no handler.
            unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) }?;
        }
        if controlling_terminal {
            nix::unistd::setsid()?;
            // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal a terminal that is
            // another session's); fd 0 is the PTY slave std installed before running hooks.
            let ret = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0) };
            Errno::result(ret)?;
        }
        if let Some(credentials) = &credentials {
            // Groups first: after setuid the process may no longer change them.
            nix::unistd::setgroups(&credentials.groups)?;
            nix::unistd::setgid(credentials.gid)?;
            nix::unistd::setuid(credentials.uid)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child of a multi-threaded process, where only
    // async-signal-safe calls are allowed. It makes system calls (sigprocmask, signal, setsid, ioctl,
    // setgroups, setgid, setuid) on stack data or on the group list allocated before the fork,
    // does not allocate, and converts errors with the allocation-free `From<Errno> for io::Error`.
    unsafe {
        command.pre_exec(hook);
    }
}

/// `accept4` with close-on-exec and non-blocking set, as an owned descriptor.
pub fn accept_nonblocking(listener: BorrowedFd<'_>) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{accept4, SockFlag};
    let fd = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // SAFETY: accept4 just returned this descriptor, and nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}
