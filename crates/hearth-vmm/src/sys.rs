//! Process plumbing that needs `unsafe`: the parent-death signal for VMM children, running a
//! child inside a network namespace, the VMM's confinement (see [`confine`]), and pidfds for a
//! VMM that is not hearth's child (see [`pidfd_open`]).
#![expect(
    unsafe_code,
    reason = "pre_exec hooks are unsafe to register; each makes only async-signal-safe calls; \
              pidfd_open(2) and pidfd_send_signal(2) have no safe wrapper in nix, nor do descriptors \
              received with SCM_RIGHTS"
)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Makes the child get SIGKILL when the thread that spawned it dies, so a killed hearth never
/// leaves a VMM or helper process running.
pub(crate) fn kill_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the hook runs between fork and exec and calls only prctl(2), which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// Makes the child enter the network namespace `netns` before it executes, so QEMU opens the
/// sandbox's tap and its traffic never touches the host namespace directly.
pub(crate) fn enter_netns(command: &mut tokio::process::Command, netns: OwnedFd) {
    // SAFETY: the hook runs between fork and exec and calls only setns(2), which is
    // async-signal-safe; `netns` is an open namespace fd moved into the hook and only read.
    unsafe {
        command.pre_exec(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
        });
    }
}

/// A pidfd for process `pid`, registered with the runtime: it becomes readable when the
/// process exits, and signals sent through it reach that process even after its pid is reused.
/// How hearth holds a Firecracker that the jailer started in a pid namespace of its own and so
/// is not hearth's child. Must be called within a tokio runtime.
pub(crate) fn pidfd_open(pid: u32) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open(2) takes a pid and flags by value and returns a new descriptor or -1;
    // no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an `OwnedFd` keeps its descriptor open, and `as_raw_fd` returns that same one,
    // until it is dropped, which happens only with the `AsyncFd` that owns it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)
}

/// Sends SIGKILL to the process `pidfd` refers to. A process that already exited is not an
/// error: it is what the caller wanted.
pub(crate) fn pidfd_kill(pidfd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal(2) reads a descriptor `pidfd` keeps open, a signal number, a
    // null siginfo (the kernel then fills one in as kill(2) does) and flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match rc {
        0 => Ok(()),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            e => Err(e),
        },
    }
}

/// Descriptor numbers the VMM finds its tap, sockets and disks on: high, so they never land on
/// descriptors the hook still needs (the pipe std uses to report a failed exec is low).
pub(crate) const TAP_FD: i32 = 200;
pub(crate) const CONSOLE_FD: i32 = 201;
pub(crate) const QMP_FD: i32 = 202;
pub(crate) const AGENT_FD: i32 = 203;
pub(crate) const FIRST_DISK_FD: i32 = 210;
/// Handed-over descriptors are first copied at or above this, above every target, so placing
/// one never overwrites another still to be placed.
const STAGING_FD: i32 = 300;
/// Most descriptors handed over besides the tap (a fixed array: the hook cannot allocate).
pub(crate) const MAX_HANDOVER: usize = 16;

