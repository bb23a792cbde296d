//! The VMM's jail, modelled on Firecracker's jailer: what the VMM process may see and who it
//! runs as. This module decides and prepares on disk; `sys::confine` applies it between fork
//! and exec.
//!
//! A jailed QEMU runs as a uid and gid of its own, in new mount, pid, IPC and UTS namespaces
//! (plus the sandbox's network namespace), after `pivot_root` into `<run dir>/jail`. That
//! directory holds only bind mounts, all read-only but guest RAM's file: `/usr` (QEMU is
//! dynamically linked and loads its firmware and modules from there; Firecracker is static,
//! so its jailer copies one file), the library symlinks or directories of `/`, the kernel and
//! initramfs, the memory file, `/dev/null`, and `/dev/kvm` under KVM. Everything else QEMU uses arrives as a
//! descriptor: the tap, its three sockets (hearth binds them, so QEMU never writes a path the
//! host later connects to) and the disks.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{Accel, VmConfig};

/// Where the kernel, initramfs and memory file appear inside the jail.
pub const JAIL_KERNEL: &str = "/boot/vmlinuz";
pub const JAIL_INITRAMFS: &str = "/boot/initramfs";
pub const JAIL_MEMORY: &str = "/memory";

/// Jail ids start here unless `HEARTH_JAIL_ID_BASE` says otherwise: inside the range systemd
/// leaves to containers (524288–1879048191), far from login users.
pub const DEFAULT_ID_BASE: u32 = 1_000_000_000;

/// Linux's largest `pid_max` (2^22). A VMM's ids are the base plus a thread id, so they stay
/// below `base + PID_MAX_LIMIT`.
const PID_MAX_LIMIT: u32 = 1 << 22;

/// Directories of `/` the dynamic loader may look in: symlinks into `/usr` on merged-usr hosts
/// (made again in the jail), real directories elsewhere (bound read-only).
const LIB_DIRS: [&str; 4] = ["lib", "lib64", "lib32", "libx32"];

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(
        "jail id base {0} is out of range: it must be at least 65536 and leave room for \
         {PID_MAX_LIMIT} ids below 2^31"
    )]
    IdBase(u32),
    #[error("failed to prepare the VMM's jail at `{}`", path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("jail path `{}` contains a NUL byte", path.display())]
    Nul { path: PathBuf },
}

/// The range jailed VMMs take their ids from. Each VMM's uid and gid are `base + tid`, the id
/// of the thread that holds its pid namespace for as long as it runs: thread ids are unique
/// among live threads, so no two running VMMs share a uid and no table of ids is kept. `base`
/// itself is the group every jailed VMM also has, which may read the files the jail binds in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JailIds {
    base: u32,
}

impl JailIds {
    pub fn new(base: u32) -> Result<Self, JailError> {
        if base < 65_536
            || base
                .checked_add(PID_MAX_LIMIT)
                .is_none_or(|end| end > 1 << 31)
        {
            return Err(JailError::IdBase(base));
        }
        Ok(JailIds { base })
    }

    /// The group that may read the boot files and memory files bound into jails.
    pub fn shared_group(self) -> u32 {
        self.base
    }

    /// The uid (and gid) of the VMM whose pid namespace thread is `tid`.
    pub fn for_thread(self, tid: u32) -> u32 {
        self.base + tid % PID_MAX_LIMIT
    }

    /// An id held by a thread of its own for as long as the lease lives: for a VMM that another
    /// program (Firecracker's jailer) puts in its pid namespace, so no hearth thread holds one.
    pub(crate) fn lease(self) -> std::io::Result<IdLease> {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (keep_tx, keep_rx) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("vmm-id".to_owned())
            .spawn(move || {
                let tid = u32::try_from(nix::unistd::gettid().as_raw()).unwrap_or_default();
                let _ = tid_tx.send(tid);
                // Returns once the lease is dropped.
                let _ = keep_rx.recv();
            })?;
        let tid = tid_rx
            .recv()
            .map_err(|_| std::io::Error::other("the id thread died before telling its id"))?;
        Ok(IdLease {
            id: self.for_thread(tid),
            _keep: keep_tx,
        })
    }
}

/// A VMM's uid (and gid), unique among live VMMs while this is held (see [`JailIds::lease`]).
#[derive(Debug)]
pub(crate) struct IdLease {
    pub id: u32,
    _keep: std::sync::mpsc::Sender<()>,
}

/// How a bind mount is made read-only or not, and whether device nodes work through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    ReadOnly,
    /// Guest RAM's file: QEMU writes a template's pages into it, and opens it read-write even
    /// to map it privately.
    Writable,
    Device,
}

