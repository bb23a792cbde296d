//! Starting, watching and stopping one QEMU `microvm`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

use super::cmdline::{qemu_args, RunFiles};
use super::migration;
use super::qmp::Qmp;
use crate::cgroup::{CgroupLimits, VmCgroup};
use crate::config::{Accel, MemoryMode, NetConfig, NetNamespace, VmConfig};
use crate::console::{self, CappedLog, CONSOLE_LOG_CAP};
use crate::{BackendInfo, SaveError, StartVmError, VersionError, Vm, VmExit, Vmm};

/// How long QEMU gets to create a socket before start-up is declared failed.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
const SOCKET_POLL: Duration = Duration::from_millis(2);

/// sockaddr_un holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The QEMU backend, holding the path of the program it runs and the accelerator its VMs use.
#[derive(Debug, Clone)]
pub struct QemuVmm {
    qemu: PathBuf,
    accel: Accel,
    /// `qemu -version`'s first line, asked once.
    version: std::sync::OnceLock<String>,
}

impl QemuVmm {
    pub fn new(qemu: PathBuf, accel: Accel) -> Self {
        QemuVmm {
            qemu,
            accel,
            version: std::sync::OnceLock::new(),
        }
    }
}

/// A running QEMU VM.
#[derive(Debug)]
pub struct QemuVm {
    qemu: Child,
    qmp: Option<Qmp>,
    /// The thread copying the console into its log; ends when QEMU does.
    console: Option<JoinHandle<()>>,
    files: RunFiles,
    exit: Option<VmExit>,
    /// Removed once QEMU is reaped.
    cgroup: Option<VmCgroup>,
}

#[async_trait::async_trait]
impl Vmm for QemuVmm {
    fn describe(&self) -> BackendInfo {
        BackendInfo {
            name: "qemu",
            accel: self.accel,
        }
    }

