//! Choosing the VM backend once for this host: Firecracker or QEMU, the programs it runs and
//! its accelerator, with the reason.
//!
//! The request comes from `--backend` (which the CLI passes on as [`BACKEND_ENV`], so the
//! supervisors it starts choose the same), else the host's settings (`host.json`), else
//! `auto`. `auto` picks Firecracker only where it can run guests and hearth can run it as
//! designed: hardware KVM that this process can open, a `firecracker` of a version hearth
//! drives, and as root its jailer too. Everything else runs on QEMU, with KVM or TCG as
//! [`kvm::accelerator`] decides.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use hearth_vmm::firecracker::version::{self, Version};
use hearth_vmm::firecracker::{FirecrackerVmm, Jailer};
use hearth_vmm::jail::{JailError, JailIds, DEFAULT_ID_BASE};
use hearth_vmm::qemu::QemuVmm;
use hearth_vmm::{Accel, Vmm};
use serde::{Deserialize, Serialize};

use crate::find_program;
use crate::host_config::{FirecrackerMemory, HostConfig, HostConfigError};
use crate::kvm::{self, AccelChoice, KvmKind};
use crate::StateDir;

pub const QEMU: &str = "qemu-system-x86_64";
pub const FIRECRACKER: &str = "firecracker";
pub const JAILER: &str = "jailer";

/// Overrides where the uids and gids of jailed VMMs start (see `hearth_vmm::jail::JailIds`).
pub const JAIL_ID_BASE_ENV: &str = "HEARTH_JAIL_ID_BASE";

/// The backend asked for; `--backend` sets it for hearth and the supervisors it starts.
pub const BACKEND_ENV: &str = "HEARTH_BACKEND";

/// Where Firecracker comes from: no distribution packages it.
const FIRECRACKER_RELEASES: &str = "https://github.com/firecracker-microvm/firecracker/releases";

/// The backend asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    #[default]
    Auto,
    Firecracker,
    Qemu,
}

