//! `hearth doctor`: what hearth found on this host, whether it can run, and what to install.
//!
//! [`diagnose`] returns a [`DoctorReport`] (serde, for `--json`): one [`Check`] per program,
//! host feature and boot asset. It asks [`kvm::accelerator`] and [`find_program`], as
//! [`backend::detect`] does to pick the accelerator and the programs, so doctor reports what a
//! boot will use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hearth_vmm::Accel;
use serde::Serialize;

use crate::backend;
use crate::find_program;
use crate::human_size;
use crate::kvm::{self, AccelChoice, KvmKind};
use crate::setup::{elf, kernel, HostLayout};
use crate::StateDir;

/// Fix for a missing boot asset.
const RUN_SETUP: &str = "run `hearth setup`";

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    /// Works, but slower or with less than it could; or a tool that only `hearth setup` needs.
    Warn,
    Missing,
}

/// One thing hearth looked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier: `qemu`, `kvm`, `accelerator`, `kernel`,
    /// `initramfs`, `default-image`, `mkfs.ext4`, `mkfs.erofs`, `busybox`, `host-kernel`.
    pub name: &'static str,
    pub status: CheckStatus,
    /// Whether hearth cannot run VMs when this is missing.
    pub required: bool,
    /// What was found: a path and version, or why it counts as missing.
    pub detail: String,
    /// What to do about a warning or a missing part.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, required: bool, detail: String) -> Self {
        Check {
            name,
            status: CheckStatus::Ok,
            required,
            detail,
            fix: None,
        }
    }

    fn not_ok(
        name: &'static str,
        status: CheckStatus,
        required: bool,
        detail: String,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            name,
            status,
            required,
            detail,
            fix: Some(fix.into()),
        }
    }
}

/// Everything `hearth doctor` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    pub state_dir: PathBuf,
    /// What `/dev/kvm` is: `hardware`, `pvm` (the software kvm_pvm module), `unknown`, `none`.
    pub kvm: KvmKind,
    /// The accelerator hearth uses: `kvm` or `tcg`.
    pub accel: Accel,
    pub accel_reason: String,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// False when hearth cannot run a VM here: a required check is missing (QEMU, or a boot
    /// asset from `hearth setup`).
    pub fn ok(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|check| check.required && check.status == CheckStatus::Missing)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|check| check.name == name)
    }
}

/// Looks at this host and `state`.
pub fn diagnose(state: &StateDir) -> DoctorReport {
    let accel = kvm::accelerator();
    let mut checks = vec![
        program_check("qemu", backend::QEMU, "apt-get install qemu-system-x86"),
        kvm_check(&accel),
        Check::ok(
            "accelerator",
            true,
            format!("{}: {}", accel.accel, accel.reason),
        ),
    ];
    checks.push(asset_check("kernel", &state.kernel(), kernel_detail));
    checks.push(asset_check("initramfs", &state.initramfs(), size_detail));
    checks.push(asset_check(
        "default-image",
        &state.default_image(),
        size_detail,
    ));
    checks.push(setup_tool_check());
    checks.push(image_tool_check());
    checks.push(busybox_check(&HostLayout::default().busybox));
    checks.push(host_kernel_check(&HostLayout::default()));
    DoctorReport {
        state_dir: state.root().to_owned(),
        kvm: accel.kvm,
        accel: accel.accel,
        accel_reason: accel.reason,
        checks,
    }
}

fn program_check(name: &'static str, program: &str, fix: &str) -> Check {
    let Some(path) = find_program(program) else {
        return Check::not_ok(
            name,
            CheckStatus::Missing,
            true,
            format!("`{program}` not found in PATH, ~/.cargo/bin or /usr/local/bin"),
            fix,
        );
    };
    match program_version(&path) {
        Ok(version) => Check::ok(name, true, format!("{} ({version})", path.display())),
        Err(why) => Check::not_ok(
            name,
            CheckStatus::Warn,
            true,
            format!(
                "{} is present but `--version` failed: {why}",
                path.display()
            ),
            format!("reinstall it: {fix}"),
        ),
    }
}

/// The first line `<path> --version` prints.
fn program_version(path: &Path) -> Result<String, String> {
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(output.status.to_string());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "it printed nothing".to_owned())
}

fn kvm_check(accel: &AccelChoice) -> Check {
    let tcg_note =
        "hearth runs guests with QEMU TCG (software emulation), which works but is slower";
    match (accel.kvm, accel.accel) {
        (KvmKind::Hardware, Accel::Kvm) => Check::ok("kvm", false, accel.reason.clone()),
        (KvmKind::Hardware, Accel::Tcg) => Check::not_ok(
            "kvm",
            CheckStatus::Warn,
            false,
            accel.reason.clone(),
            "add your user to the `kvm` group (or run as root) to use hardware KVM",
        ),
        (KvmKind::Pvm, _) => Check::not_ok(
            "kvm",
            CheckStatus::Warn,
            false,
            format!(
                "/dev/kvm is kvm_pvm, a software PVM module; stock guest kernels cannot boot on \
                 it, so it counts as no KVM. {tcg_note}"
            ),
            "nothing to do; for speed, run on a host with hardware virtualization (kvm_intel or kvm_amd)",
        ),
        (KvmKind::Unknown, _) => Check::not_ok(
            "kvm",
            CheckStatus::Warn,
            false,
            format!("/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded. {tcg_note}"),
            "load kvm_intel or kvm_amd (`modprobe kvm_intel`) if the CPU has virtualization",
        ),
        (KvmKind::None, _) => Check::not_ok(
            "kvm",
            CheckStatus::Warn,
            false,
            format!("/dev/kvm does not exist. {tcg_note}"),
            "enable virtualization (VT-x/AMD-V) and load kvm_intel or kvm_amd for speed",
        ),
    }
}

