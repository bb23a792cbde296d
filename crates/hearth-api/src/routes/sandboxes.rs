//! `/v1/sandboxes`: create (and start), list, get, start, stop, kill, delete. Each handler turns
//! JSON into the engine's request types, calls one engine operation and maps the result.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use hearth_engine::{
    parse_allow, DetachOptions, EgressMode, EgressPolicy, Health, LabelSelector, MountSpec,
    NetworkConfig, NetworkView, NoReporter, PortSpec, ProcessSpec, SandboxRecord, SandboxSpec,
    SandboxState,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::server::AppState;

/// Longest grace a stop may ask for: a request should not hang for longer.
const MAX_GRACE_SECS: u64 = 300;
const DEFAULT_GRACE_SECS: u64 = 10;

/// A new sandbox.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// OCI reference, local image name or id; absent or `default` is the built-in image.
    /// Missing images are pulled.
    pub image: Option<String>,
    /// A generated `adjective-noun-xxxx` name when absent.
    pub name: Option<String>,
    /// Virtual CPUs (default 1).
    pub cpus: Option<u8>,
    /// Guest memory in MiB (default 512).
    pub memory_mib: Option<u32>,
    /// The main process, replacing the image's Cmd. Empty with the built-in image: no main
    /// process, the sandbox stays up for exec.
    #[serde(default)]
    pub command: Vec<String>,
    pub entrypoint: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub network: NetworkRequest,
    /// Stop the sandbox after this many seconds of running (at most 30 days); see
    /// `POST /v1/sandboxes/{sandbox}/timeout` to change it.
    pub timeout_secs: Option<u64>,
    /// Metadata to find it by: `GET /v1/sandboxes?label=KEY=VALUE`. Keys are up to 63
    /// letters, digits, `-`, `_`, `.` or `/`; values up to 256 bytes without control
    /// characters; at most 32 labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Forget the sandbox once it ends.
    #[serde(default)]
    pub auto_remove: bool,
    /// Resume this snapshot instead of booting: its image and resources are used, and
    /// `network.mode` must match whether it had a network.
    pub from_snapshot: Option<String>,
    /// Boot even when a template of this machine could be resumed (and make none).
    #[serde(default)]
    pub cold: bool,
    /// No main process, whatever the image's command: the sandbox stays up for exec, whose
    /// processes keep the image's Env, WorkingDir and User.
    #[serde(default)]
    pub idle: bool,
    /// `false` only records it (state `created`); `POST .../start` boots it.
    #[serde(default = "yes")]
    pub start: bool,
    /// Host dirs and named volumes mounted in the guest.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
}

/// A mount: a named volume (made on first use), or an absolute host dir under one the server
/// allows (`hearth serve --allow-host-dir`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// A volume name, or an absolute host path.
    pub source: String,
    /// Absolute path in the guest.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

impl CreateSandbox {
    /// A sandbox as the SDK protocols make them: started at once, with no main process,
    /// removed when it ends, everything else the image's or hearth's default.
    pub(crate) fn idle_for_sdk(
        image: Option<String>,
        env: BTreeMap<String, String>,
        network: NetworkRequest,
        timeout_secs: u64,
        labels: BTreeMap<String, String>,
    ) -> Self {
        CreateSandbox {
            image,
            name: None,
            cpus: None,
            memory_mib: None,
            command: Vec::new(),
            entrypoint: None,
            env,
            workdir: None,
            user: None,
            network,
            timeout_secs: Some(timeout_secs),
            labels,
            auto_remove: true,
            from_snapshot: None,
            cold: false,
            idle: true,
            start: true,
            volumes: Vec::new(),
        }
    }
}

