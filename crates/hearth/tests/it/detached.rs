//! Detached sandboxes: `run -d`, exec, ls, inspect, logs, wait, stop, kill, rm, gc.

use std::io::Write;
use std::process::{Output, Stdio};

use hearth_test_support::host::TestHost;

use crate::{code, first_line, hearth, host, ok, stderr, stdout};

/// Starts hearth with its stdout and stderr piped, for a test that acts while it runs.
fn spawn(host: &TestHost, args: &[&str]) -> std::process::Child {
    host.hearth()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn inspect(host: &TestHost, sandbox: &str) -> serde_json::Value {
    let json = ok(host, &["inspect", sandbox]);
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    records[0].clone()
}

#[test]
fn test_detached_sandbox_exec_ls_stop_rm() {
    let host = host();
    let id = ok(&host, &["run", "-d", "--name", "web"]).trim().to_owned();
    assert_eq!(id.len(), 12, "run -d prints the id: {id:?}");
    let listed: serde_json::Value = serde_json::from_str(&ok(&host, &["ls", "--json"])).unwrap();
    assert_eq!(listed[0]["name"], "web");
    assert_eq!(listed[0]["state"], "running");
    let backend = listed[0]["backend"].as_str().unwrap();
    assert!(["qemu-tcg", "qemu-kvm"].contains(&backend), "{backend}");
    assert!(ok(&host, &["ls"]).contains(backend), "ls shows the backend");

    // exec by name and by id prefix, with exit status and separate streams.
    let output = hearth(
        &host,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 3",
        ],
    );
    assert_eq!(
        (code(&output), stdout(&output), stderr(&output)),
        (3, "hi\n".into(), "oops\n".into())
    );
    let output = hearth(&host, &["exec", &id[..6], "--", "/nope"]);
    assert_eq!(code(&output), 127);

    // State persists between execs: it is one VM.
    ok(
        &host,
        &["exec", "web", "--", "sh", "-c", "echo kept > /tmp/f"],
    );
    assert_eq!(ok(&host, &["exec", "web", "--", "cat", "/tmp/f"]), "kept\n");

    // stdin, and 20 execs at once.
    let mut child = host
        .hearth()
        .args(["exec", "-i", "web", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    assert_eq!(stdout(&child.wait_with_output().unwrap()), "piped\n");
    let children: Vec<_> = (0..20)
        .map(|i| {
            host.hearth()
                .args([
                    "exec",
                    "web",
                    "--",
                    "sh",
                    "-c",
                    &format!("sleep 0.5; echo {i}"),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert_eq!((code(&output), stdout(&output)), (0, format!("{i}\n")));
    }

    // Names are unique; a running sandbox is not removed without -f.
    let output = hearth(&host, &["run", "-d", "--name", "web"]);
    assert_eq!(code(&output), 125);
    assert!(
        stderr(&output).contains("`web` is already in use"),
        "{}",
        stderr(&output)
    );
    let output = hearth(&host, &["rm", "web"]);
    assert!(
        stderr(&output).contains("stop it first"),
        "{}",
        stderr(&output)
    );

    ok(&host, &["stop", "web"]);
    let record = inspect(&host, "web");
    assert_eq!(record["state"], "exited");
    assert_eq!(record["exit_code"], 143);
    let output = hearth(&host, &["exec", "web", "--", "true"]);
    assert!(
        stderr(&output).contains("not running"),
        "{}",
        stderr(&output)
    );
    assert!(
        ok(&host, &["ls"]).lines().count() == 1,
        "only the header once stopped"
    );
    host.assert_clean();

    ok(&host, &["rm", "web"]);
    let output = hearth(&host, &["inspect", "web"]);
    assert!(
        stderr(&output).contains("no sandbox is named"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn test_detached_main_process_logs_wait_and_timeout() {
    let host = host();
    let id = ok(
        &host,
        &[
            "run",
            "-d",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 5",
        ],
    );
    let id = id.trim();
    assert_eq!(ok(&host, &["wait", id]), "5\n");
    let logs = ok(&host, &["logs", id]);
    assert!(logs.contains("out\n") && logs.contains("err\n"), "{logs}");

    let id = ok(&host, &["run", "-d", "--timeout", "2s"]);
    let id = id.trim();
    assert_eq!(ok(&host, &["wait", id]), "143\n");
    let record = inspect(&host, id);
    assert_eq!(record["state"], "exited");
    assert!(
        record["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timeout"),
        "{record}"
    );
    host.assert_clean();
}

#[test]
fn test_killed_supervisor_is_cleaned_up_by_gc() {
    let host = host();
    let id = ok(&host, &["run", "-d", "--name", "doomed"])
        .trim()
        .to_owned();
    let pid = inspect(&host, &id)["supervisor_pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The VMM dies with its supervisor (parent-death signal); gc records the end and removes
    // the run dir.
    let gone = hearth_test_support::wait_until(std::time::Duration::from_secs(10), || {
        ok(&host, &["gc"]);
        host.leftovers().is_empty().then_some(())
    });
    assert!(gone.is_some(), "left behind: {:?}", host.leftovers());
    hearth_test_support::netns::assert_sandbox_network_removed(&id);
    let record = inspect(&host, "doomed");
    assert_eq!(record["state"], "exited");
    assert!(record["error"]
        .as_str()
        .unwrap_or_default()
        .contains("supervisor died"));
}

#[test]
fn test_two_runs_with_one_name_race_and_one_wins() {
    let host = host();
    let children: Vec<_> = (0..2)
        .map(|_| spawn(&host, &["run", "-d", "--name", "same"]))
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let codes: Vec<i32> = outputs.iter().map(code).collect();
    assert!(
        codes.contains(&0) && codes.contains(&125),
        "codes {codes:?}"
    );
    let loser = outputs.iter().find(|o| code(o) == 125).unwrap();
    assert!(
        stderr(loser).contains("already in use"),
        "{}",
        stderr(loser)
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&host, &["ls", "-a", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    ok(&host, &["rm", "-f", "same"]);
    host.assert_clean();
}

#[test]
fn test_killed_vmm_is_recorded_and_logs_follow_to_the_end() {
    let host = host();
    let id = ok(
        &host,
        &[
            "run",
            "-d",
            "--",
            "sh",
            "-c",
            "echo first; sleep 1; echo second",
        ],
    );
    // -f returns once the sandbox has ended, with everything it printed.
    assert_eq!(ok(&host, &["logs", "-f", id.trim()]), "first\nsecond\n");

    let id = ok(&host, &["run", "-d", "--name", "victim"])
        .trim()
        .to_owned();
    let run_dir = host.state_dir().join("vms").join(&id);
    let vmm = hearth_test_support::host::processes_in(&run_dir);
    assert!(
        !vmm.is_empty(),
        "no VMM process found for {}",
        run_dir.display()
    );
    for pid in vmm {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // No exit status is known for a VM that died: `wait` says so with -1 and exit 1.
    let output = hearth(&host, &["wait", "victim"]);
    assert_eq!((code(&output), stdout(&output)), (1, "-1\n".to_owned()));
    let record = inspect(&host, "victim");
    assert_eq!(record["state"], "exited");
    assert!(
        record["error"]
            .as_str()
            .unwrap_or_default()
            .contains("VM exited"),
        "{record}"
    );
    host.assert_clean();
}

#[test]
fn test_rm_force_during_an_exec_ends_both() {
    let host = host();
    ok(&host, &["run", "-d", "--name", "busy"]);
    let mut exec = spawn(
        &host,
        &["exec", "busy", "--", "sh", "-c", "echo running; sleep 600"],
    );
    assert_eq!(first_line(&mut exec), "running\n");
    ok(&host, &["rm", "-f", "busy"]);
    let output = exec.wait_with_output().unwrap();
    assert_ne!(
        code(&output),
        0,
        "the exec must fail when its sandbox goes away"
    );
    host.assert_clean();
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&host, &["ls", "-a", "--json"])).unwrap();
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");
}

#[test]
fn test_health_command_states() {
    let host = host();
    // --wait-healthy returns only once the check has passed.
    let first = ok(
        &host,
        &[
            "run",
            "-d",
            "--health-cmd",
            "true",
            "--health-interval",
            "1s",
            "--wait-healthy",
        ],
    );
    let first = first.trim();
    assert_eq!(inspect(&host, first)["health"], "healthy");

    // A check that depends on a file: starting, then healthy, then unhealthy after retries.
    let args = [
        "run",
        "-d",
        "--name",
        "svc",
        "--health-cmd",
        "test -f /tmp/ready",
    ];
    let id = ok(
        &host,
        &[
            &args[..],
            &["--health-interval", "1s", "--health-retries", "2"],
        ]
        .concat(),
    );
    assert_eq!(inspect(&host, id.trim())["health"], "starting");
    ok(&host, &["exec", "svc", "--", "touch", "/tmp/ready"]);
    let healthy = hearth_test_support::wait_until(std::time::Duration::from_secs(30), || {
        (inspect(&host, "svc")["health"] == "healthy").then_some(())
    });
    assert!(healthy.is_some(), "{}", inspect(&host, "svc"));
    assert!(ok(&host, &["ls"]).contains("running (healthy)"));
    ok(&host, &["exec", "svc", "--", "rm", "/tmp/ready"]);
    let unhealthy = hearth_test_support::wait_until(std::time::Duration::from_secs(30), || {
        (inspect(&host, "svc")["health"] == "unhealthy").then_some(())
    });
    assert!(unhealthy.is_some(), "{}", inspect(&host, "svc"));
    ok(&host, &["rm", "-f", "svc", first]);
    host.assert_clean();
}

/// Lists a tree as `path mode size` lines, sorted, for comparing copies.
fn tree_listing(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut lines = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            let size = if meta.is_dir() { 0 } else { meta.len() };
            lines.push(format!(
                "{rel} {:o} {size}",
                meta.permissions().mode() & 0o7777
            ));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    lines.sort();
    lines
}

#[test]
fn test_cp_round_trip_and_hostile_guest_tar() {
    use std::os::unix::fs::PermissionsExt;
    let host = host();
    ok(&host, &["run", "-d", "--name", "files"]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("tree");
    std::fs::create_dir_all(src.join("sub dir/ünïcode")).unwrap();
    std::fs::write(src.join("plain.txt"), "hello\n").unwrap();
    std::fs::write(src.join("sub dir/run me.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        src.join("sub dir/run me.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::write(
        src.join("sub dir/ünïcode/big.bin"),
        vec![7u8; 3 * 1024 * 1024],
    )
    .unwrap();

    ok(&host, &["cp", src.to_str().unwrap(), "files:/tmp"]);
    assert_eq!(
        ok(
            &host,
            &["exec", "files", "--", "/tmp/tree/sub dir/run me.sh"]
        ),
        "ran\n"
    );
    let back = work.path().join("back");
    ok(&host, &["cp", "files:/tmp/tree", back.to_str().unwrap()]);
    assert_eq!(tree_listing(&src), tree_listing(&back));

    // A guest whose tar emits an entry escaping the destination: refused, nothing written.
    // The archive is made here (the tar crate refuses to write `..`, so the name goes into the
    // header by hand, as a hostile guest would) and sent by whatever the guest runs for `cp`.
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..7].copy_from_slice(b"../../x");
    header.set_size(7);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"escaped"[..]).unwrap();
    let evil = builder.into_inner().unwrap();
    let mut child = host
        .hearth()
        .args([
            "exec",
            "-i",
            "files",
            "--",
            "sh",
            "-c",
            "cat > /tmp/evil.tar",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&evil).unwrap();
    assert_eq!(code(&child.wait_with_output().unwrap()), 0);
    // busybox sh runs its own tar applet whatever PATH says, so the shell itself is replaced.
    let swap = "touch /tmp/x && printf '#!/bin/busybox sh\\ncat /tmp/evil.tar\\n' > /tmp/sh \
                && chmod +x /tmp/sh && mv /tmp/sh /bin/sh";
    ok(&host, &["exec", "files", "--", "sh", "-c", swap]);
    let dest = work.path().join("inner/dest");
    std::fs::create_dir_all(&dest).unwrap();
    let output = hearth(&host, &["cp", "files:/tmp/x", dest.to_str().unwrap()]);
    assert_ne!(code(&output), 0, "hostile archive accepted");
    assert!(!work.path().join("x").exists() && !work.path().join("inner/x").exists());
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "nothing left in the destination"
    );

    let output = hearth(&host, &["cp", "files:relative", dest.to_str().unwrap()]);
    assert!(
        stderr(&output).contains("not an absolute guest path"),
        "{}",
        stderr(&output)
    );
    ok(&host, &["rm", "-f", "files"]);
    host.assert_clean();
}

#[test]
fn test_create_then_start_and_restart() {
    let host = host();
    let id = ok(&host, &["create", "--name", "later"]).trim().to_owned();
    assert_eq!(inspect(&host, "later")["state"], "created");
    assert!(host.leftovers().is_empty(), "create must not boot anything");
    ok(&host, &["start", "later"]);
    assert_eq!(ok(&host, &["exec", &id, "--", "echo", "up"]), "up\n");
    ok(&host, &["stop", "later"]);
    // An ended sandbox starts again from its spec, as a fresh VM.
    ok(&host, &["start", "later"]);
    assert_eq!(inspect(&host, "later")["state"], "running");
    ok(&host, &["rm", "-f", "later"]);
    host.assert_clean();

    let output = hearth(&host, &["run", "--name", "x", "--", "true"]);
    assert_eq!(code(&output), 125);
    assert!(
        stderr(&output).contains("--name needs -d"),
        "{}",
        stderr(&output)
    );
}

/// `hearth fs write` with `data` on stdin.
fn fs_write(host: &TestHost, sandbox: &str, path: &str, mode: &str, data: &[u8]) -> Output {
    let mut child = host
        .hearth()
        .args(["fs", "write", "-m", mode, sandbox, path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn test_fs_operations_and_a_full_guest_disk() {
    let host = host();
    ok(&host, &["run", "-d", "--name", "fsbox"]);

    // A binary file in and out, with its mode, as the guest's own tools see it.
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let output = fs_write(&host, "fsbox", "/tmp/blob.bin", "600", &data);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let output = hearth(&host, &["fs", "cat", "fsbox", "/tmp/blob.bin"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(output.stdout == data, "read back differs");
    assert_eq!(
        ok(
            &host,
            &[
                "exec",
                "fsbox",
                "--",
                "stat",
                "-c",
                "%a %s",
                "/tmp/blob.bin"
            ]
        ),
        "600 1500000\n"
    );
    let stat: serde_json::Value = serde_json::from_str(&ok(
        &host,
        &["fs", "stat", "--json", "fsbox", "/tmp/blob.bin"],
    ))
    .unwrap();
    assert_eq!(
        (&stat["kind"], &stat["mode"], &stat["size"]),
        (&"file".into(), &0o600.into(), &1_500_000.into())
    );

    // Directories: mkdir -p with a mode, a listing with a symlink, removal.
    ok(
        &host,
        &["fs", "mkdir", "-p", "-m", "700", "fsbox", "/tmp/a/b c/d"],
    );
    ok(
        &host,
        &[
            "exec",
            "fsbox",
            "--",
            "ln",
            "-s",
            "../blob.bin",
            "/tmp/a/link",
        ],
    );
    let listing: serde_json::Value =
        serde_json::from_str(&ok(&host, &["fs", "ls", "--json", "fsbox", "/tmp/a"])).unwrap();
    let summary: Vec<(String, String, serde_json::Value)> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["link_target"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("b c".into(), "dir".into(), serde_json::Value::Null),
            ("link".into(), "symlink".into(), "../blob.bin".into()),
        ]
    );
    let long = ok(&host, &["fs", "ls", "fsbox", "/tmp/a/b c"]);
    assert!(
        long.starts_with("drwx------ ") && long.trim_end().ends_with(" d"),
        "{long}"
    );

    // Failures name the path and say why: exit 1, or 2 for a usage error.
    for (args, expected, exit) in [
        (vec!["fs", "stat", "fsbox", "/nope"], "No such file", 1),
        (
            vec!["fs", "rm", "fsbox", "/tmp/a"],
            "Directory not empty",
            1,
        ),
        (vec!["fs", "cat", "fsbox", "/tmp"], "Is a directory", 1),
        (
            vec!["fs", "stat", "fsbox", "relative"],
            "not an absolute path",
            1,
        ),
        (vec!["fs", "stat", "nosuchbox", "/"], "nosuchbox", 1),
        (
            vec!["fs", "mkdir", "-m", "9z", "fsbox", "/x"],
            "octal mode",
            2,
        ),
    ] {
        let output = hearth(&host, &args);
        assert_eq!(code(&output), exit, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    ok(&host, &["fs", "rm", "-r", "fsbox", "/tmp/a"]);
    let output = hearth(&host, &["exec", "fsbox", "--", "test", "-e", "/tmp/a"]);
    assert_eq!(code(&output), 1, "/tmp/a still exists");

    // `cp` refuses guest paths that climb with `..`.
    let output = hearth(&host, &["cp", "/etc/hostname", "fsbox:/tmp/../../etc/x"]);
    assert!(
        stderr(&output).contains("without `..`"),
        "{}",
        stderr(&output)
    );

    // A full disk: the guest's writable layer filled up by a process in it. A write then fails
    // with a clear error and leaves no partial or temporary file; the sandbox keeps working
    // and the same write succeeds once space is freed.
    hearth(
        &host,
        &[
            "exec",
            "fsbox",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/fill",
            "bs=1M",
        ],
    );
    let big = vec![1u8; 2 << 20];
    let output = fs_write(&host, "fsbox", "/after-full.bin", "644", &big);
    assert_ne!(code(&output), 0, "write to a full disk succeeded");
    assert!(
        stderr(&output).contains("No space left on device"),
        "{}",
        stderr(&output)
    );
    let root = ok(&host, &["exec", "fsbox", "--", "ls", "-a", "/"]);
    assert!(!root.contains("after-full"), "partial file left: {root}");
    ok(&host, &["exec", "fsbox", "--", "rm", "/fill"]);
    let output = fs_write(&host, "fsbox", "/after-full.bin", "644", &big);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        ok(
            &host,
            &["exec", "fsbox", "--", "stat", "-c", "%s", "/after-full.bin"]
        ),
        format!("{}\n", big.len())
    );

    ok(&host, &["rm", "-f", "fsbox"]);
    host.assert_clean();
}

#[test]
fn test_console_is_kept_capped_and_outlives_the_vm() {
    let host = host();
    ok(&host, &["run", "-d", "--name", "chatty"]);
    ok(
        &host,
        &[
            "exec",
            "chatty",
            "--",
            "sh",
            "-c",
            "echo first-marker > /dev/console",
        ],
    );
    let console = ok(&host, &["logs", "--console", "chatty"]);
    assert!(console.contains("first-marker"), "{console}");

    // A guest that floods its console: the host keeps at most two capped files, the newest
    // output last.
    ok(
        &host,
        &[
            "exec",
            "chatty",
            "--",
            "sh",
            "-c",
            "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 3000000 > /dev/console; \
             echo last-marker > /dev/console",
        ],
    );
    let id = inspect(&host, "chatty")["id"].as_str().unwrap().to_owned();
    let dir = host.state_dir().join("sandboxes").join(&id);
    let kept: u64 = ["console.log", "console.log.1"]
        .iter()
        .map(|name| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len()))
        .sum();
    assert!(kept <= 2 * 1024 * 1024, "console kept {kept} bytes");
    assert!(kept > 1024 * 1024, "the flood was not kept: {kept} bytes");
    let console = ok(&host, &["logs", "--console", "chatty"]);
    assert!(
        !console.contains("first-marker"),
        "the oldest output was not dropped"
    );
    assert!(
        console.trim_end().ends_with("last-marker"),
        "{}",
        &console[console.len() - 200..]
    );

    // Still there once the VM is gone; gone with the sandbox.
    ok(&host, &["stop", "chatty"]);
    assert!(ok(&host, &["logs", "--console", "chatty"]).contains("last-marker"));
    ok(&host, &["rm", "chatty"]);
    assert!(!dir.exists());
    host.assert_clean();
}

#[test]
fn test_killed_cli_during_a_detached_start_loses_nothing() {
    let host = host();
    let mut cli = spawn(&host, &["run", "-d", "--name", "orphan"]);
    // Killed once its supervisor exists, while the VM is still booting.
    let supervisor = hearth_test_support::wait_until(std::time::Duration::from_secs(30), || {
        let state_dir = host.state_dir().to_string_lossy().into_owned();
        hearth_test_support::host::processes_mentioning(state_dir.as_bytes())
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.windows(9).any(|w| w == b"supervise"))
            })
    });
    assert!(supervisor.is_some(), "no supervisor was started");
    cli.kill().unwrap();
    cli.wait().unwrap();

    // The supervisor carries on: the sandbox comes up and serves execs; gc leaves it alone.
    let running = hearth_test_support::wait_until(std::time::Duration::from_secs(120), || {
        (inspect(&host, "orphan")["state"] == "running").then_some(())
    });
    assert!(
        running.is_some(),
        "never running: {}",
        inspect(&host, "orphan")
    );
    ok(&host, &["gc"]);
    assert_eq!(
        ok(&host, &["exec", "orphan", "--", "echo", "alive"]),
        "alive\n"
    );
    ok(&host, &["rm", "-f", "orphan"]);
    host.assert_clean();
}

#[test]
fn test_wait_hears_a_stop_and_stop_without_grace_kills() {
    let host = host();
    ok(&host, &["run", "-d", "--name", "waited"]);
    // `wait` blocks on the supervisor's control socket until the end it then reports.
    let mut waiter = spawn(&host, &["wait", "waited"]);
    let id = inspect(&host, "waited")["id"].as_str().unwrap().to_owned();
    let socket = host
        .state_dir()
        .join("sandboxes")
        .join(id)
        .join("control.sock");
    assert!(socket.exists(), "no control socket at {}", socket.display());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "wait returned while the sandbox ran"
    );
    assert_eq!(ok(&host, &["stop", "-t", "5", "waited"]), "waited\n");
    let output = waiter.wait_with_output().unwrap();
    assert_eq!(
        (code(&output), stdout(&output)),
        (0, "143\n".to_owned()),
        "{}",
        stderr(&output)
    );
    // Asking an ended sandbox is answered from the database.
    assert_eq!(ok(&host, &["wait", "waited"]), "143\n");
    assert_eq!(ok(&host, &["stop", "waited"]), "waited\n");

    ok(&host, &["run", "-d", "--name", "abrupt"]);
    ok(&host, &["stop", "-t", "0", "abrupt"]);
    assert_eq!(inspect(&host, "abrupt")["exit_code"], 137);
    ok(&host, &["rm", "waited", "abrupt"]);
    host.assert_clean();
}

#[test]
fn test_kill_ends_a_stop_that_hangs() {
    let host = host();
    ok(&host, &["run", "-d", "--name", "hung"]);
    let id = inspect(&host, "hung")["id"].as_str().unwrap().to_owned();
    // A frozen VMM: the guest can no longer answer the clean power-off.
    let run_dir = host.state_dir().join("vms").join(&id);
    let qemu = hearth_test_support::host::processes_in(&run_dir)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
        })
        .expect("qemu of the sandbox");
    let qemu = nix::unistd::Pid::from_raw(i32::try_from(qemu).unwrap());
    nix::sys::signal::kill(qemu, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut stopper = spawn(&host, &["stop", "-t", "600", "hung"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(stopper.try_wait().unwrap().is_none(), "stop returned early");
    ok(&host, &["kill", "hung"]);
    let stopped = stopper.wait_with_output().unwrap();
    assert_eq!(code(&stopped), 0, "{}", stderr(&stopped));
    let record = inspect(&host, "hung");
    assert_eq!(
        (&record["state"], &record["exit_code"]),
        (&"exited".into(), &137.into())
    );
    ok(&host, &["rm", "hung"]);
    host.assert_clean();
}
