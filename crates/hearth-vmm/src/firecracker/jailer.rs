//! Running Firecracker under its jailer, as hearth does when it runs as root.
//!
//! The jailer makes the chroot `<run dir>/jail/<exec name>/<id>/root`, joins the sandbox's
//! network namespace, puts itself in the cgroup `hearth/<id>` with the VM's limits, copies the
//! Firecracker binary in, makes `/dev/kvm`, `/dev/net/tun` and `/dev/userfaultfd` there,
//! `pivot_root`s into it, and with `--new-pid-ns` starts Firecracker as the first process of a
//! new pid namespace under the uid and gid it is given, then exits. Firecracker keeps its
//! default seccomp filters (hearth never passes `--no-seccomp`).
//!
//! hearth prepares the chroot before that: the kernel, initramfs, disks and snapshot files are
//! hard-linked in (bind-mounted read-only when they live on another filesystem), and the log
//! and metrics files are made for Firecracker's uid. Firecracker runs as an id leased from the
//! same range as a jailed QEMU's ([`JailIds`]), with the range's shared group as its only
//! group: the jailer drops supplementary groups, and that group is what may read the boot files
//! and images every VMM shares (see [`crate::jail`]). The chroot is 0700 and owned by the VMM's
//! uid, so no other VMM reaches what lies in it. [`Chroot::remove`] takes all of it away.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::config::VmConfig;
use crate::jail::{self, IdLease, JailIds};

/// Paths inside the chroot, as Firecracker is given them.
pub(crate) const KERNEL: &str = "/vmlinux";
pub(crate) const INITRAMFS: &str = "/initramfs";
pub(crate) const API_SOCKET: &str = "/run/firecracker.socket";
pub(crate) const LOG: &str = "/firecracker.log";
pub(crate) const METRICS: &str = "/metrics.json";
/// A snapshot being loaded: its state and memory, linked in.
pub(crate) const RESTORE_STATE: &str = "/restore.state";
pub(crate) const RESTORE_MEMORY: &str = "/restore.mem";
/// Where the page-fault handler of a `Uffd` restore listens.
pub(crate) const UFFD_SOCKET: &str = "/uffd.sock";
/// A snapshot being written, moved out to where the caller wants it once complete.
pub(crate) const SAVE_STATE: &str = "/save.state";
pub(crate) const SAVE_MEMORY: &str = "/save.mem";

/// The jailer binary and the ids jailed VMMs take.
#[derive(Debug, Clone)]
pub struct Jailer {
    pub program: PathBuf,
    pub ids: JailIds,
}

