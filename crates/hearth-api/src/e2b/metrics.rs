//! `GET /sandboxes/{id}/metrics` (`get_metrics()`): one sample, taken now, as the guest sees
//! itself. One short `/bin/sh` exec reads `/proc/stat` twice half a second apart (CPU use is
//! the share of non-idle time between them), `/proc/meminfo` and `stat -f /` (in coreutils and
//! busybox alike, where `df` often is not). The guest's view
//! rather than the host's (the VMM process's CPU time and RSS), because that is what E2B
//! reports: what the sandbox's processes use, not QEMU's own overhead, and not pages a
//! restored sandbox shares with its snapshot. The guest writes the text, so it is bounded,
//! timed out and parsed without trusting it.

use std::time::Duration;

use hearth_engine::{Engine, EngineError, ExecError, ExecEvent, ExecRequest, ExitStatus};
use serde_json::{json, Value};

const SEPARATOR: &str = "@@hearth@@";
/// `; true` at the end: an image without `stat` still gives CPU and memory (disk reads as 0).
const SCRIPT: &str = "cat /proc/stat; echo @@hearth@@; sleep 0.5; cat /proc/stat; \
                      echo @@hearth@@; cat /proc/meminfo; echo @@hearth@@; \
                      stat -f -c '%S %b %f' / 2>/dev/null; true";
/// More than `/proc/stat` of a few hundred CPUs: the rest is a guest misbehaving.
const MAX_OUTPUT: usize = 256 * 1024;
/// TCG guests are slow; a sample is not worth holding a request longer.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("failed to start the metrics command in the guest")]
    Start(#[source] Box<EngineError>),
    #[error("lost the guest's metrics command")]
    Output(#[source] ExecError),
    #[error("the guest's metrics command wrote over {MAX_OUTPUT} bytes")]
    TooLarge,
    #[error("the guest's metrics command took over {} s", DEADLINE.as_secs())]
    Timeout,
    #[error("the guest's metrics command ended with {0:?}")]
    Failed(ExitStatus),
    #[error("the guest's {0} did not read as expected")]
    Unreadable(&'static str),
}

/// One sample, in E2B's units (bytes, percent).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub cpu_count: u64,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// Samples running hearth sandbox `sandbox`; `env` is the environment its processes get (for
/// `PATH`).
pub async fn sample(
    engine: &Engine,
    sandbox: &str,
    env: Vec<String>,
) -> Result<Sample, MetricsError> {
    let request = ExecRequest {
        argv: vec!["/bin/sh".to_owned(), "-c".to_owned(), SCRIPT.to_owned()],
        env,
        cwd: None,
        tty: None,
        stdin: false,
        user: None,
    };
    let (_pid, _input, mut output) = engine
        .exec(sandbox, request)
        .await
        .map_err(|e| MetricsError::Start(Box::new(e)))?;
    // Dropping the exec on a timeout or an overflow hangs up on it, which kills it.
    let collect = async {
        let mut stdout = Vec::new();
        loop {
            match output.next().await.map_err(MetricsError::Output)? {
                Some(ExecEvent::Stdout(data)) => {
                    if stdout.len() + data.len() > MAX_OUTPUT {
                        return Err(MetricsError::TooLarge);
                    }
                    stdout.extend_from_slice(&data);
                }
                Some(ExecEvent::Stderr(_)) => {}
                Some(ExecEvent::Exited(ExitStatus::Code(0))) => return Ok(stdout),
                Some(ExecEvent::Exited(status)) => return Err(MetricsError::Failed(status)),
                None => return Err(MetricsError::Failed(ExitStatus::Code(-1))),
            }
        }
    };
    let stdout = tokio::time::timeout(DEADLINE, collect)
        .await
        .map_err(|_| MetricsError::Timeout)??;
    parse(&String::from_utf8_lossy(&stdout))
}

/// E2B's `SandboxMetric`, stamped `now` (Unix seconds).
pub fn metric_json(sample: &Sample, now: i64) -> Value {
    let timestamp = chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "timestamp": timestamp,
        "timestampUnix": now,
        "cpuCount": sample.cpu_count,
        "cpuUsedPct": sample.cpu_used_pct,
        "memUsed": sample.mem_used,
        "memTotal": sample.mem_total,
        "memCache": sample.mem_cache,
        "diskUsed": sample.disk_used,
        "diskTotal": sample.disk_total,
    })
}

