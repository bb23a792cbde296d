//! Finding host processes by their command line, the way hearth recognises what it started.

use std::path::Path;

/// Pids of live processes whose command line contains `needle`. Zombies have an empty command
/// line, so they never match.
pub fn processes_mentioning(needle: &[u8]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

/// Pids of live processes whose command line names something inside `dir` (a sandbox's run
/// dir: its VMM is named after it, see `-name` in hearth-vmm's `qemu/cmdline.rs`).
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    processes_mentioning(&needle)
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    /// A process whose command line names `file` until it is killed.
    fn follow(file: &Path) -> Child {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, "").unwrap();
        let child = Command::new("tail")
            .arg("-f")
            .arg(file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // `spawn` can return before /proc shows the new command line.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let needle = file.as_os_str().as_encoded_bytes();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read(&cmdline).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle)) {
            assert!(Instant::now() < deadline, "`tail -f` did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    #[test]
    fn test_processes_in_finds_a_process_naming_a_file_in_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = follow(&dir.path().join("console.log"));
        let found = processes_in(dir.path());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, vec![child.id()]);
    }

    #[test]
    fn test_processes_in_ignores_a_sibling_dir_with_the_same_prefix() {
        // Run dir `vms/a` must not claim the processes of `vms/ab`.
        let parent = tempfile::tempdir().unwrap();
        let mut child = follow(&parent.path().join("ab/console.log"));
        let found = processes_in(&parent.path().join("a"));
        let _ = child.kill();
        let _ = child.wait();
        assert!(!found.contains(&child.id()), "{found:?}");
    }
}
