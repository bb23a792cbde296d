//! From a spec to a sandbox: resolving it (image pulled, boot config and process built), and
//! the one-shot run a client attaches to.

use hearth_agent_proto::ExecRequest;
use hearth_image::PullReporter;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::exec::{ExecInput, ExecOutput};
use crate::images::{self, ProcessOverrides};
use crate::limits::HostLimits;
use crate::ops::templates::make_template;
use crate::ops::{ResolvedSpec, SandboxSpec, DEFAULT_IMAGE};
use crate::sandbox::{Restore, Sandbox, SandboxConfig};
use crate::snapshots::{SnapshotError, SnapshotStore};

/// A guest process that has started: its guest pid, input half and output stream.
pub type Started = (u32, ExecInput, ExecOutput);

/// A one-shot sandbox owned by the caller, and its process.
#[derive(Debug)]
pub struct OneShot {
    /// Shut it down (or kill it) when the process is done; dropping it kills the VM.
    pub sandbox: Sandbox,
    /// The process, or why it could not start ([`EngineError::process_exit_code`] tells
    /// "not found" and "not executable" apart).
    pub process: Result<Started, EngineError>,
}

impl Engine {
    /// Looks up what `spec` names: pulls a missing image (progress to `reporter`), and builds
    /// the boot config and the process under the image's config.
    pub async fn resolve(
        &self,
        spec: SandboxSpec,
        reporter: &dyn PullReporter,
    ) -> Result<ResolvedSpec, EngineError> {
        HostLimits::of_host().check(spec.vcpus, spec.mem_size_mib)?;
        let state = self.state();
        let snapshot = match &spec.from_snapshot {
            Some(name) => Some(self.restorable_snapshot(name)?),
            None => None,
        };
        let volumes = crate::volumes::VolumeStore::new(state.volumes_dir());
        let mounts = spec
            .mounts
            .iter()
            .map(|m| m.resolve(&volumes))
            .collect::<Result<Vec<_>, _>>()?;
        crate::mounts::check_distinct(&mounts)?;
        let mut spec = spec;
        if let Some(meta) = &snapshot {
            spec.image = Some(meta.image.clone());
            if meta.network != spec.network.is_some() {
                return Err(EngineError::Snapshot(SnapshotError::Mismatch {
                    name: meta.name.clone(),
                    reason: if meta.network {
                        "it was saved with a network; restore it with one".to_owned()
                    } else {
                        "it was saved without a network; restore it with `--network none`"
                            .to_owned()
                    },
                }));
            }
        }
        let mut config = SandboxConfig {
            kernel: match spec.kernel {
                Some(kernel) => kernel,
                None if self.vmm()?.boots_elf_kernel_only() => state.vmlinux(),
                None => state.kernel(),
            },
            initramfs: spec.initramfs.unwrap_or_else(|| state.initramfs()),
            rootfs: state.default_image(),
            vcpus: spec.vcpus,
            mem_size_mib: spec.mem_size_mib,
            boot_timeout: spec.boot_timeout,
            network: spec.network,
            console_log: None,
            restore: None,
            make_template: None,
            mounts,
        };
        let process = spec.process;
        let idle = process.idle;
        let mut request = ExecRequest {
            argv: process.command.clone(),
            env: process.env.clone(),
            cwd: process.workdir.clone(),
            tty: process.tty,
            stdin: process.stdin,
            user: process.user.clone(),
        };
        let image = spec.image.filter(|image| image != DEFAULT_IMAGE);
        if let Some(image) = &image {
            let record = self.ensure_image(image, &spec.registry, reporter).await?;
            config.rootfs = images::store(state).rootfs(&record.digest);
            let from_image = images::process(
                &record.config,
                ProcessOverrides {
                    entrypoint: process.entrypoint,
                    args: process.command,
                    env: process.env,
                    workdir: process.workdir,
                    user: process.user,
                },
            );
            if from_image.argv.is_empty() && !idle {
                return Err(EngineError::NoCommand);
            }
            request.argv = from_image.argv;
            request.env = from_image.env;
            request.cwd = from_image.cwd;
            request.user = from_image.user;
        }
        if idle {
            request.argv.clear();
        }
        if let Some(meta) = snapshot {
            let store = SnapshotStore::new(state);
            config.restore = Some(Restore {
                state: store.state_file(&meta.name),
                memory: meta.memory_file.then(|| store.memory_file(&meta.name)),
                snapshot: meta.name,
                cold_if_gone: false,
            });
            config.kernel = meta.kernel;
            config.initramfs = meta.initramfs;
            config.rootfs = meta.rootfs;
            config.vcpus = meta.vcpus;
            config.mem_size_mib = meta.mem_size_mib;
        }
        if config.restore.is_none() && !spec.cold {
            self.warm_start(&mut config).await;
        }
        Ok(ResolvedSpec {
            image: image.unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
            config,
            process: request,
        })
    }

    /// Boots a sandbox owned by the caller and starts its process (`hearth run` without `-d`).
    /// Cancelling it during the boot leaves nothing behind.
    pub async fn run(&self, spec: &ResolvedSpec) -> Result<OneShot, EngineError> {
        let sandbox = self.boot(spec).await?;
        let process = sandbox
            .exec(spec.attached_process())
            .await
            .map_err(EngineError::from);
        Ok(OneShot { sandbox, process })
    }

    /// Boots a sandbox owned by the caller and waits until its agent is ready; its process is
    /// the caller's to start ([`Sandbox::exec`]).
    pub async fn boot(&self, spec: &ResolvedSpec) -> Result<Sandbox, EngineError> {
        let id = crate::sandbox::new_id();
        let vmm = self.vmm()?;
        let mut sandbox = Sandbox::boot(vmm, &self.state().vms_dir(), id, &spec.config)
            .await
            .map_err(EngineError::Boot)?;
        make_template(vmm, self.state(), &mut sandbox, &spec.config, &spec.image).await;
        sandbox.attach_mounts(&spec.config.mounts).await?;
        Ok(sandbox)
    }
}
