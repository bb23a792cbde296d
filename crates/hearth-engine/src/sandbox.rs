//! One sandbox: a booted VM whose agent is ready, with its run dir. The only place that joins
//! boot assets, the VMM and the agent for a start.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_agent_proto::{ExecRequest, GuestMessage, HostMessage, Identity};
use hearth_net::{NetworkConfig, NetworkError, PendingNetwork, SandboxNetwork};
use hearth_vmm::{
    DiskConfig, MemoryFile, MemoryMode, NetConfig, NetNamespace, SaveError, StartVmError, Vm,
    VmConfig, VmExit, Vmm,
};
use nix::fcntl::{Flock, FlockArg};
use rand::RngCore;
use tokio::time::timeout;

use crate::agent::{self, AgentError};
use crate::agent_relay::{self, AgentRelay, RECONNECT_TIMEOUT};
use crate::exec::{self, ExecError, ExecInput, ExecOutput};
use crate::mounts::{self, AttachError, Attached, Mount};

/// Lines of the guest console shown when a boot fails.
const CONSOLE_TAIL_LINES: usize = 40;

/// How long a VM whose agent stream broke during boot gets to show that it exited.
const VM_EXIT_GRACE: Duration = Duration::from_secs(1);

/// Bytes of host randomness a restored guest's RNG is reseeded with: a full 256-bit seed.
const IDENTITY_ENTROPY: usize = 32;

/// How long a clean power-off may take before the VM is killed.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What to boot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SandboxConfig {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// Read-only root filesystem image (erofs for OCI images, ext4 for the built-in one) the
    /// guest overlays with a writable layer.
    pub rootfs: PathBuf,
    pub vcpus: u8,
    pub mem_size_mib: u32,
    /// How long the guest agent may take to report ready.
    pub boot_timeout: Duration,
    /// The sandbox's network (namespace, tap, egress policy); `None` gives the guest no
    /// interface at all.
    pub network: Option<NetworkConfig>,
    /// Where to keep the guest console (size-capped); `None` keeps it in the run dir, which
    /// goes with the VM.
    #[serde(default)]
    pub console_log: Option<PathBuf>,
    /// Resume a snapshot instead of booting (the fields above then describe the saved machine).
    #[serde(default)]
    pub restore: Option<Restore>,
    /// Booted cold for want of a template: save it as template `<name>` once agent-ready.
    #[serde(default)]
    pub make_template: Option<String>,
    /// Host dirs mounted in the guest once it is ready (after a template is made).
    #[serde(default)]
    pub mounts: Vec<Mount>,
}

/// The snapshot a sandbox resumes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Restore {
    pub snapshot: String,
    /// The saved state the VMM loads.
    pub state: PathBuf,
    /// The snapshot's memory file, mapped copy-on-write; `None` for a snapshot whose state
    /// holds its RAM.
    #[serde(default)]
    pub memory: Option<PathBuf>,
    /// A template, not a snapshot the user named: when it is gone (removed or pruned since),
    /// boot cold instead.
    #[serde(default)]
    pub cold_if_gone: bool,
}

impl SandboxConfig {
    /// This config, booting cold where it would resume a template that is gone.
    pub(crate) fn without_missing_template(mut self) -> Self {
        let gone = self.restore.as_ref().is_some_and(|r| {
            r.cold_if_gone && !(r.state.is_file() && r.memory.as_ref().is_none_or(|m| m.is_file()))
        });
        if gone {
            self.restore = None;
        }
        self
    }
}