fn asset_check(name: &'static str, path: &Path, detail: fn(&Path, u64) -> String) -> Check {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Check::ok(name, true, detail(path, meta.len())),
        Ok(_) => Check::not_ok(
            name,
            CheckStatus::Missing,
            true,
            format!("`{}` is not a file", path.display()),
            RUN_SETUP,
        ),
        Err(e) => Check::not_ok(
            name,
            CheckStatus::Missing,
            true,
            format!("`{}`: {e}", path.display()),
            RUN_SETUP,
        ),
    }
}

fn size_detail(path: &Path, size: u64) -> String {
    format!("{} ({})", path.display(), human_size(size))
}

fn kernel_detail(path: &Path, size: u64) -> String {
    match kernel::kernel_version(path) {
        Ok(Some(version)) => format!(
            "{} (version {version}, {})",
            path.display(),
            human_size(size)
        ),
        _ => size_detail(path, size),
    }
}

fn setup_tool_check() -> Check {
    match find_program("mkfs.ext4") {
        Some(path) => Check::ok(
            "mkfs.ext4",
            false,
            format!(
                "{} (used by `hearth setup` and image builds)",
                path.display()
            ),
        ),
        None => Check::not_ok(
            "mkfs.ext4",
            CheckStatus::Warn,
            false,
            "not found; `hearth setup` needs it to build the default image".to_owned(),
            "apt-get install e2fsprogs",
        ),
    }
}

fn image_tool_check() -> Check {
    match find_program("mkfs.erofs") {
        Some(path) => Check::ok(
            "mkfs.erofs",
            false,
            format!("{} (builds the base of each OCI image)", path.display()),
        ),
        None => Check::not_ok(
            "mkfs.erofs",
            CheckStatus::Warn,
            false,
            "not found; `hearth pull` and `hearth run IMAGE` need it for registry images"
                .to_owned(),
            "apt-get install erofs-utils",
        ),
    }
}

fn busybox_check(busybox: &Path) -> Check {
    let fix = "apt-get install busybox-static";
    if !busybox.is_file() {
        return Check::not_ok(
            "busybox",
            CheckStatus::Warn,
            false,
            format!(
                "`{}` not found; `hearth setup` builds the default image from it",
                busybox.display()
            ),
            fix,
        );
    }
    match elf::needs_interpreter(busybox) {
        Ok(false) => Check::ok("busybox", false, format!("{} (static)", busybox.display())),
        _ => Check::not_ok(
            "busybox",
            CheckStatus::Warn,
            false,
            format!(
                "`{}` is not a static executable; the default image needs busybox-static",
                busybox.display()
            ),
            fix,
        ),
    }
}

fn host_kernel_check(host: &HostLayout) -> Check {
    match kernel::find_kernel(None, &host.boot_dir, &host.modules_root) {
        Ok(found) => Check::ok(
            "host-kernel",
            false,
            format!(
                "{} (version {}; `hearth setup` installs it for guests)",
                found.path.display(),
                found.version.as_deref().unwrap_or("unknown")
            ),
        ),
        Err(e) => Check::not_ok(
            "host-kernel",
            CheckStatus::Warn,
            false,
            e.to_string(),
            "apt-get install linux-image-cloud-amd64, or pass `hearth setup --kernel PATH`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_diagnose_this_host_reports_kvm_pvm_and_tcg() {
        if !Path::new("/sys/module/kvm_pvm").exists() {
            eprintln!("SKIP test_diagnose_this_host_reports_kvm_pvm_and_tcg: no kvm_pvm here");
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let report = diagnose(&StateDir::new(state.path()));
        assert_eq!(report.kvm, KvmKind::Pvm);
        assert_eq!(report.accel, Accel::Tcg);
        let kvm = report.check("kvm").unwrap();
        assert_eq!(kvm.status, CheckStatus::Warn);
        assert!(kvm.detail.contains("kvm_pvm"), "{}", kvm.detail);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["accel"], "tcg");
        assert_eq!(json["kvm"], "pvm");
    }

    #[test]
    fn test_diagnose_empty_state_dir_reports_assets_missing_with_setup_hint() {
        let state = tempfile::tempdir().unwrap();
        let report = diagnose(&StateDir::new(state.path()));
        for name in ["kernel", "initramfs", "default-image"] {
            let check = report.check(name).unwrap();
            assert_eq!(check.status, CheckStatus::Missing, "{name}");
            assert!(check.required);
            assert_eq!(check.fix.as_deref(), Some("run `hearth setup`"), "{name}");
        }
        assert!(!report.ok());
    }

    #[test]
    fn test_diagnose_json_field_names_are_stable() {
        let state = tempfile::tempdir().unwrap();
        let json = serde_json::to_value(diagnose(&StateDir::new(state.path()))).unwrap();
        let check = &json["checks"][0];
        for field in ["name", "status", "required", "detail", "fix"] {
            assert!(check.get(field).is_some(), "missing `{field}` in {check}");
        }
        for field in ["state_dir", "kvm", "accel", "accel_reason", "checks"] {
            assert!(json.get(field).is_some(), "missing `{field}`");
        }
    }
}
