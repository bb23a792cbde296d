//! The one error every engine operation returns, and the kind a client maps it by: the CLI to
//! exit codes and hints, the API to HTTP statuses.

use std::path::PathBuf;

use hearth_agent_proto::ErrorCode;
use hearth_host::backend::BackendError;
use hearth_image::{
    CredentialsError, ImportError, LoginError, PullError, ReferenceError, StoreError,
};
use serde::Serialize;

use crate::agent::AgentError;
use crate::control::ControlError;
use crate::copy::CopyError;
use crate::exec::ExecError;
use crate::files::FilesError;
use crate::mounts::AttachError;
use crate::sandbox::BootError;
use crate::snapshots::SnapshotError;
use crate::state::{SandboxState, StateError};
use crate::supervisor::SupervisorError;
use crate::volumes::VolumeError;

/// What kind of failure an [`EngineError`] is, for clients that act on it rather than print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such sandbox, image, guest path or registry object.
    NotFound,
    /// The request does not fit the current state: the sandbox is not running, is still
    /// running, the name is taken.
    Conflict,
    /// The request itself is wrong: a bad name, reference, path or argument.
    InvalidInput,
    /// hearth lacks a privilege for it (sandbox networks need root), or a registry refused.
    PermissionDenied,
    /// This host cannot do it: a program or boot asset is missing.
    Unavailable,
    /// The sandbox or its guest failed: a boot that never got ready, a lost agent connection,
    /// an operation the guest refused for its own reasons.
    Sandbox,
    /// Everything else: I/O on the host, the state database, a supervisor that died.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("sandbox {name} ({id}) is {state}, not running; start it with `hearth start` or a new one with `hearth run -d`")]
    NotRunning {
        name: String,
        id: String,
        state: SandboxState,
    },
    #[error("sandbox {name} is {state}; stop it first or use `hearth rm -f`")]
    StillLive { name: String, state: SandboxState },
    #[error("sandbox {name} is already {state}")]
    AlreadyLive { name: String, state: SandboxState },
    #[error("invalid name `{0}`: use up to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit")]
    InvalidName(String),
    #[error("invalid label {0}")]
    InvalidLabel(String),
    #[error("invalid timeout {0:?}: give one from a second up to 30 days")]
    InvalidTimeout(std::time::Duration),
    #[error("name `{0}` could be taken for a sandbox id (it is 12 hex digits, or begins an existing id); pick another")]
    NameLooksLikeId(String),
    #[error("--cpus {asked} is more than the {limit} allowed by {source_of_limit}")]
    TooManyCpus {
        asked: u8,
        limit: u64,
        source_of_limit: &'static str,
    },
    #[error("--memory {asked_mib}M is more than the {limit_mib}M allowed by {source_of_limit}")]
    TooMuchMemory {
        asked_mib: u32,
        limit_mib: u64,
        source_of_limit: &'static str,
    },
    #[error("the image has no Entrypoint or Cmd; give a command")]
    NoCommand,
    #[error("hearth cannot run VMs on this host (see `hearth doctor`)")]
    Backend(#[source] BackendError),
    #[error("failed to set up the VM backend")]
    BackendSetup(#[source] BackendError),
    #[error("failed to boot the sandbox")]
    Boot(#[source] BootError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the supervisor of sandbox {id} exited ({status}) before it started: {output}")]
    SupervisorDied {
        id: String,
        status: String,
        output: String,
    },
    #[error("failed to start the supervisor of sandbox {id}")]
    Launch {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox {id} failed to start: {reason}")]
    StartFailed { id: String, reason: String },
    #[error("sandbox {id} is running but unhealthy: its health command keeps failing")]
    Unhealthy { id: String },
    #[error("sandbox {id} ended before it became healthy")]
    EndedUnhealthy { id: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("failed to pull `{reference}`")]
    Pull {
        reference: String,
        /// Boxed: a pull error is large, and every operation's result carries this enum.
        #[source]
        source: Box<PullError>,
    },
    #[error(transparent)]
    Images(#[from] StoreError),
    #[error("failed to import `{}`", path.display())]
    Import {
        path: PathBuf,
        #[source]
        source: Box<ImportError>,
    },
    #[error("failed to handle the credentials for `{registry}`")]
    Credentials {
        registry: String,
        #[source]
        source: CredentialsError,
    },
    #[error("failed to log in to `{registry}`")]
    Login {
        registry: String,
        #[source]
        source: LoginError,
    },
    #[error("failed to describe the network of `{id}`")]
    NetworkView {
        id: String,
        #[source]
        source: hearth_net::view::ViewError,
    },
    #[error("setup of `{}` failed", dir.display())]
    Setup {
        dir: PathBuf,
        #[source]
        source: Box<hearth_host::setup::SetupError>,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// Boxed: it carries the agent's error, and every operation's result carries this enum.
    #[error("failed to mount a host dir in the sandbox")]
    Mount(#[source] Box<AttachError>),
    #[error("failed to tell the VMM's version")]
    VmmVersion(#[source] hearth_vmm::VersionError),
    #[error("a background task failed: {0}")]
    Task(String),
    #[error("failed to {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<AttachError> for EngineError {
    fn from(error: AttachError) -> Self {
        EngineError::Mount(Box::new(error))
    }
}

impl EngineError {
    /// The kind of failure, taken from the innermost cause that decides it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::State(e) => state_kind(e),
            EngineError::NotRunning { .. }
            | EngineError::StillLive { .. }
            | EngineError::AlreadyLive { .. } => ErrorKind::Conflict,
            EngineError::InvalidName(_)
            | EngineError::InvalidLabel(_)
            | EngineError::InvalidTimeout(_)
            | EngineError::NameLooksLikeId(_)
            | EngineError::TooManyCpus { .. }
            | EngineError::TooMuchMemory { .. }
            | EngineError::NoCommand
            | EngineError::Reference(_) => ErrorKind::InvalidInput,
            EngineError::Backend(_) | EngineError::BackendSetup(_) => ErrorKind::Unavailable,
            _ if self.is_network_permission_denied() => ErrorKind::PermissionDenied,
            EngineError::Boot(BootError::Start(_)) => ErrorKind::Unavailable,
            EngineError::Boot(_)
            | EngineError::Exec(_)
            | EngineError::Agent(_)
            | EngineError::StartFailed { .. }
            | EngineError::Unhealthy { .. }
            | EngineError::EndedUnhealthy { .. } => ErrorKind::Sandbox,
            EngineError::Files(e) => e.code().map_or(ErrorKind::Sandbox, guest_kind),
            EngineError::Copy(CopyError::NoSource { .. }) => ErrorKind::NotFound,
            EngineError::Copy(CopyError::GuestPath { .. }) => ErrorKind::InvalidInput,
            EngineError::Copy(_) => ErrorKind::Sandbox,
            EngineError::Pull { source, .. } => pull_kind(source),
            EngineError::Images(StoreError::NotFound { .. }) => ErrorKind::NotFound,
            EngineError::Import { .. } => ErrorKind::InvalidInput,
            EngineError::Setup { .. } | EngineError::VmmVersion(_) => ErrorKind::Unavailable,
            EngineError::Snapshot(SnapshotError::NotFound(_)) => ErrorKind::NotFound,
            EngineError::Snapshot(
                SnapshotError::Exists(_)
                | SnapshotError::Mismatch { .. }
                | SnapshotError::HasMounts { .. }
                | SnapshotError::BaseInUse { .. },
            ) => ErrorKind::Conflict,
            EngineError::Volume(e) => volume_kind(e),
            EngineError::Mount(_) => ErrorKind::Sandbox,
            EngineError::Login { .. } | EngineError::Control(ControlError::Denied { .. }) => {
                ErrorKind::PermissionDenied
            }
            EngineError::Images(_)
            | EngineError::Supervisor(_)
            | EngineError::Control(_)
            | EngineError::SupervisorDied { .. }
            | EngineError::Launch { .. }
            | EngineError::Credentials { .. }
            | EngineError::NetworkView { .. }
            | EngineError::Snapshot(_)
            | EngineError::Task(_)
            | EngineError::Io { .. } => ErrorKind::Internal,
        }
    }

    /// Whether a sandbox network could not be made for lack of privilege: it needs root
    /// (CAP_NET_ADMIN and CAP_SYS_ADMIN).
    pub fn is_network_permission_denied(&self) -> bool {
        matches!(self, EngineError::Boot(BootError::Network(e)) if e.is_permission_denied())
    }

    /// The exit status docker gives a process that could not be started (127 not found, 126
    /// not executable), when that is what this error is.
    pub fn process_exit_code(&self) -> Option<i32> {
        match self {
            EngineError::Exec(e) => Some(e.exit_code()).filter(|code| *code != 125),
            _ => None,
        }
    }
}

fn state_kind(error: &StateError) -> ErrorKind {
    match error {
        StateError::NotFound(_) => ErrorKind::NotFound,
        StateError::NameTaken(_) => ErrorKind::Conflict,
        StateError::NotYours { .. } => ErrorKind::PermissionDenied,
        StateError::Ambiguous { .. } => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    }
}

fn guest_kind(code: ErrorCode) -> ErrorKind {
    match code {
        ErrorCode::NotFound => ErrorKind::NotFound,
        ErrorCode::AlreadyExists | ErrorCode::DirectoryNotEmpty => ErrorKind::Conflict,
        ErrorCode::NotADirectory | ErrorCode::IsADirectory | ErrorCode::BadRequest => {
            ErrorKind::InvalidInput
        }
        ErrorCode::PermissionDenied => ErrorKind::PermissionDenied,
        ErrorCode::VersionMismatch | ErrorCode::NoSpace | ErrorCode::Internal => ErrorKind::Sandbox,
    }
}

fn volume_kind(error: &VolumeError) -> ErrorKind {
    match error {
        VolumeError::BadSpec { .. }
        | VolumeError::BadTarget { .. }
        | VolumeError::DuplicateTarget(_)
        | VolumeError::NotADirectory(_)
        | VolumeError::InvalidName(_) => ErrorKind::InvalidInput,
        VolumeError::NotFound(_) => ErrorKind::NotFound,
        VolumeError::HostDir { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ErrorKind::NotFound
        }
        VolumeError::Exists(_) | VolumeError::InUse { .. } => ErrorKind::Conflict,
        VolumeError::HostDir { .. } | VolumeError::BadRecord { .. } | VolumeError::Io { .. } => {
            ErrorKind::Internal
        }
    }
}

fn pull_kind(error: &PullError) -> ErrorKind {
    match error {
        PullError::NotFound { .. } | PullError::NoPlatform { .. } => ErrorKind::NotFound,
        PullError::Denied { .. } => ErrorKind::PermissionDenied,
        PullError::Unavailable { .. } => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lifecycle_conflicts_are_conflicts() {
        let error = EngineError::StillLive {
            name: "web".into(),
            state: SandboxState::Running,
        };
        assert_eq!(error.kind(), ErrorKind::Conflict);
        // The state reads as a word, not as a Rust enum.
        assert_eq!(
            error.to_string(),
            "sandbox web is running; stop it first or use `hearth rm -f`"
        );
    }

    #[test]
    fn test_state_errors_keep_their_kind() {
        let missing = EngineError::from(StateError::NotFound("x".into()));
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        let taken = EngineError::from(StateError::NameTaken("x".into()));
        assert_eq!(taken.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn test_error_chain_joins_causes() {
        let error = EngineError::Io {
            action: "read",
            path: "/x".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(
            crate::chain::error_chain(&error),
            "failed to read `/x`: gone"
        );
    }
}
