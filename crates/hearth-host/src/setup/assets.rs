//! [`setup`]: the three boot-asset steps in order, each skipped when up to date.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::default_image::{self, DefaultImageError};
use super::fingerprint::{self, Fingerprint};
use super::initramfs::{self, InitramfsError};
use super::kernel::{self, GuestKernel, KernelError};
use super::modules::{self, GuestModule, KernelModules, ModulesError, GUEST_MODULES};
use super::vmlinux::{self, VmlinuxError};
use crate::StateDir;

/// Where setup finds things on the host. [`Default`] is the real host; tests point it at fakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLayout {
    /// Searched for `vmlinuz-<version>` when no kernel is given: `/boot`.
    pub boot_dir: PathBuf,
    /// Holds `<version>/modules.dep`: `/lib/modules`.
    pub modules_root: PathBuf,
    /// busybox-static's binary: `/bin/busybox`.
    pub busybox: PathBuf,
}

impl Default for HostLayout {
    fn default() -> Self {
        HostLayout {
            boot_dir: PathBuf::from("/boot"),
            modules_root: PathBuf::from("/lib/modules"),
            busybox: PathBuf::from("/bin/busybox"),
        }
    }
}

/// What `hearth setup` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupConfig {
    /// Guest kernel to install; `None` picks the newest installed one (see [`kernel::find_kernel`]).
    pub kernel: Option<PathBuf>,
    /// The guest agent binary (static), installed as `/init` in the initramfs.
    pub agent: PathBuf,
    /// Rebuild every output even when up to date.
    pub force: bool,
    /// Also write the uncompressed kernel Firecracker boots (`vmlinux`).
    pub firecracker_kernel: bool,
    pub host: HostLayout,
}

impl SetupConfig {
    /// Defaults: the host's newest kernel, no forcing, the real host layout.
    pub fn new(agent: impl Into<PathBuf>) -> Self {
        SetupConfig {
            kernel: None,
            agent: agent.into(),
            force: false,
            firecracker_kernel: false,
            host: HostLayout::default(),
        }
    }
}

/// Progress callbacks, so the CLI can print what setup is doing. Implementations must not
/// fail; they are told, not asked.
pub trait SetupReporter {
    /// A step starts real work, e.g. "building the initramfs `/var/lib/hearth/boot/initramfs.cpio`".
    fn on_step(&self, message: &str);
    /// Something works but is probably not what the user wants.
    fn on_warning(&self, message: &str) {
        let _ = message;
    }
}

/// A reporter that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopReporter;

impl SetupReporter for NoopReporter {
    fn on_step(&self, _message: &str) {}
}

/// One of setup's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Kernel,
    Initramfs,
    DefaultImage,
    /// The uncompressed kernel Firecracker boots.
    FirecrackerKernel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// The output was (re)written in this run.
    Built,
    /// The output already matched its inputs; nothing was written.
    UpToDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub output: PathBuf,
    pub outcome: StepOutcome,
}

/// What setup found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupReport {
    /// The host kernel used, with its version and modules dir.
    pub kernel: GuestKernel,
    /// The initramfs's modules in load order.
    pub modules: Vec<GuestModule>,
    /// Wanted modules the kernel has built in, so not shipped.
    pub builtin_modules: Vec<String>,
    /// Kernel, initramfs, default image, in that order, then Firecracker's kernel if asked.
    pub steps: Vec<StepReport>,
    /// Everything passed to [`SetupReporter::on_warning`].
    pub warnings: Vec<String>,
}

impl SetupReport {
    /// Whether no output had to be written.
    pub fn all_up_to_date(&self) -> bool {
        self.steps
            .iter()
            .all(|step| step.outcome == StepOutcome::UpToDate)
    }

