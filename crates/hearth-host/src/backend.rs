//! Choosing the VM backend once for this host: the programs it runs and its accelerator.

use std::path::PathBuf;

use hearth_vmm::jail::{JailError, JailIds, DEFAULT_ID_BASE};
use hearth_vmm::qemu::QemuVmm;
use hearth_vmm::Vmm;

use crate::find_program;
use crate::kvm;

pub const QEMU: &str = "qemu-system-x86_64";

/// Overrides where the uids and gids of jailed VMMs start (see `hearth_vmm::jail::JailIds`).
pub const JAIL_ID_BASE_ENV: &str = "HEARTH_JAIL_ID_BASE";

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("`{program}` was not found in PATH, ~/.cargo/bin or /usr/local/bin; {fix}")]
    Missing {
        program: &'static str,
        fix: &'static str,
    },
    #[error("{JAIL_ID_BASE_ENV}=`{0}` is not a number")]
    JailIdBaseNotANumber(String),
    #[error(transparent)]
    JailIds(#[from] JailError),
}

/// The backend this host supports: QEMU `microvm` with the programs found here, accelerated by
/// KVM only where it is hardware KVM this process can open (see [`kvm::accelerator`]).
pub fn detect() -> Result<Box<dyn Vmm>, BackendError> {
    let qemu = require(QEMU, "install it with `apt-get install qemu-system-x86`")?;
    let choice = kvm::accelerator();
    tracing::debug!(accel = %choice.accel, reason = %choice.reason, "accelerator chosen");
    Ok(Box::new(QemuVmm::new(qemu, choice.accel, jail_ids()?)))
}

/// The ids VMM jails take, when this process is root and so can jail; unprivileged, QEMU runs
/// as the caller with only its own seccomp sandbox, rlimits and NoNewPrivs.
fn jail_ids() -> Result<Option<JailIds>, BackendError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let base = match std::env::var(JAIL_ID_BASE_ENV) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| BackendError::JailIdBaseNotANumber(value))?,
        Err(_) => DEFAULT_ID_BASE,
    };
    Ok(Some(JailIds::new(base)?))
}

fn require(program: &'static str, fix: &'static str) -> Result<PathBuf, BackendError> {
    find_program(program).ok_or(BackendError::Missing { program, fix })
}