    async fn start(&self, config: &VmConfig) -> Result<Box<dyn Vm>, StartVmError> {
        check_inputs(config)?;
        let files = RunFiles::new(config);
        for socket in [&files.qmp, &files.agent_stream, &files.console_socket] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(StartVmError::PathTooLong {
                    path: socket.clone(),
                });
            }
        }
        let qemu_log = config.run_dir.join("qemu.log");
        let args = qemu_args(config, self.accel, &files, super::tsc::host_tsc_khz());
        let netns = match &config.net {
            Some(NetConfig {
                netns: NetNamespace::At(path),
                ..
            }) => Some(OwnedFd::from(std::fs::File::open(path).map_err(
                |source| StartVmError::Prepare {
                    path: path.clone(),
                    source,
                },
            )?)),
            Some(NetConfig {
                netns: NetNamespace::Open(fd),
                ..
            }) => Some(fd.try_clone().map_err(|source| StartVmError::Prepare {
                path: "network namespace fd".into(),
                source,
            })?),
            None => None,
        };
        let log = CappedLog::open(&files.console_log, CONSOLE_LOG_CAP).map_err(|source| {
            StartVmError::Prepare {
                path: files.console_log.clone(),
                source,
            }
        })?;
        let tap = config.net.as_ref().map(|net| net.tap.as_str());
        let name = config
            .run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup = VmCgroup::create(
            &name,
            CgroupLimits::for_vm(config.mem_size_mib, config.vcpus),
        )
        .map_err(StartVmError::Cgroup)?;
        let procs = cgroup.procs().map_err(StartVmError::Cgroup)?;
        let mut qemu = spawn(&self.qemu, args, &qemu_log, netns, tap, procs)?;
        // QEMU waits for this reader before it goes on (see the console chardev).
        wait_for_socket(&mut qemu, &self.qemu, &files.console_socket, &qemu_log).await?;
        let console = match connect_retrying(&files.console_socket, UnixStream::connect).await {
            Ok(stream) => stream.into_std().and_then(|stream| {
                stream.set_nonblocking(false)?;
                console::spawn_pump(stream, log)
            }),
            Err(e) => Err(e),
        };
        let console = match console {
            Ok(pump) => pump,
            Err(e) => {
                let why = format!("failed to read the guest console: {e}");
                return Err(helper_exited(&mut qemu, &self.qemu, &qemu_log, &why).await);
            }
        };
        wait_for_socket(&mut qemu, &self.qemu, &files.qmp, &qemu_log).await?;
        wait_for_socket(&mut qemu, &self.qemu, &files.agent_stream, &qemu_log).await?;
        // QMP is how the VM is stopped; a VM that cannot be controlled is not worth keeping.
        let qmp = match connect_retrying(&files.qmp, UnixStream::connect).await {
            Ok(stream) => Qmp::negotiate(stream).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("failed to connect to QMP: {e}")),
        };
        let mut qmp = match qmp {
            Ok(qmp) => qmp,
            Err(why) => return Err(helper_exited(&mut qemu, &self.qemu, &qemu_log, &why).await),
        };
        if let Some(state) = &config.restore {
            let mode = config.memory_file.as_ref().map(|file| file.mode);
            if let Err(e) = resume_from(&mut qmp, state, mode).await {
                // A stream QEMU cannot load makes it exit; its log says why.
                let why = format!("loading `{}` failed: {e}", state.display());
                return Err(helper_exited(&mut qemu, &self.qemu, &qemu_log, &why).await);
            }
        }
        tracing::debug!(pid = ?qemu.id(), "qemu started");
        Ok(Box::new(QemuVm {
            qemu,
            qmp: Some(qmp),
            console: Some(console),
            files,
            exit: None,
            cgroup: Some(cgroup),
        }))
    }

    fn version(&self) -> Result<String, VersionError> {
        if let Some(version) = self.version.get() {
            return Ok(version.clone());
        }
        let error = |reason: String| VersionError {
            program: self.qemu.display().to_string(),
            reason,
        };
        let output = std::process::Command::new(&self.qemu)
            .arg("-version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| error(e.to_string()))?;
        if !output.status.success() {
            return Err(error(format!("it exited with {}", output.status)));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().next().unwrap_or_default().trim().to_owned();
        if line.is_empty() {
            return Err(error("it printed nothing".to_owned()));
        }
        Ok(self.version.get_or_init(|| line).clone())
    }
}

/// Loads a saved state into a QEMU started with `-incoming defer` and lets it run; one whose
/// RAM is a shared memory file is a template being made and stays paused. A clone (private
/// memory file) loads a state saved without its RAM, which its file holds.
async fn resume_from(
    qmp: &mut Qmp,
    state: &Path,
    memory: Option<MemoryMode>,
) -> Result<(), migration::MigrationError> {
    if memory == Some(MemoryMode::Private) {
        migration::ignore_shared_memory(qmp).await?;
    }
    migration::load(qmp, state).await?;
    if memory != Some(MemoryMode::Shared) {
        qmp.execute("cont", Value::Null).await?;
    }
    Ok(())
}

fn check_inputs(config: &VmConfig) -> Result<(), StartVmError> {
    // A restore does not read the boot files (the kernel is in the saved RAM); a shared memory
    // file is made by QEMU, a private one must be there.
    let boot = [("kernel", &config.kernel), ("initramfs", &config.initramfs)];
    let files = boot
        .into_iter()
        .filter(|_| config.restore.is_none())
        .chain(config.disks.iter().map(|d| ("disk image", &d.path)))
        .chain(config.restore.iter().map(|state| ("saved state", state)))
        .chain(
            config
                .memory_file
                .iter()
                .filter(|file| file.mode == MemoryMode::Private)
                .map(|file| ("memory file", &file.path)),
        );
    for (what, path) in files {
        if !path.is_file() {
            return Err(StartVmError::MissingFile {
                what,
                path: path.clone(),
            });
        }
    }
    Ok(())
}

/// Spawns the VMM logging to `log`, inside network namespace `netns` when given, jailed (see
/// `sys::jail`) with tap `tap` handed over as a descriptor.
fn spawn(
    program: &Path,
    args: Vec<std::ffi::OsString>,
    log: &Path,
    netns: Option<OwnedFd>,
    tap: Option<&str>,
    cgroup_procs: Vec<std::fs::File>,
) -> Result<Child, StartVmError> {
    let name = program.display().to_string();
    let log_file = std::fs::File::create(log).map_err(|source| StartVmError::Prepare {
        path: log.to_owned(),
        source,
    })?;
    let log_err = log_file
        .try_clone()
        .map_err(|source| StartVmError::Prepare {
            path: log.to_owned(),
            source,
        })?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(true);
    crate::sys::kill_with_parent(&mut command);
    if let Some(netns) = netns {
        crate::sys::enter_netns(&mut command, netns);
    }
    crate::sys::jail(&mut command, tap, cgroup_procs).map_err(StartVmError::Tap)?;
    command.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            StartVmError::ProgramMissing {
                program: name,
                hint: "run `hearth doctor` to see what to install".to_owned(),
            }
        } else {
            StartVmError::Spawn {
                program: name,
                source,
            }
        }
    })
}

