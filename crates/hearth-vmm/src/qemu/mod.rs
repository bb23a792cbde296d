//! The QEMU `microvm` backend: QEMU for the machine, `vhost-device-vsock` for the guest's vsock.

mod backend;
pub mod cmdline;
pub mod qmp;
mod tsc;

pub use backend::{QemuVm, QemuVmm};
