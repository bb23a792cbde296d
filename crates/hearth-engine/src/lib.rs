//! hearth-engine: sandbox lifecycle. Starts VMs through `hearth-vmm` on the backend
//! `hearth-host` detects, and drives the guest agent over vsock.
//!
//! - [`Engine`]: the operations the CLI calls (boot a sandbox).
//! - [`Sandbox`]: a booted VM with a ready agent: exec, ping, shutdown, kill.
//! - [`exec`]: a running guest process as an input half and an output event stream.
//! - [`files`]: stat, list, mkdir, remove, read and write guest files through the agent.
//! - [`images`]: the OCI image store of a state dir ([`image`] is `hearth-image`).
//! - [`paths::StateDir`]: where everything lives on disk.

mod agent;
pub mod control;
pub mod copy;
mod engine;
pub mod exec;
pub mod files;
pub mod gc;
pub mod images;
mod sandbox;
pub mod state;
pub mod supervisor;

/// Where everything lives on disk (from `hearth-host`).
pub mod paths {
    pub use hearth_host::StateDir;
}

/// `hearth setup`: builds the boot assets into a state dir (from `hearth-host`).
pub mod setup {
    pub use hearth_host::setup::{
        setup, SetupConfig, SetupError, SetupReport, SetupReporter, Step, StepOutcome,
    };
}

/// `hearth doctor`: what hearth found on this host (from `hearth-host`).
pub mod doctor {
    pub use hearth_host::doctor::{diagnose, Check, CheckStatus, DoctorReport};
}

pub use agent::AgentError;
pub use engine::{Engine, DEFAULT_BOOT_TIMEOUT, DEFAULT_MEM_SIZE_MIB, DEFAULT_VCPUS};
pub use exec::{ExecError, ExecEvent, ExecInput, ExecOutput};
pub use hearth_agent_proto::{ExecRequest, ExitStatus, FileKind, FileStat, TermSize};
pub use hearth_host::backend::BackendError;
pub use hearth_host::human_size;
pub use hearth_image as image;
pub use hearth_net as net;
pub use hearth_vmm as vmm;
pub use hearth_vmm::{Accel, BackendInfo, VmExit};
pub use sandbox::{console_tail, new_id, BootError, Sandbox, SandboxConfig};

/// Starts a process in a running sandbox of another process (a detached sandbox's supervisor),
/// through the hybrid vsock socket in its run dir.
pub async fn exec_in(
    state: &paths::StateDir,
    id: &str,
    request: ExecRequest,
) -> Result<(u32, ExecInput, ExecOutput), ExecError> {
    exec::start(&vsock_of(state, id), request).await
}

/// The host side of the hybrid vsock of sandbox `id` run by another process.
pub fn vsock_of(state: &paths::StateDir, id: &str) -> std::path::PathBuf {
    sandbox::vsock_path(&state.vms_dir().join(id))
}