async fn wait_for_socket(
    child: &mut Child,
    program: &Path,
    socket: &Path,
    log: &Path,
) -> Result<(), StartVmError> {
    let deadline = Instant::now() + SOCKET_WAIT;
    while !socket.exists() {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(helper_exited(child, program, log, "").await);
        }
        if Instant::now() > deadline {
            return Err(StartVmError::SocketTimeout {
                program: program.display().to_string(),
                path: socket.to_owned(),
            });
        }
        sleep(SOCKET_POLL).await;
    }
    Ok(())
}

/// QEMU creates a socket file when it binds, a moment before it listens, so a refused
/// connection within the start-up window is retried rather than taken as a failed start.
async fn connect_retrying<'a, T, F, Fut>(path: &'a Path, connect: F) -> std::io::Result<T>
where
    F: Fn(&'a Path) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        match connect(path).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                sleep(SOCKET_POLL).await;
            }
            other => return other,
        }
    }
}

/// Builds the error for a helper that died (or is unusable) during start-up, from its log.
async fn helper_exited(child: &mut Child, program: &Path, log: &Path, why: &str) -> StartVmError {
    let _ = child.start_kill();
    let status = match timeout(Duration::from_secs(1), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        _ => "still running".to_owned(),
    };
    let mut output = std::fs::read_to_string(log)
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !why.is_empty() {
        output = format!("{why}; {output}");
    }
    StartVmError::HelperExited {
        program: program.display().to_string(),
        status,
        output,
    }
}

impl QemuVm {
    async fn reap(&mut self, exit: VmExit) -> VmExit {
        self.qmp = None;
        // QEMU is gone, so the pump is at the end of its stream: once it has written the last
        // bytes, the console log is complete for whoever reads it next (a boot error's tail).
        if let Some(pump) = self.console.take() {
            let _ = tokio::task::spawn_blocking(move || pump.join()).await;
        }
        self.exit = Some(exit.clone());
        self.cgroup = None;
        exit
    }
}

#[async_trait::async_trait]
impl Vm for QemuVm {
    fn agent_stream(&self) -> &Path {
        &self.files.agent_stream
    }

    fn console_log(&self) -> &Path {
        &self.files.console_log
    }

    fn pid(&self) -> Option<u32> {
        self.qemu.id()
    }

    async fn wait(&mut self) -> VmExit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = match self.qemu.wait().await {
            Ok(status) => VmExit::Exited(status.code()),
            Err(_) => VmExit::Exited(None),
        };
        self.reap(exit).await
    }

    async fn save(&mut self, dest: &Path, resume: bool) -> Result<(), SaveError> {
        let qmp = match (&self.exit, self.qmp.as_mut()) {
            (None, Some(qmp)) => qmp,
            _ => return Err(SaveError::NotRunning),
        };
        let saved = migration::save(qmp, dest).await;
        if resume {
            qmp.execute("cont", Value::Null)
                .await
                .map_err(SaveError::Resume)?;
        }
        saved.map_err(|source| SaveError::Migrate {
            path: dest.to_owned(),
            source,
        })
    }

    async fn save_template(&mut self, dest: &Path) -> Result<(), SaveError> {
        let qmp = match (&self.exit, self.qmp.as_mut()) {
            (None, Some(qmp)) => qmp,
            _ => return Err(SaveError::NotRunning),
        };
        let migrate = |source| SaveError::Migrate {
            path: dest.to_owned(),
            source,
        };
        migration::ignore_shared_memory(qmp)
            .await
            .map_err(migrate)?;
        migration::save(qmp, dest).await.map_err(migrate)
    }

    async fn stop(&mut self, grace: Duration) -> VmExit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        if let Some(qmp) = self.qmp.as_mut() {
            // QEMU may close the connection before answering `quit`; both mean it is going.
            let _ = timeout(grace, qmp.execute("quit", Value::Null)).await;
        }
        let exit = match timeout(grace, self.qemu.wait()).await {
            Ok(Ok(status)) => VmExit::Exited(status.code()),
            _ => {
                let _ = self.qemu.start_kill();
                let _ = self.qemu.wait().await;
                VmExit::Killed
            }
        };
        self.reap(exit).await
    }
}
