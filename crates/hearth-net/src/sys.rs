//! The one system call without a safe wrapper here: creating a persistent tap (TUNSETIFF and
//! TUNSETPERSIST ioctls on `/dev/net/tun`). rtnetlink cannot create tun devices.
#![expect(
    unsafe_code,
    reason = "TUNSETIFF/TUNSETPERSIST are raw ioctls on a file descriptor we own"
)]

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates a persistent tap named `name` in the calling thread's network namespace. It outlives
/// this call (QEMU opens it by name) and goes away with its namespace or an explicit delete.
pub(crate) fn create_persistent_tap(name: &str) -> io::Result<()> {
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: `tun` is an open tun control fd; TUNSETIFF reads a `struct ifreq`, which
    // `IfReqFlags` matches in layout and size (40 bytes), and `req` lives across the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReqFlags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETPERSIST takes an integer argument by value on the fd attached above.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
