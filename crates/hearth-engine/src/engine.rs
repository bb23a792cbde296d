//! The engine: a state dir, the VM backend (chosen once, on first use) and the way supervisors
//! are started. Its operations live in [`crate::ops`], one file per group.

use std::sync::OnceLock;
use std::time::Duration;

use hearth_vmm::{BackendInfo, Vmm};

use crate::error::EngineError;
use crate::launcher::SupervisorLauncher;
use crate::paths::StateDir;
use crate::state::{SandboxRecord, StateDb};

/// Default guest resources, like a small container.
pub const DEFAULT_VCPUS: u8 = 1;
pub const DEFAULT_MEM_SIZE_MIB: u32 = 512;
/// Generous for TCG, where a boot takes seconds rather than a fraction of one.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Entry point of every client: the CLI, `hearth serve`, tests.
#[derive(Debug)]
pub struct Engine {
    state: StateDir,
    /// Detected on the first operation that needs a VM, so `pull`, `ls` or `doctor` work on a
    /// host that cannot run one.
    vmm: OnceLock<Box<dyn Vmm>>,
    launcher: Box<dyn SupervisorLauncher>,
}

impl Engine {
    /// An engine over `state` that detects this host's backend when it first needs one.
    pub fn new(state: StateDir, launcher: Box<dyn SupervisorLauncher>) -> Self {
        Engine {
            state,
            vmm: OnceLock::new(),
            launcher,
        }
    }

    /// An engine with a backend chosen by the caller (tests, or a client with its own choice).
    pub fn with_vmm(
        state: StateDir,
        vmm: Box<dyn Vmm>,
        launcher: Box<dyn SupervisorLauncher>,
    ) -> Self {
        let engine = Engine::new(state, launcher);
        let _ = engine.vmm.set(vmm);
        engine
    }

    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The backend, detected on first use.
    pub(crate) fn vmm(&self) -> Result<&dyn Vmm, EngineError> {
        if let Some(vmm) = self.vmm.get() {
            return Ok(vmm.as_ref());
        }
        let detected = hearth_host::backend::detect(&self.state).map_err(EngineError::Backend)?;
        Ok(self.vmm.get_or_init(|| detected).as_ref())
    }

    /// What sandboxes run on: the backend's name and accelerator (`qemu-tcg`, `qemu-kvm`).
    pub fn backend(&self) -> Result<BackendInfo, EngineError> {
        Ok(self.vmm()?.describe())
    }

    pub(crate) fn launcher(&self) -> &dyn SupervisorLauncher {
        self.launcher.as_ref()
    }

    /// A connection to the state database. Each operation opens its own: SQLite's locking
    /// makes concurrent clients safe, and a connection is cheap next to a VM.
    pub(crate) fn db(&self) -> Result<StateDb, EngineError> {
        Ok(StateDb::open(&self.state.database())?)
    }

    /// The record of sandbox `query` (name, id or unique id prefix), which must be running.
    pub fn running(&self, query: &str) -> Result<SandboxRecord, EngineError> {
        let record = self.db()?.find(query)?;
        crate::lifecycle::check_running(&record)?;
        Ok(record)
    }
}
