//! Starting, watching, snapshotting and stopping one Firecracker microVM.
//!
//! Firecracker is spawned with only its API socket and instance id on its command line and
//! configured over the socket, the way its own docs and jailer deployments do it, so every
//! request and every refusal passes through the typed client and its errors. Its stdout is the
//! guest's serial console (and Firecracker's own log until `PUT /logger` moves that to a file);
//! it runs in the run dir, so the vsock socket can be named relative to it (see `VSOCK_SOCKET`).
//!
//! With a [`Jailer`] (hearth runs as root) the jailer starts it instead, in a chroot under the
//! run dir (see [`super::jailer`]): then every path Firecracker is given is inside the chroot,
//! and Firecracker, in a pid namespace of its own, is held by a pidfd rather than as a child.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};
use tokio::time::timeout;

use super::actions::{Action, ActionType};
use super::boot_source::BootSource;
use super::client::{ApiClient, ApiError, Request};
use super::drive::Drive;
use super::instance::InstanceInfo;
use super::jailer::{self, Chroot, ChrootError, JailGuard, Jailer, JailerRun};
use super::logger::Logger;
use super::machine_config::MachineConfig;
use super::metrics::Metrics;
use super::network::NetworkInterface;
use super::relay::Relay;
use super::snapshot::{
    memory_path, restored_memory, BackendType, MemoryBackend, NetworkOverride, SnapshotCreate,
    SnapshotLoad,
};
use super::uffd::{PageServer, UffdError};
use super::version::{self, Version};
use super::vm_state::VmState;
use super::vsock::{Vsock, GUEST_CID};
use super::AGENT_PORT;
use crate::cgroup::{CgroupLimits, MAX_TASKS};
use crate::config::{Accel, MemoryMode, NetNamespace, VmConfig};
use crate::console::{self, CappedLog, CONSOLE_LOG_CAP};
use crate::{BackendInfo, SaveError, StartVmError, VersionError, Vm, VmExit, Vmm};

/// How long Firecracker gets to open its API socket.
const START_WAIT: Duration = Duration::from_secs(10);

/// How often the API socket is tried while Firecracker starts.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long a Firecracker whose request failed gets to be seen exiting, which turns the failed
/// request into the better report: its exit status and the end of its log.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// sockaddr_un holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Kernel arguments the backend always adds: the serial console; `reboot=k` so that a guest
/// reboot (and `SendCtrlAltDel`) goes through the keyboard controller, which ends Firecracker;
/// `panic=-1` so a panic reboots, i.e. ends the VM, at once; no PCI probing (Firecracker has
/// no PCI bus by default; its devices are virtio-mmio, announced in its ACPI tables).
/// The guest agent serves its stream on vsock here: Firecracker has no virtio-serial.
const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off hearth.channel=vsock";

/// The vsock socket's name, relative to the run dir Firecracker runs in. The snapshot records
/// the path as given, and a restore binds it again relative to the new VM's run dir; an
/// absolute path would make a restored VM bind the saving VM's socket (overriding it on load
/// takes Firecracker 1.16).
const VSOCK_SOCKET: &str = "vsock.sock";

/// Most bytes of each log quoted when Firecracker exits during start-up.
const LOG_TAIL: u64 = 4096;

/// What a jailed Firecracker's cgroup allows above guest RAM: Firecracker's own memory is
/// about 5 MiB (its documented overhead); the rest is room for the page cache that writing a
/// snapshot's memory file charges to the group, which the kernel reclaims at the limit.
const MEMORY_OVERHEAD_MIB: u64 = 64;

/// The Firecracker backend, holding the path of the `firecracker` binary and, when hearth is
/// root, the jailer that starts it.
#[derive(Debug)]
pub struct FirecrackerVmm {
    firecracker: PathBuf,
    jailer: Option<Jailer>,
    /// How a restore gets guest memory: mapped from the file, or served page by page.
    memory: BackendType,
    /// `firecracker --version`'s first line, asked once.
    version: std::sync::OnceLock<String>,
}

impl FirecrackerVmm {
    /// Firecracker run directly, as the user hearth runs as.
    pub fn new(firecracker: PathBuf) -> Self {
        FirecrackerVmm {
            firecracker,
            jailer: None,
            memory: BackendType::File,
            version: std::sync::OnceLock::new(),
        }
    }

    /// Firecracker started by `jailer`: what hearth does as root.
    pub fn jailed(firecracker: PathBuf, jailer: Jailer) -> Self {
        FirecrackerVmm {
            firecracker,
            jailer: Some(jailer),
            memory: BackendType::File,
            version: std::sync::OnceLock::new(),
        }
    }

