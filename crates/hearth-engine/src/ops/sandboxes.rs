//! The detached sandbox's life: create, start, stop, kill, wait, remove, list, inspect, gc.
//! Each sandbox's supervisor process owns its VM; these operations write its row, start the
//! supervisor through the client's launcher, and talk to it over its control socket.

use std::time::{Duration, Instant};

use hearth_net::view::{self, NetworkView};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::control::{self, ControlError, ControlRequest, Ended};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::gc::{self, GcReport};
use crate::lifecycle::{self, Removal};
use crate::ops::{DetachOptions, ResolvedSpec};
use crate::state::{Health, SandboxRecord, SandboxState, StateDb};
use crate::supervisor::{self, DetachedSpec};

const POLL: Duration = Duration::from_millis(50);

/// Extra time past a stop's grace period for the supervisor to kill the VM and record the end.
pub const KILL_MARGIN: Duration = Duration::from_secs(10);

/// One sandbox as `inspect` shows it: the stored record and its network.
#[derive(Debug, Serialize)]
pub struct Inspection {
    #[serde(flatten)]
    pub record: SandboxRecord,
    /// `None` for a sandbox without a network.
    pub network: Option<NetworkView>,
    /// Host dirs and volumes mounted in it (`-v`).
    pub mounts: Vec<crate::mounts::Mount>,
}

impl Engine {
    /// Records a sandbox without booting it (`hearth create`); [`Engine::start`] boots it.
    pub fn create(
        &self,
        spec: &ResolvedSpec,
        options: &DetachOptions,
    ) -> Result<SandboxRecord, EngineError> {
        let db = self.db()?;
        let record = self.record_new(&db, spec, options, SandboxState::Created)?;
        if let Err(e) = supervisor::write_spec(self.state(), &record.id, &detached(spec, options)) {
            self.forget(&db, &record.id)?;
            return Err(e.into());
        }
        Ok(record)
    }

    /// Starts a sandbox in the background under its own supervisor (`hearth run -d`), and
    /// returns once it runs (with `wait_healthy`, once its health command passed).
    pub async fn run_detached(
        &self,
        spec: &ResolvedSpec,
        options: &DetachOptions,
        wait_healthy: bool,
    ) -> Result<SandboxRecord, EngineError> {
        self.gc()?;
        let db = self.db()?;
        let record = self.record_new(&db, spec, options, SandboxState::Starting)?;
        let launched = supervisor::write_spec(self.state(), &record.id, &detached(spec, options))
            .map_err(EngineError::from)
            .and_then(|()| self.launch(&record.id));
        let child = match launched {
            Ok(child) => child,
            Err(e) => {
                self.forget(&db, &record.id)?;
                return Err(e);
            }
        };
        self.wait_started(&db, &record.id, child, wait_healthy)
            .await
    }

    /// Boots a created or ended sandbox again from its stored spec.
    pub async fn start(&self, query: &str) -> Result<SandboxRecord, EngineError> {
        self.gc()?;
        let db = self.db()?;
        let record = db.find(query)?;
        lifecycle::check_startable(&record)?;
        db.set_starting(&record.id)?;
        let child = self.launch(&record.id)?;
        self.wait_started(&db, &record.id, child, false).await
    }

