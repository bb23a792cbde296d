//! Snapshots: `snapshot create` of a running detached sandbox, `ls`, `inspect`, `rm`; a save cut
//! short by kill -9 leaves nothing behind.

use std::process::Stdio;
use std::time::{Duration, Instant};

use hearth_test_support::host::TestHost;

use crate::{code, hearth, host, ok, stderr, stdout};

/// Runs `script` with `sh -c` in sandbox `name`; its stdout.
fn sh(host: &TestHost, name: &str, script: &str) -> String {
    ok(host, &["exec", name, "--", "sh", "-c", script])
}

/// Runs hearth, expecting it to fail with `message` in its stderr.
fn fails(host: &TestHost, args: &[&str], message: &str) {
    let output = hearth(host, args);
    assert_ne!(code(&output), 0, "hearth {args:?} succeeded");
    assert!(stderr(&output).contains(message), "{}", stderr(&output));
}

fn snapshot_dir_entries(host: &TestHost) -> Vec<String> {
    std::fs::read_dir(host.state_dir().join("snapshots"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn test_snapshot_create_ls_inspect_rm_and_resume() {
    let host = host();
    ok(&host, &["run", "-d", "--name", "src", "--network", "none"]);
    ok(
        &host,
        &["exec", "src", "--", "sh", "-c", "echo kept > /tmp/f"],
    );

    assert_eq!(ok(&host, &["snapshot", "create", "src", "one"]), "one\n");
    // The sandbox resumed: the same VM, still serving execs.
    assert_eq!(ok(&host, &["exec", "src", "--", "cat", "/tmp/f"]), "kept\n");

    let listed: serde_json::Value =
        serde_json::from_str(&ok(&host, &["snapshot", "ls", "--json"])).unwrap();
    let meta = &listed[0];
    assert_eq!(meta["name"], "one");
    assert_eq!(meta["sandbox_name"], "src");
    assert_eq!(meta["image"], "default");
    assert_eq!(meta["mem_size_mib"], 512);
    assert_eq!(meta["network"], false);
    assert!(
        meta["vmm_version"].as_str().unwrap().contains("QEMU"),
        "{meta}"
    );
    assert!(meta["kernel_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(meta["size"].as_u64().unwrap() > 1_000_000, "{meta}");
    assert!(ok(&host, &["snapshot", "ls"]).contains("one"));
    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&host, &["snapshot", "inspect", "one"])).unwrap();
    assert_eq!(&inspected[0], meta);

    // Names are unique.
    fails(
        &host,
        &["snapshot", "create", "src", "one"],
        "already exists",
    );

    // --stop ends the sandbox once saved.
    assert_eq!(
        ok(&host, &["snapshot", "create", "--stop", "src", "two"]),
        "two\n"
    );
    let record: serde_json::Value = serde_json::from_str(&ok(&host, &["inspect", "src"])).unwrap();
    assert_eq!(record[0]["state"], "exited", "{record}");

    assert_eq!(ok(&host, &["snapshot", "rm", "one", "two"]), "one\ntwo\n");
    assert_eq!(ok(&host, &["snapshot", "ls", "--json"]).trim(), "[]");
    fails(
        &host,
        &["snapshot", "inspect", "one"],
        "no snapshot named `one`",
    );
    assert!(snapshot_dir_entries(&host).is_empty());
    ok(&host, &["rm", "src"]);
    host.assert_clean();
}

#[test]
fn test_snapshot_killed_mid_save_leaves_nothing() {
    let host = host();
    ok(&host, &["run", "-d", "--name", "src", "--network", "none"]);
    let mut create = host
        .hearth()
        .args(["snapshot", "create", "src", "cut"])
        .spawn()
        .unwrap();
    // Killed once it has started writing: its temporary dir exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshot_dir_entries(&host).is_empty() {
        assert!(Instant::now() < deadline, "the save never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    create.kill().unwrap();
    create.wait().unwrap();
    // Never listed, never restorable; gc (also run by ls) removes the rest.
    assert_eq!(ok(&host, &["snapshot", "ls", "--json"]).trim(), "[]");
    fails(
        &host,
        &["snapshot", "inspect", "cut"],
        "no snapshot named `cut`",
    );
    ok(&host, &["gc"]);
    assert!(
        snapshot_dir_entries(&host).is_empty(),
        "{:?}",
        snapshot_dir_entries(&host)
    );
    // The sandbox lives on.
    assert_eq!(ok(&host, &["exec", "src", "--", "echo", "up"]), "up\n");
    ok(&host, &["rm", "-f", "src"]);
    host.assert_clean();
}

/// Four clones of one snapshot, started at once: each has the saved file and the saved
/// process still counting, writes of its own, its own hostname, clock and random bytes; the
/// snapshot serves again once they are gone, and a tampered one is refused before any VM.
#[test]
fn test_clones_resume_the_snapshot_each_as_its_own_machine() {
    const CLONES: usize = 10;
    let host = host();
    ok(&host, &["run", "-d", "--name", "src"]);
    ok(
        &host,
        &["exec", "src", "--", "sh", "-c", "echo kept > /tmp/f"],
    );
    ok(
        &host,
        &[
            "exec",
            "src",
            "--",
            "sh",
            "-c",
            "setsid sh -c 'while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done' \
             </dev/null >/dev/null 2>&1 &",
        ],
    );
    ok(&host, &["snapshot", "create", "--stop", "src", "base"]);
    let ram = host.state_dir().join("snapshots/base/ram");
    let ram_digest = || {
        let output = std::process::Command::new("sha256sum")
            .arg(&ram)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let saved_ram = ram_digest();

    let starts: Vec<_> = (0..CLONES)
        .map(|i| {
            host.hearth()
                .args(["run", "-d", "--from-snapshot", "base", "--name"])
                .arg(format!("clone-{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ids: Vec<String> = starts
        .into_iter()
        .map(|start| {
            let output = start.wait_with_output().unwrap();
            assert_eq!(code(&output), 0, "{}", stderr(&output));
            stdout(&output).trim().to_owned()
        })
        .collect();

    let mut randoms = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let name = format!("clone-{i}");
        // Nothing ran in it before this, so this is its first read of the reseeded RNG.
        let random = sh(&host, &name, "head -c 16 /dev/urandom | od -An -tx1");
        randoms.push(random);
        assert_eq!(ok(&host, &["exec", &name, "--", "cat", "/tmp/f"]), "kept\n");
        assert_eq!(ok(&host, &["exec", &name, "--", "hostname"]).trim(), id);
        let guest: i64 = ok(&host, &["exec", &name, "--", "date", "+%s"])
            .trim()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((guest - now).abs() <= 2, "guest clock {guest}, host {now}");
        let count = |host: &TestHost| -> u64 {
            ok(host, &["exec", &name, "--", "cat", "/tmp/counter"])
                .trim()
                .parse()
                .unwrap()
        };
        let before = count(&host);
        std::thread::sleep(Duration::from_millis(1500));
        assert!(count(&host) > before, "the saved counter stopped in {name}");
        sh(&host, &name, &format!("echo {name} > /tmp/mine"));
    }
    for i in 0..CLONES {
        let name = format!("clone-{i}");
        assert_eq!(
            ok(&host, &["exec", &name, "--", "cat", "/tmp/mine"]),
            format!("{name}\n"),
            "clones see only their own writes"
        );
    }
    // Every clone maps the snapshot's memory file copy-on-write (the jail binds it in as
    // `/memory`, so the mapping is found by inode), and it never changes.
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&ram).unwrap());
    let state = host.state_dir().to_string_lossy().into_owned();
    let mapping: Vec<u32> = hearth_test_support::host::processes_mentioning(state.as_bytes())
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("mem-path=/memory,share=off")
                && maps
                    .lines()
                    .any(|line| line.split_whitespace().nth(4) == Some(inode.to_string().as_str()))
        })
        .collect();
    assert_eq!(mapping.len(), CLONES, "QEMUs mapping the snapshot's RAM");
    assert_eq!(ram_digest(), saved_ram, "the clones' writes stayed private");
    let mut distinct = randoms.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        CLONES,
        "clones share random bytes: {randoms:?}"
    );

    for i in 0..CLONES {
        ok(&host, &["rm", "-f", &format!("clone-{i}")]);
    }
    // Reusable once the clones are gone, also as a one-shot run.
    let output = ok(
        &host,
        &["run", "--from-snapshot", "base", "--", "cat", "/tmp/f"],
    );
    assert_eq!(output, "kept\n");
    assert_eq!(ram_digest(), saved_ram);

    // A snapshot from another QEMU is refused before any VM starts.
    let meta_path = host.state_dir().join("snapshots/base/snapshot.json");
    let saved_meta = std::fs::read(&meta_path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&saved_meta).unwrap();
    meta["vmm_version"] = "QEMU emulator version 99.0.0".into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    fails(
        &host,
        &["run", "--from-snapshot", "base", "--", "true"],
        "snapshot `base` cannot be restored here: it was saved with VMM `QEMU emulator version 99.0.0`",
    );
    assert!(
        std::fs::read_dir(host.state_dir().join("vms")).map_or(true, |mut d| d.next().is_none())
    );
    ok(&host, &["rm", "src"]);

    // Removing a snapshot a running clone maps is allowed: the clone keeps its mapping of the
    // unlinked memory file, whose blocks are freed once the clone is gone.
    std::fs::write(&meta_path, saved_meta).unwrap();
    ok(
        &host,
        &["run", "-d", "--from-snapshot", "base", "--name", "late"],
    );
    ok(&host, &["snapshot", "rm", "base"]);
    assert_eq!(
        ok(&host, &["exec", "late", "--", "cat", "/tmp/f"]),
        "kept\n"
    );
    ok(&host, &["rm", "-f", "late"]);
    host.assert_clean();
}