/// Why a VM's chroot could not be made or its snapshot moved out of it.
#[derive(Debug, thiserror::Error)]
pub enum ChrootError {
    #[error("failed to prepare `{}` in Firecracker's chroot", path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to bind-mount `{}` into Firecracker's chroot at `{}`", source_path.display(), target.display())]
    Bind {
        source_path: PathBuf,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to move the snapshot file `{}` out of Firecracker's chroot to `{}`", from.display(), to.display())]
    MoveOut {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One VM's chroot on the host.
#[derive(Debug)]
pub(crate) struct Chroot {
    /// `--chroot-base-dir`: `<run dir>/jail`, hearth's, removed whole.
    base: PathBuf,
    /// The directory Firecracker sees as `/`.
    root: PathBuf,
    /// Files bind-mounted in (not hard-linked), unmounted before the chroot is removed.
    binds: Vec<PathBuf>,
}

impl Chroot {
    /// Where the jailer puts the chroot of VM `id` run from the binary named `exec_name`.
    pub(crate) fn new(config: &VmConfig, exec_name: &str, id: &str) -> Self {
        let base = config.run_dir.join("jail");
        let root = base.join(exec_name).join(id).join("root");
        Chroot {
            base,
            root,
            binds: Vec::new(),
        }
    }

    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    /// The host path of `inside` (`/run/firecracker.socket`).
    pub(crate) fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// The chroot's root, with `config`'s files in it, readable (and the writable disks
    /// writable) by group `gid`, and the log and metrics files owned by `uid`. A chroot left
    /// by a VM whose owner died is replaced.
    pub(crate) fn prepare(
        &mut self,
        config: &VmConfig,
        uid: u32,
        gid: u32,
    ) -> Result<(), ChrootError> {
        let prepare = |path: &Path| {
            let path = path.to_owned();
            move |source| ChrootError::Prepare { path, source }
        };
        if self.base.exists() {
            std::fs::remove_dir_all(&self.base).map_err(prepare(&self.base))?;
        }
        jail::make_dir(&self.root).map_err(prepare(&self.root))?;
        if config.restore.is_none() {
            self.place(&config.kernel, KERNEL, gid, 0o040)?;
            self.place(&config.initramfs, INITRAMFS, gid, 0o040)?;
        }
        for (index, disk) in config.disks.iter().enumerate() {
            let bits = if disk.read_only { 0o040 } else { 0o060 };
            self.place(&disk.path, &disk_path(index), gid, bits)?;
        }
        if let Some(state) = &config.restore {
            let memory = super::snapshot::restored_memory(config, state);
            self.place(state, RESTORE_STATE, gid, 0o040)?;
            self.place(&memory, RESTORE_MEMORY, gid, 0o040)?;
        }
        for file in [LOG, METRICS] {
            let path = self.host_path(file);
            std::fs::File::create(&path).map_err(prepare(&path))?;
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(prepare(&path))?;
        }
        Ok(())
    }

    /// Puts host file `source` at `inside`, group `gid` given `bits`: a hard link, or a bind
    /// mount (read-only unless `bits` grant writing) across filesystems.
    fn place(
        &mut self,
        source: &Path,
        inside: &str,
        gid: u32,
        bits: u32,
    ) -> Result<(), ChrootError> {
        let target = self.host_path(inside);
        let prepare = |path: &Path| {
            let path = path.to_owned();
            move |source| ChrootError::Prepare { path, source }
        };
        jail::share_with_group(source, gid, bits).map_err(prepare(source))?;
        match std::fs::hard_link(source, &target) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
            Err(e) => return Err(prepare(&target)(e)),
        }
        std::fs::File::create(&target).map_err(prepare(&target))?;
        let bind = |flags: nix::mount::MsFlags| {
            nix::mount::mount(Some(source), &target, None::<&str>, flags, None::<&str>).map_err(
                |source_error| ChrootError::Bind {
                    source_path: source.to_owned(),
                    target: target.clone(),
                    source: source_error,
                },
            )
        };
        bind(MsFlags::MS_BIND)?;
        self.binds.push(target.clone());
        if bits & 0o020 == 0 {
            // A bind mount takes its read-only flag only from a remount.
            bind(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY)?;
        }
        Ok(())
    }

    /// Moves a snapshot file Firecracker wrote at `inside` to host path `to`, owned by root
    /// and private: files a VMM made must not stay writable by its uid, which a later VMM may
    /// get.
    pub(crate) fn move_out(&self, inside: &str, to: &Path) -> Result<(), ChrootError> {
        let from = self.host_path(inside);
        let error = |source| ChrootError::MoveOut {
            from: from.clone(),
            to: to.to_owned(),
            source,
        };
        match std::fs::rename(&from, to) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                std::fs::copy(&from, to).map_err(error)?;
                std::fs::remove_file(&from).map_err(error)?;
            }
            Err(e) => return Err(error(e)),
        }
        std::os::unix::fs::chown(to, Some(0), Some(0)).map_err(error)?;
        std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(error)
    }

    /// Unmounts what was bound in and removes the whole chroot tree. Best effort: what cannot
    /// be removed is logged and left to `hearth gc`. Runs once Firecracker is gone.
    pub(crate) fn remove(&mut self) {
        for target in self.binds.drain(..) {
            if let Err(e) = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %target.display(), error = %e, "could not unmount from Firecracker's chroot");
            }
        }
        match std::fs::remove_dir_all(&self.base) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.base.display(), error = %e, "could not remove Firecracker's chroot");
            }
            _ => {}
        }
    }
}

/// Unmounts what a jailed VM whose owner died left bound under `run_dir` (files from other
/// filesystems, see [`Chroot::place`]), so that the run dir can be removed; returns the mount
/// points. What gc calls before it removes a dead sandbox's run dir.
pub fn unmount_leftovers(run_dir: &Path) -> Vec<PathBuf> {
    let jail = run_dir.join("jail");
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut leftovers: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_point(point)))
        .filter(|point| point.starts_with(&jail))
        .collect();
    // Deepest first, though hearth binds only files.
    leftovers.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    leftovers.retain(|point| {
        nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH)
            .inspect_err(|e| tracing::warn!(path = %point.display(), error = %e, "could not unmount a leftover from Firecracker's chroot"))
            .is_ok()
    });
    leftovers
}