    /// Restores with `memory` as the memory backend: `Uffd` serves each page on its first
    /// touch from hearth's page-fault handler ([`super::uffd`]) instead of mapping the file.
    pub fn with_memory_backend(mut self, memory: BackendType) -> Self {
        self.memory = memory;
        self
    }

    fn program(&self) -> String {
        self.firecracker.display().to_string()
    }

    /// The binary's version, refused when hearth cannot drive it.
    fn checked_version(&self) -> Result<Version, StartVmError> {
        if !self.firecracker.is_file() {
            return Err(StartVmError::ProgramMissing {
                program: self.program(),
                hint: "install the official release binary from \
                       https://github.com/firecracker-microvm/firecracker/releases \
                       (no distribution packages it)"
                    .to_owned(),
            });
        }
        let line = self
            .version()
            .map_err(|e| StartVmError::Firecracker(FirecrackerError::Version(e)))?;
        let found = Version::from_version_line(&line).ok_or_else(|| {
            StartVmError::Firecracker(FirecrackerError::NotFirecracker {
                program: self.program(),
                line: line.clone(),
            })
        })?;
        if found < version::MINIMUM {
            return Err(StartVmError::Firecracker(FirecrackerError::TooOld {
                program: self.program(),
                found,
                needed: version::MINIMUM,
                feature: "at all",
            }));
        }
        Ok(found)
    }
}

/// Why Firecracker could not run a VM, beyond what every backend can fail at.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    #[error(transparent)]
    Version(VersionError),
    #[error("`{program}` does not look like Firecracker: `--version` printed {line:?}")]
    NotFirecracker { program: String, line: String },
    #[error(
        "`{program}` is Firecracker {found}, and hearth needs {needed} or later to run it \
         {feature}; install a newer release from \
         https://github.com/firecracker-microvm/firecracker/releases"
    )]
    TooOld {
        program: String,
        found: Version,
        needed: Version,
        feature: &'static str,
    },
    #[error(
        "kernel `{}` is not an ELF image: Firecracker on x86_64 boots an uncompressed \
         `vmlinux`, not a bzImage; `hearth setup --backend firecracker` unpacks the guest \
         kernel into the state dir's `boot/vmlinux`",
        path.display()
    )]
    NotElf { path: PathBuf },
    #[error(
        "kernel `{}` does not exist; `hearth setup --backend firecracker` unpacks the guest \
         kernel Firecracker boots there",
        path.display()
    )]
    NoKernel { path: PathBuf },
    #[error("failed to start the page-fault handler for a restore")]
    Uffd(#[source] UffdError),
    #[error(
        "Firecracker cannot load a snapshot into a shared memory file to make a template; its \
         snapshots already keep memory in a file of their own, which clones load"
    )]
    SharedMemory,
    #[error("Firecracker did not open its API socket `{}` within {timeout:?}", socket.display())]
    ApiSocketTimeout { socket: PathBuf, timeout: Duration },
    #[error(
        "the jailer `{program}` refused to start Firecracker ({status}): {output}; run \
         `hearth doctor` to check the jailer, the cgroup hierarchy and the jail id range"
    )]
    Jailer {
        program: String,
        status: String,
        output: String,
    },
    #[error("the jailer `{program}` did not finish within {timeout:?}")]
    JailerTimeout { program: String, timeout: Duration },
    #[error("the jailer started Firecracker but its pid could not be taken from `{}`", chroot.display())]
    JailedPid {
        chroot: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Chroot(ChrootError),
    #[error("{step} failed")]
    Configure {
        step: &'static str,
        #[source]
        source: ApiError,
    },
    #[error("Firecracker exited while {step} ({status}); the end of its log:\n{log}")]
    Exited {
        step: &'static str,
        status: String,
        log: String,
    },
}

/// The files of one VM in its run dir.
#[derive(Debug, Clone)]
struct RunFiles {
    api: PathBuf,
    /// Firecracker's vsock socket, absolute, for the relay.
    vsock: PathBuf,
    agent_stream: PathBuf,
    /// Where the page-fault handler listens for a `Uffd` restore.
    uffd: PathBuf,
    console_log: PathBuf,
    /// Firecracker's log once `PUT /logger` points it there.
    log: PathBuf,
    /// Firecracker's stderr: what it prints as it exits with an error.
    stderr: PathBuf,
    metrics: PathBuf,
}

