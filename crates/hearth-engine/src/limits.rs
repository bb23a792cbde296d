//! What one sandbox may ask of the host: no more vcpus than the host has CPUs, no more memory
//! than it has RAM (QEMU would map `-m 1000G` on a 24 GiB host and let the guest fault it in),
//! and no more of either than the operator's caps, `HEARTH_MAX_CPUS` and
//! `HEARTH_MAX_MEMORY_MIB`.

use crate::error::EngineError;

/// Environment variables holding the operator's caps.
pub const MAX_CPUS_ENV: &str = "HEARTH_MAX_CPUS";
pub const MAX_MEMORY_ENV: &str = "HEARTH_MAX_MEMORY_MIB";

/// One bound and where it comes from, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub value: u64,
    pub source: &'static str,
}

/// The bounds for vcpus and memory on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    pub cpus: Limit,
    pub mem_mib: Limit,
}

impl HostLimits {
    /// The host's CPUs and RAM, lowered by the caps in the environment when set.
    pub fn of_host() -> HostLimits {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let mem_mib = host_memory_mib().unwrap_or(u64::MAX);
        HostLimits {
            cpus: capped(
                Limit {
                    value: cpus,
                    source: "the host's CPUs",
                },
                MAX_CPUS_ENV,
            ),
            mem_mib: capped(
                Limit {
                    value: mem_mib,
                    source: "the host's memory",
                },
                MAX_MEMORY_ENV,
            ),
        }
    }

    /// Refuses `vcpus` or `mem_size_mib` above the bounds.
    pub fn check(&self, vcpus: u8, mem_size_mib: u32) -> Result<(), EngineError> {
        if u64::from(vcpus) > self.cpus.value {
            return Err(EngineError::TooManyCpus {
                asked: vcpus,
                limit: self.cpus.value,
                source_of_limit: self.cpus.source,
            });
        }
        if u64::from(mem_size_mib) > self.mem_mib.value {
            return Err(EngineError::TooMuchMemory {
                asked_mib: mem_size_mib,
                limit_mib: self.mem_mib.value,
                source_of_limit: self.mem_mib.source,
            });
        }
        Ok(())
    }
}

/// `limit`, or the cap in `env` when that is lower (an unreadable cap is ignored with a warning).
fn capped(limit: Limit, env: &'static str) -> Limit {
    let Some(raw) = std::env::var_os(env) else {
        return limit;
    };
    match raw.to_str().and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(cap) if cap < limit.value => Limit {
            value: cap,
            source: env,
        },
        Some(_) => limit,
        None => {
            tracing::warn!(variable = env, value = ?raw, "ignoring a cap that is not a number");
            limit
        }
    }
}

/// `MemTotal` from `/proc/meminfo`, in MiB.
fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn limits() -> HostLimits {
        HostLimits {
            cpus: Limit {
                value: 2,
                source: "the host's CPUs",
            },
            mem_mib: Limit {
                value: 4096,
                source: MAX_MEMORY_ENV,
            },
        }
    }

    #[test]
    fn test_requests_within_the_host_pass() {
        assert!(limits().check(2, 4096).is_ok());
    }

    #[test]
    fn test_more_cpus_than_the_host_has_are_refused_clearly() {
        let e = limits().check(64, 512).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "--cpus 64 is more than the 2 allowed by the host's CPUs"
        );
    }

    #[test]
    fn test_more_memory_than_the_cap_is_refused_clearly() {
        let e = limits().check(1, 1_024_000).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "--memory 1024000M is more than the 4096M allowed by HEARTH_MAX_MEMORY_MIB"
        );
    }

    #[test]
    fn test_the_host_has_some_cpus_and_memory() {
        let host = HostLimits::of_host();
        assert!(host.cpus.value >= 1);
        assert!(host.mem_mib.value >= 64);
    }
}
