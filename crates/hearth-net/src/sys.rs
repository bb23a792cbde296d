//! The calls without a safe wrapper here: creating a persistent tap (TUNSETIFF and
//! TUNSETPERSIST ioctls on `/dev/net/tun`; rtnetlink cannot create tun devices), and the
//! libnftnl set attributes the `nftnl` crate does not expose (a set's `timeout` flag and size,
//! an element's timeout), and the `fib` expression it lacks.
#![expect(
    unsafe_code,
    reason = "TUNSETIFF/TUNSETPERSIST ioctls on a file descriptor we own; libnftnl setters on \
              objects the nftnl crate allocated"
)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::ptr;
use std::time::Duration;

use nftnl::expr::Expression;
use nftnl::nftnl_sys as nft_sys;
use nftnl::set::{Set, SetKey};
use nftnl::Rule;

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

/// Opens `/dev/net/tun` attached to tap `name` in the calling thread's network namespace,
/// creating the tap if it does not exist: the fd reads and writes the tap's frames, as QEMU's.
pub fn attach_tap(name: &str) -> io::Result<File> {
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
    Ok(tun)
}

/// Creates a persistent tap named `name` in the calling thread's network namespace. It outlives
/// this call (QEMU opens it by name) and goes away with its namespace or an explicit delete.
pub(crate) fn create_persistent_tap(name: &str) -> io::Result<()> {
    let tun = attach_tap(name)?;
    // SAFETY: TUNSETPERSIST takes an integer argument by value on the fd attached above.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks `set` as holding elements with timeouts (`flags timeout`) and at most `size` of them
/// (`size`).
pub(crate) fn set_timeout_flag_and_size<K>(set: &Set<'_, K>, size: u32) {
    // SAFETY: `as_ptr` is the live `nftnl_set` that `set` owns; setting a u32 attribute copies
    // the value and keeps no pointer.
    unsafe {
        let set = set.as_ptr().as_ptr();
        nft_sys::nftnl_set_set_u32(
            set,
            nft_sys::NFTNL_SET_FLAGS as u16,
            libc::NFT_SET_TIMEOUT as u32,
        );
        nft_sys::nftnl_set_set_u32(set, nft_sys::NFTNL_SET_DESC_SIZE as u16, size);
    }
}

/// Adds `key` to `set`'s element list with `timeout` (whole milliseconds, as nftables counts).
pub(crate) fn add_elem_with_timeout<K: SetKey>(
    set: &mut Set<'_, K>,
    key: &K,
    timeout: Duration,
) -> io::Result<()> {
    let data = key.data();
    let data_len = u32::try_from(data.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    // SAFETY: a fresh element from libnftnl (checked for NULL); `nftnl_set_elem_set` copies
    // `data_len` bytes from `data`, which outlives the call; `nftnl_set_elem_add` hands the
    // element to the live set, which frees it with itself.
    unsafe {
        let elem = nft_sys::nftnl_set_elem_alloc();
        if elem.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        nft_sys::nftnl_set_elem_set(
            elem,
            nft_sys::NFTNL_SET_ELEM_KEY as u16,
            data.as_ptr().cast(),
            data_len,
        );
        nft_sys::nftnl_set_elem_set_u64(elem, nft_sys::NFTNL_SET_ELEM_TIMEOUT as u16, millis);
        nft_sys::nftnl_set_elem_add(set.as_ptr().as_ptr(), elem);
    }
    Ok(())
}

/// `fib daddr type`: what the routing table says the destination address is (an `RTN_*`
/// value in register 1), which the `nftnl` crate has no expression for.
pub(crate) struct FibDaddrType;

/// `NFTA_FIB_F_DADDR`: look the destination address up.
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
/// `NFT_FIB_RESULT_ADDRTYPE`: the result is the address's type.
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;

impl Expression for FibDaddrType {
    fn to_expr(&self, _rule: &Rule) -> ptr::NonNull<nft_sys::nftnl_expr> {
        // SAFETY: allocating an expression by its kernel name; the result is checked for NULL
        // before use, and setting u32 attributes copies the values.
        unsafe {
            let expr = nft_sys::nftnl_expr_alloc(c"fib".as_ptr());
            let Some(expr) = ptr::NonNull::new(expr) else {
                // The `nftnl` crate's own expressions treat this the same way.
                std::alloc::handle_alloc_error(std::alloc::Layout::new::<u8>());
            };
            nft_sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                nft_sys::NFTNL_EXPR_FIB_FLAGS as u16,
                NFTA_FIB_F_DADDR,
            );
            nft_sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                nft_sys::NFTNL_EXPR_FIB_RESULT as u16,
                NFT_FIB_RESULT_ADDRTYPE,
            );
            nft_sys::nftnl_expr_set_u32(
                expr.as_ptr(),
                nft_sys::NFTNL_EXPR_FIB_DREG as u16,
                libc::NFT_REG_1 as u32,
            );
            expr
        }
    }
}