/// The sandbox's network. Under every policy the host, other sandboxes, metadata addresses
/// and DNS other than hearth's forwarder stay blocked.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    #[serde(default)]
    pub mode: NetworkMode,
    #[serde(default)]
    pub egress: Egress,
    /// With `egress: allow_list`: addresses, CIDRs, `example.com` or `*.example.com`.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub allow_udp: bool,
    #[serde(default)]
    pub allow_icmp: bool,
    /// Host ports forwarded to the guest: `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]`, the host IP
    /// 127.0.0.1 unless given.
    #[serde(default)]
    pub publish: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    #[default]
    Default,
    /// No network interface at all (loopback only).
    None,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Egress {
    #[default]
    AllowAll,
    DenyAll,
    /// Only what `allow` lists.
    AllowList,
}

/// A sandbox as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// `created`, `starting`, `running`, `exited` or `failed`.
    #[schema(value_type = String)]
    pub state: SandboxState,
    /// Unix time in seconds.
    pub created_at: i64,
    pub cpus: u8,
    pub memory_mib: u32,
    /// What it runs on, like `qemu-tcg`.
    pub backend: String,
    pub exit_code: Option<i32>,
    /// Why it failed to start.
    pub error: Option<String>,
    pub auto_remove: bool,
    /// `starting`, `healthy` or `unhealthy`, with a health command.
    #[schema(value_type = Option<String>)]
    pub health: Option<Health>,
    pub labels: BTreeMap<String, String>,
    /// Unix time in seconds at which its timeout stops it, while it runs with one.
    pub expires_at: Option<i64>,
}

/// A sandbox with its network, looked up live.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxDetails {
    #[serde(flatten)]
    pub sandbox: Sandbox,
    /// Policy, published ports and the host link's addresses; absent without a network.
    #[schema(value_type = Option<Object>)]
    pub network: Option<NetworkView>,
}

impl From<SandboxRecord> for Sandbox {
    fn from(record: SandboxRecord) -> Self {
        Sandbox {
            id: record.id,
            name: record.name,
            image: record.image,
            command: record.command,
            state: record.state,
            created_at: record.created_at,
            cpus: record.vcpus,
            memory_mib: record.mem_size_mib,
            backend: record.backend,
            exit_code: record.exit_code,
            error: record.error,
            auto_remove: record.auto_remove,
            health: record.health,
            labels: record.labels,
            expires_at: record.expires_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only sandboxes in this state: `created`, `starting`, `running`, `exited`, `failed`.
    #[param(value_type = Option<String>)]
    pub state: Option<SandboxState>,
    /// Only sandboxes with this label: `KEY` (set to anything) or `KEY=VALUE`.
    pub label: Option<String>,
}

/// A new timeout.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeout {
    /// Stop the sandbox this many seconds from now (1 up to 30 days), replacing the timeout
    /// it had, if any.
    pub timeout_secs: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Kill a live sandbox first instead of refusing with 409.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StopQuery {
    /// Seconds the guest has to power off before it is killed (default 10, at most 300).
    pub grace_secs: Option<u64>,
}

/// Sandbox name, id or unique id prefix.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SandboxPath {
    pub sandbox: String,
}

#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes", request_body = CreateSandbox,
    responses((status = 201, body = Sandbox), (status = 400, body = ErrorBody),
              (status = 409, description = "name taken", body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    Json(request): Json<CreateSandbox>,
) -> Result<(StatusCode, axum::Json<Sandbox>), ApiError> {
    let sandbox = create_sandbox(&app, request).await?;
    Ok((StatusCode::CREATED, axum::Json(sandbox)))
}

/// Creates (and unless told not to, boots) a sandbox: the create route, and the MCP
/// `create_sandbox` tool.
pub(crate) async fn create_sandbox(
    app: &AppState,
    request: CreateSandbox,
) -> Result<Sandbox, ApiError> {
    let start = request.start;
    let options = DetachOptions {
        name: request.name.clone(),
        auto_remove: request.auto_remove,
        timeout: request.timeout_secs.map(Duration::from_secs),
        health: None,
        labels: request.labels.clone(),
    };
    let spec = sandbox_spec(request, app)?;
    let spec = app.engine.resolve(spec, &NoReporter).await?;
    let record = if start {
        let _booting = app.boot_permit().await?;
        app.engine.run_detached(&spec, &options, false).await?
    } else {
        app.engine.create(&spec, &options)?
    };
    Ok(record.into())
}

#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes", params(ListQuery),
    responses((status = 200, body = [Sandbox]), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Vec<Sandbox>>, ApiError> {
    let label = query
        .label
        .as_deref()
        .map(str::parse::<LabelSelector>)
        .transpose()?;
    let records = app.engine.list(true)?;
    Ok(axum::Json(
        records
            .into_iter()
            .filter(|r| query.state.is_none_or(|state| r.state == state))
            .filter(|r| label.as_ref().is_none_or(|label| label.matches(r)))
            .map(Sandbox::from)
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/sandboxes/{sandbox}", tag = "sandboxes", params(SandboxPath),
    responses((status = 200, body = SandboxDetails), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
) -> Result<axum::Json<SandboxDetails>, ApiError> {
    let inspection = app.engine.inspect(&path.sandbox)?;
    Ok(axum::Json(SandboxDetails {
        sandbox: inspection.record.into(),
        network: inspection.network,
    }))
}

#[utoipa::path(post, path = "/v1/sandboxes/{sandbox}/start", tag = "sandboxes",
    params(SandboxPath),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody),
              (status = 409, description = "already live", body = ErrorBody)))]

pub async fn start(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
) -> Result<axum::Json<Sandbox>, ApiError> {
    let _booting = app.boot_permit().await?;
    Ok(axum::Json(app.engine.start(&path.sandbox).await?.into()))
}

#[utoipa::path(post, path = "/v1/sandboxes/{sandbox}/stop", tag = "sandboxes",
    params(SandboxPath, StopQuery),
    responses((status = 200, description = "ended", body = Sandbox),
              (status = 404, body = ErrorBody)))]
