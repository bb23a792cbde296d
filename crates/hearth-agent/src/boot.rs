//! Early boot as PID 1: pseudo filesystems, the overlay root and the switch onto it.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::mount::{mount, MsFlags};

use crate::cmdline::KernelCmdline;

/// How long virtio-blk gets to make the root device appear after its module loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(5);
const DEVICE_POLL: Duration = Duration::from_millis(5);

const BASE: &str = "/run/hearth/base";
const RW: &str = "/run/hearth/rw";
const ROOT: &str = "/run/hearth/root";

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("failed to create directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to mount {fstype} `{source_name}` on {target}")]
    Mount {
        fstype: String,
        source_name: String,
        target: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("failed to move mount {from} to {to}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("the base has {layers} layers, more disks than follow {}", first.display())]
    TooManyLayers { first: PathBuf, layers: usize },
    #[error("root device {path} did not appear within {waited:?}")]
    NoRootDevice { path: PathBuf, waited: Duration },
    #[error("failed to switch root to {root}")]
    SwitchRoot {
        root: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("failed to open /dev/console for the standard streams")]
    Console(#[source] io::Error),
    #[error("failed to set hostname `{hostname}`")]
    Hostname {
        hostname: String,
        #[source]
        source: Errno,
    },
}

/// Mounts what every later step needs: /proc, /sys, /dev (with /dev/pts), /tmp and /run.
pub fn mount_pseudo_filesystems() -> Result<(), BootError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "proc", "/proc", nosuid_nodev_noexec, "")?;
    mount_fs("sysfs", "sysfs", "/sys", nosuid_nodev_noexec, "")?;
    mount_fs(
        "devtmpfs",
        "devtmpfs",
        "/dev",
        MsFlags::MS_NOSUID,
        "mode=0755",
    )?;
    ensure_standard_streams()?;
    mount_fs(
        "devpts",
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "mode=0620,ptmxmode=0666",
    )?;
    mount_fs(
        "tmpfs",
        "tmpfs",
        "/dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777",
    )?;
    link_dev_fds();
    mount_fs(
        "tmpfs",
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777",
    )?;
    mount_fs(
        "tmpfs",
        "tmpfs",
        "/run",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=0755",
    )
}

/// Makes the image the root when `hearth.rootfs` names a device: its read-only base under a
/// tmpfs-backed overlay, with /proc, /sys and /dev moved across. Without it, stays put.
pub fn switch_to_image_root(cmdline: &KernelCmdline) -> Result<(), BootError> {
    let Some(device) = &cmdline.rootfs else {
        return Ok(());
    };
    let mut lowers = Vec::with_capacity(cmdline.layers);
    for index in 0..cmdline.layers {
        let device = nth_device(device, index).ok_or_else(|| BootError::TooManyLayers {
            first: device.clone(),
            layers: cmdline.layers,
        })?;
        wait_for_device(&device)?;
        let target = match cmdline.layers {
            1 => PathBuf::from(BASE),
            _ => Path::new(BASE).join(index.to_string()),
        };
        mount_fs(
            &cmdline.rootfs_type,
            &device.to_string_lossy(),
            &target,
            MsFlags::MS_RDONLY,
            "",
        )?;
        lowers.push(target.to_string_lossy().into_owned());
    }
    // overlayfs lists the top layer first.
    lowers.reverse();
    mount_fs("tmpfs", "tmpfs", RW, MsFlags::empty(), "mode=0755")?;
    mkdir(Path::new(RW).join("upper"))?;
    mkdir(Path::new(RW).join("work"))?;
    let layers = format!(
        "lowerdir={},upperdir={RW}/upper,workdir={RW}/work",
        lowers.join(":")
    );
    mount_fs("overlay", "overlay", ROOT, MsFlags::empty(), &layers)?;
    for dir in ["/proc", "/sys", "/dev"] {
        move_mount(
            Path::new(dir),
            &Path::new(ROOT).join(dir.trim_start_matches('/')),
        )?;
    }
    mount_fs(
        "tmpfs",
        "tmpfs",
        format!("{ROOT}/tmp"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777",
    )?;
    switch_root(Path::new(ROOT))
}

/// The block device `index` places after `first` (`/dev/vda` → `/dev/vdc` for 2): virtio-blk
/// names disks in the order the VMM lists them. `None` past `vdz`.
fn nth_device(first: &Path, index: usize) -> Option<PathBuf> {
    let name = first.to_str()?;
    let last = *name.as_bytes().last()?;
    let letter = u8::try_from(usize::from(last).checked_add(index)?).ok()?;
    if !last.is_ascii_lowercase() || !letter.is_ascii_lowercase() {
        return (index == 0).then(|| first.to_owned());
    }
    Some(PathBuf::from(format!(
        "{}{}",
        &name[..name.len() - 1],
        char::from(letter)
    )))
}

pub fn set_hostname(hostname: &str) -> Result<(), BootError> {
    nix::unistd::sethostname(hostname).map_err(|source| BootError::Hostname {
        hostname: hostname.to_owned(),
        source,
    })
}

fn mount_fs(
    fstype: &str,
    source: &str,
    target: impl AsRef<Path>,
    flags: MsFlags,
    data: &str,
) -> Result<(), BootError> {
    let target = target.as_ref();
    mkdir(target)?;
    let data = Some(data).filter(|d| !d.is_empty());
    mount(Some(source), target, Some(fstype), flags, data).map_err(|e| BootError::Mount {
        fstype: fstype.to_owned(),
        source_name: source.to_owned(),
        target: target.to_owned(),
        source: e,
    })
}

fn move_mount(from: &Path, to: &Path) -> Result<(), BootError> {
    mkdir(to)?;
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|source| {
        BootError::Move {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        }
    })
}

