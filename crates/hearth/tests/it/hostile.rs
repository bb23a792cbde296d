//! A guest that attacks the host side: what `cp` brings out, what its text does to a terminal,
//! and who may act on a sandbox and read its state.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::{code, hearth, host, ok, stderr};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Size of the stream the guest sends: far above the bound on hearth's memory asserted below.
const STREAM_MIB: u32 = 256;
/// Most memory the `hearth cp` process may peak at while that stream passes.
const MAX_CP_RSS_KIB: u64 = 96 * 1024;

#[test]
fn test_cp_out_strips_setuid_and_world_write_streams_in_bounded_memory_and_escapes_guest_text() {
    let host = host();
    ok(&host, &["run", "-d", "--memory", "1G", "--name", "hostile"]);
    let make = format!(
        "mkdir -p /tmp/x/open && cp /bin/busybox /tmp/x/id && chmod 4755 /tmp/x/id \
         && touch /tmp/x/grp && chmod 2775 /tmp/x/grp && chmod 0777 /tmp/x/open \
         && dd if=/dev/zero of=/tmp/x/big bs=1M count={STREAM_MIB} 2>/dev/null"
    );
    ok(&host, &["exec", "hostile", "--", "sh", "-c", &make]);
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("x");

    let child = host
        .hearth()
        .args(["cp", "hostile:/tmp/x", dest.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let copied = std::thread::scope(|s| {
        let waiter = s.spawn(|| child.wait_with_output().unwrap());
        while !waiter.is_finished() {
            if let Ok(text) = std::fs::read_to_string(&status) {
                let hwm = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok());
                peak_kib = peak_kib.max(hwm.unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        waiter.join().unwrap()
    });
    assert_eq!(code(&copied), 0, "{}", stderr(&copied));
    println!("hearth cp of {STREAM_MIB} MiB peaked at {peak_kib} kB RSS");

    assert_eq!(mode(&dest.join("id")), 0o755, "setuid kept");
    assert_eq!(mode(&dest.join("grp")), 0o775, "setgid kept");
    assert_eq!(mode(&dest.join("open")), 0o775, "world-writable dir kept");
    assert_eq!(
        std::fs::metadata(dest.join("big")).unwrap().len(),
        u64::from(STREAM_MIB) << 20
    );
    assert!(
        peak_kib > 0 && peak_kib < MAX_CP_RSS_KIB,
        "peak RSS {peak_kib} kB"
    );

    // Guest text in an error line: tar's complaint names the path, escapes and all.
    let hostile_path = "/tmp/\u{1b}]0;owned\u{7}\u{1b}[2J";
    let target = format!("hostile:{hostile_path}");
    let output = hearth(&host, &["cp", &target, work.path().to_str().unwrap()]);
    assert_ne!(code(&output), 0);
    let err = stderr(&output);
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(err.contains("\\u{1b}]0;owned"), "{err}");

    ok(&host, &["rm", "-f", "hostile"]);
    host.assert_clean();
}

/// Under umask 000, the state root and database are still private, and another user can
/// neither read them nor stop the sandbox (and is told so, with a failing exit).
#[test]
fn test_state_is_private_whatever_the_umask_and_others_cannot_stop_a_sandbox() {
    use nix::sys::stat::{umask, Mode};
    let host = host();
    let root = host.state_dir();
    // A loose root (an older hearth, or made by hand) is closed on the next open.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The caller's umask as loose as can be (hearth inherits it, then sets its own).
    let before = umask(Mode::empty());
    let output = hearth(&host, &["run", "-d", "--name", "mine"]);
    umask(before);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(mode(root), 0o700, "state root");
    assert_eq!(mode(&root.join("hearth.db")), 0o600, "database");
    let sandbox_dirs = std::fs::read_dir(root.join("sandboxes")).unwrap();
    for dir in sandbox_dirs {
        let dir = dir.unwrap().path();
        assert_eq!(mode(&dir) & 0o077, 0, "{}", dir.display());
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            assert_eq!(mode(&file) & 0o077, 0, "{}", file.display());
        }
    }

    let stop = host
        .hearth()
        .args(["stop", "mine"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_ne!(code(&stop), 0, "nobody's stop succeeded: {}", stderr(&stop));
    assert!(
        stderr(&stop).contains("you may not act on its sandboxes"),
        "{}",
        stderr(&stop)
    );
    assert!(
        ok(&host, &["ls"]).contains("running"),
        "the sandbox stopped"
    );

    ok(&host, &["rm", "-f", "mine"]);
    host.assert_clean();
}
