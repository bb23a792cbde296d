//! The engine: the short list of operations the CLI (and later the API) call.

use std::time::Duration;

use hearth_host::backend::{self, BackendError};
use hearth_vmm::{BackendInfo, Vmm};

use crate::paths::StateDir;
use crate::sandbox::{BootError, Sandbox, SandboxConfig};

/// Default guest resources, like a small container.
pub const DEFAULT_VCPUS: u8 = 1;
pub const DEFAULT_MEM_SIZE_MIB: u32 = 512;
/// Generous for TCG, where a boot takes seconds rather than a fraction of one.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Entry point of the engine: a state dir and the backend that runs VMs.
#[derive(Debug)]
pub struct Engine {
    state: StateDir,
    vmm: Box<dyn Vmm>,
}

impl Engine {
    pub fn new(state: StateDir, vmm: Box<dyn Vmm>) -> Self {
        Engine { state, vmm }
    }

    /// The engine with the backend this host supports (see [`backend::detect`]).
    pub fn detect(state: StateDir) -> Result<Self, BackendError> {
        Ok(Engine::new(state, backend::detect()?))
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The backend's name and accelerator, as sandbox rows record it (`qemu-tcg`).
    pub fn backend(&self) -> BackendInfo {
        self.vmm.describe()
    }

    /// A config that boots the built-in default image with the assets from `hearth setup`.
    pub fn default_config(&self) -> SandboxConfig {
        SandboxConfig {
            kernel: self.state.kernel(),
            initramfs: self.state.initramfs(),
            rootfs: self.state.default_image(),
            vcpus: DEFAULT_VCPUS,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            network: Some(hearth_net::NetworkConfig::default()),
            console_log: None,
        }
    }

    /// Boots a sandbox and waits until its agent is ready.
    pub async fn boot(&self, config: &SandboxConfig) -> Result<Sandbox, BootError> {
        self.boot_with_id(crate::sandbox::new_id(), config).await
    }

    /// Boots a sandbox whose id was chosen already (a detached sandbox's row names it).
    pub async fn boot_with_id(
        &self,
        id: String,
        config: &SandboxConfig,
    ) -> Result<Sandbox, BootError> {
        Sandbox::boot(self.vmm.as_ref(), &self.state.vms_dir(), id, config).await
    }
}
