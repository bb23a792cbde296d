//! hearth-vmm: the [`Vmm`] backend trait and its backends.
//!
//! A backend starts a VM from a [`VmConfig`] (kernel, initramfs, disks, command line, resources)
//! and exposes one byte stream to the guest agent as a Unix socket that accepts one client at a
//! time ([`Vm::agent_stream`]), so everything above this crate talks to the guest the same way
//! whichever backend runs it: QEMU `microvm` ([`qemu::QemuVmm`]) with KVM or TCG, where the
//! stream is a virtio-serial port, and Firecracker ([`firecracker::FirecrackerVmm`]) on hardware
//! KVM, where it is one vsock connection.

pub mod cgroup;
pub mod config;
pub mod console;
pub mod firecracker;
pub mod jail;
mod process;
pub mod qemu;
mod sys;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use config::{Accel, DiskConfig, MemoryFile, MemoryMode, NetConfig, NetNamespace, VmConfig};
pub use sys::HandoverError;

/// A way of running VMs.
#[async_trait::async_trait]
pub trait Vmm: Send + Sync + std::fmt::Debug {
    /// Which backend this is and how it accelerates its VMs, as `ls` and `inspect` show it.
    fn describe(&self) -> BackendInfo;

    /// Starts a VM and returns once it is running (the guest may still be booting). With
    /// [`VmConfig::restore`], the VM resumes from a state [`Vm::save`] wrote instead of booting.
    async fn start(&self, config: &VmConfig) -> Result<Box<dyn Vm>, StartVmError>;

    /// Where [`Vm::save`] to `dest` put guest memory when it keeps memory in a file of its own
    /// (Firecracker: `<dest>.mem`); `None` when memory is inside the saved stream (QEMU), which
    /// the engine then splits out.
    fn saved_memory(&self, _dest: &Path) -> Option<PathBuf> {
        None
    }

    /// Whether this backend boots only an uncompressed ELF kernel (`vmlinux`, Firecracker on
    /// x86_64) rather than the distribution's bzImage.
    fn boots_elf_kernel_only(&self) -> bool {
        false
    }

    /// The VMM's own version (`QEMU emulator version 7.2.22 ...`): a saved state loads only
    /// into the version that saved it.
    fn version(&self) -> Result<String, VersionError>;

    /// The VMM's executable, by which a caller may remember [`Vmm::version`] across processes
    /// (asking QEMU costs a process start on every sandbox start); `None`: ask every time.
    fn program(&self) -> Option<&Path> {
        None
    }
}

/// Why a backend could not tell its version.
#[derive(Debug, thiserror::Error)]
#[error("failed to ask `{program}` for its version: {reason}")]
pub struct VersionError {
    pub program: String,
    pub reason: String,
}

/// A backend's own account of itself: its name and accelerator. Displays as `qemu-tcg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendInfo {
    pub name: &'static str,
    pub accel: Accel,
}

impl std::fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.name, self.accel)
    }
}

/// A running VM. Dropping it kills the VM.
#[async_trait::async_trait]
pub trait Vm: Send + std::fmt::Debug {
    /// The Unix socket whose (single) client holds the byte stream to the guest agent. A new
    /// client may connect once the previous one has gone.
    fn agent_stream(&self) -> &Path;

    /// File that receives the guest's serial console (kernel log and agent messages).
    fn console_log(&self) -> &Path;

    /// Host process id of the VMM, for diagnostics.
    fn pid(&self) -> Option<u32>;

    /// Waits until the VM has exited. Cancel-safe.
    async fn wait(&mut self) -> VmExit;

    /// Pauses the VM and writes its device state and memory to `dest`, then resumes it, or with
    /// `resume == false` leaves it paused for good (the caller ends it). A VM whose save failed
    /// is resumed all the same when `resume` is set.
    async fn save(&mut self, dest: &Path, resume: bool) -> Result<(), SaveError>;

    /// For a VM loaded paused into a [`MemoryMode::Shared`] memory file: writes its device
    /// state to `dest` without the RAM, which stays in the file. Clones load that state over
    /// the file mapped [`MemoryMode::Private`]. The VM stays paused; the caller ends it.
    async fn save_template(&mut self, dest: &Path) -> Result<(), SaveError>;

    /// Asks the VMM to end the VM now, waits up to `grace` for it to exit, then kills it.
    /// Always leaves no VMM process behind.
    async fn stop(&mut self, grace: Duration) -> VmExit;
}

/// How a VM ended, as seen from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The VMM exited by itself (guest power off, reset, or a VMM error) with this status.
    Exited(Option<i32>),
    /// hearth killed the VMM.
    Killed,
}

/// Why a VM's state could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the VM is no longer running")]
    NotRunning,
    #[error("failed to save the VM's state to `{}`", path.display())]
    Migrate {
        path: std::path::PathBuf,
        #[source]
        source: qemu::migration::MigrationError,
    },
    #[error("failed to resume the VM after saving it")]
    Resume(#[source] qemu::qmp::QmpError),
    #[error("failed to snapshot the VM to `{}`", path.display())]
    Snapshot {
        path: std::path::PathBuf,
        #[source]
        source: firecracker::ApiError,
    },
    #[error("failed to resume the VM after snapshotting it")]
    SnapshotResume(#[source] firecracker::ApiError),
    #[error("failed to move the snapshot out of Firecracker's chroot")]
    SnapshotMove(#[source] firecracker::ChrootError),
    #[error("the {backend} backend cannot {operation}: {why}")]
    Unsupported {
        backend: &'static str,
        operation: &'static str,
        why: &'static str,
    },
}

/// Why a VM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartVmError {
    #[error("`{program}` was not found; {hint}")]
    ProgramMissing { program: String, hint: String },
    #[error("{what} `{}` does not exist", path.display())]
    MissingFile {
        what: &'static str,
        path: std::path::PathBuf,
    },
    #[error("failed to spawn `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set up the VMM's cgroup")]
    Cgroup(#[source] cgroup::CgroupError),
    #[error("cannot hand the VMM its descriptors")]
    Handover(#[source] sys::HandoverError),
    #[error("failed to set up the VMM's jail")]
    Jail(#[source] jail::JailError),
    #[error("failed to start Firecracker")]
    Firecracker(#[source] firecracker::FirecrackerError),
    #[error("`{program}` exited during start-up ({status}); its output: {output}")]
    HelperExited {
        program: String,
        status: String,
        output: String,
    },
    #[error("`{program}` did not answer on QMP within {timeout:?}")]
    StartTimeout {
        program: String,
        timeout: std::time::Duration,
    },
    #[error("socket path `{}` is longer than the 107 bytes a Unix socket allows; use a shorter state dir", path.display())]
    PathTooLong { path: std::path::PathBuf },
    #[error("failed to prepare `{}`", path.display())]
    Prepare {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