/// The block devices of a sandbox's VM, in the order the guest names them: the layers of its
/// read-only base, bottom first.
pub(crate) fn disks(config: &SandboxConfig) -> Result<Vec<DiskConfig>, BootError> {
    let files = hearth_image::base_files(&config.rootfs).map_err(|source| BootError::Base {
        path: config.rootfs.clone(),
        source,
    })?;
    Ok(files
        .into_iter()
        .map(|path| DiskConfig {
            path,
            read_only: true,
        })
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("failed to create the run dir `{}`", path.display())]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the layers of the base image `{}`", path.display())]
    Base {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock the run dir `{}`", path.display())]
    OwnerLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to listen for agent clients on `{}`", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set up the sandbox's network")]
    Network(#[from] NetworkError),
    #[error("the network set-up task failed: {0}")]
    NetworkTask(String),
    #[error("failed to start the VM")]
    Start(#[from] StartVmError),
    #[error(
        "the guest agent did not report ready within {timeout:?}; last console lines:\n{console}"
    )]
    Timeout { timeout: Duration, console: String },
    #[error("the VM exited during boot ({exit:?}); last console lines:\n{console}")]
    VmExited { exit: VmExit, console: String },
    #[error("the restored guest did not take its new identity (clock, RNG, hostname)")]
    Refresh(#[source] AgentError),
    #[error("the guest agent failed its ready handshake; last console lines:\n{console}")]
    Handshake {
        console: String,
        #[source]
        source: AgentError,
    },
}

/// A running sandbox. Dropping it kills the VM and removes its run dir.
#[derive(Debug)]
pub struct Sandbox {
    id: String,
    run_dir: PathBuf,
    /// The host dirs being served; each ends its guest mount when dropped.
    mounts: Vec<Attached>,
    /// Declared before `vm`, so the agent's channels end before the VM is killed.
    relay: AgentRelay,
    vm: Box<dyn Vm>,
    /// Declared after `vm`, so on drop the VMM is killed before its namespace is removed.
    network: Option<SandboxNetwork>,
    agent_version: String,
    /// Held while this process owns the sandbox; see [`owner_lock_path`].
    _owner_lock: Flock<File>,
}

impl Sandbox {
    /// Boots a sandbox: [`Sandbox::prepare`] its run dir and network, [`Prepared::launch`] the
    /// VM, then [`Launched::await_ready`]. A restore will be a second way to launch between the
    /// same two steps.
    pub(crate) async fn boot(
        vmm: &dyn Vmm,
        vms_dir: &Path,
        id: String,
        config: &SandboxConfig,
    ) -> Result<Sandbox, BootError> {
        let sandbox = Sandbox::prepare(vms_dir, id, config)
            .await?
            .launch(vmm, config)
            .await?
            .await_ready(config.boot_timeout)
            .await?;
        if config.restore.is_some() {
            sandbox
                .refresh_identity()
                .await
                .map_err(BootError::Refresh)?;
        }
        Ok(sandbox)
    }

    /// Makes a guest resumed from a snapshot its own machine before anything runs in it: the
    /// host's clock, a reseeded RNG, this sandbox's hostname and DNS server (a cold boot reads
    /// these from its command line, which a restored guest never reads again).
    async fn refresh_identity(&self) -> Result<(), AgentError> {
        let mut entropy = vec![0u8; IDENTITY_ENTROPY];
        rand::rngs::OsRng.fill_bytes(&mut entropy);
        let identity = Identity {
            unix_nanos: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            entropy,
            hostname: self.id.clone(),
            nameserver: self
                .network
                .as_ref()
                .map(|network| network.guest().nameserver.to_string()),
        };
        let mut stream = agent::open(self.relay.path(), &HostMessage::Refresh(identity)).await?;
        match agent::next_message(&mut stream).await? {
            GuestMessage::Done => Ok(()),
            other => Err(agent::unexpected("done", &other)),
        }
    }

