//! A guest restored from a snapshot becomes its own machine: the host's wall clock, a reseeded
//! RNG, its own hostname and DNS server. A cold boot gets these from the RTC, its own boot-time
//! entropy and the kernel command line; a restored guest carries the saved machine's instead,
//! the same in every clone, until the host sends a `Refresh`.
#![expect(
    unsafe_code,
    reason = "clock_settime and the RNDADDENTROPY/RNDRESEEDCRNG ioctls have no wrapper in nix 0.29 \
              with the features the agent builds"
)]

use std::fs::File;
use std::os::fd::AsRawFd;

use hearth_agent_proto::Identity;
use nix::errno::Errno;

use crate::boot;
use crate::net::{self, NetConfigError};

/// `_IOW('R', 0x03, int[2])` from `<linux/random.h>`: add entropy and credit it.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`: reseed the CRNG from the pool now rather than at its next scheduled time.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// The most entropy one refresh credits (bytes); the host sends 32.
const MAX_ENTROPY: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("failed to set the wall clock")]
    Clock(#[source] Errno),
    #[error("failed to open /dev/urandom")]
    Urandom(#[source] std::io::Error),
    #[error("the host sent {0} bytes of entropy; 1 to {MAX_ENTROPY} are accepted")]
    EntropySize(usize),
    #[error("failed to add entropy (RNDADDENTROPY)")]
    AddEntropy(#[source] Errno),
    #[error("failed to reseed the RNG (RNDRESEEDCRNG)")]
    Reseed(#[source] Errno),
    #[error(transparent)]
    Hostname(#[from] boot::BootError),
    #[error(transparent)]
    Dns(#[from] NetConfigError),
}

/// Applies everything; the clock and the RNG first, as the rest may read them.
pub fn apply(identity: &Identity) -> Result<(), IdentityError> {
    set_wall_clock(identity.unix_nanos)?;
    reseed(&identity.entropy)?;
    boot::set_hostname(&identity.hostname)?;
    if let Some(nameserver) = &identity.nameserver {
        net::write_resolv_conf(nameserver)?;
    }
    Ok(())
}

fn set_wall_clock(unix_nanos: u64) -> Result<(), IdentityError> {
    let time = libc::timespec {
        tv_sec: libc::time_t::try_from(unix_nanos / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        // Below 1e9, so it fits every c_long.
        tv_nsec: (unix_nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads one timespec through the pointer, a live local.
    let ret = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) };
    Errno::result(ret).map(drop).map_err(IdentityError::Clock)
}

/// Credits `entropy` to the input pool, then reseeds the CRNG from it, so the next random
/// bytes differ from every other clone's at once (not at the kernel's next scheduled reseed,
/// up to a minute away).
fn reseed(entropy: &[u8]) -> Result<(), IdentityError> {
    if entropy.is_empty() || entropy.len() > MAX_ENTROPY {
        return Err(IdentityError::EntropySize(entropy.len()));
    }
    let urandom = File::options()
        .write(true)
        .open("/dev/urandom")
        .map_err(IdentityError::Urandom)?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }, built in u32
    // words so the ints are aligned.
    let words = entropy.len().div_ceil(4);
    let mut info = vec![0u32; 2 + words];
    // Bounded by MAX_ENTROPY above, so these fit.
    info[0] = (entropy.len() * 8) as u32;
    info[1] = entropy.len() as u32;
    for (i, chunk) in entropy.chunks(4).enumerate() {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        info[2 + i] = u32::from_ne_bytes(word);
    }
    // SAFETY: RNDADDENTROPY reads a rand_pool_info whose buf_size bytes follow the header; the
    // vector holds the header and at least that many bytes and lives across the call.
    let ret = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    Errno::result(ret).map_err(IdentityError::AddEntropy)?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let ret = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG) };
    Errno::result(ret).map(drop).map_err(IdentityError::Reseed)
}