    /// Stops a sandbox cleanly: the guest powers off within `grace`, else it is killed.
    /// Returns once the end is recorded.
    pub async fn stop(&self, query: &str, grace: Duration) -> Result<SandboxRecord, EngineError> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.end(
            query,
            ControlRequest::Stop { grace_ms },
            grace + KILL_MARGIN,
        )
        .await
    }

    /// Kills a sandbox at once. Returns once the end is recorded.
    pub async fn kill(&self, query: &str) -> Result<SandboxRecord, EngineError> {
        self.end(query, ControlRequest::Kill, KILL_MARGIN).await
    }

    /// Sets running sandbox `query` to stop `after` from now, replacing any timeout it had
    /// (E2B's `setTimeout`: extending is setting a later one). Returns the updated record.
    pub async fn set_timeout(
        &self,
        query: &str,
        after: Duration,
    ) -> Result<SandboxRecord, EngineError> {
        lifecycle::check_timeout(after)?;
        let record = self.running(query)?;
        let socket = control::socket_path(self.state(), &record.id);
        control::set_timeout(&socket, after).await?;
        self.find(&record.id)
    }

    /// Waits until a sandbox ends; its exit code when known.
    pub async fn wait(&self, query: &str) -> Result<Option<i32>, EngineError> {
        let db = self.db()?;
        let record = db.find(query)?;
        Ok(
            match self.ask(&db, &record, ControlRequest::Wait, None).await? {
                Some(ended) => ended.exit_code,
                // Ended before we asked, or its supervisor died (gc has recorded that by now).
                None => db.find(&record.id).ok().and_then(|r| r.exit_code),
            },
        )
    }

    /// Forgets an ended sandbox and its files; with `force`, kills a live one first.
    pub async fn remove(&self, query: &str, force: bool) -> Result<SandboxRecord, EngineError> {
        let db = self.db()?;
        let record = db.find(query)?;
        if lifecycle::removal(&record, force)? == Removal::KillFirst {
            self.end_record(&db, &record, ControlRequest::Kill, KILL_MARGIN)
                .await?;
        }
        db.remove(&record.id)?;
        let dir = self.state().sandbox_dir(&record.id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EngineError::Io {
                action: "remove",
                path: dir,
                source: e,
            }),
            _ => Ok(record),
        }
    }

    /// Sandboxes, oldest first: live ones, or all with `all`. Collects leftovers first, so a
    /// sandbox whose supervisor died shows as exited.
    pub fn list(&self, all: bool) -> Result<Vec<SandboxRecord>, EngineError> {
        self.gc()?;
        Ok(self
            .db()?
            .list()?
            .into_iter()
            .filter(|r| all || r.state.is_live())
            .collect())
    }

    /// The record of one sandbox (name, id or unique id prefix).
    pub fn find(&self, query: &str) -> Result<SandboxRecord, EngineError> {
        Ok(self.db()?.find(query)?)
    }

    /// The environment (`KEY=VALUE`) sandbox `query` was created with: its image's Env and its
    /// own.
    pub fn sandbox_env(&self, query: &str) -> Result<Vec<String>, EngineError> {
        let record = self.find(query)?;
        Ok(supervisor::read_spec(self.state(), &record.id)?.env)
    }

    /// A sandbox's record and its network: the policy and published ports from its spec, the
    /// host link's addresses looked up live.
    pub fn inspect(&self, query: &str) -> Result<Inspection, EngineError> {
        let record = self.find(query)?;
        let spec = supervisor::read_spec(self.state(), &record.id)?;
        let network = spec
            .config
            .network
            .as_ref()
            .map(|config| view::describe(&record.id, config))
            .transpose()
            .map_err(|source| EngineError::NetworkView {
                id: record.id.clone(),
                source,
            })?;
        Ok(Inspection {
            record,
            network,
            mounts: spec.config.mounts,
        })
    }

    /// Removes what crashed sandboxes left behind: VMM processes, run dirs, networks.
    pub fn gc(&self) -> Result<GcReport, EngineError> {
        Ok(gc::collect(self.state())?)
    }

    /// Runs sandbox `id` to its end: what the process a launcher started does.
    pub async fn supervise(&self, id: &str) -> Result<(), EngineError> {
        Ok(supervisor::supervise(self.vmm()?, self.state(), id).await?)
    }

    fn record_new(
        &self,
        db: &StateDb,
        spec: &ResolvedSpec,
        options: &DetachOptions,
        state: SandboxState,
    ) -> Result<SandboxRecord, EngineError> {
        let id = crate::sandbox::new_id();
        let name = match &options.name {
            Some(name) => {
                lifecycle::check_name(name)?;
                let existing = db.list()?;
                lifecycle::check_not_id_like(name, existing.iter().map(|r| r.id.as_str()))?;
                name.clone()
            }
            None => lifecycle::generated_name(&id),
        };
        lifecycle::check_labels(&options.labels)?;
        if let Some(timeout) = options.timeout {
            lifecycle::check_timeout(timeout)?;
        }
        let created_at = crate::state::unix_now();
        let record = SandboxRecord {
            id,
            name,
            image: spec.image.clone(),
            command: spec.process.argv.clone(),
            state,
            created_at,
            vcpus: spec.config.vcpus,
            mem_size_mib: spec.config.mem_size_mib,
            backend: self.backend()?.to_string(),
            supervisor_pid: None,
            exit_code: None,
            error: None,
            auto_remove: options.auto_remove,
            health: options.health.as_ref().map(|_| Health::Starting),
            labels: options.labels.clone(),
            expires_at: None,
        };
        db.insert(&record)?;
        Ok(record)
    }

    /// Deletes a row and its files after a failed start.
    fn forget(&self, db: &StateDb, id: &str) -> Result<(), EngineError> {
        db.remove(id)?;
        let _ = std::fs::remove_dir_all(self.state().sandbox_dir(id));
        Ok(())
    }

    fn launch(&self, id: &str) -> Result<std::process::Child, EngineError> {
        let log_path = supervisor::supervisor_log_path(self.state(), id);
        let log = std::fs::File::create(&log_path).map_err(|source| EngineError::Io {
            action: "create",
            path: log_path,
            source,
        })?;
        self.launcher()
            .launch(self.state(), id, log)
            .map_err(|source| EngineError::Launch {
                id: id.to_owned(),
                source,
            })
    }

    /// Waits until the supervisor records the sandbox running (or failed).
    async fn wait_started(
        &self,
        db: &StateDb,
        id: &str,
        mut supervisor: std::process::Child,
        wait_healthy: bool,
    ) -> Result<SandboxRecord, EngineError> {
        loop {
            let record = db.find(id)?;
            match record.state {
                SandboxState::Starting => {
                    let exited = supervisor.try_wait().map_err(|source| EngineError::Io {
                        action: "wait for the supervisor of",
                        path: self.state().sandbox_dir(id),
                        source,
                    })?;
                    if let Some(status) = exited {
                        let log = supervisor::supervisor_log_path(self.state(), id);
                        let output = std::fs::read_to_string(log).unwrap_or_default();
                        db.set_ended(id, SandboxState::Failed, None, Some("its supervisor died"))?;
                        return Err(EngineError::SupervisorDied {
                            id: id.to_owned(),
                            status: status.to_string(),
                            output: output.trim().to_owned(),
                        });
                    }
                }
                SandboxState::Running if wait_healthy && record.health != Some(Health::Healthy) => {
                    if record.health == Some(Health::Unhealthy) {
                        return Err(EngineError::Unhealthy { id: id.to_owned() });
                    }
                }
                SandboxState::Exited if wait_healthy => {
                    return Err(EngineError::EndedUnhealthy { id: id.to_owned() });
                }
                SandboxState::Running | SandboxState::Exited => return Ok(record),
                SandboxState::Created => {
                    return Err(EngineError::StartFailed {
                        id: id.to_owned(),
                        reason: "it went back to created".to_owned(),
                    })
                }
                SandboxState::Failed => {
                    return Err(EngineError::StartFailed {
                        id: id.to_owned(),
                        reason: record
                            .error
                            .unwrap_or_else(|| "no reason recorded".to_owned()),
                    })
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn end(
        &self,
        query: &str,
        request: ControlRequest,
        limit: Duration,
    ) -> Result<SandboxRecord, EngineError> {
        let db = self.db()?;
        let record = db.find(query)?;
        self.end_record(&db, &record, request, limit).await?;
        Ok(record)
    }

    /// Asks the sandbox's supervisor to end it with `request` and waits up to `limit` for the
    /// recorded end. A supervisor that does not answer in time is killed (its VMM dies with it)
    /// and gc records the end.
    async fn end_record(
        &self,
        db: &StateDb,
        record: &SandboxRecord,
        request: ControlRequest,
        limit: Duration,
    ) -> Result<(), EngineError> {
        if let Err(e) = self.ask(db, record, request, Some(limit)).await {
            tracing::warn!(sandbox = %record.id, error = %e, "the supervisor did not end its sandbox; killing it");
            let pid = record
                .supervisor_pid
                .filter(|_| gc::supervisor_alive(record))
                .and_then(|pid| i32::try_from(pid).ok());
            if let Some(pid) = pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                tokio::time::sleep(POLL).await;
            }
            self.gc()?;
        }
        Ok(())
    }

    /// Sends `request` to the supervisor of `record`. `None` when there is none to ask: the
    /// sandbox has ended, or its supervisor died (then gc has cleaned up after it).
    async fn ask(
        &self,
        db: &StateDb,
        record: &SandboxRecord,
        request: ControlRequest,
        limit: Option<Duration>,
    ) -> Result<Option<Ended>, EngineError> {
        let socket = control::socket_path(self.state(), &record.id);
        let start = Instant::now();
        loop {
            let current = match db.find(&record.id) {
                Ok(current) if current.state.is_live() => current,
                _ => return Ok(None),
            };
            match control::request(&socket, &request, limit).await {
                Ok(ended) => return Ok(Some(ended)),
                // A supervisor just spawned binds its socket a moment after the row says
                // `starting`; one that is gone (or ends as we connect) leaves it unanswered.
                Err(ControlError::NoSupervisor { .. } | ControlError::Closed) => {
                    let starting =
                        current.supervisor_pid.is_none() || gc::supervisor_alive(&current);
                    if !starting || limit.is_some_and(|limit| start.elapsed() > limit) {
                        self.gc()?;
                        return Ok(None);
                    }
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn detached(spec: &ResolvedSpec, options: &DetachOptions) -> DetachedSpec {
    DetachedSpec {
        config: spec.config.clone(),
        main: spec.main_process(),
        timeout: options.timeout,
        health: options.health.clone(),
        env: spec.process.env.clone(),
    }
}
