//! Process plumbing that needs `unsafe`: the parent-death signal for VMM children, and running
//! a child inside a network namespace.
#![expect(
    unsafe_code,
    reason = "pre_exec hooks are unsafe to register; each hook makes one async-signal-safe call"
)]

use std::os::fd::OwnedFd;

/// Makes the child get SIGKILL when the thread that spawned it dies, so a killed hearth never
/// leaves a VMM or helper process running.
pub(crate) fn kill_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the hook runs between fork and exec and calls only prctl(2), which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// Makes the child enter the network namespace `netns` before it executes, so QEMU opens the
/// sandbox's tap and its traffic never touches the host namespace directly.
pub(crate) fn enter_netns(command: &mut tokio::process::Command, netns: OwnedFd) {
    // SAFETY: the hook runs between fork and exec and calls only setns(2), which is
    // async-signal-safe; `netns` is an open namespace fd moved into the hook and only read.
    unsafe {
        command.pre_exec(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
}
