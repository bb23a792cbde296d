//! What a client asks for when it makes a sandbox, before the engine has looked anything up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hearth_agent_proto::{ExecRequest, TermSize};
use hearth_image::{RegistryTimeouts, DEFAULT_MAX_UNPACKED_BYTES};
use hearth_net::NetworkConfig;

use crate::engine::{DEFAULT_BOOT_TIMEOUT, DEFAULT_MEM_SIZE_MIB, DEFAULT_VCPUS};
use crate::mounts::MountSpec;
use crate::sandbox::SandboxConfig;
use crate::supervisor::HealthCheck;

/// The name of the built-in busybox image made by `hearth setup`.
pub const DEFAULT_IMAGE: &str = "default";

/// A new sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// An OCI reference, a local image name or id; `None` or [`DEFAULT_IMAGE`] is the built-in
    /// image. A reference not in the store is pulled.
    pub image: Option<String>,
    pub registry: RegistryOptions,
    pub vcpus: u8,
    pub mem_size_mib: u32,
    /// How long the guest agent may take to report ready.
    pub boot_timeout: Duration,
    /// Boot assets other than the ones `hearth setup` built.
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    /// `None` gives the guest no network interface at all.
    pub network: Option<NetworkConfig>,
    /// Resume this snapshot instead of booting: its image, boot assets and resources replace
    /// the ones above; the network (present or not) must match the snapshot's.
    pub from_snapshot: Option<String>,
    /// Boot even when a template of this machine could be resumed (and make none).
    pub cold: bool,
    /// Host dirs and named volumes to mount in the guest.
    pub mounts: Vec<MountSpec>,
    pub process: ProcessSpec,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        SandboxSpec {
            image: None,
            registry: RegistryOptions::default(),
            vcpus: DEFAULT_VCPUS,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            kernel: None,
            initramfs: None,
            network: Some(NetworkConfig::default()),
            from_snapshot: None,
            cold: false,
            mounts: Vec::new(),
            process: ProcessSpec::default(),
        }
    }
}

/// The sandbox's process, on top of the image's config (docker's rules).
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    /// Replaces the image's Cmd. Empty: the image's own Entrypoint and Cmd; for the built-in
    /// image, a shell in a one-shot run and no main process in a detached one.
    pub command: Vec<String>,
    pub entrypoint: Option<String>,
    /// `KEY=VALUE` entries applied after the image's Env.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// A terminal of this size instead of pipes.
    pub tty: Option<TermSize>,
    /// Whether the caller will send stdin.
    pub stdin: bool,
    /// No main process, whatever the image's command: a detached sandbox that stays up for
    /// exec, with the image's Env, WorkingDir and User kept for its processes.
    pub idle: bool,
}

/// How to reach registries and how much a pulled image may unpack to.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries spoken to over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// Most bytes one image's layers may unpack to, all together.
    pub max_image_bytes: u64,
    pub timeouts: RegistryTimeouts,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_registries: Vec::new(),
            max_image_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            timeouts: RegistryTimeouts::default(),
        }
    }
}

/// What only a detached sandbox has.
#[derive(Debug, Clone, Default)]
pub struct DetachOptions {
    /// A generated `adjective-noun-xxxx` name when `None`.
    pub name: Option<String>,
    /// Forget the sandbox once it ends.
    pub auto_remove: bool,
    /// Stop it after this long.
    pub timeout: Option<Duration>,
    pub health: Option<HealthCheck>,
    /// The client's metadata, checked by [`crate::lifecycle::check_labels`].
    pub labels: BTreeMap<String, String>,
}

/// A spec with everything looked up: the image pulled, the boot config and the process built.
/// Made by [`crate::Engine::resolve`]; what `run`, `run_detached` and `create` take.
#[derive(Debug, Clone)]
pub struct ResolvedSpec {
    /// The image as the user named it, for the record.
    pub(crate) image: String,
    pub(crate) config: SandboxConfig,
    /// Its argv is empty when the built-in image runs without a command.
    pub(crate) process: ExecRequest,
}

impl ResolvedSpec {
    /// The process a one-shot run attaches to: a shell when nothing else was asked for.
    pub(crate) fn attached_process(&self) -> ExecRequest {
        let mut process = self.process.clone();
        if process.argv.is_empty() {
            process.argv = vec!["sh".to_owned()];
        }
        process
    }

    /// The main process of a detached sandbox; without one it stays up for `exec`.
    pub(crate) fn main_process(&self) -> Option<ExecRequest> {
        (!self.process.argv.is_empty()).then(|| self.process.clone())
    }
}