impl BackendKind {
    fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Firecracker => "firecracker",
            BackendKind::Qemu => "qemu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "auto" => Ok(BackendKind::Auto),
            "firecracker" => Ok(BackendKind::Firecracker),
            "qemu" => Ok(BackendKind::Qemu),
            _ => Err(BackendError::UnknownBackend(value.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("`{program}` was not found in PATH, ~/.cargo/bin or /usr/local/bin; {fix}")]
    Missing {
        program: &'static str,
        fix: &'static str,
    },
    #[error("unknown backend `{0}`: use `auto`, `firecracker` or `qemu`")]
    UnknownBackend(String),
    #[error("the firecracker backend cannot run here: {0}")]
    FirecrackerUnusable(String),
    #[error("{JAIL_ID_BASE_ENV}=`{0}` is not a number")]
    JailIdBaseNotANumber(String),
    #[error(transparent)]
    JailIds(#[from] JailError),
    #[error(transparent)]
    HostConfig(#[from] HostConfigError),
    #[error("failed to fetch the Firecracker release")]
    Fetch(#[source] crate::setup::firecracker_release::FetchError),
    #[error("failed to fetch the guest kernel")]
    FetchKernel(#[source] crate::setup::firecracker_release::FetchError),
}

/// A program found on this host, and what its `--version` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundProgram {
    pub path: PathBuf,
    /// The version, or why it could not be told or is not one hearth can use.
    pub version: Result<Version, String>,
    /// It is an ELF executable that needs a dynamic loader. The jailer copies only the binary
    /// into its chroot, where no loader or libraries are, so such a Firecracker cannot run
    /// jailed; the official release binaries are static.
    pub dynamic: bool,
}

impl FoundProgram {
    /// `/usr/local/bin/firecracker (1.16.1)`, or the path and the problem.
    pub fn describe(&self) -> String {
        match &self.version {
            Ok(version) => format!("{} ({version})", self.path.display()),
            Err(why) => format!("{} ({why})", self.path.display()),
        }
    }

    /// Why hearth cannot run it, if it cannot.
    fn unusable(&self, program: &str) -> Option<String> {
        match &self.version {
            Ok(found) if *found >= version::MINIMUM => None,
            Ok(found) => Some(format!(
                "`{}` is {program} {found}, and hearth needs {} or later; install a newer \
                 release from {FIRECRACKER_RELEASES}",
                self.path.display(),
                version::MINIMUM
            )),
            Err(why) => Some(format!("`{}`: {why}", self.path.display())),
        }
    }
}

/// What the choice looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub accel: AccelChoice,
    pub firecracker: Option<FoundProgram>,
    pub jailer: Option<FoundProgram>,
    /// hearth runs as root: VMMs are jailed, so Firecracker needs its jailer.
    pub root: bool,
    /// The cgroup version jailed VMMs are limited with (1 or 2).
    pub cgroup_version: u8,
}

impl HostFacts {
    /// This host, with the binaries `config` names or those found on the search path.
    pub fn gather(config: &HostConfig) -> Self {
        let locate = |configured: &Option<PathBuf>, name: &str| {
            configured.clone().or_else(|| find_program(name))
        };
        HostFacts {
            accel: kvm::accelerator(),
            firecracker: locate(&config.firecracker, FIRECRACKER)
                .map(|path| probe(path, Version::from_version_line)),
            jailer: locate(&config.jailer, JAILER)
                .map(|path| probe(path, Version::from_jailer_line)),
            root: nix::unistd::geteuid().is_root(),
            cgroup_version: hearth_vmm::cgroup::version(),
        }
    }
}

/// Asks `path --version` and reads its first line with `parse`.
pub fn probe(path: PathBuf, parse: fn(&str) -> Option<Version>) -> FoundProgram {
    let version = first_line(&path).and_then(|line| {
        parse(&line).ok_or_else(|| format!("`--version` printed {line:?}, not a known version"))
    });
    // What cannot be read as ELF (a wrapper script) is not called dynamic: running it tells.
    let dynamic = crate::setup::elf::needs_interpreter(&path).unwrap_or(false);
    FoundProgram {
        path,
        version,
        dynamic,
    }
}

fn first_line(path: &Path) -> Result<String, String> {
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run it: {e}"))?;
    if !output.status.success() {
        return Err(format!("`--version` exited with {}", output.status));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "`--version` printed nothing".to_owned())
}

/// The backend picked and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    pub requested: BackendKind,
    pub chosen: Chosen,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// Firecracker, under its jailer when hearth is root.
    Firecracker {
        jailed: bool,
    },
    Qemu(Accel),
}

impl fmt::Display for Chosen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chosen::Firecracker { jailed: true } => f.write_str("firecracker (jailed)"),
            Chosen::Firecracker { jailed: false } => f.write_str("firecracker"),
            Chosen::Qemu(accel) => write!(f, "qemu-{accel}"),
        }
    }
}

/// Why Firecracker cannot run here, or `None` when it can: its binary, and as root its jailer.
fn firecracker_blocker(facts: &HostFacts) -> Option<String> {
    let Some(firecracker) = &facts.firecracker else {
        return Some(format!(
            "`{FIRECRACKER}` was not found; install the official release binary from \
             {FIRECRACKER_RELEASES} and record it with `hearth setup --backend firecracker \
             --firecracker-bin PATH --jailer-bin PATH`"
        ));
    };
    if let Some(why) = firecracker.unusable("Firecracker") {
        return Some(why);
    }
    if !facts.root {
        return None;
    }
    if firecracker.dynamic {
        return Some(format!(
            "`{}` is dynamically linked, and the jailer copies only the binary into its \
             chroot, where its loader and libraries are missing; use the official release \
             binary from {FIRECRACKER_RELEASES}, which is static",
            firecracker.path.display()
        ));
    }
    match &facts.jailer {
        None => Some(format!(
            "hearth runs as root, and then runs Firecracker only under its jailer, which was \
             not found; install `{JAILER}` from the same release ({FIRECRACKER_RELEASES})"
        )),
        Some(jailer) => jailer.unusable("the jailer"),
    }
}

