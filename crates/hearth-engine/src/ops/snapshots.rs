//! Snapshots of running sandboxes: create (the sandbox's supervisor saves its VM), list,
//! inspect, remove. The store on disk is [`crate::snapshots`].

use hearth_agent_proto::PROTOCOL_VERSION;

use crate::control;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::lifecycle;
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
        let vmm = self.vmm()?;
        let vmm_version = vmm.version().map_err(EngineError::VmmVersion)?;
        let pending = self.snapshot_store().begin(&name)?;
        let (state, kernel, initramfs, rootfs) = (
            self.state().clone(),
            config.kernel.clone(),
            config.initramfs.clone(),
            config.rootfs.clone(),
        );
        let digests = tokio::task::spawn_blocking(move || {
            Ok::<_, snapshots::SnapshotError>((
                snapshots::file_digest(&kernel)?,
                snapshots::file_digest(&initramfs)?,
                snapshots::base_digest(&state, &rootfs)?,
            ))
        })
        .await
        .map_err(|e| EngineError::Task(e.to_string()))??;
        let (kernel_digest, initramfs_digest, rootfs_digest) = digests;
        let socket = control::socket_path(self.state(), &record.id);
        let saved = control::snapshot(&socket, &pending.state_file(), stop).await?;
        let meta = SnapshotMeta {
            name,
            created_at,
            sandbox_id: record.id.clone(),
            sandbox_name: record.name.clone(),
            image: record.image.clone(),
            rootfs: config.rootfs,
            rootfs_digest,
            kernel: config.kernel,
            kernel_digest,
            initramfs: config.initramfs,
            initramfs_digest,
            agent_protocol: PROTOCOL_VERSION,
            agent_version: saved.agent_version,
            backend: vmm.describe().to_string(),
            vmm_version,
            vcpus: config.vcpus,
            mem_size_mib: config.mem_size_mib,
            network: config.network.is_some(),
            size: 0,
        };
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
        let store = self.snapshot_store();
        let meta = store.get(name)?;
        let vmm = self.vmm()?;
        let host = snapshots::Host {
            state: self.state(),
            backend: vmm.describe().to_string(),
            vmm_version: vmm.version().map_err(EngineError::VmmVersion)?,
            agent_protocol: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION"),
        };
        snapshots::check_restorable(&meta, &host)?;
        let state = store.state_file(name);
        if !state.is_file() {
            return Err(EngineError::Snapshot(SnapshotError::Mismatch {
                name: name.to_owned(),
                reason: format!("its state `{}` is gone", state.display()),
            }));
        }
        Ok(meta)
    }

    /// Removes snapshot `name`.
    pub fn snapshot_remove(&self, name: &str) -> Result<SnapshotMeta, EngineError> {
        Ok(self.snapshot_store().remove(name)?)
    }
}