impl RunFiles {
    /// The files of an unjailed VM, all in its run dir; a jailed one's Firecracker makes and
    /// writes its own inside `chroot`.
    fn new(config: &VmConfig, chroot: Option<&Chroot>) -> Self {
        let dir = &config.run_dir;
        let firecracker_file = |unjailed: &str, jailed: &str| match chroot {
            Some(chroot) => chroot.host_path(jailed),
            None => dir.join(unjailed),
        };
        RunFiles {
            api: firecracker_file("firecracker.sock", jailer::API_SOCKET),
            vsock: firecracker_file(VSOCK_SOCKET, VSOCK_SOCKET),
            agent_stream: dir.join("agent-stream.sock"),
            uffd: firecracker_file("uffd.sock", jailer::UFFD_SOCKET),
            console_log: config.console_log.clone(),
            log: firecracker_file("firecracker.log", jailer::LOG),
            stderr: dir.join("firecracker.err"),
            metrics: firecracker_file("metrics.json", jailer::METRICS),
        }
    }

    /// The last lines Firecracker wrote: its log file, or the console when it died before it
    /// had one, then its stderr.
    fn log_tail(&self) -> String {
        let log = tail(&self.log);
        let log = if log.is_empty() {
            tail(&self.console_log)
        } else {
            log
        };
        [log, tail(&self.stderr)]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The last [`LOG_TAIL`] bytes of `path`, from a line start, trimmed; empty when unreadable.
fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(LOG_TAIL);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(match (start > 0, text.find('\n')) {
            (true, Some(newline)) => text[newline + 1..].to_owned(),
            _ => text,
        })
    };
    read().map(|t| t.trim().to_owned()).unwrap_or_default()
}

/// Firecracker's instance id (`--id`): letters, digits and `-`, at most 64; the run dir's name
/// (the sandbox id) when it is one.
fn instance_id(config: &VmConfig) -> String {
    let name = config
        .run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        name
    } else {
        "hearth-vm".to_owned()
    }
}

/// Refuses what Firecracker cannot run before anything is spawned.
fn check_inputs(config: &VmConfig, version: Version, program: &str) -> Result<(), StartVmError> {
    // Before the generic file check: a missing vmlinux is a setup step not yet run.
    if config.restore.is_none() && !config.kernel.exists() {
        return Err(StartVmError::Firecracker(FirecrackerError::NoKernel {
            path: config.kernel.clone(),
        }));
    }
    let restored_memory = match (&config.restore, &config.memory_file) {
        (Some(state), None) => Some(memory_path(state)),
        _ => None,
    };
    config.check_files(restored_memory.as_ref())?;
    let firecracker = StartVmError::Firecracker;
    if config
        .memory_file
        .as_ref()
        .is_some_and(|file| file.mode == MemoryMode::Shared)
    {
        return Err(firecracker(FirecrackerError::SharedMemory));
    }
    if config.restore.is_some() && config.net.is_some() && version < version::NETWORK_OVERRIDES {
        return Err(firecracker(FirecrackerError::TooOld {
            program: program.to_owned(),
            found: version,
            needed: version::NETWORK_OVERRIDES,
            feature: "to restore a snapshot onto a sandbox's network",
        }));
    }
    if config.restore.is_none() {
        let mut magic = [0u8; 4];
        let read = std::fs::File::open(&config.kernel).and_then(|mut f| f.read_exact(&mut magic));
        if let Err(source) = read {
            return Err(StartVmError::Prepare {
                path: config.kernel.clone(),
                source,
            });
        }
        if magic != *b"\x7fELF" {
            return Err(firecracker(FirecrackerError::NotElf {
                path: config.kernel.clone(),
            }));
        }
    }
    Ok(())
}

/// The paths Firecracker is given for a VM's files: the host's, or the chroot's when jailed.
#[derive(Debug, Clone)]
struct ApiPaths {
    kernel: PathBuf,
    initramfs: PathBuf,
    disks: Vec<PathBuf>,
    /// A snapshot to load: its state, and its memory file or the page-fault handler's socket.
    restore: Option<(PathBuf, MemoryBackend)>,
    log: PathBuf,
    metrics: PathBuf,
}

impl ApiPaths {
    fn new(config: &VmConfig, files: &RunFiles, jailed: bool, memory: BackendType) -> Self {
        let backend = |file: PathBuf, socket: PathBuf| MemoryBackend {
            backend_type: memory,
            backend_path: match memory {
                BackendType::File => file,
                BackendType::Uffd => socket,
            },
        };
        if jailed {
            return ApiPaths {
                kernel: jailer::KERNEL.into(),
                initramfs: jailer::INITRAMFS.into(),
                disks: (0..config.disks.len())
                    .map(|i| jailer::disk_path(i).into())
                    .collect(),
                restore: config.restore.as_ref().map(|_| {
                    (
                        jailer::RESTORE_STATE.into(),
                        backend(jailer::RESTORE_MEMORY.into(), jailer::UFFD_SOCKET.into()),
                    )
                }),
                log: jailer::LOG.into(),
                metrics: jailer::METRICS.into(),
            };
        }
        ApiPaths {
            kernel: config.kernel.clone(),
            initramfs: config.initramfs.clone(),
            disks: config.disks.iter().map(|d| d.path.clone()).collect(),
            restore: config.restore.as_ref().map(|state| {
                let memory = restored_memory(config, state);
                (state.clone(), backend(memory, files.uffd.clone()))
            }),
            log: files.log.clone(),
            metrics: files.metrics.clone(),
        }
    }
}

