//! The one raw system call hearth-image needs: tying a child process's life to its parent.
#![expect(
    unsafe_code,
    reason = "pre_exec runs code in the forked child, which Rust cannot check"
)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::Signal;

/// Makes `command`'s process get SIGKILL when the thread that spawns it dies, so a mkfs left by
/// a killed pull does not run on as an orphan.
pub(crate) fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only makes the
    // async-signal-safe calls prctl(2) and getppid(2); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died before the prctl: then nothing would ever signal us.
            if nix::unistd::getppid().as_raw().unsigned_abs() != parent {
                return Err(io::Error::other("the parent died before exec"));
            }
            Ok(())
        });
    }
}
