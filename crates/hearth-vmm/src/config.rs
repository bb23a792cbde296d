//! What a backend needs to start a VM.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::StartVmError;

/// Everything needed to boot one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Kernel command line, without the console setting the backend adds itself.
    pub cmdline: String,
    /// Block devices in order: the guest sees them as `/dev/vda`, `/dev/vdb`, ...
    pub disks: Vec<DiskConfig>,
    pub vcpus: u8,
    pub mem_size_mib: u32,
    /// Directory owned by this VM: its sockets and logs are created in it.
    pub run_dir: PathBuf,
    /// Where the guest's console output is kept, size-capped (see [`crate::console`]); may lie
    /// outside the run dir so it outlives the VM.
    pub console_log: PathBuf,
    /// The guest's network interface, if any.
    pub net: Option<NetConfig>,
    /// A state file written by [`crate::Vm::save`] to resume instead of booting. The rest of
    /// the config must describe the same machine as the one saved (devices, memory, vcpus).
    /// With a [`MemoryMode::Shared`] memory file the VM stays paused after loading (it is a
    /// template being made, see [`crate::Vm::save_template`]); otherwise it runs.
    pub restore: Option<PathBuf>,
    /// Guest RAM mapped from a file instead of anonymous memory.
    pub memory_file: Option<MemoryFile>,
}

impl VmConfig {
    /// Checks that the files the VM starts from exist. A restore does not read the boot files
    /// (the kernel is in the saved RAM); a shared memory file is made by the VMM, a private one
    /// must be there. `restored_memory` is where a backend that keeps a snapshot's memory
    /// beside its state (Firecracker) reads it from when no memory file is given.
    pub(crate) fn check_files(
        &self,
        restored_memory: Option<&PathBuf>,
    ) -> Result<(), StartVmError> {
        let boot = [("kernel", &self.kernel), ("initramfs", &self.initramfs)];
        let files = boot
            .into_iter()
            .filter(|_| self.restore.is_none())
            .chain(self.disks.iter().map(|d| ("disk image", &d.path)))
            .chain(self.restore.iter().map(|state| ("saved state", state)))
            .chain(
                self.memory_file
                    .iter()
                    .filter(|file| file.mode == MemoryMode::Private)
                    .map(|file| ("memory file", &file.path)),
            )
            .chain(restored_memory.map(|path| ("saved memory", path)));
        for (what, path) in files {
            if !path.is_file() {
                return Err(StartVmError::MissingFile {
                    what,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A file holding guest RAM.
#[derive(Debug, Clone)]
pub struct MemoryFile {
    pub path: PathBuf,
    pub mode: MemoryMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMode {
    /// The guest's pages are the file's: how a template's memory is written once.
    Shared,
    /// Pages are read from the file and copied on write: how clones share one template's
    /// memory. The file must never change while a clone maps it.
    Private,
}

/// A virtio-net device backed by a tap inside a network namespace.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub netns: NetNamespace,
    /// Name of the tap inside that namespace.
    pub tap: String,
}

#[derive(Debug, Clone)]
pub enum NetNamespace {
    /// The namespace file (`/run/netns/<name>`) the VMM process runs in; the tap exists there.
    At(PathBuf),
    /// An open namespace fd (which holds the namespace alive, like a bind mount does).
    Open(std::sync::Arc<std::os::fd::OwnedFd>),
}

#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

/// CPU virtualization a backend runs its VMs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware KVM.
    Kvm,
    /// QEMU's software emulation; works everywhere, slower.
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`, as QEMU's `-accel` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
