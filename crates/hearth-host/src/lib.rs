//! hearth-host: what this host has and the boot assets built on it.
//!
//! - [`find_program`]: where hearth looks for the programs it runs.
//! - [`kvm`]: what `/dev/kvm` is and which accelerator hearth uses, with the reason.
//! - [`backend::detect`]: the VM backend for this host (Firecracker or QEMU), chosen once.
//! - [`host_config`]: the per-host settings `hearth setup` records (`host.json`).
//! - [`processes`]: host processes found by what their command line names.
//! - [`StateDir`]: the layout of the state dir, shared by setup and the engine.
//! - [`setup`]: builds the guest kernel, initramfs and default image (`hearth setup`).
//! - [`doctor`]: what hearth found on this host and what to install (`hearth doctor`).

pub mod backend;
pub mod doctor;
pub mod host_config;
pub mod kvm;
pub mod processes;
mod programs;
pub mod setup;
mod size;
mod state_dir;

pub use programs::find_program;
pub use size::human_size;
pub use state_dir::{StateDir, STATE_DIR_ENV};
