//! Boot assets shared by every test: built once per machine state, under a file lock so
//! parallel test processes do not race.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use hearth_host::find_program;
use nix::fcntl::{Flock, FlockArg};

/// The programs a VM test needs, with what to install for each.
const REQUIRED: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "apt-get install qemu-system-x86"),
    ("mkfs.ext4", "apt-get install e2fsprogs"),
    ("mkfs.erofs", "apt-get install erofs-utils"),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<target>` from the path of a binary in `<target>/<profile>/`.
pub(crate) fn target_dir(hearth_bin: &Path) -> PathBuf {
    hearth_bin
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| workspace_root().join("target"), Path::to_path_buf)
}

/// A state dir holding `boot/` and `images/` from `hearth setup`, made on first use.
pub fn shared_state(hearth_bin: &Path) -> &'static Path {
    static STATE: OnceLock<PathBuf> = OnceLock::new();
    STATE.get_or_init(|| match build(hearth_bin) {
        Ok(dir) => {
            say_backend(&dir);
            dir
        }
        Err(e) => panic!("cannot prepare the test boot assets: {e:#}"),
    })
}

/// One line per test binary saying which backend its VMs run on, and so whether the VM tests
/// are the Firecracker matrix: they run on Firecracker wherever `auto` (or `HEARTH_BACKEND`)
/// picks it, which needs hardware KVM. Written to stderr itself, past the test harness's
/// capture, so a passing run shows it too.
fn say_backend(state: &Path) {
    let line = match hearth_host::backend::decide(&hearth_host::StateDir::new(state)) {
        Ok((choice, _)) => match choice.chosen {
            hearth_host::backend::Chosen::Firecracker { .. } => {
                format!("VM tests run on Firecracker: {}", choice.reason)
            }
            hearth_host::backend::Chosen::Qemu(_) => format!(
                "VM tests run on QEMU; the Firecracker matrix is skipped: {}. On a host with \
                 hardware KVM and firecracker (and its jailer, as root) installed, the same \
                 `cargo test --workspace` runs it",
                choice.reason
            ),
        },
        Err(e) => format!("VM tests: cannot tell the backend: {e}"),
    };
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Holds `path` locked (made if need be) until the returned guard drops: one test process
/// builds a shared fixture while the others wait for it.
pub(crate) fn lock_exclusive(path: &Path) -> anyhow::Result<Flock<File>> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

fn build(hearth_bin: &Path) -> anyhow::Result<PathBuf> {
    check_programs()?;
    let target = target_dir(hearth_bin);
    let state = target.join("test-assets");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let _lock = lock_exclusive(&state.join(".lock"))?;
    let agent = build_agent(&target)?;
    let status = Command::new(hearth_bin)
        .arg("setup")
        .arg("--agent")
        .arg(&agent)
        .env("HEARTH_STATE_DIR", &state)
        .status()
        .context("running hearth setup")?;
    if !status.success() {
        bail!("`hearth setup` failed ({status})");
    }
    Ok(state)
}

/// Builds the guest agent as a static binary, as install.sh does.
fn build_agent(target: &Path) -> anyhow::Result<PathBuf> {
    let agent_target = target.join("agent");
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "hearth-agent",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target-dir",
        ])
        .arg(&agent_target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .context("running cargo to build the guest agent")?;
    if !status.success() {
        bail!("building the static guest agent failed ({status})");
    }
    Ok(agent_target.join("x86_64-unknown-linux-gnu/release/hearth-agent"))
}

fn check_programs() -> anyhow::Result<()> {
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(program, fix)| format!("`{program}` ({fix})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "VM tests need programs that are missing: {}",
            missing.join(", ")
        );
    }
    Ok(())
}
