//! The host itself: building boot assets (`hearth setup`) and checking what it has
//! (`hearth doctor`). Both are `hearth-host`'s work; here they become engine operations on the
//! engine's state dir, and need no VM backend.

use hearth_host::backend::{BackendError, BackendSetup};
use hearth_host::doctor::{self, DoctorReport};
use hearth_host::host_config::HostConfig;
use hearth_host::setup::firecracker_release::{
    fetch_kernel, fetch_release, FetchedRelease, ReleaseFetch,
};
use hearth_host::setup::{self, SetupConfig, SetupReport, SetupReporter};

use crate::engine::Engine;
use crate::error::EngineError;

impl Engine {
    /// Builds the kernel, initramfs and built-in image into the state dir, or checks they are
    /// up to date; each step goes to `reporter`. Where VMs may run on Firecracker, also the
    /// unpacked kernel it boots.
    pub fn setup(
        &self,
        config: &SetupConfig,
        reporter: &dyn SetupReporter,
    ) -> Result<SetupReport, EngineError> {
        let mut config = config.clone();
        config.firecracker_kernel |= hearth_host::backend::may_run_firecracker(self.state());
        setup::setup(self.state(), &config, reporter).map_err(|source| EngineError::Setup {
            dir: self.state().root().to_owned(),
            source: Box::new(source),
        })
    }

    /// What hearth finds on this host and in the state dir, and what to fix.
    /// Checks and records the backend and its binaries for this host (`hearth setup
    /// --backend`); the settings as written.
    pub fn record_backend(&self, setup: &BackendSetup) -> Result<HostConfig, EngineError> {
        hearth_host::backend::record(self.state(), setup).map_err(EngineError::BackendSetup)
    }

    /// Downloads, verifies and installs an official Firecracker release into the state dir
    /// (`hearth setup --fetch-firecracker`); record it with [`Engine::record_backend`].
    pub async fn fetch_firecracker(
        &self,
        fetch: &ReleaseFetch,
    ) -> Result<FetchedRelease, EngineError> {
        fetch_release(fetch)
            .await
            .map_err(|e| EngineError::BackendSetup(BackendError::Fetch(e)))
    }

    /// Downloads a guest kernel (an uncompressed `vmlinux`) into the state dir's
    /// `firecracker/kernels/`, refused unless it has SHA-256 `sha256`; its path, for
    /// [`SetupConfig::kernel`].
    pub async fn fetch_firecracker_kernel(
        &self,
        url: &str,
        sha256: &str,
    ) -> Result<std::path::PathBuf, EngineError> {
        let dest = self.state().firecracker_dir().join("kernels");
        fetch_kernel(url, sha256, &dest)
            .await
            .map_err(|e| EngineError::BackendSetup(BackendError::FetchKernel(e)))
    }

    pub fn doctor(&self) -> DoctorReport {
        doctor::diagnose(self.state())
    }
}
