//! The QEMU `microvm` backend: the machine, its QMP control socket and its serial console.

mod backend;
pub mod cmdline;
pub mod migration;
pub mod qmp;
mod tsc;

pub use backend::{QemuVm, QemuVmm};
