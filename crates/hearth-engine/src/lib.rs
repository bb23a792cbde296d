//! hearth-engine: the operations every hearth client calls. The CLI, `hearth serve` and tests
//! make an [`Engine`] and call its methods ([`ops`] lists them by group); each returns a typed
//! result or an [`EngineError`] whose [`ErrorKind`] a client maps to exit codes or HTTP
//! statuses. Only the engine writes sandbox state, runs gc and starts supervisors (through the
//! client's [`SupervisorLauncher`]).
//!
//! Inside: [`Sandbox`] is one booted VM with a ready agent (prepare → launch → await ready);
//! `supervisor` owns a detached sandbox for its life; `state` is the SQLite database; `gc`
//! collects what crashed owners left; `agent_session` holds the agent's session stream and
//! `agent_relay` serves it to local clients over the run dir's `agent.sock`, where `agent`,
//! `exec`, `files` and `copy` speak the per-operation protocol; `images` is the OCI image store of the state dir; `snapshots` the saved VMs. Host checks and boot assets
//! (`setup`, `doctor`, the state dir layout) come from `hearth-host`.

mod agent;
mod agent_relay;
mod agent_session;
mod chain;
mod control;
mod copy;
mod engine;
mod error;
mod exec;
mod files;
mod gc;
mod images;
mod launcher;
mod lifecycle;
mod limits;
mod mounts;
pub mod ops;
mod sandbox;
mod snapshots;
mod state;
mod supervisor;
mod volumes;

/// Where everything lives on disk (from `hearth-host`).
pub mod paths {
    pub use hearth_host::StateDir;
}

/// What [`Engine::setup`] takes and reports (from `hearth-host`).
pub mod setup {
    pub use hearth_host::backend::{BackendKind, BackendSetup, BACKEND_ENV};
    pub use hearth_host::host_config::{FirecrackerMemory, HostConfig};
    pub use hearth_host::setup::firecracker_release::{
        FetchedRelease, ReleaseFetch, DEFAULT_RELEASE,
    };
    pub use hearth_host::setup::{SetupConfig, SetupReport, SetupReporter, Step, StepOutcome};
    pub use hearth_vmm::firecracker::version::Version as FirecrackerVersion;
}

/// What [`Engine::doctor`] reports (from `hearth-host`).
pub mod doctor {
    pub use hearth_host::doctor::{Check, CheckStatus, DoctorReport};
}

pub use chain::error_chain;
pub use engine::{Engine, DEFAULT_BOOT_TIMEOUT, DEFAULT_MEM_SIZE_MIB, DEFAULT_VCPUS};
pub use error::{EngineError, ErrorKind};
pub use exec::{ExecError, ExecEvent, ExecInput, ExecOutput};
pub use files::FilesError;
pub use gc::GcReport;
pub use launcher::{ReexecLauncher, SupervisorLauncher};
pub use lifecycle::{parse_label, LabelSelector, MAX_TIMEOUT};
pub use mounts::{Mount, MountSpec};
pub use ops::logs::{LogKind, LogReader};
pub use ops::run::{OneShot, Started};
pub use ops::sandboxes::Inspection;
pub use ops::{
    DetachOptions, ProcessSpec, RegistryOptions, ResolvedSpec, SandboxSpec, DEFAULT_IMAGE,
};
pub use sandbox::Sandbox;
pub use snapshots::SnapshotMeta;
pub use state::{Health, SandboxRecord, SandboxState};
pub use supervisor::HealthCheck;
pub use volumes::{VolumeError, VolumeInfo, VolumeMeta};

// The types of the engine's requests and results that other hearth crates define.
pub use hearth_agent_proto::{ExecRequest, ExitStatus, FileKind, FileStat, TermSize};
pub use hearth_host::backend::BackendError;
pub use hearth_host::human_size;
pub use hearth_image::{
    Credentials, Digest, ImageRecord, ImageSummary, Imported, NoReporter, PruneReport,
    PullReporter, RegistryTimeouts, DEFAULT_MAX_UNPACKED_BYTES,
};
pub use hearth_net::policy::{parse_allow, EgressMode, DNS_PORT};
pub use hearth_net::view::NetworkView;
pub use hearth_net::{
    AllowEntry, EgressPolicy, NetworkConfig, PolicyError, PortSpec, PublishError,
};
pub use hearth_vmm::{Accel, BackendInfo, VmExit};
