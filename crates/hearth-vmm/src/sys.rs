//! Process plumbing that needs `unsafe`: the parent-death signal for VMM children, running a
//! child inside a network namespace, and the VMM's jail (see [`jail`]).
#![expect(
    unsafe_code,
    reason = "pre_exec hooks are unsafe to register; each makes only async-signal-safe calls"
)]

use std::os::fd::OwnedFd;

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

/// The descriptor number the jailed VMM finds its tap on (`-netdev tap,fd=`): high, so it never
/// lands on the pipe std uses to report a failed exec.
pub(crate) const TAP_FD: i32 = 200;

/// Most files a VMM may hold open: its disks, sockets, eventfds and the tap, with room to spare.
const MAX_OPEN_FILES: u64 = 1024;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
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

/// A tap name too long for `struct ifreq`.
#[derive(Debug, thiserror::Error)]
#[error("tap name `{0}` is longer than {max} bytes", max = libc::IFNAMSIZ - 1)]
pub struct TapNameTooLong(pub String);

/// Confines the VMM child between fork and exec, after it entered its network namespace (hooks
/// run in the order registered): into its cgroup (`cgroup_procs`, each a `cgroup.procs` open
/// for writing), new IPC and UTS namespaces, the tap opened onto [`TAP_FD`] so
/// QEMU needs neither `/dev/net/tun` nor CAP_NET_ADMIN, no core files, bounded open files,
/// every capability dropped (bounding set, ambient, then effective, permitted and inheritable)
/// and NoNewPrivs, so nothing the VMM executes can gain privileges again.
///
/// A pre-exec hook rather than a re-exec of hearth as a helper: every step is one syscall on
/// values prepared before the fork, so the hook stays async-signal-safe and QEMU remains the
/// direct child hearth waits on and kills.
pub(crate) fn jail(
    command: &mut tokio::process::Command,
    tap: Option<&str>,
    cgroup_procs: Vec<std::fs::File>,
) -> Result<(), TapNameTooLong> {
    let tap = match tap {
        Some(name) if name.len() >= libc::IFNAMSIZ => {
            return Err(TapNameTooLong(name.to_owned()));
        }
        Some(name) => {
            let mut req = IfReqFlags {
                name: [0; libc::IFNAMSIZ],
                flags: IFF_TAP | IFF_NO_PI,
                _pad: [0; 22],
            };
            req.name[..name.len()].copy_from_slice(name.as_bytes());
            Some(req)
        }
        None => None,
    };
    // SAFETY: the hook runs between fork and exec and makes only async-signal-safe syscalls
    // (write, unshare, open, ioctl, dup2, close, setrlimit, prctl, capset) on values built before the
    // fork and moved in; it allocates nothing and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            use nix::sched::{unshare, CloneFlags};
            use nix::sys::resource::{setrlimit, Resource};
            use std::os::fd::AsRawFd;
            // Into the VMM's cgroup first, so all it does from here on is counted.
            for procs in &cgroup_procs {
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)?;
            if let Some(mut req) = tap {
                let tun = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR);
                if tun < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(tun, TUNSETIFF, &mut req as *mut IfReqFlags) < 0
                    || libc::dup2(tun, TAP_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(tun);
            }
            setrlimit(Resource::RLIMIT_CORE, 0, 0)?;
            setrlimit(Resource::RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES)?;
            for cap in 0..CAP_NUMBERS {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                    break;
                }
            }
            if libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
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
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}
