//! What a backend needs to start a VM.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

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
    pub restore: Option<PathBuf>,
}

/// A virtio-net device backed by an existing tap inside a network namespace.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Namespace file (`/run/netns/<name>`) the VMM process runs in; the tap lives there.
    pub netns: PathBuf,
    /// Name of the tap inside that namespace.
    pub tap: String,
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