    pub fn outcome(&self, step: Step) -> Option<StepOutcome> {
        self.steps
            .iter()
            .find(|report| report.step == step)
            .map(|report| report.outcome)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("failed to create the directory `{}`", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to lock `{}` against a concurrent `hearth setup`", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to install the guest kernel")]
    Kernel(#[from] KernelError),
    #[error("failed to write the uncompressed kernel for Firecracker")]
    Vmlinux(#[from] VmlinuxError),
    #[error("failed to find the guest's kernel modules")]
    Modules(#[from] ModulesError),
    #[error("failed to build the initramfs")]
    Initramfs(#[from] InitramfsError),
    #[error("failed to build the default image")]
    DefaultImage(#[from] DefaultImageError),
    #[error("failed to record the inputs of `{}` in its stamp file", path.display())]
    Stamp {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Builds the guest kernel, initramfs and default image into `state`, skipping each output
/// whose inputs have not changed since it was made (unless `cfg.force`). Holds a lock on
/// `<state>/setup.lock` so concurrent runs wait for each other.
pub fn setup(
    state: &StateDir,
    cfg: &SetupConfig,
    reporter: &dyn SetupReporter,
) -> Result<SetupReport, SetupError> {
    for dir in [
        state.root().to_owned(),
        state.boot_dir(),
        state.images_dir(),
    ] {
        fs::create_dir_all(&dir).map_err(|source| SetupError::CreateDir { path: dir, source })?;
    }
    let _lock = lock(&state.root().join("setup.lock"))?;
    let mut warnings = Warnings {
        reporter,
        list: Vec::new(),
    };

    // Find every input and fingerprint it first, so a missing agent or busybox fails before
    // anything is written.
    let kernel = kernel::find_kernel(
        cfg.kernel.as_deref(),
        &cfg.host.boot_dir,
        &cfg.host.modules_root,
    )?;
    let modules = guest_modules(&kernel, &mut warnings)?;
    let kernel_inputs = kernel::fingerprint(&kernel)?;
    let initramfs_inputs = initramfs::fingerprint(&cfg.agent, kernel.version.as_deref(), &modules)?;
    let image_inputs = default_image::fingerprint(&cfg.host.busybox)?;
    warn_if_dynamic_agent(&cfg.agent, &mut warnings);

    let kernel_step = run_step(
        Step::Kernel,
        &state.kernel(),
        &kernel_inputs,
        cfg.force,
        reporter,
        &format!("copying the guest kernel `{}`", kernel.path.display()),
        |dest| kernel::install(&kernel, dest),
    )?;
    let initramfs_step = run_step(
        Step::Initramfs,
        &state.initramfs(),
        &initramfs_inputs,
        cfg.force,
        reporter,
        &format!(
            "building the initramfs from the agent `{}` and {} kernel modules",
            cfg.agent.display(),
            modules.modules.len()
        ),
        |dest| initramfs::build(dest, &cfg.agent, &modules.modules),
    )?;
    let image_step = run_step(
        Step::DefaultImage,
        &state.default_image(),
        &image_inputs,
        cfg.force,
        reporter,
        &format!(
            "building the default image from `{}`",
            cfg.host.busybox.display()
        ),
        |dest| default_image::build(dest, &cfg.host.busybox),
    )?;

    let mut steps = vec![kernel_step, initramfs_step, image_step];
    if cfg.firecracker_kernel {
        steps.push(run_step(
            Step::FirecrackerKernel,
            &state.vmlinux(),
            &kernel::fingerprint_as(&kernel, "vmlinux")?,
            cfg.force,
            reporter,
            &format!(
                "unpacking the guest kernel `{}` for Firecracker",
                kernel.path.display()
            ),
            |dest| vmlinux::install(&kernel.path, dest),
        )?);
    }

    Ok(SetupReport {
        kernel,
        modules: modules.modules,
        builtin_modules: modules.builtin,
        steps,
        warnings: warnings.list,
    })
}

fn lock(path: &Path) -> Result<Flock<File>, SetupError> {
    let lock_err = |source| SetupError::Lock {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(lock_err)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| lock_err(errno.into()))
}

/// Runs `build` into `output` unless `fingerprint` says it is current, then records the
/// fingerprint.
fn run_step<E>(
    step: Step,
    output: &Path,
    fingerprint: &Fingerprint,
    force: bool,
    reporter: &dyn SetupReporter,
    message: &str,
    build: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<StepReport, SetupError>
where
    SetupError: From<E>,
{
    let report = |outcome| StepReport {
        step,
        output: output.to_owned(),
        outcome,
    };
    if !force && fingerprint::is_current(output, fingerprint) {
        return Ok(report(StepOutcome::UpToDate));
    }
    reporter.on_step(&format!("{message} into `{}`", output.display()));
    // Only this process writes here (setup.lock), so temp files beside it are a dead run's.
    fingerprint::remove_leftovers(output);
    build(output)?;
    fingerprint::record(output, fingerprint).map_err(|source| SetupError::Stamp {
        path: fingerprint::stamp_path(output),
        source,
    })?;
    Ok(report(StepOutcome::Built))
}

fn guest_modules(
    kernel: &GuestKernel,
    warnings: &mut Warnings<'_>,
) -> Result<KernelModules, SetupError> {
    match (&kernel.modules_dir, &kernel.version) {
        (Some(dir), Some(version)) => Ok(modules::kernel_modules(dir, version, GUEST_MODULES)?),
        _ => {
            warnings.add(format!(
                "no modules dir found for the kernel `{}` (version {}): the initramfs gets no \
                 modules, so the kernel must have virtio-mmio, virtio-blk, virtio-net, \
                 virtio-console, overlay and erofs built in",
                kernel.path.display(),
                kernel.version.as_deref().unwrap_or("unknown"),
            ));
            Ok(KernelModules::none())
        }
    }
}

/// A dynamically linked `/init` cannot start: the initramfs has no libc or loader.
fn warn_if_dynamic_agent(agent: &Path, warnings: &mut Warnings<'_>) {
    if let Ok(true) = super::elf::needs_interpreter(agent) {
        warnings.add(format!(
            "the agent `{}` is dynamically linked and will not start as /init; build it with \
             RUSTFLAGS=\"-C target-feature=+crt-static\"",
            agent.display()
        ));
    }
}

struct Warnings<'a> {
    reporter: &'a dyn SetupReporter,
    list: Vec<String>,
}

impl Warnings<'_> {
    fn add(&mut self, message: String) {
        self.reporter.on_warning(&message);
        self.list.push(message);
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;

    /// Records every callback, to check what the CLI would print.
    #[derive(Default)]
    struct Recorder {
        steps: Mutex<Vec<String>>,
    }

    impl SetupReporter for Recorder {
        fn on_step(&self, message: &str) {
            self.steps.lock().unwrap().push(message.to_owned());
        }
    }

    /// `SKIP` reason when this host lacks what the real setup needs, else `None`.
    fn missing_host_parts() -> Option<String> {
        let host = HostLayout::default();
        if kernel::find_kernel(None, &host.boot_dir, &host.modules_root).is_err() {
            return Some(
                "no installed kernel with modules (apt-get install linux-image-cloud-amd64)".into(),
            );
        }
        if !host.busybox.is_file() {
            return Some("no /bin/busybox (apt-get install busybox-static)".into());
        }
        for tool in ["mkfs.ext4", "e2fsck", "debugfs"] {
            if crate::find_program(tool).is_none() {
                return Some(format!("no `{tool}` (apt-get install e2fsprogs)"));
            }
        }
        None
    }

    fn skip(test: &str, reason: &str) {
        assert!(
            std::env::var_os("HEARTH_TEST_STRICT").is_none(),
            "{test} cannot run: {reason}"
        );
        eprintln!("SKIP {test}: {reason}");
    }

    /// Names of the entries of the newc archive at `path`, with the data of `hearth/modules`.
    fn archive_names(path: &Path) -> (Vec<String>, String) {
        let bytes = fs::read(path).unwrap();
        let mut rest = &bytes[..];
        let (mut names, mut list) = (Vec::new(), String::new());
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                return (names, list);
            }
            let name = reader.entry().name().to_owned();
            if name == "hearth/modules" {
                io::Read::read_to_string(&mut reader, &mut list).unwrap();
            }
            names.push(name);
            rest = reader.finish().unwrap();
        }
    }

    fn position(list: &[String], suffix: &str) -> usize {
        list.iter()
            .position(|line| line.ends_with(suffix))
            .unwrap_or_else(|| panic!("`{suffix}` not in {list:?}"))
    }

    fn run_tool(program: &str, args: &[&str], image: &Path) -> String {
        let output = Command::new(crate::find_program(program).unwrap())
            .args(args)
            .arg(image)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[test]
    fn test_setup_real_host_builds_then_is_up_to_date_then_force_rebuilds() {
        if let Some(reason) = missing_host_parts() {
            return skip(
                "test_setup_real_host_builds_then_is_up_to_date_then_force_rebuilds",
                &reason,
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        // Any executable does as the agent here; nothing boots it.
        let agent = dir.path().join("agent");
        fs::copy("/bin/true", &agent).unwrap();
        let mut cfg = SetupConfig::new(&agent);
        let recorder = Recorder::default();

        let first = setup(&state, &cfg, &recorder).unwrap();
        assert!(
            first.steps.iter().all(|s| s.outcome == StepOutcome::Built),
            "{first:?}"
        );
        assert_eq!(recorder.steps.lock().unwrap().len(), 3);
        assert!(first.kernel.version.is_some());
        assert_eq!(
            fs::metadata(state.kernel()).unwrap().len(),
            fs::metadata(&first.kernel.path).unwrap().len()
        );
        // /bin/true is dynamic: setup builds anyway but says the agent will not start.
        assert!(first
            .warnings
            .iter()
            .any(|w| w.contains("dynamically linked")));

        let (names, list) = archive_names(&state.initramfs());
        assert!(names.contains(&"init".to_owned()));
        assert!(names.contains(&"dev/console".to_owned()));
        let list: Vec<String> = list.lines().map(str::to_owned).collect();
        assert_eq!(list.len(), first.modules.len());
        for line in &list {
            assert!(
                names.contains(&line.trim_start_matches('/').to_owned()),
                "{line} not archived"
            );
        }
        assert!(position(&list, "/virtio_ring.ko") < position(&list, "/virtio_mmio.ko"));
        assert!(position(&list, "/virtio_mmio.ko") < position(&list, "/virtio_blk.ko"));
        assert!(position(&list, "/failover.ko") < position(&list, "/net_failover.ko"));
        assert!(position(&list, "/net_failover.ko") < position(&list, "/virtio_net.ko"));
        assert!(position(&list, "/virtio.ko") < position(&list, "/virtio_console.ko"));

        let image = state.default_image();
        run_tool("e2fsck", &["-n", "-f"], &image);
        let bin = run_tool("debugfs", &["-R", "ls -l /bin"], &image);
        assert!(bin.split_whitespace().any(|word| word == "sh"), "{bin}");
        let os_release = run_tool("debugfs", &["-R", "cat /etc/os-release"], &image);
        assert!(os_release.contains("hearth"), "{os_release}");

        let started = Instant::now();
        let second = setup(&state, &cfg, &recorder).unwrap();
        assert!(second.all_up_to_date(), "{second:?}");
        // Up-to-date checks only stat files and parse modules.dep: far below a second.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(recorder.steps.lock().unwrap().len(), 3);

        cfg.force = true;
        let third = setup(&state, &cfg, &recorder).unwrap();
        assert!(
            third.steps.iter().all(|s| s.outcome == StepOutcome::Built),
            "{third:?}"
        );
        // No temp or staging files are left beside the outputs.
        for dir in [state.boot_dir(), state.images_dir()] {
            for entry in fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name();
                assert!(
                    !name.to_string_lossy().starts_with('.'),
                    "{name:?} left behind"
                );
            }
        }
    }

    #[test]
    fn test_setup_agent_change_rebuilds_only_initramfs() {
        if let Some(reason) = missing_host_parts() {
            return skip("test_setup_agent_change_rebuilds_only_initramfs", &reason);
        }
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let agent = dir.path().join("agent");
        fs::copy("/bin/true", &agent).unwrap();
        let cfg = SetupConfig::new(&agent);
        setup(&state, &cfg, &NoopReporter).unwrap();

        fs::copy("/bin/false", &agent).unwrap();
        let report = setup(&state, &cfg, &NoopReporter).unwrap();
        assert_eq!(report.outcome(Step::Kernel), Some(StepOutcome::UpToDate));
        assert_eq!(report.outcome(Step::Initramfs), Some(StepOutcome::Built));
        assert_eq!(
            report.outcome(Step::DefaultImage),
            Some(StepOutcome::UpToDate)
        );
    }

    #[test]
    fn test_setup_missing_agent_names_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let boot = dir.path().join("boot");
        fs::create_dir_all(&boot).unwrap();
        fs::write(boot.join("vmlinuz-1.0-test"), "kernel").unwrap();
        let mut cfg = SetupConfig::new(dir.path().join("no-agent"));
        cfg.kernel = Some(boot.join("vmlinuz-1.0-test"));
        cfg.host.modules_root = dir.path().join("modules");
        let err = setup(&state, &cfg, &NoopReporter).unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            matches!(
                err,
                SetupError::Initramfs(InitramfsError::AgentMissing { .. })
            ),
            "{err}"
        );
        assert!(source.contains("hearth-agent"), "{source}");
        // Inputs are checked before any output is written.
        assert!(!state.kernel().exists());
    }
}
