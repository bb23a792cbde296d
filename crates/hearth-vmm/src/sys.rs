//! Process plumbing that needs `unsafe`: the parent-death signal for VMM children.
#![expect(
    unsafe_code,
    reason = "pre_exec hooks are unsafe to register; the hook only makes one async-signal-safe call"
)]

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
