//! `/v1/images`: pull, list and remove images of the state dir's store.

use axum::extract::State;
use axum::http::StatusCode;
use hearth_engine::{ImageRecord, ImageSummary, NoReporter, RegistryOptions};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path};
use crate::server::AppState;

/// A stored image.
#[derive(Debug, Serialize, ToSchema)]
pub struct Image {
    /// The image id: its config digest, `sha256:...`.
    pub id: String,
    /// The references and local names that point at it.
    pub names: Vec<String>,
    /// Size of its base filesystem in bytes.
    pub size_bytes: u64,
    /// When its base was built, Unix seconds.
    pub created_unix: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// An OCI reference, like `alpine:3.20` or `registry.example:5000/team/app@sha256:...`.
    pub reference: String,
    /// Registries spoken to over plain HTTP (loopback ones always are).
    #[serde(default)]
    pub insecure_registries: Vec<String>,
}

/// An image name (reference, local name or id); it may hold `/` and `:`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ImagePath {
    pub name: String,
}

impl Image {
    fn new(record: &ImageRecord, names: Vec<String>) -> Self {
        Image {
            id: record.digest.to_string(),
            names,
            size_bytes: record.size_bytes,
            created_unix: record.created_unix,
        }
    }
}

impl From<ImageSummary> for Image {
    fn from(summary: ImageSummary) -> Self {
        Image::new(&summary.record, summary.names)
    }
}

#[utoipa::path(post, path = "/v1/images/pull", tag = "images", request_body = PullRequest,
    responses((status = 200, body = Image), (status = 400, body = ErrorBody),
              (status = 403, description = "the registry refused", body = ErrorBody),
              (status = 404, description = "no such image", body = ErrorBody)))]
pub async fn pull(
    State(app): State<AppState>,
    Json(request): Json<PullRequest>,
) -> Result<axum::Json<Image>, ApiError> {
    let registry = RegistryOptions {
        insecure_registries: request.insecure_registries,
        ..RegistryOptions::default()
    };
    let record = app
        .engine
        .pull(&request.reference, &registry, &NoReporter)
        .await?;
    // The summary carries every name the image has now, the new one included.
    let summary = app
        .engine
        .images()?
        .into_iter()
        .find(|summary| summary.record.digest == record.digest);
    Ok(axum::Json(summary.map_or_else(
        || Image::new(&record, vec![request.reference]),
        Image::from,
    )))
}

#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, body = [Image])))]
pub async fn list(State(app): State<AppState>) -> Result<axum::Json<Vec<Image>>, ApiError> {
    Ok(axum::Json(
        app.engine.images()?.into_iter().map(Image::from).collect(),
    ))
}

#[utoipa::path(delete, path = "/v1/images/{name}", tag = "images", params(ImagePath),
    responses((status = 204, description = "the name is gone, and the image with its last name"),
              (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    Path(path): Path<ImagePath>,
) -> Result<StatusCode, ApiError> {
    app.engine.remove_image(&path.name)?;
    Ok(StatusCode::NO_CONTENT)
}