fn parse(text: &str) -> Result<Sample, MetricsError> {
    let mut sections = text.split(SEPARATOR);
    let mut next = || sections.next().unwrap_or_default();
    let (first, second, meminfo, statfs) = (next(), next(), next(), next());
    let before = cpu_times(first).ok_or(MetricsError::Unreadable("/proc/stat"))?;
    let after = cpu_times(second).ok_or(MetricsError::Unreadable("/proc/stat"))?;
    let cpu_count = first
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64;
    let total = after.total.saturating_sub(before.total);
    let idle = after.idle.saturating_sub(before.idle);
    let cpu_used_pct = if total == 0 {
        0.0
    } else {
        // Rounded as E2B's are: two decimals.
        let pct = total.saturating_sub(idle) as f64 * 100.0 / total as f64;
        (pct * 100.0).round() / 100.0
    };
    let kib = |key: &str| meminfo_kib(meminfo, key).map(|v| v.saturating_mul(1024));
    let mem_total = kib("MemTotal").ok_or(MetricsError::Unreadable("/proc/meminfo"))?;
    let available = kib("MemAvailable")
        .or_else(|| kib("MemFree"))
        .ok_or(MetricsError::Unreadable("/proc/meminfo"))?;
    let (disk_total, disk_used) = root_fs(statfs).unwrap_or((0, 0));
    Ok(Sample {
        cpu_count: cpu_count.max(1),
        cpu_used_pct,
        mem_used: mem_total.saturating_sub(available),
        mem_total,
        mem_cache: kib("Cached").unwrap_or(0),
        disk_used,
        disk_total,
    })
}

struct CpuTimes {
    total: u64,
    idle: u64,
}

/// The aggregate `cpu` line: user nice system idle iowait irq softirq steal (guest time is
/// already in user).
fn cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    let total = fields.iter().fold(0u64, |sum, v| sum.saturating_add(*v));
    let idle = fields[3].saturating_add(fields.get(4).copied().unwrap_or(0));
    Some(CpuTimes { total, idle })
}

fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `stat -f -c '%S %b %f' /`: block size, blocks, free blocks; (total, used) in bytes.
fn root_fs(statfs: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = statfs
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [size, blocks, free] = fields[..] else {
        return None;
    };
    Some((
        blocks.saturating_mul(size),
        blocks.saturating_sub(free).saturating_mul(size),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_sample_reads_proc_and_statfs() {
        let text = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\n\
                    cpu1 50 0 50 400 0 0 0 0 0 0\nintr 1\n@@hearth@@\n\
                    cpu  150 0 150 900 0 0 0 0 0 0\n@@hearth@@\n\
                    MemTotal:        1000 kB\nMemFree:  100 kB\nMemAvailable:     600 kB\n\
                    Cached:  200 kB\n@@hearth@@\n4096 100 75\n";
        let sample = parse(text).unwrap();
        assert_eq!(sample.cpu_count, 2);
        assert_eq!(sample.cpu_used_pct, 50.0);
        assert_eq!(sample.mem_total, 1_024_000);
        assert_eq!(sample.mem_used, 400 * 1024);
        assert_eq!(sample.mem_cache, 200 * 1024);
        assert_eq!((sample.disk_total, sample.disk_used), (409_600, 102_400));
    }

    #[test]
    fn test_garbage_from_the_guest_is_refused_not_trusted() {
        assert!(matches!(
            parse("cpu  x y z\n"),
            Err(MetricsError::Unreadable(_))
        ));
        let no_stat =
            "cpu  1 0 1 1\n@@hearth@@cpu  1 0 1 1\n@@hearth@@MemTotal: 8 kB\nMemFree: 4 kB\n";
        let sample = parse(no_stat).unwrap();
        assert_eq!((sample.cpu_used_pct, sample.disk_total), (0.0, 0));
        assert_eq!(sample.cpu_count, 1);
    }
}