pub async fn stop(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
    Query(query): Query<StopQuery>,
) -> Result<axum::Json<Sandbox>, ApiError> {
    let grace = ApiError::in_range(
        "grace_secs",
        query.grace_secs.unwrap_or(DEFAULT_GRACE_SECS),
        0..=MAX_GRACE_SECS,
    )?;
    let record = app
        .engine
        .stop(&path.sandbox, Duration::from_secs(grace))
        .await?;
    ended(&app, &record.id)
}

#[utoipa::path(post, path = "/v1/sandboxes/{sandbox}/kill", tag = "sandboxes",
    params(SandboxPath),
    responses((status = 200, description = "ended", body = Sandbox),
              (status = 404, body = ErrorBody)))]
pub async fn kill(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
) -> Result<axum::Json<Sandbox>, ApiError> {
    let record = app.engine.kill(&path.sandbox).await?;
    ended(&app, &record.id)
}

#[utoipa::path(post, path = "/v1/sandboxes/{sandbox}/timeout", tag = "sandboxes",
    params(SandboxPath), request_body = SetTimeout,
    responses((status = 200, description = "the new `expires_at` is set", body = Sandbox),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "not running", body = ErrorBody)))]
pub async fn set_timeout(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
    Json(body): Json<SetTimeout>,
) -> Result<axum::Json<Sandbox>, ApiError> {
    let after = Duration::from_secs(body.timeout_secs);
    Ok(axum::Json(
        app.engine.set_timeout(&path.sandbox, after).await?.into(),
    ))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{sandbox}", tag = "sandboxes",
    params(SandboxPath, DeleteQuery),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody),
              (status = 409, description = "still live; use force", body = ErrorBody)))]