/// The Firecracker process.
#[derive(Debug)]
enum Process {
    /// Firecracker itself, hearth's child.
    Child(Child),
    /// Firecracker as the jailer left it: the first process of its own pid namespace, whose
    /// parent (the jailer) has exited, so not hearth's child. Held by a pidfd; its exit status
    /// goes to whoever reaps orphans, so it is not known here.
    Jailed { pid: u32, pidfd: AsyncFd<OwnedFd> },
}

impl Process {
    fn id(&self) -> Option<u32> {
        match self {
            Process::Child(child) => child.id(),
            Process::Jailed { pid, .. } => Some(*pid),
        }
    }

    /// How Firecracker ended, if it has.
    fn try_exited(&mut self) -> Option<String> {
        match self {
            Process::Child(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
            Process::Jailed { pidfd, .. } => {
                let mut fds = [nix::poll::PollFd::new(
                    pidfd.get_ref().as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let exited = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)
                    .is_ok_and(|ready| ready > 0);
                exited.then(|| "exited".to_owned())
            }
        }
    }

    /// Waits until Firecracker has exited: its exit code when hearth can know it.
    async fn wait(&mut self) -> Option<i32> {
        match self {
            Process::Child(child) => child.wait().await.ok().and_then(|s| s.code()),
            Process::Jailed { pidfd, .. } => {
                // A pidfd only ever becomes readable, when the process exits; an error here
                // (the runtime shutting down) also means nothing is left to wait for.
                let _ = pidfd.readable().await;
                None
            }
        }
    }

    fn kill(&mut self) {
        let killed = match self {
            Process::Child(child) => child.start_kill(),
            Process::Jailed { pidfd, .. } => crate::sys::pidfd_kill(pidfd.get_ref()),
        };
        if let Err(e) = killed {
            tracing::warn!(pid = ?self.id(), error = %e, "could not kill Firecracker");
        }
    }
}

/// A running Firecracker microVM. Dropping it kills Firecracker.
#[derive(Debug)]
pub struct FirecrackerVm {
    process: Process,
    client: ApiClient,
    /// The thread copying the console into its log; ends when Firecracker does.
    console: Option<JoinHandle<()>>,
    /// Serves the agent stream; dropped (and its socket removed) when the VM ends.
    relay: Option<Relay>,
    files: RunFiles,
    exit: Option<VmExit>,
    /// A jailed VM's chroot, cgroup and uid; given back once Firecracker is gone.
    jail: Option<JailGuard>,
    /// Serves guest memory of a `Uffd` restore.
    pages: Option<PageServer>,
}

#[async_trait::async_trait]
impl Vmm for FirecrackerVmm {
    fn describe(&self) -> BackendInfo {
        // Firecracker has no software fallback: it runs on KVM or not at all.
        BackendInfo {
            name: "firecracker",
            accel: Accel::Kvm,
        }
    }

    fn boots_elf_kernel_only(&self) -> bool {
        true
    }

    fn saved_memory(&self, dest: &Path) -> Option<PathBuf> {
        Some(memory_path(dest))
    }

    async fn start(&self, config: &VmConfig) -> Result<Box<dyn Vm>, StartVmError> {
        let version = self.checked_version()?;
        check_inputs(config, version, &self.program())?;
        let id = instance_id(config);
        // The jailer names the chroot after the binary it copies in.
        let chroot = match &self.jailer {
            Some(_) => {
                let exec_name = jailer::exec_name(&self.firecracker).map_err(|source| {
                    StartVmError::Prepare {
                        path: self.firecracker.clone(),
                        source,
                    }
                })?;
                let chroot = Chroot::new(config, &exec_name, &id);
                Some((exec_name, chroot))
            }
            None => None,
        };
        let files = RunFiles::new(config, chroot.as_ref().map(|(_, chroot)| chroot));
        for socket in [&files.api, &files.vsock, &files.agent_stream, &files.uffd] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(StartVmError::PathTooLong {
                    path: socket.clone(),
                });
            }
        }
        let prepare = |path: &Path| {
            let path = path.to_owned();
            move |source| StartVmError::Prepare { path, source }
        };
        let stderr = std::fs::File::create(&files.stderr).map_err(prepare(&files.stderr))?;
        let log = CappedLog::open(&files.console_log, CONSOLE_LOG_CAP)
            .map_err(prepare(&files.console_log))?;
        let (console_read, console_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| prepare(&files.console_log)(e.into()))?;
        let (process, jail) = match (&self.jailer, chroot) {
            (Some(jailer), Some((exec_name, chroot))) => {
                let run = JailedStart {
                    jailer,
                    config,
                    id,
                    exec_name,
                    chroot,
                    stdout: console_write,
                    stderr,
                };
                let (process, guard) = self.spawn_jailed(run, &files).await?;
                (process, Some(guard))
            }
            _ => (
                self.spawn_direct(config, &files, id, console_write, stderr)?,
                None,
            ),
        };
        let console = console::spawn_pump(std::fs::File::from(console_read), log)
            .map_err(prepare(&files.console_log))?;
        let mut vm = FirecrackerVm {
            process,
            client: ApiClient::new(&files.api),
            console: Some(console),
            relay: None,
            files,
            exit: None,
            jail,
            pages: None,
        };
        vm.await_api().await?;
        if let (Some(state), BackendType::Uffd) = (&config.restore, self.memory) {
            let owner = vm.jail.as_ref().map(|jail| {
                (
                    jail.lease.id,
                    self.jailer.as_ref().map_or(0, |j| j.ids.shared_group()),
                )
            });
            let pages = PageServer::spawn(&vm.files.uffd, &restored_memory(config, state), owner)
                .map_err(|e| StartVmError::Firecracker(FirecrackerError::Uffd(e)))?;
            vm.pages = Some(pages);
        }
        let paths = ApiPaths::new(config, &vm.files, vm.jail.is_some(), self.memory);
        vm.configure(config, &paths).await?;
        let relay = Relay::spawn(&vm.files.agent_stream, vm.files.vsock.clone(), AGENT_PORT)
            .map_err(prepare(&vm.files.agent_stream))?;
        vm.relay = Some(relay);
        tracing::debug!(pid = ?vm.process.id(), jailed = vm.jail.is_some(), "firecracker started");
        Ok(Box::new(vm))
    }

