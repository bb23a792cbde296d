//! Warm starts: a template per machine. The first sandbox booted cold for a combination of
//! image, kernel, initramfs, agent, VMM, resources and network mode is saved the moment its
//! agent is ready (before anything runs in it) into `templates/<key>/`, a snapshot like any
//! other; later sandboxes of that combination resume it instead of booting, and share its
//! memory. What runs in a sandbox (command, env, user, workdir) is applied after the restore,
//! as after a boot, so the only difference a user sees is speed. `--cold` boots as before.

use hearth_agent_proto::PROTOCOL_VERSION;
use hearth_vmm::Vmm;
use sha2::{Digest as _, Sha256};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::paths::StateDir;
use crate::sandbox::{Restore, Sandbox, SandboxConfig};
use crate::snapshots::{self, SnapshotError, SnapshotMeta, SnapshotStore};

/// The store of templates: `templates/` beside `snapshots/`.
pub(crate) fn store(state: &StateDir) -> SnapshotStore {
    SnapshotStore::at(state.root().join("templates"))
}

/// What a saved machine is held against before a restore.
pub(crate) struct Provenance {
    pub backend: String,
    pub vmm_version: String,
    pub kernel_digest: String,
    pub initramfs_digest: String,
    pub rootfs_digest: String,
}

/// The VMM and the digests of what `config` boots (remembered digests, so this is cheap).
pub(crate) async fn provenance(
    vmm: &dyn Vmm,
    state: &StateDir,
    config: &SandboxConfig,
) -> Result<Provenance, EngineError> {
    let vmm_version = vmm_version(vmm, state)?;
    let (state, kernel, initramfs, rootfs) = (
        state.clone(),
        config.kernel.clone(),
        config.initramfs.clone(),
        config.rootfs.clone(),
    );
    let digests = tokio::task::spawn_blocking(move || {
        Ok::<_, SnapshotError>((
            snapshots::file_digest(&state, &kernel)?,
            snapshots::file_digest(&state, &initramfs)?,
            snapshots::base_digest(&state, &rootfs)?,
        ))
    })
    .await
    .map_err(|e| EngineError::Task(e.to_string()))??;
    let (kernel_digest, initramfs_digest, rootfs_digest) = digests;
    Ok(Provenance {
        backend: vmm.describe().to_string(),
        vmm_version,
        kernel_digest,
        initramfs_digest,
        rootfs_digest,
    })
}

/// The VMM's version, remembered by its executable: asking QEMU is a process start (about
/// 70 ms here) that every sandbox start would otherwise pay.
pub(crate) fn vmm_version(vmm: &dyn Vmm, state: &StateDir) -> Result<String, EngineError> {
    let ask = || vmm.version().map_err(EngineError::VmmVersion);
    match vmm.program() {
        Some(program) => snapshots::remembered(
            state,
            program,
            "vmm-version\n",
            |version| !version.is_empty(),
            ask,
        ),
        None => ask(),
    }
}

/// The template name for `config`: a hash of everything a restore must match.
fn key(provenance: &Provenance, config: &SandboxConfig) -> String {
    let text = [
        provenance.backend.as_str(),
        &provenance.vmm_version,
        &provenance.kernel_digest,
        &provenance.initramfs_digest,
        &provenance.rootfs_digest,
        &PROTOCOL_VERSION.to_string(),
        env!("CARGO_PKG_VERSION"),
        &config.vcpus.to_string(),
        &config.mem_size_mib.to_string(),
        if config.network.is_some() {
            "net"
        } else {
            "no-net"
        },
    ]
    .join("\n");
    let digest = Sha256::digest(text.as_bytes());
    format!("t-{}", snapshots::hex(&digest[..8]))
}

impl Engine {
    /// Points a cold-boot `config` at its template when one loads on this host, or marks it
    /// to make that template once it is agent-ready. Anything that keeps this from working (a missing kernel, no VMM) is left for the cold
    /// boot to report as it always has.
    pub(crate) async fn warm_start(&self, config: &mut SandboxConfig) {
        let Ok(vmm) = self.vmm() else {
            return;
        };
        let provenance = match provenance(vmm, self.state(), config).await {
            Ok(provenance) => provenance,
            Err(e) => {
                tracing::debug!(error = %crate::chain::error_chain(&e), "no warm start");
                return;
            }
        };
        let name = key(&provenance, config);
        let templates = store(self.state());
        let restorable = self.restorable_in(&templates, &name);
        if restorable.is_ok_and(|meta| meta.memory_file) {
            config.restore = Some(Restore {
                state: templates.state_file(&name),
                memory: Some(templates.memory_file(&name)),
                snapshot: format!("template {name}"),
                cold_if_gone: true,
            });
        } else {
            config.make_template = Some(name);
        }
    }

    /// Every template, oldest first.
    pub fn templates(&self) -> Result<Vec<SnapshotMeta>, EngineError> {
        let store = store(self.state());
        store.collect_stale();
        Ok(store.list()?)
    }

    /// Removes template `name`; sandboxes running from it keep their memory mapping.
    pub fn template_remove(&self, name: &str) -> Result<SnapshotMeta, EngineError> {
        Ok(store(self.state()).remove(name)?)
    }

    /// Removes every template that can no longer be restored here (another VMM, kernel,
    /// initramfs or agent, or a base image that is gone). Returns their names.
    pub fn template_prune(&self) -> Result<Vec<String>, EngineError> {
        let host = self.restore_host()?;
        let store = store(self.state());
        let mut removed = Vec::new();
        for meta in self.templates()? {
            if snapshots::check_restorable(&meta, &host).is_err() {
                store.remove(&meta.name)?;
                removed.push(meta.name);
            }
        }
        Ok(removed)
    }
}

/// Saves freshly booted `sandbox` as the template `config.make_template` names, then lets it
/// go on. Best effort: a template that cannot be made costs only the next start its speed,
/// so failures are logged, never returned.
pub(crate) async fn make_template(
    vmm: &dyn Vmm,
    state: &StateDir,
    sandbox: &mut Sandbox,
    config: &SandboxConfig,
    image: &str,
) {
    let Some(name) = &config.make_template else {
        return;
    };
    if let Err(e) = try_make_template(vmm, state, sandbox, config, name, image).await {
        match e {
            // Another sandbox of the same machine made it first.
            EngineError::Snapshot(SnapshotError::Exists(_)) => {}
            e => tracing::warn!(template = %name, error = %crate::chain::error_chain(&e),
                "cannot make the template; later starts boot cold"),
        }
    }
}

async fn try_make_template(
    vmm: &dyn Vmm,
    state: &StateDir,
    sandbox: &mut Sandbox,
    config: &SandboxConfig,
    name: &str,
    image: &str,
) -> Result<(), EngineError> {
    let templates = store(state);
    let pending = templates.begin(name)?;
    let provenance = provenance(vmm, state, config).await?;
    let saved = sandbox
        .save(&pending.stream_file(), true)
        .await
        .map_err(|e| EngineError::Task(crate::chain::error_chain(&e)))?;
    super::snapshots::split_memory(vmm, state, &pending, config)
        .await
        .map_err(|source| SnapshotError::Split {
            name: name.to_owned(),
            source,
        })?;
    let meta = super::snapshots::snapshot_meta(
        name,
        sandbox.id(),
        "",
        image,
        config,
        provenance,
        saved.agent_version,
    );
    pending.commit(meta)?;
    tracing::info!(template = %name, image, "template made");
    Ok(())
}
