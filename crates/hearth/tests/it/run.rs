//! `hearth run` with pipes: output, exit status, resources, environment, stdin.

use std::io::Write;
use std::process::Stdio;

use crate::{code, first_line, host, stderr, stdout};

#[test]
fn test_run_streams_and_exit_status_come_from_the_guest() {
    let host = host();
    let output = host
        .hearth()
        .args(["run", "--", "sh", "-c"])
        .arg("uname -r; hostname; echo to-stdout; echo to-stderr >&2; exit 7")
        .output()
        .unwrap();
    assert_eq!(code(&output), 7, "stderr: {}", stderr(&output));
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "stdout: {out}");
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        lines[0].ends_with("-cloud-amd64"),
        "guest kernel: {}",
        lines[0]
    );
    assert_ne!(lines[0], host_release.trim(), "uname must be the guest's");
    assert_eq!(
        lines[1].len(),
        12,
        "hostname is the sandbox id: {}",
        lines[1]
    );
    assert_eq!(lines[2], "to-stdout");
    assert_eq!(stderr(&output), "to-stderr\n");
    host.assert_clean();
}

#[test]
fn test_run_killed_process_exits_128_plus_signal() {
    let host = host();
    let output = host
        .hearth()
        .args(["run", "--", "sh", "-c", "kill -9 $$"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 137, "stderr: {}", stderr(&output));
    host.assert_clean();
}

#[test]
fn test_run_env_workdir_cpus_memory_are_visible_in_the_guest() {
    let host = host();
    let output = host
        .hearth()
        .env("FROM_HOST", "copied")
        .args([
            "run",
            "-e",
            "GREETING=hello world",
            "-e",
            "FROM_HOST",
            "-w",
            "/tmp",
        ])
        .args(["--cpus", "2", "--memory", "256M", "--", "sh", "-c"])
        .arg("echo \"$GREETING\"; echo $FROM_HOST; pwd; nproc; grep MemTotal /proc/meminfo")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        ["hello world", "copied", "/tmp", "2"],
        "stdout: {out}"
    );
    let mem_kib: u64 = lines[4]
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MemTotal line: {}", lines[4]));
    // The kernel keeps some memory for itself; MemTotal is a little under what was given.
    assert!(
        (200_000..=262_144).contains(&mem_kib),
        "MemTotal {mem_kib} kB for 256M"
    );
    host.assert_clean();
}

#[test]
fn test_run_interactive_pipes_stdin_binary_safe() {
    let host = host();
    // 4 MiB of every byte value, to catch any mangling of binary data in either direction.
    let input: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut child = host
        .hearth()
        .args(["run", "-i", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // A failed write means hearth ended early; its stderr, checked below, says why.
        let _ = stdin.write_all(&input);
        input
    });
    let output = child.wait_with_output().unwrap();
    let input = writer.join().unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert!(
        output.stdout == input,
        "cat returned {} bytes, sent {}",
        output.stdout.len(),
        input.len()
    );
    host.assert_clean();
}

#[test]
fn test_run_echo_through_stdin() {
    let host = host();
    let mut child = host
        .hearth()
        .args(["run", "-i", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 0);
    assert_eq!(stdout(&output), "hi\n");
}

#[test]
fn test_run_large_output_arrives_whole() {
    let host = host();
    // 50 MiB of random bytes; the guest prints its checksum on stderr to compare with.
    let script =
        "head -c 52428800 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 && cat /tmp/blob";
    let output = host
        .hearth()
        .args(["run", "--memory", "1G", "--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(output.stdout.len(), 52_428_800);
    let guest_sum = stderr(&output)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut sha = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    sha.stdin.take().unwrap().write_all(&output.stdout).unwrap();
    let host_sum = stdout(&sha.wait_with_output().unwrap());
    assert_eq!(host_sum.split_whitespace().next(), Some(guest_sum.as_str()));
    host.assert_clean();
}

#[test]
fn test_closed_stdout_stops_the_guest_writer_with_sigpipe() {
    let host = host();
    let mut child = host
        .hearth()
        .args(["run", "--", "yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut child), "y\n");
    // Close our end of the pipe: like `hearth run -- yes | head -1`.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 128 + 13, "stderr: {}", stderr(&output));
    host.assert_clean();
}
