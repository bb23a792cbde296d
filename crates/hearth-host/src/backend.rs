//! Choosing the VM backend once for this host: the programs it runs and its accelerator.

use std::path::PathBuf;

use hearth_vmm::qemu::QemuVmm;
use hearth_vmm::Vmm;

use crate::find_program;
use crate::kvm;

pub const QEMU: &str = "qemu-system-x86_64";

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("`{program}` was not found in PATH, ~/.cargo/bin or /usr/local/bin; {fix}")]
    Missing {
        program: &'static str,
        fix: &'static str,
    },
}

/// The backend this host supports: QEMU `microvm` with the programs found here, accelerated by
/// KVM only where it is hardware KVM this process can open (see [`kvm::accelerator`]).
pub fn detect() -> Result<Box<dyn Vmm>, BackendError> {
    let qemu = require(QEMU, "install it with `apt-get install qemu-system-x86`")?;
    let choice = kvm::accelerator();
    tracing::debug!(accel = %choice.accel, reason = %choice.reason, "accelerator chosen");
    Ok(Box::new(QemuVmm::new(qemu, choice.accel)))
}

fn require(program: &'static str, fix: &'static str) -> Result<PathBuf, BackendError> {
    find_program(program).ok_or(BackendError::Missing { program, fix })
}
