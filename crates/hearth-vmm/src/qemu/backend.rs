//! Starting, watching and stopping one QEMU `microvm`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::time::timeout;

use super::cmdline::{disk_fd, qemu_args, RunFiles, VmmPaths};
use super::migration;
use super::qmp::Qmp;
use crate::cgroup::{CgroupLimits, VmCgroup};
use crate::config::{Accel, MemoryMode, VmConfig};
use crate::console::{self, CappedLog, CONSOLE_LOG_CAP};
use crate::jail::{JailIds, JailPlan};
use crate::sys::{Handover, JailExec, AGENT_FD, CONSOLE_FD, QMP_FD};
use crate::{BackendInfo, SaveError, StartVmError, VersionError, Vm, VmExit, Vmm};

/// How long QEMU gets to greet on QMP before start-up is declared failed.
const START_WAIT: Duration = Duration::from_secs(30);

/// sockaddr_un holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The QEMU backend, holding the path of the program it runs, the accelerator its VMs use and
/// the ids its jails take (none when hearth is not root and cannot jail).
#[derive(Debug, Clone)]
pub struct QemuVmm {
    qemu: PathBuf,
    accel: Accel,
    jail: Option<JailIds>,
    /// `qemu -version`'s first line, asked once.
    version: std::sync::OnceLock<String>,
}

impl QemuVmm {
    pub fn new(qemu: PathBuf, accel: Accel, jail: Option<JailIds>) -> Self {
        QemuVmm {
            qemu,
            accel,
            jail,
            version: std::sync::OnceLock::new(),
        }
    }
}

/// A running QEMU VM.
#[derive(Debug)]
pub struct QemuVm {
    qemu: Child,
    /// Keeps the thread holding QEMU's pid namespace (and giving it its ids) alive; QEMU gets
    /// SIGKILL when that thread ends.
    _pid_ns: Option<std::sync::mpsc::Sender<()>>,
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
        config.check_files(None)?;
        let files = RunFiles::new(config);
        for socket in [&files.qmp, &files.agent_stream, &files.console_socket] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(StartVmError::PathTooLong {
                    path: socket.clone(),
                });
            }
        }
        let qemu_log = config.run_dir.join("qemu.log");
        let paths = match self.jail {
            Some(_) => VmmPaths::jailed(config),
            None => VmmPaths::host(config),
        };
        let args = qemu_args(config, self.accel, &paths, super::tsc::host_tsc_khz());
        let netns = config
            .net
            .as_ref()
            .map(crate::process::open_netns)
            .transpose()?;
        let log = CappedLog::open(&files.console_log, CONSOLE_LOG_CAP).map_err(|source| {
            StartVmError::Prepare {
                path: files.console_log.clone(),
                source,
            }
        })?;
        let handover = handover(config, &files)?;
        let (jail, cgroup) = match self.jail {
            Some(ids) => {
                let (jail, cgroup) = self.prepare_jail(config, ids)?;
                (Some((ids, jail)), Some(cgroup))
            }
            None => (None, None),
        };
        let (mut qemu, pid_ns) = spawn(&self.qemu, args, &qemu_log, netns, handover, jail).await?;
        // QEMU waits for this reader before it goes on (see the console chardev). The sockets
        // are hearth's and listen from before QEMU ran, so a refused connection means QEMU is
        // gone.
        let console = match UnixStream::connect(&files.console_socket).await {
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
        // QMP is how the VM is stopped; a VM that cannot be controlled is not worth keeping.
        let qmp = match UnixStream::connect(&files.qmp).await {
            Ok(stream) => match timeout(START_WAIT, Qmp::negotiate(stream)).await {
                Ok(negotiated) => negotiated.map_err(|e| e.to_string()),
                Err(_) => {
                    let _ = qemu.start_kill();
                    return Err(StartVmError::StartTimeout {
                        program: self.qemu.display().to_string(),
                        timeout: START_WAIT,
                    });
                }
            },
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
            _pid_ns: pid_ns,
            qmp: Some(qmp),
            console: Some(console),
            files,
            exit: None,
            cgroup,
        }))
    }

    fn program(&self) -> Option<&Path> {
        Some(&self.qemu)
    }

    fn version(&self) -> Result<String, VersionError> {
        if let Some(version) = self.version.get() {
            return Ok(version.clone());
        }
        let line = crate::process::version_line(&self.qemu, "-version")?;
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

impl QemuVmm {
    /// Makes the VMM's cgroup and its jail directory (see [`JailPlan`]).
    fn prepare_jail(
        &self,
        config: &VmConfig,
        ids: JailIds,
    ) -> Result<(JailSetup, VmCgroup), StartVmError> {
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
        let plan = JailPlan::for_vm(config, self.accel, &self.qemu);
        let mounts = plan.build(ids).map_err(StartVmError::Jail)?;
        let mut groups = vec![ids.shared_group()];
        groups.extend(&plan.groups);
        let setup = JailSetup {
            groups,
            root: plan.root_c().map_err(StartVmError::Jail)?,
            mounts,
            cgroup_procs: cgroup.procs().map_err(StartVmError::Cgroup)?,
        };
        Ok((setup, cgroup))
    }
}

/// A jail made ready before the spawn; only its uid waits for the pid namespace's thread.
struct JailSetup {
    groups: Vec<u32>,
    root: std::ffi::CString,
    mounts: Vec<crate::jail::MountStep>,
    cgroup_procs: Vec<std::fs::File>,
}

/// The descriptors QEMU is given: its three sockets, bound here (0600, in the run dir) so QEMU
/// never creates a path the host later connects to, its disks opened read-only or read-write,
/// and the tap.
fn handover(config: &VmConfig, files: &RunFiles) -> Result<Handover, StartVmError> {
    let mut fds = Vec::new();
    for (path, fd) in [
        (&files.console_socket, CONSOLE_FD),
        (&files.qmp, QMP_FD),
        (&files.agent_stream, AGENT_FD),
    ] {
        fds.push((listen(path)?, fd));
    }
    for (i, disk) in config.disks.iter().enumerate() {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!disk.read_only)
            .open(&disk.path)
            .map_err(|source| StartVmError::Prepare {
                path: disk.path.clone(),
                source,
            })?;
        fds.push((OwnedFd::from(file), disk_fd(i)));
    }
    Ok(Handover {
        tap: config.net.as_ref().map(|net| net.tap.clone()),
        fds,
    })
}

