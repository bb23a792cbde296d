//! `/v1/snapshots` and `POST /v1/sandboxes/{sandbox}/snapshots`: save a running sandbox, list,
//! get and remove snapshots. Starting from one is `POST /v1/sandboxes` with `from_snapshot`.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_engine::SnapshotMeta;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path};
use crate::routes::sandboxes::SandboxPath;
use crate::server::AppState;

/// A saved sandbox: device state and memory, restorable on this host.
#[derive(Debug, Serialize, ToSchema)]
pub struct Snapshot {
    pub name: String,
    /// Unix time in seconds.
    pub created_at: i64,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    pub sandbox_name: String,
    pub image: String,
    pub cpus: u8,
    pub memory_mib: u32,
    /// The backend it must be restored on, like `qemu-tcg`.
    pub backend: String,
    pub agent_version: String,
    /// Whether the guest has a network interface; a sandbox started from it must match.
    pub network: bool,
    /// Bytes on disk.
    pub size_bytes: u64,
}

impl From<SnapshotMeta> for Snapshot {
    fn from(meta: SnapshotMeta) -> Self {
        Snapshot {
            name: meta.name,
            created_at: meta.created_at,
            sandbox_id: meta.sandbox_id,
            sandbox_name: meta.sandbox_name,
            image: meta.image,
            cpus: meta.vcpus,
            memory_mib: meta.mem_size_mib,
            backend: meta.backend,
            agent_version: meta.agent_version,
            network: meta.network,
            size_bytes: meta.size,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Default: `<sandbox name>-<unix time>`.
    pub name: Option<String>,
    /// End the sandbox after saving instead of resuming it.
    #[serde(default)]
    pub stop: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SnapshotPath {
    pub name: String,
}

#[utoipa::path(post, path = "/v1/sandboxes/{sandbox}/snapshots", tag = "snapshots",
    params(SandboxPath), request_body = CreateSnapshot,
    responses((status = 201, body = Snapshot), (status = 404, body = ErrorBody),
              (status = 409, description = "not running, or the name is taken",
               body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    Path(path): Path<SandboxPath>,
    Json(request): Json<CreateSnapshot>,
) -> Result<(StatusCode, axum::Json<Snapshot>), ApiError> {
    let meta = app
        .engine
        .snapshot_create(&path.sandbox, request.name.as_deref(), request.stop)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(meta.into())))
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    responses((status = 200, body = [Snapshot])))]
pub async fn list(State(app): State<AppState>) -> Result<axum::Json<Vec<Snapshot>>, ApiError> {
    Ok(axum::Json(
        app.engine
            .snapshots()?
            .into_iter()
            .map(Snapshot::from)
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/snapshots/{name}", tag = "snapshots", params(SnapshotPath),
    responses((status = 200, body = Snapshot), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    Path(path): Path<SnapshotPath>,
) -> Result<axum::Json<Snapshot>, ApiError> {
    Ok(axum::Json(app.engine.snapshot(&path.name)?.into()))
}

#[utoipa::path(delete, path = "/v1/snapshots/{name}", tag = "snapshots", params(SnapshotPath),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    Path(path): Path<SnapshotPath>,
) -> Result<StatusCode, ApiError> {
    app.engine.snapshot_remove(&path.name)?;
    Ok(StatusCode::NO_CONTENT)
}