/// A mount point as mountinfo writes it: space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the `index`th disk appears in the chroot.
pub(crate) fn disk_path(index: usize) -> String {
    format!("/disk{index}")
}

/// What the jailer is told to do for one VM.
#[derive(Debug)]
pub(crate) struct JailerRun<'a> {
    pub firecracker: &'a Path,
    pub id: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub chroot_base: &'a Path,
    pub cgroup_version: u8,
    pub cgroup: Vec<String>,
    /// The network namespace file to join.
    pub netns: Option<PathBuf>,
}

impl JailerRun<'_> {
    /// The jailer's command line; what follows `--` is Firecracker's.
    pub(crate) fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |name: &str, value: std::ffi::OsString| {
            args.push(name.into());
            args.push(value);
        };
        push("--id", self.id.into());
        push("--exec-file", self.firecracker.into());
        push("--uid", self.uid.to_string().into());
        push("--gid", self.gid.to_string().into());
        push("--chroot-base-dir", self.chroot_base.into());
        push("--cgroup-version", self.cgroup_version.to_string().into());
        push("--parent-cgroup", crate::cgroup::PARENT.into());
        for property in &self.cgroup {
            push("--cgroup", property.into());
        }
        if let Some(netns) = &self.netns {
            push("--netns", netns.into());
        }
        args.push("--new-pid-ns".into());
        args.push("--".into());
        args.push("--api-sock".into());
        args.push(API_SOCKET.into());
        args
    }
}

/// The name the jailer gives the chroot and the copy of the binary: the file name of
/// `firecracker` with its symlinks resolved, as the jailer canonicalizes it.
pub(crate) fn exec_name(firecracker: &Path) -> std::io::Result<String> {
    let resolved = std::fs::canonicalize(firecracker)?;
    resolved
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| std::io::Error::other("the Firecracker binary's path has no file name"))
}

/// The pid the jailer wrote for Firecracker (`/<exec name>.pid` in the chroot).
pub(crate) fn read_pid(chroot: &Chroot, exec_name: &str) -> std::io::Result<u32> {
    let path = chroot.host_path(&format!("/{exec_name}.pid"));
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("the jailer's pid file holds {text:?}")))
}

/// A jailed VM's chroot, cgroup and uid, given back when dropped (once Firecracker is gone):
/// the chroot and the cgroup removed, then the uid released.
#[derive(Debug)]
pub(crate) struct JailGuard {
    pub chroot: Chroot,
    /// The cgroup's name under `hearth/`: the instance id.
    pub id: String,
    pub lease: IdLease,
}

impl Drop for JailGuard {
    fn drop(&mut self) {
        self.chroot.remove();
        crate::cgroup::remove_cgroup(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn config(run_dir: &Path) -> VmConfig {
        VmConfig {
            kernel: run_dir.join("vmlinux"),
            initramfs: run_dir.join("initramfs"),
            cmdline: String::new(),
            disks: vec![crate::DiskConfig {
                path: run_dir.join("base.img"),
                read_only: true,
            }],
            vcpus: 2,
            mem_size_mib: 256,
            run_dir: run_dir.join("vm1"),
            console_log: run_dir.join("console.log"),
            net: None,
            restore: None,
            memory_file: None,
        }
    }

    #[test]
    fn test_mount_points_are_unescaped_as_mountinfo_escapes_them() {
        assert_eq!(
            unescape_mount_point("/state/vm\\0401/jail"),
            "/state/vm 1/jail"
        );
        assert_eq!(unescape_mount_point("/plain"), "/plain");
    }

    #[test]
    fn test_a_file_from_another_filesystem_is_bound_read_only_and_unbound_at_removal() {
        // /dev/shm is a tmpfs of its own wherever /tmp is not: a hard link across fails.
        let shm = Path::new("/dev/shm");
        let dir = tempfile::tempdir().unwrap();
        let same_fs = |a: &Path, b: &Path| {
            std::fs::metadata(a).unwrap().dev() == std::fs::metadata(b).unwrap().dev()
        };
        if !nix::unistd::geteuid().is_root() || !shm.is_dir() || same_fs(shm, dir.path()) {
            eprintln!("SKIP test_a_file_from_another_filesystem_is_bound_read_only_and_unbound_at_removal: needs root and /dev/shm on another filesystem than the temp dir");
            return;
        }
        let other = tempfile::tempdir_in(shm).unwrap();
        let mut config = config(dir.path());
        config.kernel = other.path().join("vmlinux");
        for file in [&config.kernel, &config.initramfs, &config.disks[0].path] {
            std::fs::write(file, b"x").unwrap();
        }
        let mut chroot = Chroot::new(&config, "firecracker", "vm1");
        chroot.prepare(&config, 0, 0).unwrap();
        let kernel = chroot.host_path(KERNEL);
        assert_eq!(std::fs::read(&kernel).unwrap(), b"x");
        let write = std::fs::OpenOptions::new().write(true).open(&kernel);
        assert_eq!(
            write.unwrap_err().raw_os_error(),
            Some(libc::EROFS),
            "bound read-only"
        );
        chroot.remove();
        assert!(!chroot.base().exists());
        assert!(config.kernel.is_file());
    }

    #[test]
    fn test_unmount_leftovers_unbinds_what_a_dead_owner_left() {
        let shm = Path::new("/dev/shm");
        let dir = tempfile::tempdir().unwrap();
        if !nix::unistd::geteuid().is_root() || !shm.is_dir() {
            eprintln!("SKIP test_unmount_leftovers_unbinds_what_a_dead_owner_left: needs root");
            return;
        }
        let config = config(dir.path());
        let target = config.run_dir.join("jail/firecracker/vm1/root/vmlinux");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, b"").unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, b"x").unwrap();
        nix::mount::mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        assert_eq!(unmount_leftovers(&config.run_dir), [target]);
        std::fs::remove_dir_all(&config.run_dir).unwrap();
        assert!(source.is_file());
    }