    fn version(&self) -> Result<String, VersionError> {
        if let Some(version) = self.version.get() {
            return Ok(version.clone());
        }
        // `Firecracker v1.16.1`, then a blank line and an exit log line.
        let line = crate::process::version_line(&self.firecracker, "--version")?;
        Ok(self.version.get_or_init(|| line).clone())
    }
}

/// What starting one VM under the jailer takes.
struct JailedStart<'a> {
    jailer: &'a Jailer,
    config: &'a VmConfig,
    id: String,
    exec_name: String,
    chroot: Chroot,
    /// The console pipe's write end: the jailer's stdout, which Firecracker inherits.
    stdout: OwnedFd,
    stderr: std::fs::File,
}

impl FirecrackerVmm {
    /// Firecracker as hearth's child, in the run dir and the sandbox's network namespace.
    fn spawn_direct(
        &self,
        config: &VmConfig,
        files: &RunFiles,
        id: String,
        stdout: OwnedFd,
        stderr: std::fs::File,
    ) -> Result<Process, StartVmError> {
        let prepare = |path: &Path| {
            let path = path.to_owned();
            move |source| StartVmError::Prepare { path, source }
        };
        // Firecracker binds its sockets itself and refuses paths that exist; a stale one is a
        // crashed earlier VM's. Its log and metrics files must exist before it opens them.
        for socket in [&files.api, &files.vsock] {
            match std::fs::remove_file(socket) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(prepare(socket)(e))
                }
                _ => {}
            }
        }
        for file in [&files.log, &files.metrics] {
            std::fs::File::create(file).map_err(prepare(file))?;
        }
        let netns = config
            .net
            .as_ref()
            .map(crate::process::open_netns)
            .transpose()?;
        let mut command = Command::new(&self.firecracker);
        command
            .arg("--api-sock")
            .arg(&files.api)
            .arg("--id")
            .arg(id)
            .current_dir(&config.run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(stderr)
            .kill_on_drop(true);
        crate::sys::kill_with_parent(&mut command);
        if let Some(netns) = netns {
            crate::sys::enter_netns(&mut command, netns);
        }
        // The command holds the pipe's write end until it is dropped here; only Firecracker
        // may, so that the console pump sees the end of the stream when Firecracker exits.
        let child = crate::process::spawn(&mut command, &self.firecracker)?;
        Ok(Process::Child(child))
    }

    /// Firecracker started by the jailer: the chroot prepared, the jailer run to its exit, and
    /// the Firecracker it left behind taken by pid. On failure the guard removes everything.
    async fn spawn_jailed(
        &self,
        run: JailedStart<'_>,
        files: &RunFiles,
    ) -> Result<(Process, JailGuard), StartVmError> {
        let JailedStart {
            jailer,
            config,
            id,
            exec_name,
            chroot,
            stdout,
            stderr,
        } = run;
        let program = jailer.program.display().to_string();
        let lease = jailer.ids.lease().map_err(|source| StartVmError::Spawn {
            program: program.clone(),
            source,
        })?;
        let mut guard = JailGuard { chroot, id, lease };
        let gid = jailer.ids.shared_group();
        guard
            .chroot
            .prepare(config, guard.lease.id, gid)
            .map_err(|e| StartVmError::Firecracker(FirecrackerError::Chroot(e)))?;
        let limits = CgroupLimits {
            memory_bytes: (u64::from(config.mem_size_mib) + MEMORY_OVERHEAD_MIB) << 20,
            vcpus: config.vcpus,
            tasks: MAX_TASKS,
        };
        let (cgroup_version, cgroup) = limits.jailer_args();
        // The jailer closes every descriptor it inherits before it reads its arguments, so an
        // open namespace is named through hearth's own descriptor table.
        let netns = config.net.as_ref().map(|net| match &net.netns {
            NetNamespace::At(path) => path.clone(),
            NetNamespace::Open(fd) => PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                fd.as_raw_fd()
            )),
        });
        let args = JailerRun {
            firecracker: &self.firecracker,
            id: &guard.id,
            uid: guard.lease.id,
            gid,
            chroot_base: guard.chroot.base(),
            cgroup_version,
            cgroup,
            netns,
        }
        .args();
        let mut command = Command::new(&jailer.program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(stderr)
            .kill_on_drop(true);
        crate::sys::kill_with_parent(&mut command);
        let mut child = crate::process::spawn(&mut command, &jailer.program)?;
        drop(command);
        let status = match timeout(START_WAIT, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(source)) => return Err(StartVmError::Spawn { program, source }),
            Err(_) => {
                let _ = child.start_kill();
                return Err(StartVmError::Firecracker(FirecrackerError::JailerTimeout {
                    program,
                    timeout: START_WAIT,
                }));
            }
        };
        if !status.success() {
            return Err(StartVmError::Firecracker(FirecrackerError::Jailer {
                program,
                status: status.to_string(),
                output: tail(&files.stderr),
            }));
        }
        let jailed_pid = |source| {
            StartVmError::Firecracker(FirecrackerError::JailedPid {
                chroot: guard.chroot.host_path("/"),
                source,
            })
        };
        let pid = match jailer::read_pid(&guard.chroot, &exec_name) {
            Ok(pid) => pid,
            Err(e) => return Err(jailed_pid(e)),
        };
        let pidfd = crate::sys::pidfd_open(pid).map_err(jailed_pid)?;
        Ok((Process::Jailed { pid, pidfd }, guard))
    }
}