    /// Everything but the VM: the run dir (locked as this process's) and the network. Dropping
    /// the result undoes all of it.
    async fn prepare(
        vms_dir: &Path,
        id: String,
        config: &SandboxConfig,
    ) -> Result<Prepared, BootError> {
        let run_dir = vms_dir.join(&id);
        std::fs::create_dir_all(&run_dir).map_err(|source| BootError::RunDir {
            path: run_dir.clone(),
            source,
        })?;
        // Removes the run dir if anything below fails.
        let guard = RunDirGuard(Some(run_dir.clone()));
        let owner_lock = lock_owner(&run_dir)?;
        let network = match &config.network {
            Some(net_config) => Some(begin_network(&id, net_config).await?),
            None => None,
        };
        Ok(Prepared {
            id,
            run_dir,
            guard,
            owner_lock,
            network,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Mounts host dirs in the guest and serves them for as long as this sandbox lives. Called
    /// once the sandbox is ready and any template is saved: a template holds nothing of the
    /// sandbox that made it, and its clones mount their own dirs after the restore.
    pub(crate) async fn attach_mounts(&mut self, mounts: &[Mount]) -> Result<(), AttachError> {
        if mounts.is_empty() {
            return Ok(());
        }
        // What `volume rm` looks for to tell a volume is in use by this run.
        let names: Vec<&str> = mounts.iter().filter_map(|m| m.volume.as_deref()).collect();
        let list = volumes_in_use_path(&self.run_dir);
        std::fs::write(&list, names.join("\n"))
            .map_err(|source| AttachError::Record { path: list, source })?;
        for mount in mounts {
            let attached = mounts::attach(self.relay.path(), mount).await?;
            tracing::info!(sandbox = %self.id, host = %mount.host_dir.display(),
                target = %mount.target, read_only = mount.read_only, "mounted");
            self.mounts.push(attached);
        }
        Ok(())
    }

    /// Whether host dirs are mounted: such a sandbox cannot be snapshotted (its files live on
    /// the host, outside any saved state).
    pub fn has_mounts(&self) -> bool {
        !self.mounts.is_empty()
    }

    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Host pid of the VMM process.
    pub fn vmm_pid(&self) -> Option<u32> {
        self.vm.pid()
    }

    /// Starts a process in the guest. Returns its guest pid and its input and output halves.
    pub async fn exec(
        &self,
        request: ExecRequest,
    ) -> Result<(u32, ExecInput, ExecOutput), ExecError> {
        exec::start(self.relay.path(), request).await
    }

    /// The Unix socket through which any local process of the owner's user reaches the agent,
    /// one connection per operation.
    pub fn agent_socket(&self) -> &Path {
        self.relay.path()
    }

    /// Drops the agent session and starts a fresh one on the same guest, as a new owner process
    /// (or a restored snapshot) would: operations under way are aborted, later ones are served.
    pub async fn reconnect_agent(&self) -> Result<(), AgentError> {
        // The guest's stream has one host end at a time, so the old session goes first.
        self.relay.end_session();
        let session = timeout(
            RECONNECT_TIMEOUT,
            agent_relay::connect(self.vm.agent_stream()),
        )
        .await
        .map_err(|_| AgentError::ReadyTimeout(RECONNECT_TIMEOUT))??;
        self.relay.set_session(session);
        Ok(())
    }

    /// Saves the VM (device state and memory) to `dest` while it is paused; then resumes it,
    /// or with `resume == false` leaves it paused for the caller to end. Returns the agent's
    /// release, which the state holds.
    pub(crate) async fn save(
        &mut self,
        dest: &Path,
        resume: bool,
    ) -> Result<crate::control::Saved, SaveError> {
        self.vm.save(dest, resume).await?;
        tracing::info!(sandbox = %self.id, state = %dest.display(), resume, "vm saved");
        Ok(crate::control::Saved {
            agent_version: self.agent_version.clone(),
        })
    }

    /// Waits until the VM exits by itself. Cancel-safe.
    pub async fn wait(&mut self) -> VmExit {
        self.vm.wait().await
    }

    /// Checks that the agent answers.
    pub async fn ping(&self) -> Result<(), AgentError> {
        let mut stream = agent::open(self.relay.path(), &HostMessage::Ping).await?;
        match agent::next_message(&mut stream).await? {
            GuestMessage::Pong => Ok(()),
            other => Err(agent::unexpected("pong", &other)),
        }
    }

    /// Asks the agent to power the guest off cleanly; kills the VM if that does not happen
    /// within a few seconds. Removes the run dir.
    pub async fn shutdown(self) -> VmExit {
        self.shutdown_within(SHUTDOWN_GRACE).await
    }

    /// [`Sandbox::shutdown`] with its own grace period; zero kills at once (as `docker stop
    /// -t 0`).
    pub async fn shutdown_within(mut self, grace: Duration) -> VmExit {
        if grace.is_zero() {
            return self.kill().await;
        }
        // One deadline for both steps, so a guest that answers late cannot stretch the stop.
        let deadline = tokio::time::Instant::now() + grace;
        let requested = tokio::time::timeout_at(deadline, self.request_shutdown()).await;
        let exit = match requested {
            Ok(Ok(())) => match tokio::time::timeout_at(deadline, self.vm.wait()).await {
                Ok(exit) => exit,
                Err(_) => self.vm.stop(Duration::ZERO).await,
            },
            _ => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.vm.stop(left).await
            }
        };
        tracing::info!(sandbox = %self.id, ?exit, "vm stopped");
        remove_network(&self.id, self.network.take()).await;
        exit
    }

    /// Ends the VM at once.
    pub async fn kill(mut self) -> VmExit {
        // Ended first, so the stream breaking under the dying VM is not reported as a fault.
        self.relay.end_session();
        let exit = self.vm.stop(Duration::ZERO).await;
        // Once the VM is gone, so its namespace holds no process.
        remove_network(&self.id, self.network.take()).await;
        exit
    }

    /// The sandbox's network, unless it runs with none.
    pub fn network(&self) -> Option<&SandboxNetwork> {
        self.network.as_ref()
    }

    async fn request_shutdown(&self) -> Result<(), AgentError> {
        let mut stream = agent::open(self.relay.path(), &HostMessage::Shutdown).await?;
        match agent::next_message(&mut stream).await? {
            GuestMessage::ShuttingDown => Ok(()),
            other => Err(agent::unexpected("shutting down", &other)),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The VM's own drop kills its processes; the run dir is ours.
        if let Err(e) = std::fs::remove_dir_all(&self.run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(sandbox = %self.id, error = %e, "failed to remove run dir");
            }
        }
    }
}

/// A sandbox with its run dir and network, but no VM yet.
struct Prepared {
    id: String,
    run_dir: PathBuf,
    guard: RunDirGuard,
    owner_lock: Flock<File>,
    /// The network's first half, for the VM to start in. Dropping it on any failure removes
    /// the network again.
    network: Option<PendingNetwork>,
}

impl Prepared {
    /// Cold-boots the VM: kernel, initramfs, the read-only base and a command line that
    /// carries the sandbox's settings; or resumes the snapshot in `config.restore` on the same
    /// machine (the same argv, so the same devices in the same order).
    async fn launch(
        mut self,
        vmm: &dyn Vmm,
        config: &SandboxConfig,
    ) -> Result<Launched, BootError> {
        let disks = disks(config)?;
        let vm_config = VmConfig {
            kernel: config.kernel.clone(),
            initramfs: config.initramfs.clone(),
            cmdline: self.cmdline(&disks),
            disks,
            vcpus: config.vcpus,
            mem_size_mib: config.mem_size_mib,
            run_dir: self.run_dir.clone(),
            console_log: config
                .console_log
                .clone()
                .unwrap_or_else(|| self.run_dir.join("console.log")),
            net: self.network.as_ref().map(|n| NetConfig {
                netns: NetNamespace::At(n.netns_path().to_owned()),
                tap: n.names().tap.clone(),
            }),
            restore: config.restore.as_ref().map(|r| r.state.clone()),
            memory_file: config
                .restore
                .as_ref()
                .and_then(|r| r.memory.clone())
                .map(|path| MemoryFile {
                    path,
                    mode: MemoryMode::Private,
                }),
        };
        // The rest of the network is built while the VM starts; the guest cannot send through
        // it before its policy is in place (see `PendingNetwork`).
        let finishing = finish_network(self.network.take(), config.network.as_ref());
        let (mut vm, network) = tokio::join!(vmm.start(&vm_config), finishing);
        let mut network = match (vm.as_mut(), network) {
            (_, Ok(network)) => network,
            (Ok(vm), Err(e)) => {
                vm.stop(Duration::ZERO).await;
                return Err(e);
            }
            (Err(_), Err(e)) => return Err(e),
        };
        let vm = vm?;
        let from = config.restore.as_ref().map(|r| r.snapshot.as_str());
        tracing::info!(sandbox = %self.id, pid = ?vm.pid(), snapshot = ?from, "vm started");
        if let Some(network) = network.as_mut() {
            network.start_services()?;
        }
        Ok(Launched {
            prepared: self,
            network,
            vm,
        })
    }

    /// The guest's settings for a cold boot: root devices, hostname, addresses.
    fn cmdline(&self, disks: &[DiskConfig]) -> String {
        let mut cmdline = format!("quiet hearth.rootfs=/dev/vda hearth.hostname={}", self.id);
        // OCI bases are erofs (each layer, or the one file of older versions), the built-in
        // default image ext4 (the agent's default); the file names say which.
        if disks
            .iter()
            .all(|d| d.path.extension().is_some_and(|e| e == "erofs"))
        {
            cmdline.push_str(" hearth.rootfstype=erofs");
        }
        let layers = disks.len();
        if layers > 1 {
            cmdline.push_str(&format!(" hearth.layers={layers}"));
        }
        if let Some(network) = &self.network {
            let guest = network.guest();
            cmdline.push_str(&format!(
                " hearth.ip={}/{} hearth.gw={} hearth.dns={}",
                guest.addr, guest.prefix_len, guest.gateway, guest.nameserver
            ));
            if let Some(v6) = guest.v6 {
                cmdline.push_str(&format!(
                    " hearth.ip6={}/{} hearth.gw6={}",
                    v6.addr, v6.prefix_len, v6.gateway
                ));
            }
        }
        cmdline
    }
}

/// A sandbox whose VM runs but whose agent has not said it is ready.
struct Launched {
    prepared: Prepared,
    network: Option<SandboxNetwork>,
    vm: Box<dyn Vm>,
}

impl Launched {
    /// Says hello on the agent's stream and waits for its Ready (the hello waits in the stream
    /// until the agent opens its port), the VM's exit or the timeout, whichever is first; then
    /// serves the agent socket.
    async fn await_ready(self, boot_timeout: Duration) -> Result<Sandbox, BootError> {
        let Launched {
            prepared,
            network,
            mut vm,
        } = self;
        let stream = vm.agent_stream().to_owned();
        let ready = tokio::select! {
            ready = timeout(boot_timeout, agent_relay::connect(&stream)) => ready,
            exit = vm.wait() => {
                return Err(BootError::VmExited { exit, console: console_tail(vm.console_log()) });
            }
        };
        let session = match ready {
            Ok(Ok(session)) => session,
            Ok(Err(source)) => {
                // QEMU closes the agent's stream as it exits (a kernel panic, say), which can
                // reach us before its exit status does: the exit is the better report.
                if let Ok(exit) = timeout(VM_EXIT_GRACE, vm.wait()).await {
                    let console = console_tail(vm.console_log());
                    return Err(BootError::VmExited { exit, console });
                }
                vm.stop(Duration::ZERO).await;
                let console = console_tail(vm.console_log());
                return Err(BootError::Handshake { console, source });
            }
            Err(_) => {
                vm.stop(Duration::ZERO).await;
                return Err(BootError::Timeout {
                    timeout: boot_timeout,
                    console: console_tail(vm.console_log()),
                });
            }
        };
        let agent_version = session.agent_version().to_owned();
        tracing::info!(sandbox = %prepared.id, %agent_version, "agent ready");
        let socket = agent_socket_path(&prepared.run_dir);
        let relay = match AgentRelay::bind(&socket, session) {
            Ok(relay) => relay,
            Err(source) => {
                vm.stop(Duration::ZERO).await;
                return Err(BootError::Listen {
                    path: socket,
                    source,
                });
            }
        };
        prepared.guard.disarm();
        Ok(Sandbox {
            id: prepared.id,
            run_dir: prepared.run_dir,
            mounts: Vec::new(),
            relay,
            vm,
            network,
            agent_version,
            _owner_lock: prepared.owner_lock,
        })
    }
}

/// Makes the first half of the sandbox's network off the async threads: netlink work runs on
/// its own threads.
async fn begin_network(id: &str, config: &NetworkConfig) -> Result<PendingNetwork, BootError> {
    let (id, config) = (id.to_owned(), config.clone());
    tokio::task::spawn_blocking(move || PendingNetwork::begin(&id, &config))
        .await
        .map_err(|e| BootError::NetworkTask(e.to_string()))?
        .map_err(BootError::Network)
}

/// Builds the rest of a network [`begin_network`] started, off the async threads.
async fn finish_network(
    pending: Option<PendingNetwork>,
    config: Option<&NetworkConfig>,
) -> Result<Option<SandboxNetwork>, BootError> {
    let (Some(pending), Some(config)) = (pending, config.cloned()) else {
        return Ok(None);
    };
    tokio::task::spawn_blocking(move || pending.finish(&config))
        .await
        .map_err(|e| BootError::NetworkTask(e.to_string()))?
        .map(Some)
        .map_err(BootError::Network)
}

/// Removes sandbox `id`'s network off the async threads; failures are logged.
async fn remove_network(id: &str, network: Option<SandboxNetwork>) {
    let Some(network) = network else {
        return;
    };
    match tokio::task::spawn_blocking(move || network.remove()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(sandbox = %id, error = &e as &dyn std::error::Error, "network teardown failed");
        }
        Err(e) => tracing::warn!(sandbox = %id, error = %e, "network teardown panicked"),
    }
}

struct RunDirGuard(Option<PathBuf>);

impl RunDirGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A lock file in the run dir, held (flock) by the process that owns the sandbox: the CLI of a
/// one-shot `hearth run` or a detached sandbox's supervisor. The kernel drops it when that
/// process dies however it dies, so `gc` can tell an orphaned run dir from a live one.
pub(crate) fn owner_lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("owner.lock")
}

