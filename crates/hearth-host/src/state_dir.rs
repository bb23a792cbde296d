//! Layout of the state dir: where boot assets, images and per-VM run dirs live.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the state dir.
pub const STATE_DIR_ENV: &str = "HEARTH_STATE_DIR";

/// The root of everything hearth keeps on disk.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// `$HEARTH_STATE_DIR`, else `/var/lib/hearth` as root, else the XDG data dir.
    pub fn from_env() -> Self {
        if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
            return StateDir::new(dir);
        }
        if nix::unistd::geteuid().is_root() {
            return StateDir::new("/var/lib/hearth");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        StateDir::new(data.join("hearth"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Per-host settings recorded by `hearth setup` (see [`crate::host_config`]).
    pub fn host_config(&self) -> PathBuf {
        self.root.join("host.json")
    }

    /// Firecracker releases `hearth setup --fetch-firecracker` installed, one dir per version.
    pub fn firecracker_dir(&self) -> PathBuf {
        self.root.join("firecracker")
    }

    /// Directory of boot assets made by `hearth setup`.
    pub fn boot_dir(&self) -> PathBuf {
        self.root.join("boot")
    }

    /// Guest kernel copied by `hearth setup`.
    pub fn kernel(&self) -> PathBuf {
        self.boot_dir().join("vmlinuz")
    }

    /// The kernel unpacked for Firecracker, which boots only an ELF image.
    pub fn vmlinux(&self) -> PathBuf {
        self.boot_dir().join("vmlinux")
    }

    /// hearth's initramfs: the agent as `/init` plus kernel modules.
    pub fn initramfs(&self) -> PathBuf {
        self.boot_dir().join("initramfs.cpio")
    }

    /// Directory of root filesystem images.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The built-in image made offline from busybox.
    pub fn default_image(&self) -> PathBuf {
        self.images_dir().join("default.ext4")
    }

    /// The SQLite database of sandboxes that outlive a command.
    pub fn database(&self) -> PathBuf {
        self.root.join("hearth.db")
    }

    /// Files of a detached sandbox that outlive its VM: spec and output log.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    /// Base images of OCI images, one dir per manifest digest, and the names pointing at them.
    pub fn oci_images_dir(&self) -> PathBuf {
        self.images_dir().join("oci")
    }

    /// Blobs (layers, configs) of OCI images by digest.
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// Saved sandboxes: one dir per snapshot, `<name>/{state,snapshot.json}`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Named volumes: one dir per volume, `<name>/{data/,volume.json}`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// Parent of the per-VM run dirs (sockets, console log).
    pub fn vms_dir(&self) -> PathBuf {
        self.root.join("vms")
    }
}