impl FirecrackerVm {
    /// Waits until Firecracker answers on its API socket.
    async fn await_api(&mut self) -> Result<(), StartVmError> {
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            if let Some(status) = self.process.try_exited() {
                return Err(self.exited("starting", status));
            }
            match self.client.get::<InstanceInfo>("/").await {
                Ok(_) => return Ok(()),
                // Not listening yet.
                Err(ApiError::Connect { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(ApiError::Connect { .. }) => {
                    return Err(StartVmError::Firecracker(
                        FirecrackerError::ApiSocketTimeout {
                            socket: self.files.api.clone(),
                            timeout: START_WAIT,
                        },
                    ))
                }
                Err(source) => return Err(self.failed("asking for the instance", source).await),
            }
        }
    }

    /// Sends the whole configuration: a boot, or a snapshot load that resumes.
    async fn configure(&mut self, config: &VmConfig, paths: &ApiPaths) -> Result<(), StartVmError> {
        self.step(
            "configuring the logger",
            &Logger::to_file(paths.log.clone()),
        )
        .await?;
        let metrics = Metrics {
            metrics_path: paths.metrics.clone(),
        };
        self.step("configuring the metrics", &metrics).await?;
        if let Some((state, memory)) = &paths.restore {
            let load = SnapshotLoad {
                snapshot_path: state.clone(),
                mem_backend: memory.clone(),
                resume_vm: true,
                network_overrides: config
                    .net
                    .iter()
                    .map(|net| NetworkOverride::to_tap(&net.tap))
                    .collect(),
            };
            return self.step("loading the snapshot", &load).await;
        }
        let machine = MachineConfig::new(config.vcpus, config.mem_size_mib);
        self.step("configuring the machine", &machine).await?;
        let boot_args = match config.cmdline.trim() {
            "" => BASE_CMDLINE.to_owned(),
            extra => format!("{BASE_CMDLINE} {extra}"),
        };
        let boot = BootSource {
            kernel_image_path: paths.kernel.clone(),
            initrd_path: Some(paths.initramfs.clone()),
            boot_args,
        };
        self.step("configuring the boot source", &boot).await?;
        for (index, (disk, path)) in config.disks.iter().zip(&paths.disks).enumerate() {
            let drive = Drive::new(index, path.clone(), disk.read_only);
            self.step("configuring a drive", &drive).await?;
        }
        if let Some(net) = &config.net {
            let iface = NetworkInterface::on_tap(&net.tap);
            self.step("configuring the network interface", &iface)
                .await?;
        }
        let vsock = Vsock {
            guest_cid: GUEST_CID,
            uds_path: VSOCK_SOCKET.into(),
        };
        self.step("configuring the vsock device", &vsock).await?;
        self.step(
            "starting the instance",
            &Action::new(ActionType::InstanceStart),
        )
        .await
    }

    async fn step<R: Request>(
        &mut self,
        step: &'static str,
        request: &R,
    ) -> Result<(), StartVmError> {
        match self.client.send(request).await {
            Ok(()) => Ok(()),
            Err(source) => Err(self.failed(step, source).await),
        }
    }

    /// The error for a request that failed during start-up: Firecracker's answer when it
    /// refused, its exit and log when it died.
    async fn failed(&mut self, step: &'static str, source: ApiError) -> StartVmError {
        if source.fault_message().is_none()
            && timeout(EXIT_GRACE, self.process.wait()).await.is_ok()
        {
            let status = self
                .process
                .try_exited()
                .unwrap_or_else(|| "exited".to_owned());
            return self.exited(step, status);
        }
        StartVmError::Firecracker(FirecrackerError::Configure { step, source })
    }

    fn exited(&self, step: &'static str, status: String) -> StartVmError {
        StartVmError::Firecracker(FirecrackerError::Exited {
            step,
            status,
            log: self.files.log_tail(),
        })
    }

    async fn reap(&mut self, exit: VmExit) -> VmExit {
        self.relay = None;
        // Firecracker is gone, so the pump is at the end of its stream: once it has written
        // the last bytes, the console log is complete for whoever reads it next.
        if let Some(pump) = self.console.take() {
            let _ = tokio::task::spawn_blocking(move || pump.join()).await;
        }
        self.remove_sockets();
        self.jail = None;
        self.exit = Some(exit.clone());
        exit
    }

    /// Firecracker leaves its sockets behind when it is killed (a jailed one's go with its
    /// chroot).
    fn remove_sockets(&self) {
        for socket in [&self.files.api, &self.files.vsock] {
            let _ = std::fs::remove_file(socket);
        }
    }

    fn running(&self) -> Result<(), SaveError> {
        match self.exit {
            None => Ok(()),
            Some(_) => Err(SaveError::NotRunning),
        }
    }
}

impl Drop for FirecrackerVm {
    fn drop(&mut self) {
        // A child is killed by `kill_on_drop` too, a jailed Firecracker only by this; its
        // sockets would outlive it, and the jail guard (dropped next) removes its chroot and
        // cgroup.
        if self.exit.is_none() {
            self.process.kill();
            self.remove_sockets();
        }
    }
}

#[async_trait::async_trait]
impl Vm for FirecrackerVm {
    fn agent_stream(&self) -> &Path {
        &self.files.agent_stream
    }