/// Most files a VMM may hold open: its disks, sockets, eventfds and the tap, with room to spare.
const MAX_OPEN_FILES: u64 = 1024;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Virtio-net headers on the tap, as QEMU asks for when it opens a tap by name: offloads work,
/// and saved states of either kind load.
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_LINUX_CAPABILITY_VERSION_3`: capsets of two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `PR_CAP_AMBIENT` and its `PR_CAP_AMBIENT_CLEAR_ALL` operation.
const PR_CAP_AMBIENT: libc::c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;
/// Capabilities are numbered below this; dropping one the kernel does not know is refused
/// with EINVAL, which ends the loop.
const CAP_NUMBERS: libc::c_ulong = 64;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Why the VMM's descriptors cannot be handed over.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("tap name `{0}` is longer than {max} bytes", max = libc::IFNAMSIZ - 1)]
    TapNameTooLong(String),
    #[error("{0} descriptors to hand over; at most {MAX_HANDOVER} fit")]
    TooMany(usize),
}

/// What the VMM gets as open descriptors: the tap named `tap` (attached by the hook, so QEMU
/// needs neither `/dev/net/tun` nor CAP_NET_ADMIN) and `fds`, each at its target number.
#[derive(Debug, Default)]
pub(crate) struct Handover {
    pub tap: Option<String>,
    pub fds: Vec<(OwnedFd, i32)>,
}

/// The jail as the hook applies it (see [`crate::jail`]), everything made before the fork.
#[derive(Debug)]
pub(crate) struct JailExec {
    pub id: u32,
    pub groups: Vec<libc::gid_t>,
    pub root: std::ffi::CString,
    pub mounts: Vec<crate::jail::MountStep>,
    /// The VMM's cgroup's `cgroup.procs` files, open for writing.
    pub cgroup_procs: Vec<std::fs::File>,
}

/// Confines the VMM child between fork and exec, after it entered its network namespace (hooks
/// run in the order registered). Always: its descriptors placed (see [`Handover`]), no core
/// files, bounded open files, no ambient capabilities, NoNewPrivs. With `jail` (hearth runs as
/// root), first into its cgroup, then new mount, IPC and UTS namespaces (the pid namespace is
/// the spawning thread's), the jail's bind mounts and `pivot_root` into it, its own uid and
/// gid, every capability dropped from the bounding set and all sets cleared.
///
/// A pre-exec hook rather than a re-exec of hearth as a helper: every step is one syscall on
/// values prepared before the fork, so the hook stays async-signal-safe and QEMU remains the
/// direct child hearth waits on and kills.
pub(crate) fn confine(
    command: &mut tokio::process::Command,
    handover: Handover,
    jail: Option<JailExec>,
) -> Result<(), HandoverError> {
    if handover.fds.len() > MAX_HANDOVER {
        return Err(HandoverError::TooMany(handover.fds.len()));
    }
    let tap = match handover.tap {
        Some(name) if name.len() >= libc::IFNAMSIZ => {
            return Err(HandoverError::TapNameTooLong(name));
        }
        Some(name) => {
            let mut req = IfReqFlags {
                name: [0; libc::IFNAMSIZ],
                flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
                _pad: [0; 22],
            };
            req.name[..name.len()].copy_from_slice(name.as_bytes());
            Some(req)
        }
        None => None,
    };
    let fds = handover.fds;
    // SAFETY: the hook runs between fork and exec and makes only async-signal-safe syscalls
    // (write, fcntl, open, ioctl, dup2, close, unshare, mount, chdir, pivot_root, umount2,
    // setrlimit, setgroups, setresgid, setresuid, prctl, capset) on values built before the
    // fork and moved in; it allocates nothing and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            use nix::sys::resource::{setrlimit, Resource};
            use std::os::fd::AsRawFd;
            let fail = || Err(std::io::Error::last_os_error());
            if let Some(jail) = &jail {
                // Into the VMM's cgroup first, so all it does from here on is counted.
                for procs in &jail.cgroup_procs {
                    if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) < 0 {
                        return fail();
                    }
                }
            }
            let mut staged = [-1; MAX_HANDOVER];
            for (slot, (fd, _)) in staged.iter_mut().zip(&fds) {
                *slot = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, STAGING_FD);
                if *slot < 0 {
                    return fail();
                }
            }
            if let Some(mut req) = tap {
                let tun = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                if tun < 0 {
                    return fail();
                }
                if libc::ioctl(tun, TUNSETIFF, &mut req as *mut IfReqFlags) < 0
                    || libc::dup2(tun, TAP_FD) < 0
                {
                    return fail();
                }
                libc::close(tun);
            }
            for (staged, (_, target)) in staged.iter().zip(&fds) {
                if libc::dup2(*staged, *target) < 0 {
                    return fail();
                }
            }
            if let Some(jail) = &jail {
                enter_jail(jail)?;
            }
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            setrlimit(Resource::RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES)?;
            if let Some(jail) = &jail {
                if libc::setgroups(jail.groups.len(), jail.groups.as_ptr()) < 0
                    || libc::setresgid(jail.id, jail.id, jail.id) < 0
                {
                    return fail();
                }
                for cap in 0..CAP_NUMBERS {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                        break;
                    }
                }
            }
            if libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 {
                return fail();
            }
            if let Some(jail) = &jail {
                // Leaving uid 0 clears every capability set; it also clears the parent-death
                // signal, which is set again.
                if libc::setresuid(jail.id, jail.id, jail.id) < 0 {
                    return fail();
                }
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            }
            nix::sys::prctl::set_no_new_privs()?;
            let mut header = CapHeader {
                version: CAPABILITY_VERSION_3,
                pid: 0,
            };
            let data = [CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            if libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            ) < 0
            {
                return fail();
            }
            Ok(())
        });
    }
    Ok(())
}

/// New mount, IPC and UTS namespaces, the jail's mounts, and `pivot_root` into it, leaving
/// nothing of the host's tree reachable.
///
/// # Safety
/// Called only from the pre-exec hook; makes only async-signal-safe syscalls.
unsafe fn enter_jail(jail: &JailExec) -> std::io::Result<()> {
    use crate::jail::BindKind;
    use nix::sched::{unshare, CloneFlags};
    let null = std::ptr::null::<libc::c_char>();
    let fail = || Err(std::io::Error::last_os_error());
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)?;
    // Private first: nothing mounted from here on propagates back to the host.
    if libc::mount(
        null,
        c"/".as_ptr(),
        null,
        libc::MS_REC | libc::MS_PRIVATE,
        null.cast(),
    ) < 0
    {
        return fail();
    }
    // The root must be a mount point for pivot_root, and bound before what goes inside it.
    let root = jail.root.as_ptr();
    if libc::mount(root, root, null, libc::MS_BIND, null.cast()) < 0 {
        return fail();
    }
    for step in &jail.mounts {
        let target = step.target.as_ptr();
        if libc::mount(
            step.source.as_ptr(),
            target,
            null,
            libc::MS_BIND,
            null.cast(),
        ) < 0
        {
            return fail();
        }
        let flags = libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_NOSUID
            | match step.kind {
                BindKind::ReadOnly => libc::MS_RDONLY | libc::MS_NODEV,
                BindKind::Writable => libc::MS_NODEV | libc::MS_NOEXEC,
                BindKind::Device => libc::MS_RDONLY | libc::MS_NOEXEC,
            };
        if libc::mount(null, target, null, flags, null.cast()) < 0 {
            return fail();
        }
    }
    let dot = c".".as_ptr();
    if libc::chdir(root) < 0
        || libc::syscall(libc::SYS_pivot_root, dot, dot) < 0
        || libc::umount2(dot, libc::MNT_DETACH) < 0
        || libc::chdir(c"/".as_ptr()) < 0
    {
        return fail();
    }
    let read_only =
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    if libc::mount(null, c"/".as_ptr(), null, read_only, null.cast()) < 0 {
        return fail();
    }
    Ok(())
}

/// Takes ownership of a descriptor the kernel installed in this process with `SCM_RIGHTS`.
pub(crate) fn received_fd(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: recvmsg(2) just created this descriptor for us; nothing else owns or closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