pub async fn delete(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    app.engine.remove(&path.sandbox, query.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The record after a stop or kill: its end is recorded by then, unless it removed itself.
fn ended(app: &AppState, id: &str) -> Result<axum::Json<Sandbox>, ApiError> {
    Ok(axum::Json(app.engine.find(id)?.into()))
}

fn sandbox_spec(request: CreateSandbox, app: &AppState) -> Result<SandboxSpec, ApiError> {
    let defaults = SandboxSpec::default();
    let mut network = network_config(&request.network)?;
    if let Some(network) = network.as_mut() {
        network.dns_upstream = app.dns_upstream;
    }
    let mounts = request
        .volumes
        .into_iter()
        .map(|v| mount_spec(v, &app.host_dirs))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SandboxSpec {
        image: request.image,
        mounts,
        from_snapshot: request.from_snapshot,
        cold: request.cold,
        vcpus: request.cpus.unwrap_or(defaults.vcpus),
        mem_size_mib: request.memory_mib.unwrap_or(defaults.mem_size_mib),
        network,
        process: ProcessSpec {
            command: request.command,
            entrypoint: request.entrypoint,
            env: env_entries(request.env)?,
            workdir: request.workdir,
            user: request.user,
            tty: None,
            stdin: false,
            idle: request.idle,
        },
        ..defaults
    })
}

/// A mount a client asked for, with a host path allowed only below `allowed` (checked on the
/// canonical path, so `..` and symlinks cannot step out).
fn mount_spec(mount: VolumeMount, allowed: &[PathBuf]) -> Result<MountSpec, ApiError> {
    let spec = MountSpec {
        source: mount.source,
        target: mount.target,
        read_only: mount.read_only,
    };
    if spec.names_host_path() {
        if !spec.source.starts_with('/') {
            return Err(ApiError::invalid_input(format!(
                "volume source `{}`: host paths must be absolute",
                spec.source
            )));
        }
        let canonical = std::fs::canonicalize(&spec.source).map_err(|e| {
            ApiError::invalid_input(format!("volume source `{}`: {e}", spec.source))
        })?;
        let permitted = allowed
            .iter()
            .any(|dir| std::fs::canonicalize(dir).is_ok_and(|dir| canonical.starts_with(dir)));
        if !permitted {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_denied",
                format!(
                    "volume source `{}` is not below a dir this server lets clients mount \
                     (hearth serve --allow-host-dir DIR); named volumes are always allowed",
                    spec.source
                ),
            ));
        }
    }
    Ok(spec)
}

/// `KEY=VALUE` entries; a key holding `=` or nothing would change what the guest sees.
pub fn env_entries(env: BTreeMap<String, String>) -> Result<Vec<String>, ApiError> {
    env.into_iter()
        .map(|(key, value)| {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(ApiError::invalid_input(format!(
                    "environment variable `{key}`: names must be non-empty without `=`, and \
                     neither name nor value may hold NUL"
                )));
            }
            Ok(format!("{key}={value}"))
        })
        .collect()
}

fn network_config(request: &NetworkRequest) -> Result<Option<NetworkConfig>, ApiError> {
    if request.mode == NetworkMode::None {
        let configured = request.egress != Egress::AllowAll
            || !request.allow.is_empty()
            || request.allow_udp
            || request.allow_icmp
            || !request.publish.is_empty();
        if configured {
            return Err(ApiError::invalid_input(
                "network mode `none` gives no network: drop egress, allow, allow_udp, \
                 allow_icmp and publish",
            ));
        }
        return Ok(None);
    }
    let allow = request
        .allow
        .iter()
        .map(|entry| parse_allow(entry).map_err(|e| ApiError::invalid_value(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mode = match (request.egress, allow.is_empty()) {
        (Egress::AllowList, true) => {
            return Err(ApiError::invalid_input(
                "egress `allow_list` needs at least one `allow` entry",
            ))
        }
        (Egress::AllowList, false) => None,
        (Egress::AllowAll, _) => Some(EgressMode::AllowAll),
        (Egress::DenyAll, _) => Some(EgressMode::DenyAll),
    };
    let policy = EgressPolicy::from_flags(mode, allow, request.allow_udp, request.allow_icmp)
        .map_err(|e| ApiError::invalid_value(&e))?;
    let publish = request
        .publish
        .iter()
        .map(|spec| {
            spec.parse::<PortSpec>()
                .map_err(|e| ApiError::invalid_value(&e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(NetworkConfig {
        policy,
        publish,
        ..NetworkConfig::default()
    }))
}