/// One bind mount: `source` on the host at `target` inside the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub kind: BindKind,
    pub is_dir: bool,
}

/// A bind mount as `sys::confine` makes it: C strings ready before the fork.
#[derive(Debug)]
pub struct MountStep {
    pub source: CString,
    /// The host path of the target under the jail root.
    pub target: CString,
    pub kind: BindKind,
}

/// What one VMM's jail holds.
#[derive(Debug, Clone)]
pub struct JailPlan {
    pub root: PathBuf,
    pub binds: Vec<Bind>,
    /// Host files whose group becomes the shared group, with these mode bits added, so the
    /// jailed VMM can open them.
    pub grants: Vec<(PathBuf, u32)>,
    /// Supplementary groups beyond the shared one (the group of `/dev/kvm`).
    pub groups: Vec<u32>,
}

impl JailPlan {
    /// The jail for VM `config` run by `program` under `accel`.
    pub fn for_vm(config: &VmConfig, accel: Accel, program: &Path) -> Self {
        let mut plan = JailPlan {
            root: config.run_dir.join("jail"),
            binds: Vec::new(),
            grants: Vec::new(),
            groups: Vec::new(),
        };
        plan.bind_dir("/usr", "/usr");
        // QEMU's block layer probes for OFD locks by opening /dev/null.
        plan.bind_file(Path::new("/dev/null"), "/dev/null", BindKind::Device);
        if !program.starts_with("/usr") {
            plan.bind_file(program, program, BindKind::ReadOnly);
        }
        if config.restore.is_none() {
            plan.bind_file(&config.kernel, JAIL_KERNEL, BindKind::ReadOnly);
            plan.bind_file(&config.initramfs, JAIL_INITRAMFS, BindKind::ReadOnly);
            plan.grants.push((config.kernel.clone(), 0o040));
            plan.grants.push((config.initramfs.clone(), 0o040));
        }
        if let Some(memory) = &config.memory_file {
            // QEMU 7.2 opens a memory file read-write even for a private mapping (its
            // `readonly=on` would make guest RAM read-only), so a clone gets the template's
            // file writable; see docs/security.md.
            plan.bind_file(&memory.path, JAIL_MEMORY, BindKind::Writable);
            plan.grants.push((memory.path.clone(), 0o060));
        }
        if accel == Accel::Kvm {
            plan.bind_file(Path::new("/dev/kvm"), "/dev/kvm", BindKind::Device);
            if let Ok(meta) = std::fs::metadata("/dev/kvm") {
                plan.groups.push(meta.gid());
            }
        }
        plan
    }

    fn bind_dir(&mut self, source: impl Into<PathBuf>, target: impl Into<PathBuf>) {
        self.binds.push(Bind {
            source: source.into(),
            target: target.into(),
            kind: BindKind::ReadOnly,
            is_dir: true,
        });
    }

    fn bind_file(&mut self, source: &Path, target: impl Into<PathBuf>, kind: BindKind) {
        self.binds.push(Bind {
            source: source.to_owned(),
            target: target.into(),
            kind,
            is_dir: false,
        });
    }

    /// Makes the jail directory (mount targets, library symlinks) and grants the shared group
    /// its files; returns the mounts for `sys::confine`. A memory file a template is being made
    /// into is created here, so QEMU never needs to create files.
    pub fn build(&self, ids: JailIds) -> Result<Vec<MountStep>, JailError> {
        let prepare = |path: &Path| {
            let path = path.to_owned();
            move |source| JailError::Prepare { path, source }
        };
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root).map_err(prepare(&self.root))?;
        }
        make_dir(&self.root).map_err(prepare(&self.root))?;
        let mut binds = self.binds.clone();
        for dir in LIB_DIRS {
            let host = Path::new("/").join(dir);
            match std::fs::symlink_metadata(&host) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let link = std::fs::read_link(&host).map_err(prepare(&host))?;
                    let at = self.root.join(dir);
                    std::os::unix::fs::symlink(link, &at).map_err(prepare(&at))?;
                }
                Ok(meta) if meta.is_dir() => binds.push(Bind {
                    source: host.clone(),
                    target: host,
                    kind: BindKind::ReadOnly,
                    is_dir: true,
                }),
                _ => {}
            }
        }
        for (path, bits) in &self.grants {
            if !path.exists() {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(prepare(path))?;
            }
            share_with_group(path, ids.shared_group(), *bits).map_err(prepare(path))?;
        }
        binds
            .iter()
            .map(|bind| {
                let target = self
                    .root
                    .join(bind.target.strip_prefix("/").unwrap_or(&bind.target));
                if let Some(parent) = target.parent() {
                    make_dir(parent).map_err(prepare(parent))?;
                }
                if bind.is_dir {
                    make_dir(&target).map_err(prepare(&target))?;
                } else {
                    std::fs::File::create(&target).map_err(prepare(&target))?;
                }
                Ok(MountStep {
                    source: c_path(&bind.source)?,
                    target: c_path(&target)?,
                    kind: bind.kind,
                })
            })
            .collect()
    }

    /// The jail root as a C string, for `sys::confine`.
    pub fn root_c(&self) -> Result<CString, JailError> {
        c_path(&self.root)
    }
}