/// Picks the backend for `requested` on a host described by `facts`.
pub fn choose(requested: BackendKind, facts: &HostFacts) -> Result<BackendChoice, BackendError> {
    let qemu = |reason: String| BackendChoice {
        requested,
        chosen: Chosen::Qemu(facts.accel.accel),
        reason,
    };
    let firecracker = |reason: String| BackendChoice {
        requested,
        chosen: Chosen::Firecracker { jailed: facts.root },
        reason,
    };
    match requested {
        BackendKind::Qemu => Ok(qemu(format!(
            "asked for; accelerator {}: {}",
            facts.accel.accel, facts.accel.reason
        ))),
        BackendKind::Firecracker => match firecracker_blocker(facts) {
            Some(why) => Err(BackendError::FirecrackerUnusable(why)),
            // Asked for, it runs even where guests cannot boot (kvm_pvm): Firecracker itself
            // still takes its configuration, starts, pauses and snapshots there.
            None if facts.accel.kvm != KvmKind::Hardware => Ok(firecracker(format!(
                "asked for, although guests may not boot: {}",
                facts.accel.reason
            ))),
            None => Ok(firecracker("asked for".to_owned())),
        },
        BackendKind::Auto => {
            if facts.accel.kvm != KvmKind::Hardware || facts.accel.accel != Accel::Kvm {
                return Ok(qemu(format!(
                    "Firecracker needs hardware KVM, and {}; QEMU runs with {}",
                    facts.accel.reason, facts.accel.accel
                )));
            }
            match firecracker_blocker(facts) {
                Some(why) => Ok(qemu(format!(
                    "hardware KVM is available but Firecracker is not usable: {why}"
                ))),
                None => Ok(firecracker(format!(
                    "hardware KVM is available and Firecracker is installed{}",
                    if facts.root { ", with its jailer" } else { "" }
                ))),
            }
        }
    }
}

/// The backend asked for: [`BACKEND_ENV`] (`--backend`), else the host's settings, else auto.
pub fn requested(config: &HostConfig) -> Result<BackendKind, BackendError> {
    match std::env::var(BACKEND_ENV) {
        Ok(value) if !value.trim().is_empty() => value.parse(),
        _ => Ok(config.backend.unwrap_or_default()),
    }
}

/// The backend for this host and `state`'s settings, with the reason for the choice.
pub fn decide(state: &StateDir) -> Result<(BackendChoice, HostFacts), BackendError> {
    let config = HostConfig::load(state)?;
    let facts = HostFacts::gather(&config);
    let choice = choose(requested(&config)?, &facts)?;
    Ok((choice, facts))
}

/// Whether VMs here may run on Firecracker, so that setup unpacks the kernel it boots: it is
/// what this host's settings or `auto` pick, or its binary is recorded.
pub fn may_run_firecracker(state: &StateDir) -> bool {
    let recorded = HostConfig::load(state).is_ok_and(|config| {
        config.firecracker.is_some() || config.backend == Some(BackendKind::Firecracker)
    });
    recorded
        || decide(state)
            .is_ok_and(|(choice, _)| matches!(choice.chosen, Chosen::Firecracker { .. }))
}

