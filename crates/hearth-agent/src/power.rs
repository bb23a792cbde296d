//! Powering the guest off, and the signals that ask PID 1 to.

use std::io;
use std::time::{Duration, Instant};

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use crate::reaper;

/// How long processes get to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// How long SIGKILLed processes get to be reaped before the power goes.
const KILL_GRACE: Duration = Duration::from_millis(200);
const EXIT_POLL: Duration = Duration::from_millis(10);

/// Signals that ask init to shut down: SIGTERM (`kill 1`), SIGINT (Ctrl-Alt-Del), SIGPWR.
fn shutdown_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGPWR] {
        set.add(signal);
    }
    set
}

/// Blocks the shutdown signals in this thread and so in every thread it starts later; call it
/// first thing in PID 1, before any thread exists. (The kernel drops signals to init that have
/// no handler, but queues blocked ones for `sigwait`.)
pub fn block_shutdown_signals() -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&shutdown_signals()), None)
}

/// Starts the thread that turns a shutdown signal into a graceful power-off.
pub fn watch_shutdown_signals() -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| loop {
            match shutdown_signals().wait() {
                Ok(signal) => {
                    log!("received {signal}, shutting down");
                    shut_down_gracefully();
                }
                Err(e) => log!("waiting for signals failed: {e}"),
            }
        })
        .map(drop)
}

/// Asks every process to exit, then makes sure they do, then powers off.
pub fn shut_down_gracefully() -> ! {
    signal_all(Signal::SIGTERM);
    wait_for_no_processes(TERM_GRACE);
    signal_all(Signal::SIGKILL);
    wait_for_no_processes(KILL_GRACE);
    power_off()
}

/// Syncs and powers off; never returns, since PID 1 exiting panics the kernel.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let Err(error) = reboot(RebootMode::RB_POWER_OFF);
    log!("power off failed: {error}; restarting instead (QEMU runs with -no-reboot)");
    let Err(error) = reboot(RebootMode::RB_AUTOBOOT);
    log!("restart failed: {error}");
    halt()
}

fn halt() -> ! {
    loop {
        std::thread::park();
    }
}

fn signal_all(signal: Signal) {
    // -1: every process but init itself.
    if let Err(e) = kill(Pid::from_raw(-1), signal) {
        if e != nix::errno::Errno::ESRCH {
            log!("failed to send {signal} to all processes: {e}");
        }
    }
}

/// As PID 1 every process descends from us, so no children means no processes; the reaper
/// collects them as they exit.
fn wait_for_no_processes(limit: Duration) {
    let start = Instant::now();
    while reaper::has_children() && start.elapsed() < limit {
        std::thread::sleep(EXIT_POLL);
    }
}
