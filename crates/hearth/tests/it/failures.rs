//! Bad input and failing guests: clear errors, docker's exit codes, nothing left behind.

use std::process::Stdio;
use std::time::Duration;

use hearth_test_support::host::processes_mentioning;
use hearth_test_support::initramfs::busybox_initramfs;
use hearth_test_support::wait_until;

use crate::{code, host, stderr, stdout};

#[test]
fn test_unknown_flag_is_a_usage_error() {
    let host = host();
    let output = host.hearth().args(["run", "--bogus"]).output().unwrap();
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("--bogus"), "{}", stderr(&output));
}

#[test]
fn test_bad_memory_value_is_a_usage_error() {
    let host = host();
    let output = host
        .hearth()
        .args(["run", "--memory", "lots", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("not a size"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn test_missing_kernel_and_initramfs_are_named() {
    let host = host();
    for (flag, what) in [("--kernel", "kernel"), ("--initramfs", "initramfs")] {
        let output = host
            .hearth()
            .args(["run", flag, "/nonexistent/file", "--", "true"])
            .output()
            .unwrap();
        assert_eq!(code(&output), 125);
        let expected = format!("{what} `/nonexistent/file` does not exist");
        assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
    }
    host.assert_clean();
}

#[test]
fn test_unknown_image_is_refused() {
    // A loopback registry where nothing listens (port 1): tests never reach outside registries.
    let host = host();
    let output = host
        .hearth()
        .args(["run", "127.0.0.1:1/nosuchimage", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 125);
    assert!(
        stderr(&output).contains("failed to pull `127.0.0.1:1/nosuchimage:latest`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn test_missing_guest_command_exits_127_and_not_executable_126() {
    let host = host();
    let output = host.hearth().args(["run", "--", "/nope"]).output().unwrap();
    assert_eq!(code(&output), 127, "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("/nope"), "{}", stderr(&output));
    let output = host
        .hearth()
        .args(["run", "--", "/etc/passwd"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 126, "stderr: {}", stderr(&output));
    host.assert_clean();
}

#[test]
fn test_guest_that_never_answers_times_out_with_console_tail() {
    let host = host();
    let initramfs = host.state_dir().join("silent.cpio");
    busybox_initramfs(
        &initramfs,
        "echo silent-init-started\nwhile true; do /bin/busybox sleep 1; done",
    )
    .unwrap();
    let output = host
        .hearth()
        .args(["run", "--boot-timeout", "8s", "--initramfs"])
        .arg(&initramfs)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 125);
    let err = stderr(&output);
    assert!(err.contains("did not report ready within 8s"), "{err}");
    assert!(
        err.contains("silent-init-started"),
        "console tail missing: {err}"
    );
    host.assert_clean();
}

#[test]
fn test_guest_kernel_panic_ends_the_run_with_console_tail() {
    let host = host();
    let initramfs = host.state_dir().join("panic.cpio");
    // PID 1 exiting makes the kernel panic.
    busybox_initramfs(&initramfs, "echo about-to-exit\nexit 1").unwrap();
    let output = host
        .hearth()
        .args(["run", "--initramfs"])
        .arg(&initramfs)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 125);
    let err = stderr(&output);
    assert!(err.contains("VM exited during boot"), "{err}");
    assert!(err.contains("Kernel panic"), "console tail missing: {err}");
    host.assert_clean();
}

/// Starts `hearth run -- sh -c 'echo started; sleep 600'` and waits for `started`.
fn start_sleeper(host: &hearth_test_support::host::TestHost) -> std::process::Child {
    start_sleeper_with(host, &[])
}

fn start_sleeper_with(
    host: &hearth_test_support::host::TestHost,
    flags: &[&str],
) -> std::process::Child {
    let mut child = host
        .hearth()
        .arg("run")
        .args(flags)
        .args(["--", "sh", "-c", "echo started; sleep 600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if crate::first_line(&mut child) != "started\n" {
        let output = child.wait_with_output().unwrap();
        panic!(
            "sleeper did not start ({:?}): {}",
            output.status,
            stderr(&output)
        );
    }
    child
}

fn signal_run(signal: nix::sys::signal::Signal, expected: i32) {
    let host = host();
    let child = start_sleeper(&host);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), expected, "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "");
    host.assert_clean();
}

#[test]
fn test_sigterm_tears_the_vm_down() {
    signal_run(nix::sys::signal::Signal::SIGTERM, 143);
}

#[test]
fn test_sigint_tears_the_vm_down() {
    signal_run(nix::sys::signal::Signal::SIGINT, 130);
}

#[test]
fn test_sigkill_of_hearth_takes_the_vmm_with_it_and_gc_removes_the_rest() {
    let host = host();
    let mut child = start_sleeper(&host);
    let needle = host.state_dir().to_string_lossy().into_owned();
    assert!(
        !processes_mentioning(needle.as_bytes()).is_empty(),
        "qemu should be running"
    );
    // While hearth lives, its owner lock keeps gc away from the sandbox.
    let output = host.hearth().arg("gc").output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(child.try_wait().unwrap(), None, "gc ended a live run");
    assert!(host.state_dir().join("vms").read_dir().unwrap().count() == 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        processes_mentioning(needle.as_bytes())
            .is_empty()
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "VMM processes survived hearth: {:?}",
        processes_mentioning(needle.as_bytes())
    );
    // A SIGKILLed hearth cannot remove its run dir or network; its owner lock died with it, so
    // gc knows the sandbox is orphaned at once (not only after an age).
    let run_dirs: Vec<_> = std::fs::read_dir(host.state_dir().join("vms"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let [id] = run_dirs.as_slice() else {
        panic!("expected one orphaned run dir, found {run_dirs:?}");
    };
    assert!(
        !hearth_test_support::netns::sandbox_network_leftovers(id).is_empty(),
        "the orphaned network should still be there before gc"
    );
    let output = host.hearth().arg("gc").output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    host.assert_clean();
    hearth_test_support::netns::assert_sandbox_network_removed(id);
}

#[test]
fn test_corrupt_state_database_is_a_clear_error_not_a_panic() {
    let host = host();
    let db = host.state_dir().join("hearth.db");
    let garbage = b"this is not a database, just bytes of garbage\n".repeat(200);
    std::fs::write(&db, &garbage).unwrap();
    for args in [
        &["ls"][..],
        &["exec", "x", "--", "true"],
        &["run", "-d", "--", "true"],
    ] {
        let output = host.hearth().args(args).output().unwrap();
        let err = stderr(&output);
        assert_ne!(code(&output), 0, "{args:?} succeeded");
        assert!(
            err.contains("hearth.db") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    assert!(
        std::fs::read(&db).unwrap() == garbage,
        "the corrupt file must be left as it was for the user to inspect"
    );
}