/// The backend this host runs VMs on (see [`decide`]).
pub fn detect(state: &StateDir) -> Result<Box<dyn Vmm>, BackendError> {
    let (choice, facts) = decide(state)?;
    let memory = HostConfig::load(state)?
        .firecracker_memory
        .unwrap_or_default()
        .backend_type();
    tracing::debug!(backend = %choice.chosen, reason = %choice.reason, "backend chosen");
    match choice.chosen {
        Chosen::Qemu(accel) => {
            let qemu = require(QEMU, "install it with `apt-get install qemu-system-x86`")?;
            Ok(Box::new(QemuVmm::new(qemu, accel, jail_ids()?)))
        }
        Chosen::Firecracker { jailed } => {
            // `choose` found both programs usable before it picked Firecracker.
            let firecracker =
                facts
                    .firecracker
                    .map(|found| found.path)
                    .ok_or(BackendError::Missing {
                        program: FIRECRACKER,
                        fix: "install the official release binary",
                    })?;
            if !jailed {
                return Ok(Box::new(
                    FirecrackerVmm::new(firecracker).with_memory_backend(memory),
                ));
            }
            let program = facts
                .jailer
                .map(|found| found.path)
                .ok_or(BackendError::Missing {
                    program: JAILER,
                    fix: "install the jailer of the same release",
                })?;
            let ids = jail_ids()?.ok_or(BackendError::Missing {
                program: JAILER,
                fix: "the jailer runs only as root",
            })?;
            Ok(Box::new(
                FirecrackerVmm::jailed(firecracker, Jailer { program, ids })
                    .with_memory_backend(memory),
            ))
        }
    }
}

/// What `hearth setup --backend` records in the host's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSetup {
    /// The default backend from now on; `None` keeps the recorded one.
    pub backend: Option<BackendKind>,
    /// The `firecracker` binary; found on the search path when absent and Firecracker is asked.
    pub firecracker: Option<PathBuf>,
    pub jailer: Option<PathBuf>,
    /// Firecracker's memory backend for restores; `None` keeps the recorded one.
    pub firecracker_memory: Option<FirecrackerMemory>,
}

/// Checks the binaries `setup` names (or finds them), refusing any hearth cannot run, and
/// records them with the backend in `state`'s settings, which are returned.
pub fn record(state: &StateDir, setup: &BackendSetup) -> Result<HostConfig, BackendError> {
    let mut config = HostConfig::load(state)?;
    let wants_firecracker =
        setup.backend == Some(BackendKind::Firecracker) || setup.firecracker.is_some();
    let usable = |given: &Option<PathBuf>,
                  name: &'static str,
                  parse: fn(&str) -> Option<Version>,
                  label: &str|
     -> Result<Option<FoundProgram>, BackendError> {
        let Some(path) = given.clone().or_else(|| find_program(name)) else {
            return Ok(None);
        };
        let path = std::fs::canonicalize(&path)
            .map_err(|e| BackendError::FirecrackerUnusable(format!("`{}`: {e}", path.display())))?;
        let found = probe(path, parse);
        match found.unusable(label) {
            Some(why) => Err(BackendError::FirecrackerUnusable(why)),
            None => Ok(Some(found)),
        }
    };
    if wants_firecracker {
        let firecracker = usable(
            &setup.firecracker,
            FIRECRACKER,
            Version::from_version_line,
            "Firecracker",
        )?
        .ok_or_else(|| {
            BackendError::FirecrackerUnusable(format!(
                "`{FIRECRACKER}` was not found; pass `--firecracker-bin PATH` to the official \
                 release binary from {FIRECRACKER_RELEASES}"
            ))
        })?;
        if firecracker.dynamic && nix::unistd::geteuid().is_root() {
            return Err(BackendError::FirecrackerUnusable(format!(
                "`{}` is dynamically linked, and as root hearth runs Firecracker under the \
                 jailer, which copies only the binary into its chroot; use the official \
                 (static) release binary",
                firecracker.path.display()
            )));
        }
        config.firecracker = Some(firecracker.path);
    }
    if wants_firecracker || setup.jailer.is_some() {
        let jailer = usable(
            &setup.jailer,
            JAILER,
            Version::from_jailer_line,
            "the jailer",
        )?;
        if jailer.is_none() && nix::unistd::geteuid().is_root() {
            return Err(BackendError::FirecrackerUnusable(format!(
                "`{JAILER}` was not found, and as root hearth runs Firecracker only under it; \
                 pass `--jailer-bin PATH` to the jailer of the same release"
            )));
        }
        config.jailer = jailer.map(|found| found.path).or(config.jailer);
    }
    if let Some(backend) = setup.backend {
        config.backend = Some(backend);
    }
    if let Some(memory) = setup.firecracker_memory {
        config.firecracker_memory = Some(memory);
    }
    config.save(state)?;
    Ok(config)
}