    fn console_log(&self) -> &Path {
        &self.files.console_log
    }

    fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    async fn wait(&mut self) -> VmExit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = VmExit::Exited(self.process.wait().await);
        self.reap(exit).await
    }

    /// Pauses the VM and writes a full snapshot: the state to `dest`, guest memory beside it
    /// ([`memory_path`]), which is where a restore of `dest` reads it. A jailed Firecracker
    /// writes both inside its chroot, from where they are moved to `dest`.
    async fn save(&mut self, dest: &Path, resume: bool) -> Result<(), SaveError> {
        self.running()?;
        let snapshot = |source| SaveError::Snapshot {
            path: dest.to_owned(),
            source,
        };
        self.client.send(&VmState::PAUSED).await.map_err(snapshot)?;
        let create = match &self.jail {
            Some(_) => SnapshotCreate::full(jailer::SAVE_STATE.into(), jailer::SAVE_MEMORY.into()),
            None => SnapshotCreate::full(dest.to_owned(), memory_path(dest)),
        };
        let mut saved = self.client.send(&create).await.map_err(snapshot);
        if let (Ok(()), Some(jail)) = (&saved, &self.jail) {
            saved = jail
                .chroot
                .move_out(jailer::SAVE_STATE, dest)
                .and_then(|()| {
                    jail.chroot
                        .move_out(jailer::SAVE_MEMORY, &memory_path(dest))
                })
                .map_err(SaveError::SnapshotMove);
        }
        if resume {
            self.client
                .send(&VmState::RESUMED)
                .await
                .map_err(SaveError::SnapshotResume)?;
        }
        saved
    }

