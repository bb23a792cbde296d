//! `/health` (no key needed), `/v1/version` and `/v1/openapi.json`.

use axum::extract::State;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::server::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the server answers.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    /// hearth's version.
    pub version: &'static str,
    /// The API's version, the `/v1` of every path.
    pub api: &'static str,
    /// What sandboxes run on, like `qemu-tcg`.
    pub backend: String,
}

#[utoipa::path(get, path = "/health", tag = "system", security(()),
    responses((status = 200, body = Health)))]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/v1/version", tag = "system",
    responses((status = 200, body = Version),
              (status = 503, description = "this host cannot run VMs", body = ErrorBody)))]
pub async fn version(State(app): State<AppState>) -> Result<axum::Json<Version>, ApiError> {
    Ok(axum::Json(Version {
        version: env!("CARGO_PKG_VERSION"),
        api: "v1",
        backend: app.engine.backend()?.to_string(),
    }))
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "system",
    responses((status = 200, description = "this document", content_type = "application/json")))]
pub async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(crate::openapi::ApiDoc::openapi())
}