/// The ids VMM jails take, when this process is root and so can jail; unprivileged, QEMU runs
/// as the caller with only its own seccomp sandbox, rlimits and NoNewPrivs.
fn jail_ids() -> Result<Option<JailIds>, BackendError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let base = match std::env::var(JAIL_ID_BASE_ENV) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| BackendError::JailIdBaseNotANumber(value))?,
        Err(_) => DEFAULT_ID_BASE,
    };
    Ok(Some(JailIds::new(base)?))
}

fn require(program: &'static str, fix: &'static str) -> Result<PathBuf, BackendError> {
    find_program(program).ok_or(BackendError::Missing { program, fix })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: Version = Version {
        major: 1,
        minor: 16,
        patch: 1,
    };
    const OLD: Version = Version {
        major: 1,
        minor: 9,
        patch: 0,
    };

    fn facts(kvm: KvmKind, firecracker: Option<Version>, jailer: Option<Version>) -> HostFacts {
        let found = |name: &str, version: Option<Version>| {
            version.map(|v| FoundProgram {
                path: PathBuf::from("/opt/fc").join(name),
                version: Ok(v),
                dynamic: false,
            })
        };
        HostFacts {
            accel: kvm::choose_accel(kvm),
            firecracker: found(FIRECRACKER, firecracker),
            jailer: found(JAILER, jailer),
            root: true,
            cgroup_version: 2,
        }
    }

    #[test]
    fn test_auto_on_kvm_pvm_picks_qemu_tcg_and_says_why() {
        let choice = choose(
            BackendKind::Auto,
            &facts(KvmKind::Pvm, Some(NEW), Some(NEW)),
        )
        .unwrap();
        assert_eq!(choice.chosen, Chosen::Qemu(Accel::Tcg));
        assert!(choice.reason.contains("kvm_pvm"), "{}", choice.reason);
        assert!(choice.reason.contains("hardware KVM"), "{}", choice.reason);
    }

    #[test]
    fn test_auto_on_hardware_kvm_with_firecracker_picks_it_jailed_as_root() {
        let choice = choose(
            BackendKind::Auto,
            &facts(KvmKind::Hardware, Some(NEW), Some(NEW)),
        )
        .unwrap();
        assert_eq!(choice.chosen, Chosen::Firecracker { jailed: true });
        assert!(choice.reason.contains("jailer"), "{}", choice.reason);
        let asked = choose(
            BackendKind::Firecracker,
            &facts(KvmKind::Hardware, Some(NEW), Some(NEW)),
        )
        .unwrap();
        assert_eq!(asked.chosen, Chosen::Firecracker { jailed: true });
    }

    #[test]
    fn test_auto_as_root_without_a_jailer_stays_on_qemu_kvm() {
        let choice = choose(
            BackendKind::Auto,
            &facts(KvmKind::Hardware, Some(NEW), None),
        )
        .unwrap();
        assert_eq!(choice.chosen, Chosen::Qemu(Accel::Kvm));
        assert!(choice.reason.contains("jailer"), "{}", choice.reason);
    }

    #[test]
    fn test_auto_with_a_too_old_firecracker_stays_on_qemu_and_names_the_version() {
        let choice = choose(
            BackendKind::Auto,
            &facts(KvmKind::Hardware, Some(OLD), Some(OLD)),
        )
        .unwrap();
        assert_eq!(choice.chosen, Chosen::Qemu(Accel::Kvm));
        assert!(choice.reason.contains("1.9.0"), "{}", choice.reason);
    }

    #[test]
    fn test_asking_for_a_missing_firecracker_is_an_error_naming_the_fix() {
        let error = choose(
            BackendKind::Firecracker,
            &facts(KvmKind::Hardware, None, None),
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("firecracker/releases"), "{message}");
        assert!(
            message.contains("hearth setup --backend firecracker"),
            "{message}"
        );
    }

    #[test]
    fn test_asking_for_firecracker_on_kvm_pvm_runs_it_with_a_warning() {
        let choice = choose(
            BackendKind::Firecracker,
            &facts(KvmKind::Pvm, Some(NEW), Some(NEW)),
        )
        .unwrap();
        assert_eq!(choice.chosen, Chosen::Firecracker { jailed: true });
        assert!(choice.reason.contains("may not boot"), "{}", choice.reason);
    }

    #[test]
    fn test_a_dynamically_linked_firecracker_cannot_run_jailed() {
        let mut facts = facts(KvmKind::Hardware, Some(NEW), Some(NEW));
        if let Some(firecracker) = facts.firecracker.as_mut() {
            firecracker.dynamic = true;
        }
        let choice = choose(BackendKind::Auto, &facts).unwrap();
        assert_eq!(choice.chosen, Chosen::Qemu(Accel::Kvm));
        assert!(
            choice.reason.contains("dynamically linked"),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn test_unprivileged_firecracker_needs_no_jailer() {
        let mut facts = facts(KvmKind::Hardware, Some(NEW), None);
        facts.root = false;
        let choice = choose(BackendKind::Firecracker, &facts).unwrap();
        assert_eq!(choice.chosen, Chosen::Firecracker { jailed: false });
    }

    fn script(dir: &Path, name: &str, line: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{line}'\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    #[test]
    fn test_setup_records_usable_binaries_and_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let setup = BackendSetup {
            backend: Some(BackendKind::Firecracker),
            firecracker: Some(script(dir.path(), "firecracker", "Firecracker v1.10.0")),
            jailer: Some(script(dir.path(), "jailer", "Jailer v1.10.0")),
            firecracker_memory: Some(FirecrackerMemory::Uffd),
        };
        let recorded = record(&state, &setup).unwrap();
        assert_eq!(recorded.backend, Some(BackendKind::Firecracker));
        assert_eq!(recorded.firecracker, setup.firecracker);
        assert_eq!(recorded.firecracker_memory, Some(FirecrackerMemory::Uffd));
        assert_eq!(HostConfig::load(&state).unwrap(), recorded);
        let text = std::fs::read_to_string(state.host_config()).unwrap();
        assert!(text.contains(r#""firecracker_memory": "uffd""#), "{text}");
    }

    #[test]
    fn test_setup_refuses_a_too_old_firecracker_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let setup = BackendSetup {
            backend: Some(BackendKind::Firecracker),
            firecracker: Some(script(dir.path(), "firecracker", "Firecracker v1.9.1")),
            jailer: Some(script(dir.path(), "jailer", "Jailer v1.9.1")),
            firecracker_memory: None,
        };
        let error = record(&state, &setup).unwrap_err();
        assert!(
            error.to_string().contains("needs 1.10.0 or later"),
            "{error}"
        );
        assert!(!state.host_config().exists());
    }

    #[test]
    fn test_backend_names_parse_and_unknown_ones_are_refused() {
        assert_eq!("qemu".parse::<BackendKind>().unwrap(), BackendKind::Qemu);
        assert_eq!(BackendKind::Firecracker.to_string(), "firecracker");
        assert!("kvm".parse::<BackendKind>().is_err());
        assert_eq!("uffd".parse(), Ok(FirecrackerMemory::Uffd));
        assert!("mmap".parse::<FirecrackerMemory>().is_err());
    }

    #[test]
    fn test_probe_reads_a_version_and_reports_a_stranger() {
        let dir = tempfile::tempdir().unwrap();
        let good = probe(
            script(dir.path(), "fc", "Firecracker v1.12.0"),
            Version::from_version_line,
        );
        assert_eq!(good.version.unwrap().to_string(), "1.12.0");
        let stranger = probe(
            script(dir.path(), "other", "Jailer v1.12.0"),
            Version::from_version_line,
        );
        assert!(stranger
            .version
            .unwrap_err()
            .contains("not a known version"));
    }
}
