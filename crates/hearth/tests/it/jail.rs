//! The VMM's jail seen from the host: who QEMU runs as, what it can see, what bounds it, and
//! that killing it still cleans everything up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_test_support::wait_until;

use crate::{hearth, host, ok, stdout};

pub(crate) fn inspect(host: &hearth_test_support::host::TestHost, name: &str) -> serde_json::Value {
    let output = hearth(host, &["inspect", name]);
    let record: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    record[0].clone()
}

/// The VMM process the supervisor `supervisor` runs.
pub(crate) fn vmm_of(supervisor: u64) -> u32 {
    let found = wait_until(Duration::from_secs(30), || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // pid (comm) state ppid ...
                let (comm, rest) = stat.split_once(") ")?;
                let ppid: u64 = rest.split_whitespace().nth(1)?.parse().ok()?;
                (ppid == supervisor && comm.ends_with("(qemu-system-x86")).then_some(pid)
            })
    });
    found.unwrap_or_else(|| panic!("no VMM under supervisor {supervisor}"))
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The directories of the VMM's cgroup: under the memory and pids controllers (v1, also where
/// a hybrid host lists an empty unified group), else the unified one (v2).
fn cgroup_dirs(pid: u32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let groups: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((controllers, path.trim_start_matches('/')))
        })
        .collect();
    let v1: Vec<PathBuf> = groups
        .iter()
        .filter(|(controllers, _)| ["memory", "pids"].contains(controllers))
        .map(|(controllers, path)| Path::new("/sys/fs/cgroup").join(controllers).join(path))
        .collect();
    if !v1.is_empty() {
        return v1;
    }
    groups
        .iter()
        .filter(|(controllers, _)| controllers.is_empty())
        .map(|(_, path)| Path::new("/sys/fs/cgroup").join(path))
        .collect()
}

fn read_limit(dirs: &[PathBuf], files: &[&str]) -> u64 {
    dirs.iter()
        .flat_map(|dir| files.iter().map(move |f| dir.join(f)))
        .find_map(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_else(|| panic!("none of {files:?} in {dirs:?}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn test_the_vmm_runs_jailed_and_killing_it_still_cleans_up() {
    let host = host();
    let id = ok(
        &host,
        &["run", "-d", "--name", "jailed", "--memory", "256M"],
    )
    .trim()
    .to_owned();
    ok(&host, &["run", "-d", "--name", "neighbour"]);
    let supervisor = inspect(&host, "jailed")["supervisor_pid"].as_u64().unwrap();
    let vmm = vmm_of(supervisor);
    let neighbour = vmm_of(
        inspect(&host, "neighbour")["supervisor_pid"]
            .as_u64()
            .unwrap(),
    );

    // Its own unprivileged uid and gid, no capabilities, NoNewPrivs, QEMU's seccomp filter.
    let uid = status_field(vmm, "Uid");
    let ids: Vec<u32> = uid.split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert!(ids.iter().all(|&v| v == ids[0] && v > 65_535), "uid {uid}");
    let gids: Vec<u32> = status_field(vmm, "Gid")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(gids.iter().all(|&v| v == ids[0]), "gid {gids:?}");
    assert_ne!(status_field(neighbour, "Uid"), uid, "two VMMs share a uid");
    for caps in ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(vmm, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(vmm, "NoNewPrivs"), "1");
    assert_eq!(status_field(vmm, "Seccomp"), "2");

    // Namespaces of its own, besides the network one hearth made.
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        let own = std::fs::read_link(format!("/proc/{vmm}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(own, ours, "the VMM shares the host's {ns} namespace");
    }
    assert_eq!(
        status_field(vmm, "NSpid").split_whitespace().last(),
        Some("1")
    );

    // Its root holds the jail's files only: no state dir, no /etc, no /proc, no home.
    let root = PathBuf::from(format!("/proc/{vmm}/root"));
    let mut entries: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let allowed = [
        "boot", "dev", "lib", "lib32", "lib64", "libx32", "memory", "usr",
    ];
    assert!(
        entries.iter().all(|e| allowed.contains(&e.as_str())),
        "jail root holds {entries:?}"
    );
    assert!(entries.contains(&"usr".to_owned()), "{entries:?}");
    let dev: Vec<_> = std::fs::read_dir(root.join("dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(dev.iter().all(|d| d == "null" || d == "kvm"), "{dev:?}");
    assert!(!root.join("etc").exists());
    assert!(!root
        .join(host.state_dir().strip_prefix("/").unwrap())
        .exists());

    // Its cgroup bounds memory (guest RAM plus QEMU's overhead) and tasks.
    let dirs = cgroup_dirs(vmm);
    assert!(
        dirs.iter()
            .all(|d| d.ends_with(Path::new("hearth").join(&id))),
        "{dirs:?}"
    );
    let memory = read_limit(&dirs, &["memory.limit_in_bytes", "memory.max"]);
    assert!(
        memory > 256 << 20 && memory < 1 << 30,
        "memory limit {memory}"
    );
    assert_eq!(read_limit(&dirs, &["pids.max"]), 256);

    // The sandbox works through all of it.
    assert_eq!(
        ok(&host, &["exec", "jailed", "--", "echo", "inside"]),
        "inside\n"
    );

    // kill -9 of the VMM: the sandbox ends and everything it had is removed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(vmm).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let ended = wait_until(Duration::from_secs(60), || {
        let state = inspect(&host, "jailed")["state"].as_str()?.to_owned();
        (state != "running").then_some(state)
    });
    assert!(ended.is_some(), "the sandbox still runs after its VMM died");
    let run_dir = host.state_dir().join("vms").join(&id);
    let cleaned = wait_until(Duration::from_secs(30), || {
        (!run_dir.exists() && dirs.iter().all(|d| !d.exists())).then_some(())
    });
    assert!(cleaned.is_some(), "run dir or cgroup left: {dirs:?}");
    hearth_test_support::netns::assert_sandbox_network_removed(&id);
    ok(&host, &["rm", "-f", "jailed", "neighbour"]);
    host.assert_clean();
}
