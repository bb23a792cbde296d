//! `hearth doctor`: what hearth found on this host, whether it can run, and what to install.
//!
//! [`diagnose`] returns a [`DoctorReport`] (serde, for `--json`): one [`Check`] per program,
//! host feature and boot asset. It asks [`backend::decide`], as [`backend::detect`] does to
//! pick the backend, the accelerator and the programs, so doctor reports what a boot will use
//! and why.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hearth_vmm::Accel;
use serde::Serialize;

use crate::backend::{self, BackendChoice, FoundProgram, HostFacts};
use crate::find_program;
use crate::host_config::HostConfig;
use crate::human_size;
use crate::kvm::{AccelChoice, KvmKind};
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
    /// Stable identifier: `backend`, `qemu`, `kvm`, `accelerator`, `firecracker`, `jailer`,
    /// `cgroup`, `kernel`, `initramfs`, `default-image`, `mkfs.ext4`, `mkfs.erofs`,
    /// `busybox`, `host-kernel`.
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
    /// The backend VMs run on (`qemu-tcg`, `qemu-kvm`, `firecracker (jailed)`), or `none`
    /// when the one asked for cannot run here.
    pub backend: String,
    pub backend_reason: String,
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
    let (config, config_error) = match HostConfig::load(state) {
        Ok(config) => (config, None),
        Err(e) => (HostConfig::default(), Some(e.to_string())),
    };
    let facts = HostFacts::gather(&config);
    let accel = facts.accel.clone();
    let decided = match config_error {
        Some(why) => Err(why),
        None => backend::requested(&config)
            .and_then(|requested| backend::choose(requested, &facts))
            .map_err(|e| e.to_string()),
    };
    let mut checks = vec![
        backend_check(&decided),
        program_check("qemu", backend::QEMU, "apt-get install qemu-system-x86"),
        kvm_check(&accel),
        Check::ok(
            "accelerator",
            true,
            format!("{}: {}", accel.accel, accel.reason),
        ),
        firecracker_check(&facts),
        jailer_check(&facts),
        cgroup_check(facts.cgroup_version),
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
    let (backend, backend_reason) = match decided {
        Ok(choice) => (choice.chosen.to_string(), choice.reason),
        Err(why) => ("none".to_owned(), why),
    };
    DoctorReport {
        state_dir: state.root().to_owned(),
        kvm: accel.kvm,
        accel: accel.accel,
        accel_reason: accel.reason,
        backend,
        backend_reason,
        checks,
    }
}

/// The backend VMs run on and why; missing (hearth cannot run) when the backend asked for
/// cannot run here.
fn backend_check(decided: &Result<BackendChoice, String>) -> Check {
    match decided {
        Ok(choice) => Check::ok(
            "backend",
            true,
            format!(
                "{}, `{}` asked: {}",
                choice.chosen, choice.requested, choice.reason
            ),
        ),
        Err(why) => Check::not_ok(
            "backend",
            CheckStatus::Missing,
            true,
            why.clone(),
            format!(
                "install what it names, or pick another backend with `--backend` or \
                 `{}=qemu`",
                backend::BACKEND_ENV
            ),
        ),
    }
}

/// Firecracker: optional (QEMU runs everywhere), the production backend on hardware KVM.
fn firecracker_check(facts: &HostFacts) -> Check {
    let fix = "install the official release binary from \
               https://github.com/firecracker-microvm/firecracker/releases and record it with \
               `hearth setup --backend firecracker --firecracker-bin PATH --jailer-bin PATH`";
    let check = found_check("firecracker", facts.firecracker.as_ref(), fix);
    match &facts.firecracker {
        Some(found) if found.dynamic && facts.root && check.status == CheckStatus::Ok => {
            Check::not_ok(
                "firecracker",
                CheckStatus::Warn,
                false,
                format!(
                    "{}: dynamically linked, so it cannot run under the jailer, whose chroot \
                     holds only the binary",
                    check.detail
                ),
                fix,
            )
        }
        _ => check,
    }
}

/// The jailer: what Firecracker runs under when hearth is root.
fn jailer_check(facts: &HostFacts) -> Check {
    let fix = "install `jailer` from the same Firecracker release";
    let check = found_check("jailer", facts.jailer.as_ref(), fix);
    let versions = facts
        .firecracker
        .as_ref()
        .zip(facts.jailer.as_ref())
        .and_then(|(f, j)| f.version.as_ref().ok().zip(j.version.as_ref().ok()));
    match versions {
        Some((firecracker, jailer)) if firecracker != jailer => Check::not_ok(
            "jailer",
            CheckStatus::Warn,
            false,
            format!(
                "{}; Firecracker is {firecracker}: the jailer should come from the same release",
                check.detail
            ),
            fix,
        ),
        _ if !facts.root && check.status == CheckStatus::Ok => Check::ok(
            "jailer",
            false,
            format!("{} (used only when hearth runs as root)", check.detail),
        ),
        _ => check,
    }
}

fn found_check(name: &'static str, found: Option<&FoundProgram>, fix: &str) -> Check {
    match found {
        None => Check::not_ok(
            name,
            CheckStatus::Warn,
            false,
            format!(
                "`{name}` not found in the host settings, PATH, ~/.cargo/bin or /usr/local/bin"
            ),
            fix,
        ),
        Some(found) => match &found.version {
            Ok(version) if *version >= hearth_vmm::firecracker::version::MINIMUM => {
                Check::ok(name, false, found.describe())
            }
            Ok(_) => Check::not_ok(
                name,
                CheckStatus::Warn,
                false,
                format!(
                    "{}: hearth needs {} or later",
                    found.describe(),
                    hearth_vmm::firecracker::version::MINIMUM
                ),
                fix,
            ),
            Err(_) => Check::not_ok(name, CheckStatus::Warn, false, found.describe(), fix),
        },
    }
}

/// Which cgroup hierarchy VMMs' limits go into.
fn cgroup_check(version: u8) -> Check {
    let detail = match version {
        2 => "v2: the unified hierarchy at /sys/fs/cgroup limits each VMM's memory, CPU and tasks",
        _ => {
            "v1: each VMM's memory, CPU and tasks are limited in the memory, cpu and pids \
             hierarchies under /sys/fs/cgroup"
        }
    };
    Check::ok("cgroup", false, detail.to_owned())
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
        if std::env::var_os(backend::BACKEND_ENV).is_none() {
            // `auto` on kvm_pvm: QEMU, and the reason names kvm_pvm.
            assert_eq!(report.backend, "qemu-tcg");
            assert!(
                report.backend_reason.contains("kvm_pvm"),
                "{}",
                report.backend_reason
            );
        }
        assert!(report.check("cgroup").is_some());
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
        for field in [
            "state_dir",
            "kvm",
            "accel",
            "accel_reason",
            "backend",
            "backend_reason",
            "checks",
        ] {
            assert!(json.get(field).is_some(), "missing `{field}`");
        }
    }
}
