//! Snapshots of running sandboxes: create (the sandbox's supervisor saves its VM), list,
//! inspect, remove. The store on disk is [`crate::snapshots`].

use hearth_agent_proto::PROTOCOL_VERSION;

use std::sync::Arc;
use std::time::Duration;

use hearth_vmm::{MemoryFile, MemoryMode, NetConfig, NetNamespace, VmConfig};

use crate::control;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::lifecycle;
use crate::ops::templates::{self, Provenance};
use crate::sandbox::SandboxConfig;
use crate::snapshots::{self, SnapshotError, SnapshotMeta, SnapshotStore};
use crate::supervisor;

impl Engine {
    fn snapshot_store(&self) -> SnapshotStore {
        SnapshotStore::new(self.state())
    }

    /// Saves running detached sandbox `query` as snapshot `name` (default:
    /// `<sandbox name>-<unix time>`): the VM pauses while its state is written, then resumes,
    /// or with `stop` the sandbox ends. The snapshot appears only once complete.
    pub async fn snapshot_create(
        &self,
        query: &str,
        name: Option<&str>,
        stop: bool,
    ) -> Result<SnapshotMeta, EngineError> {
        let record = self.running(query)?;
        let created_at = crate::state::unix_now();
        let name = match name {
            Some(name) => name.to_owned(),
            None => format!("{}-{created_at}", record.name),
        };
        lifecycle::check_name(&name)?;
        let config = supervisor::read_spec(self.state(), &record.id)?.config;
        if !config.mounts.is_empty() {
            return Err(SnapshotError::HasMounts {
                sandbox: record.name,
            }
            .into());
        }
        let vmm = self.vmm()?;
        let pending = self.snapshot_store().begin(&name)?;
        let provenance = templates::provenance(vmm, self.state(), &config).await?;
        let socket = control::socket_path(self.state(), &record.id);
        let saved = control::snapshot(&socket, &pending.stream_file(), stop).await?;
        split_memory(vmm, self.state(), &pending, &config)
            .await
            .map_err(|source| SnapshotError::Split {
                name: name.clone(),
                source,
            })?;
        let mut meta = snapshot_meta(
            &name,
            &record.id,
            &record.name,
            &record.image,
            &config,
            provenance,
            saved.agent_version,
        );
        meta.created_at = created_at;
        Ok(pending.commit(meta)?)
    }

    /// Every snapshot, oldest first. Collects saves that were cut short first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotMeta>, EngineError> {
        let store = self.snapshot_store();
        store.collect_stale();
        Ok(store.list()?)
    }

    /// The record of snapshot `name`.
    pub fn snapshot(&self, name: &str) -> Result<SnapshotMeta, EngineError> {
        Ok(self.snapshot_store().get(name)?)
    }

    /// The record of snapshot `name` once it is known to load on this host (see
    /// [`snapshots::check_restorable`]).
    pub(crate) fn restorable_snapshot(&self, name: &str) -> Result<SnapshotMeta, EngineError> {
        self.restorable_in(&self.snapshot_store(), name)
    }

    /// What this host restores with, to hold a saved machine against.
    pub(crate) fn restore_host(&self) -> Result<snapshots::Host<'_>, EngineError> {
        let vmm = self.vmm()?;
        Ok(snapshots::Host {
            state: self.state(),
            backend: vmm.describe().to_string(),
            vmm_version: templates::vmm_version(vmm, self.state())?,
            agent_protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION"),
        })
    }

    /// The record of `name` in `store` (snapshots or templates) once it is known to load
    /// here, its files included.
    pub(crate) fn restorable_in(
        &self,
        store: &SnapshotStore,
        name: &str,
    ) -> Result<SnapshotMeta, EngineError> {
        let meta = store.get(name)?;
        snapshots::check_restorable(&meta, &self.restore_host()?)?;
        let memory = meta.memory_file.then(|| store.memory_file(name));
        for file in std::iter::once(store.state_file(name)).chain(memory) {
            if !file.is_file() {
                return Err(EngineError::Snapshot(SnapshotError::Mismatch {
                    name: name.to_owned(),
                    reason: format!("its `{}` is gone", file.display()),
                }));
            }
        }
        Ok(meta)
    }

    /// Removes snapshot `name`.
    pub fn snapshot_remove(&self, name: &str) -> Result<SnapshotMeta, EngineError> {
        Ok(self.snapshot_store().remove(name)?)
    }
}