/// A directory (and its parents) the jailed VMM may traverse: 0755 whatever the umask.
pub(crate) fn make_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

/// Gives `path` to group `gid` with `bits` added to its mode; the owner stays.
pub(crate) fn share_with_group(path: &Path, gid: u32, bits: u32) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.gid() != gid {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    let mode = meta.mode() & 0o7777;
    if mode & bits != bits {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | bits))?;
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<CString, JailError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| JailError::Nul {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MemoryFile, MemoryMode};

    fn config() -> VmConfig {
        VmConfig {
            kernel: "/state/boot/vmlinuz".into(),
            initramfs: "/state/boot/initramfs.cpio".into(),
            cmdline: String::new(),
            disks: Vec::new(),
            vcpus: 1,
            mem_size_mib: 256,
            run_dir: "/state/vms/abc".into(),
            console_log: "/state/vms/abc/console.log".into(),
            net: None,
            restore: None,
            memory_file: None,
        }
    }

    fn targets(plan: &JailPlan) -> Vec<(&str, BindKind)> {
        plan.binds
            .iter()
            .map(|b| (b.target.to_str().unwrap(), b.kind))
            .collect()
    }

    #[test]
    fn test_a_cold_boot_jail_holds_usr_and_the_boot_files_read_only() {
        let plan = JailPlan::for_vm(&config(), Accel::Tcg, Path::new("/usr/bin/qemu"));
        assert_eq!(plan.root, Path::new("/state/vms/abc/jail"));
        assert_eq!(
            targets(&plan),
            [
                ("/usr", BindKind::ReadOnly),
                ("/dev/null", BindKind::Device),
                (JAIL_KERNEL, BindKind::ReadOnly),
                (JAIL_INITRAMFS, BindKind::ReadOnly)
            ]
        );
        assert!(plan.groups.is_empty());
    }

    #[test]
    fn test_a_clone_jail_has_its_memory_file_and_no_boot_files() {
        let mut config = config();
        config.restore = Some("/state/snap/state".into());
        config.memory_file = Some(MemoryFile {
            path: "/state/snap/memory".into(),
            mode: MemoryMode::Private,
        });
        let plan = JailPlan::for_vm(&config, Accel::Tcg, Path::new("/opt/qemu"));
        assert_eq!(
            targets(&plan),
            [
                ("/usr", BindKind::ReadOnly),
                ("/dev/null", BindKind::Device),
                ("/opt/qemu", BindKind::ReadOnly),
                (JAIL_MEMORY, BindKind::Writable)
            ]
        );
        assert_eq!(plan.grants, [(PathBuf::from("/state/snap/memory"), 0o060)]);
    }

    #[test]
    fn test_kvm_binds_the_device_node() {
        let plan = JailPlan::for_vm(&config(), Accel::Kvm, Path::new("/usr/bin/qemu"));
        assert!(targets(&plan).contains(&("/dev/kvm", BindKind::Device)));
    }

    #[test]
    fn test_id_base_leaves_room_for_every_thread_id() {
        assert!(JailIds::new(DEFAULT_ID_BASE).is_ok());
        assert!(JailIds::new(1000).is_err());
        assert!(JailIds::new((1 << 31) - 10).is_err());
        let ids = JailIds::new(DEFAULT_ID_BASE).unwrap();
        assert_eq!(ids.for_thread(42), DEFAULT_ID_BASE + 42);
        assert_eq!(ids.shared_group(), DEFAULT_ID_BASE);
    }

    #[test]
    fn test_build_makes_targets_and_grants_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, b"k").unwrap();
        std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut config = config();
        config.kernel = kernel.clone();
        config.initramfs = kernel.clone();
        config.run_dir = dir.path().join("vm");
        let plan = JailPlan::for_vm(&config, Accel::Tcg, Path::new("/usr/bin/qemu"));
        let ids = JailIds::new(DEFAULT_ID_BASE).unwrap();
        let mounts = plan.build(ids).unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.target.to_bytes().ends_with(b"jail/boot/vmlinuz")));
        assert!(plan.root.join("usr").is_dir());
        let meta = std::fs::metadata(&kernel).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(meta.gid(), DEFAULT_ID_BASE);
        }
    }
}