/// The initramfs root cannot be pivoted away, so the new root is moved over `/` and entered
/// with chroot, as busybox's switch_root does.
fn switch_root(root: &Path) -> Result<(), BootError> {
    let fail = |source| BootError::SwitchRoot {
        root: root.to_owned(),
        source,
    };
    nix::unistd::chdir(root).map_err(fail)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(fail)?;
    nix::unistd::chroot(".").map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

fn wait_for_device(device: &Path) -> Result<(), BootError> {
    let start = Instant::now();
    while !device.exists() {
        if start.elapsed() > DEVICE_WAIT {
            return Err(BootError::NoRootDevice {
                path: device.to_owned(),
                waited: DEVICE_WAIT,
            });
        }
        std::thread::sleep(DEVICE_POLL);
    }
    Ok(())
}

fn mkdir(path: impl AsRef<Path>) -> Result<(), BootError> {
    let path = path.as_ref();
    std::fs::create_dir_all(path).map_err(|source| BootError::Mkdir {
        path: path.to_owned(),
        source,
    })
}

/// The kernel gives init /dev/console as fds 0-2 only if the initramfs has that node; without
/// them the first files we open would become some child's stdio.
fn ensure_standard_streams() -> Result<(), BootError> {
    for fd in 0..=2 {
        if fcntl(fd, FcntlArg::F_GETFD) != Err(Errno::EBADF) {
            continue;
        }
        let console = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
            .map_err(BootError::Console)?;
        if console.as_raw_fd() != fd {
            nix::unistd::dup2(console.as_raw_fd(), fd).map_err(|e| BootError::Console(e.into()))?;
        } else {
            // It landed on the free slot itself: keep it open there for good.
            let _stdio: RawFd = console.into_raw_fd();
        }
    }
    Ok(())
}

/// The links udev would make; shells use /dev/fd for process substitution.
fn link_dev_fds() {
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        if let Err(e) = std::os::unix::fs::symlink(target, link) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                log!("failed to link {link} to {target}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_nth_device_counts_disks_after_the_first() {
        let first = Path::new("/dev/vda");
        assert_eq!(nth_device(first, 0).unwrap(), Path::new("/dev/vda"));
        assert_eq!(nth_device(first, 2).unwrap(), Path::new("/dev/vdc"));
        assert_eq!(nth_device(first, 25).unwrap(), Path::new("/dev/vdz"));
        assert_eq!(nth_device(first, 26), None);
        assert_eq!(nth_device(Path::new("/dev/sr0"), 1), None);
    }
}
