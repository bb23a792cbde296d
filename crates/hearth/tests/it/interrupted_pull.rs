//! `hearth pull` killed at each stage (download, unpack, mkfs) by SIGINT, SIGTERM and SIGKILL:
//! the next hearth command leaves nothing of it under the state dir, and no child of it runs on.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use hearth_test_support::oci_layout::{incompressible, Compression, Entry, TestConfig, TestImage};
use hearth_test_support::registry::LocalRegistry;
use hearth_test_support::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::host;

#[derive(Debug, Clone, Copy)]
enum Stage {
    Download,
    Unpack,
    Mkfs,
}

/// A `mkfs.erofs` that waits 60 s before it runs the real one, so a test can catch the pull
/// while mkfs runs. One process (exec), so it is the pull's direct child.
fn slow_mkfs(dir: &Path) -> PathBuf {
    let path = dir.join("mkfs.erofs");
    std::fs::write(
        &path,
        "#!/usr/bin/python3\nimport os, sys, time\ntime.sleep(60)\n\
         os.execv('/usr/bin/mkfs.erofs', ['mkfs.erofs'] + sys.argv[1:])\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Gives the child SIGINT's default action. A shell starts background jobs with SIGINT
/// ignored, and `hearth pull` (unlike `run`) installs no handler of its own, so a test run
/// from such a job would otherwise see the pull shrug SIGINT off.
#[expect(unsafe_code, reason = "pre_exec hooks are unsafe to register")]
fn default_sigint(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec and only calls signal(2), which is
    // async-signal-safe, to set a disposition.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::signal(Signal::SIGINT, nix::sys::signal::SigHandler::SigDfl)
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// Paths under `dir` whose names start with one of `prefixes`.
fn scratch_under(dir: &Path, prefixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| name.starts_with(p)) {
            found.push(entry.path());
        } else if entry.path().is_dir() {
            found.extend(scratch_under(&entry.path(), prefixes));
        }
    }
    found
}

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// True once the pull is in `stage`.
fn reached(stage: Stage, state: &Path, mkfs: &Path) -> bool {
    let partial = !scratch_under(state, &[".partial-"]).is_empty();
    let building = !scratch_under(state, &[".building-"]).is_empty();
    let mkfs_running = !processes_mentioning(&mkfs.display().to_string()).is_empty();
    match stage {
        Stage::Download => partial,
        Stage::Unpack => building && !mkfs_running,
        Stage::Mkfs => mkfs_running,
    }
}

#[test]
fn test_interrupted_pull_leaves_nothing_once_the_next_command_runs() {
    let registry = LocalRegistry::start().unwrap();
    // Big enough that download (hashed as it arrives) and unpack each take a while here; zstd
    // because gzip of this much is slow in a debug build.
    let image = TestImage::new(TestConfig::default())
        .layer(
            &[Entry::File(
                "big".into(),
                incompressible(48 << 20),
                0o644,
                0,
                0,
            )],
            Compression::Zstd,
        )
        .unwrap();
    let layout = tempfile::tempdir().unwrap();
    image.write_layout(layout.path(), "1").unwrap();
    registry
        .push_layout(layout.path(), "1", "interrupted")
        .unwrap();
    let reference = format!("{}/interrupted:1", registry.host());
    let wrappers = tempfile::tempdir().unwrap();
    let mkfs = slow_mkfs(wrappers.path());
    let path = format!(
        "{}:{}",
        wrappers.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let next_commands: [&[&str]; 3] = [&["image", "prune"], &["gc"], &["pull", "-q", &reference]];
    let mut case = 0;
    for stage in [Stage::Download, Stage::Unpack, Stage::Mkfs] {
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL] {
            let host = host();
            let mut command = host.hearth();
            default_sigint(&mut command);
            let mut pull: Child = command
                .env("PATH", &path)
                .args(["pull", "-q", &reference])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let state = host.state_dir().to_owned();
            let caught = wait_until(Duration::from_secs(60), || {
                reached(stage, &state, &mkfs).then_some(())
            });
            assert!(caught.is_some(), "{stage:?}: the pull never got there");
            if matches!(stage, Stage::Download) {
                // Holds the download where it is until the pull is gone.
                registry.pause().unwrap();
            }
            kill(Pid::from_raw(pull.id() as i32), signal).unwrap();
            let status = pull.wait().unwrap();
            registry.resume().unwrap();
            assert!(!status.success(), "{stage:?} {signal}: {status}");

            // Whatever hearth runs next cleans up.
            let next = next_commands[case % next_commands.len()];
            case += 1;
            let output = host.hearth().args(next).output().unwrap();
            assert!(output.status.success(), "{next:?}: {output:?}");
            let left = scratch_under(&state, &[".partial-", ".building-"]);
            assert!(
                left.is_empty(),
                "{stage:?} {signal} then {next:?}: {left:?}"
            );
            let orphans = wait_until(Duration::from_secs(5), || {
                processes_mentioning(&mkfs.display().to_string())
                    .is_empty()
                    .then_some(())
            });
            assert!(
                orphans.is_some(),
                "{stage:?} {signal}: mkfs outlived the pull"
            );
        }
    }
}