    async fn save_template(&mut self, _dest: &Path) -> Result<(), SaveError> {
        Err(SaveError::Unsupported {
            backend: "firecracker",
            operation: "save a template's state apart from its memory",
            why: "every Firecracker snapshot already keeps guest memory in a file of its own \
                  (`<state>.mem`), which clones load copy-on-write",
        })
    }

    async fn stop(&mut self, grace: Duration) -> VmExit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        // A guest that is not up (or is hostile) ignores the key press; the kill follows.
        let ctrl_alt_del = Action::new(ActionType::SendCtrlAltDel);
        let _ = timeout(grace, self.client.send(&ctrl_alt_del)).await;
        let exit = match timeout(grace, self.process.wait()).await {
            Ok(code) => VmExit::Exited(code),
            Err(_) => {
                self.process.kill();
                let _ = self.process.wait().await;
                VmExit::Killed
            }
        };
        self.reap(exit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(run_dir: &Path) -> VmConfig {
        VmConfig {
            kernel: run_dir.join("vmlinux"),
            initramfs: run_dir.join("initramfs"),
            cmdline: String::new(),
            disks: Vec::new(),
            vcpus: 1,
            mem_size_mib: 128,
            run_dir: run_dir.to_owned(),
            console_log: run_dir.join("console.log"),
            net: None,
            restore: None,
            memory_file: None,
        }
    }

    const NEW: Version = Version {
        major: 1,
        minor: 16,
        patch: 1,
    };

    #[test]
    fn test_instance_id_is_the_sandbox_id_when_firecracker_accepts_it() {
        let dir = Path::new("/state/vms/0123456789ab");
        assert_eq!(instance_id(&config(dir)), "0123456789ab");
        assert_eq!(
            instance_id(&config(Path::new("/state/vms/a.b"))),
            "hearth-vm"
        );
    }

    #[test]
    fn test_a_bzimage_or_no_kernel_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::write(&config.initramfs, b"").unwrap();
        let refusal = |config: &VmConfig| match check_inputs(config, NEW, "firecracker") {
            Err(StartVmError::Firecracker(inner)) => {
                let text = inner.to_string();
                assert!(
                    text.contains("hearth setup --backend firecracker"),
                    "{text}"
                );
                inner
            }
            other => panic!("{other:?}"),
        };
        std::fs::write(&config.kernel, b"MZ\x00\x00bzImage").unwrap();
        assert!(matches!(refusal(&config), FirecrackerError::NotElf { .. }));
        std::fs::remove_file(&config.kernel).unwrap();
        assert!(matches!(
            refusal(&config),
            FirecrackerError::NoKernel { .. }
        ));
    }

    #[test]
    fn test_a_restore_needs_the_memory_beside_the_state_and_no_boot_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        let state = dir.path().join("state");
        std::fs::write(&state, b"").unwrap();
        config.restore = Some(state.clone());
        let error = check_inputs(&config, NEW, "firecracker").unwrap_err();
        assert!(
            matches!(&error, StartVmError::MissingFile { what: "saved memory", path } if *path == memory_path(&state)),
            "{error:?}"
        );
        std::fs::write(memory_path(&state), b"").unwrap();
        check_inputs(&config, NEW, "firecracker").unwrap();
    }

    #[test]
    fn test_log_tail_starts_at_a_line_and_falls_back_to_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let files = RunFiles::new(&config(dir.path()), None);
        let long = format!("{}\nlast line\n", "x".repeat(LOG_TAIL as usize));
        std::fs::write(&files.log, "").unwrap();
        std::fs::write(&files.console_log, long).unwrap();
        std::fs::write(&files.stderr, "Error: RunWithApi\n").unwrap();
        assert_eq!(files.log_tail(), "last line\nError: RunWithApi");
    }
}