/// The record of a snapshot of the machine `config` describes, saved now.
pub(crate) fn snapshot_meta(
    name: &str,
    sandbox_id: &str,
    sandbox_name: &str,
    image: &str,
    config: &SandboxConfig,
    provenance: Provenance,
    agent_version: String,
) -> SnapshotMeta {
    SnapshotMeta {
        name: name.to_owned(),
        created_at: crate::state::unix_now(),
        sandbox_id: sandbox_id.to_owned(),
        sandbox_name: sandbox_name.to_owned(),
        image: image.to_owned(),
        rootfs: config.rootfs.clone(),
        rootfs_digest: provenance.rootfs_digest,
        kernel: config.kernel.clone(),
        kernel_digest: provenance.kernel_digest,
        initramfs: config.initramfs.clone(),
        initramfs_digest: provenance.initramfs_digest,
        agent_protocol: PROTOCOL_VERSION,
        agent_version,
        backend: provenance.backend,
        vmm_version: provenance.vmm_version,
        vcpus: config.vcpus,
        mem_size_mib: config.mem_size_mib,
        network: config.network.is_some(),
        size: 0,
        memory_file: true,
    }
}

/// Splits the full stream of `pending` into its memory file and a state without RAM: a VM
/// that never runs loads the stream into the memory file mapped shared, then saves only its
/// devices. Every restore then maps that file copy-on-write, so sandboxes started from one
/// snapshot share its pages. The saved sandbox itself was paused only for the stream.
/// A backend that saved memory apart already (Firecracker) only has its two files renamed.
pub(crate) async fn split_memory(
    vmm: &dyn hearth_vmm::Vmm,
    state: &crate::paths::StateDir,
    pending: &snapshots::PendingSnapshot,
    config: &SandboxConfig,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if let Some(memory) = vmm.saved_memory(&pending.stream_file()) {
        std::fs::rename(&memory, pending.memory_file())?;
        std::fs::rename(pending.stream_file(), pending.state_file())?;
        return Ok(());
    }
    // The stream holds a network device if the sandbox had one; this VM gets a tap in a
    // namespace of its own that nothing is connected to.
    const TAP: &str = "hthsplit";
    let net = match config.network {
        Some(_) => Some(NetConfig {
            netns: NetNamespace::Open(Arc::new(hearth_net::netns::anonymous_with_tap(TAP)?)),
            tap: TAP.to_owned(),
        }),
        None => None,
    };
    let run_dir = state.vms_dir().join(crate::sandbox::new_id());
    std::fs::create_dir_all(&run_dir)?;
    let vm_config = VmConfig {
        kernel: config.kernel.clone(),
        initramfs: config.initramfs.clone(),
        cmdline: String::new(),
        disks: crate::sandbox::disks(config)?,
        vcpus: config.vcpus,
        mem_size_mib: config.mem_size_mib,
        console_log: run_dir.join("console.log"),
        run_dir: run_dir.clone(),
        net,
        restore: Some(pending.stream_file()),
        memory_file: Some(MemoryFile {
            path: pending.memory_file(),
            mode: MemoryMode::Shared,
        }),
    };
    let split = async {
        let mut vm = vmm.start(&vm_config).await?;
        let saved = vm.save_template(&pending.state_file()).await;
        vm.stop(Duration::from_secs(5)).await;
        saved?;
        pending.drop_stream()?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&run_dir);
    split
}