/// Locks a fresh file and only then gives it the lock's name, so `gc` never finds an unlocked
/// lock file of a live sandbox.
fn lock_owner(run_dir: &Path) -> Result<Flock<File>, BootError> {
    let path = owner_lock_path(run_dir);
    let error = |source| BootError::OwnerLock {
        path: path.clone(),
        source,
    };
    let fresh = run_dir.join(format!(".owner.lock.{}", std::process::id()));
    let file = File::create(&fresh).map_err(error)?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| error(std::io::Error::from(errno)))?;
    std::fs::rename(&fresh, &path).map_err(error)?;
    Ok(lock)
}

/// The named volumes a live sandbox mounts, one a line, inside its run dir.
pub(crate) fn volumes_in_use_path(run_dir: &Path) -> PathBuf {
    run_dir.join("volumes")
}

/// The owner's agent socket (see `agent_relay`), inside the run dir.
pub(crate) fn agent_socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("agent.sock")
}

/// How many hex digits an id has.
pub(crate) const ID_HEX_DIGITS: usize = 12;

/// A fresh sandbox id: 12 hex digits, like a short container id.
pub fn new_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// The last lines of the console log, for boot failure messages.
pub fn console_tail(path: &Path) -> String {
    let text = hearth_vmm::console::read_console(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|e| format!("(console log `{}` unreadable: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let mut start = lines.len().saturating_sub(CONSOLE_TAIL_LINES);
    // A panic's first line says why; its stack trace below can push it out of the tail.
    if let Some(panic) = lines.iter().rposition(|l| l.contains("Kernel panic")) {
        start = start.min(panic);
    }
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_console_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = console_tail(&path);
        assert!(tail.starts_with("line 60\n"));
        assert!(tail.ends_with("line 99"));
    }

    #[test]
    fn test_console_tail_starts_at_a_kernel_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let trace: String = (0..60).map(|i| format!("trace {i}\n")).collect();
        std::fs::write(
            &path,
            format!("boot\nKernel panic - not syncing: x\n{trace}"),
        )
        .unwrap();
        assert!(console_tail(&path).starts_with("Kernel panic - not syncing: x\n"));
    }

    #[test]
    fn test_new_ids_are_distinct_hex() {
        let a = new_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }
}