fn listen(path: &Path) -> Result<OwnedFd, StartVmError> {
    let prepare = |source| StartVmError::Prepare {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(prepare(e)),
        _ => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(prepare)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(prepare)?;
    Ok(OwnedFd::from(listener))
}

/// Spawns the VMM logging to `log`, inside network namespace `netns` when given, with its
/// descriptors handed over and, with `jail`, jailed (see `sys::confine`). A jailed VMM is
/// forked from a thread of its own that first made a new pid namespace for its children: QEMU
/// is that namespace's first process, its ids come from the thread's id, and it dies with the
/// thread, which lives until the returned sender is dropped.
async fn spawn(
    program: &Path,
    args: Vec<std::ffi::OsString>,
    log: &Path,
    netns: Option<OwnedFd>,
    handover: Handover,
    jail: Option<(JailIds, JailSetup)>,
) -> Result<(Child, Option<std::sync::mpsc::Sender<()>>), StartVmError> {
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
    let program = program.to_owned();
    let Some((ids, setup)) = jail else {
        crate::sys::confine(&mut command, handover, None).map_err(StartVmError::Handover)?;
        return Ok((crate::process::spawn(&mut command, &program)?, None));
    };
    let (spawned_tx, spawned_rx) = tokio::sync::oneshot::channel();
    let (keep_tx, keep_rx) = std::sync::mpsc::channel::<()>();
    let runtime = tokio::runtime::Handle::current();
    let spawn_error = |source| StartVmError::Spawn {
        program: program.display().to_string(),
        source,
    };
    std::thread::Builder::new()
        .name("vmm-pid-ns".to_owned())
        .spawn({
            let program = program.clone();
            move || {
                let _runtime = runtime.enter();
                let spawned = spawn_jailed(&mut command, &program, handover, ids, setup);
                drop(command);
                let running = spawned.is_ok();
                let _ = spawned_tx.send(spawned);
                if running {
                    // Returns once the VM's owner drops the sender.
                    let _ = keep_rx.recv();
                }
            }
        })
        .map_err(spawn_error)?;
    let child = spawned_rx
        .await
        .map_err(|_| spawn_error(std::io::Error::other("the spawning thread died")))??;
    Ok((child, Some(keep_tx)))
}

/// On the pid namespace thread: the namespace, the VMM's ids from the thread's, then the spawn.
fn spawn_jailed(
    command: &mut Command,
    program: &Path,
    handover: Handover,
    ids: JailIds,
    setup: JailSetup,
) -> Result<Child, StartVmError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).map_err(|e| StartVmError::Spawn {
        program: program.display().to_string(),
        source: e.into(),
    })?;
    let tid = u32::try_from(nix::unistd::gettid().as_raw()).unwrap_or_default();
    let jail = JailExec {
        id: ids.for_thread(tid),
        groups: setup.groups,
        root: setup.root,
        mounts: setup.mounts,
        cgroup_procs: setup.cgroup_procs,
    };
    crate::sys::confine(command, handover, Some(jail)).map_err(StartVmError::Handover)?;
    crate::process::spawn(command, program)
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
        let saved = match migration::include_shared_memory(qmp).await {
            Ok(()) => migration::save(qmp, dest).await,
            Err(e) => Err(e),
        };
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
