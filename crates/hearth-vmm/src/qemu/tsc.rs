//! The host's TSC frequency, for TCG guests.
//!
//! Under TCG a guest's TSC ticks at the host's rate, but the guest kernel calibrates it against
//! the emulated PIT in wall-clock windows. When the host is busy (several VMs on few cores) the
//! vCPU thread is descheduled inside those windows, calibration fails, the TSC is marked
//! unusable and the guest stalls before userspace. Measuring the rate here and passing it as
//! `tsc_early_khz=` skips that calibration. No crate exposes the host's TSC rate, and the kernel
//! publishes it nowhere readable, hence this measurement.
#![expect(
    unsafe_code,
    reason = "_rdtsc is an unsafe intrinsic; it only reads the time-stamp counter"
)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Long enough that the clock read around each counter sample adds under 0.05 % error.
const WINDOW: Duration = Duration::from_millis(10);
/// A sample whose clock bracket is wider than this was preempted and is taken again.
const MAX_BRACKET: Duration = Duration::from_micros(2);

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64 and touches no memory.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// One (time, counter) pair taken with the clock read right before and after the counter.
fn sample() -> (Instant, u64) {
    loop {
        let before = Instant::now();
        let tsc = rdtsc();
        let after = Instant::now();
        if after - before <= MAX_BRACKET {
            return (before + (after - before) / 2, tsc);
        }
    }
}

/// The host TSC rate in kHz, measured once per process.
pub fn host_tsc_khz() -> u64 {
    static KHZ: OnceLock<u64> = OnceLock::new();
    *KHZ.get_or_init(|| {
        let (t0, c0) = sample();
        std::thread::sleep(WINDOW);
        let (t1, c1) = sample();
        let nanos = (t1 - t0).as_nanos().max(1);
        let khz = u128::from(c1.wrapping_sub(c0)) * 1_000_000 / nanos;
        u64::try_from(khz).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_host_tsc_rate_is_plausible() {
        // Any x86_64 machine of the last two decades runs its TSC between 0.5 and 10 GHz.
        let khz = host_tsc_khz();
        assert!((500_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