    #[test]
    fn test_the_chroot_is_where_the_jailer_makes_it() {
        let chroot = Chroot::new(&config(Path::new("/state/vms")), "firecracker", "vm1");
        assert_eq!(chroot.base(), Path::new("/state/vms/vm1/jail"));
        assert_eq!(
            chroot.host_path(API_SOCKET),
            Path::new("/state/vms/vm1/jail/firecracker/vm1/root/run/firecracker.socket")
        );
    }

    #[test]
    fn test_jailer_args_name_the_ids_cgroup_netns_and_a_new_pid_ns() {
        let run = JailerRun {
            firecracker: Path::new("/usr/local/bin/firecracker"),
            id: "vm1",
            uid: 1_000_000_042,
            gid: 1_000_000_000,
            chroot_base: Path::new("/state/vms/vm1/jail"),
            cgroup_version: 2,
            cgroup: vec![
                "memory.max=1".to_owned(),
                "cpu.max=200000 100000".to_owned(),
            ],
            netns: Some("/run/netns/hearth-vm1".into()),
        };
        let args: Vec<String> = run
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "--id vm1 --exec-file /usr/local/bin/firecracker --uid 1000000042 \
             --gid 1000000000 --chroot-base-dir /state/vms/vm1/jail --cgroup-version 2 \
             --parent-cgroup hearth --cgroup memory.max=1 --cgroup cpu.max=200000 100000 \
             --netns /run/netns/hearth-vm1 --new-pid-ns -- --api-sock /run/firecracker.socket"
        );
        // Firecracker keeps its seccomp filters: hearth never turns them off.
        assert!(!args.iter().any(|a| a.contains("seccomp")));
    }

    #[test]
    fn test_prepare_links_the_files_in_and_remove_takes_the_tree_away() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        for file in [&config.kernel, &config.initramfs, &config.disks[0].path] {
            std::fs::write(file, b"x").unwrap();
        }
        let mut chroot = Chroot::new(&config, "firecracker", "vm1");
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        chroot.prepare(&config, uid, gid).unwrap();
        let kernel = chroot.host_path(KERNEL);
        assert_eq!(
            std::fs::metadata(&kernel).unwrap().nlink(),
            2,
            "a hard link"
        );
        assert!(chroot.host_path(&disk_path(0)).is_file());
        assert_eq!(std::fs::metadata(chroot.host_path(LOG)).unwrap().uid(), uid);
        let mode = std::fs::metadata(&config.kernel).unwrap().mode();
        assert_eq!(mode & 0o040, 0o040, "the group may read the kernel");
        chroot.remove();
        assert!(!chroot.base().exists());
        assert!(config.kernel.is_file(), "the host's file stays");
    }
}
