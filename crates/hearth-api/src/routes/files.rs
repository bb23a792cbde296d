//! `/v1/sandboxes/{sandbox}/files`: read, write, stat, list, mkdir and remove guest paths
//! through the agent. Paths are absolute guest paths without `..`: the agent resolves them in
//! the guest, and a request that tries to climb is refused rather than normalised.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hearth_engine::FileStat;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::routes::sandboxes::SandboxPath;
use crate::server::AppState;

/// Largest file one read answers with; the answer sits in memory until it is sent. Writes are
/// bounded by the route's body limit, which is the same.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;
const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Absolute guest path.
    pub path: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    /// Absolute guest path; the file is replaced once all of it is written.
    pub path: String,
    /// Octal permission bits, like `644` (the default) or `0755`.
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Absolute guest path.
    pub path: String,
    /// Remove a directory and everything in it.
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    /// Absolute guest path.
    pub path: String,
    /// Octal permission bits (default `755`).
    pub mode: Option<String>,
    /// Make missing parents too, and accept an existing directory.
    #[serde(default)]
    pub parents: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    pub bytes_written: u64,
}

#[utoipa::path(get, path = "/v1/sandboxes/{sandbox}/files/content", tag = "files",
    params(SandboxPath, PathQuery),
    responses((status = 200, description = "the file's bytes",
               content_type = "application/octet-stream", body = Vec<u8>),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 413, description = "file over 64 MiB", body = ErrorBody)))]
pub async fn read(
    State(app): State<AppState>,
    Path(sandbox): Path<SandboxPath>,
    Query(query): Query<PathQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let path = guest_path(&query.path)?;
    let stat = app.engine.stat(&sandbox.sandbox, path).await?;
    if stat.size > MAX_FILE_BYTES as u64 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "`{path}` is {} bytes, over the {MAX_FILE_BYTES} a read returns",
                stat.size
            ),
        ));
    }
    let mut data = Vec::new();
    app.engine
        .read_file(&sandbox.sandbox, path, &mut data)
        .await?;
    Ok(([(CONTENT_TYPE, "application/octet-stream")], data))
}

#[utoipa::path(put, path = "/v1/sandboxes/{sandbox}/files/content", tag = "files",
    params(SandboxPath, WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Written), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn write(
    State(app): State<AppState>,
    Path(sandbox): Path<SandboxPath>,
    Query(query): Query<WriteQuery>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::Json<Written>, ApiError> {
    let path = guest_path(&query.path)?;
    let mode = mode(query.mode.as_deref(), DEFAULT_FILE_MODE)?;
    let body = body?;
    let bytes_written = app
        .engine
        .write_file(&sandbox.sandbox, path, mode, &mut body.as_ref())
        .await?;
    Ok(axum::Json(Written { bytes_written }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{sandbox}/files/stat", tag = "files",
    params(SandboxPath, PathQuery),
    responses((status = 200, body = FileStat), (status = 404, body = ErrorBody)))]
pub async fn stat(
    State(app): State<AppState>,
    Path(sandbox): Path<SandboxPath>,
    Query(query): Query<PathQuery>,
) -> Result<axum::Json<FileStat>, ApiError> {
    let path = guest_path(&query.path)?;
    Ok(axum::Json(app.engine.stat(&sandbox.sandbox, path).await?))
}

#[utoipa::path(get, path = "/v1/sandboxes/{sandbox}/files/list", tag = "files",
    params(SandboxPath, PathQuery),
    responses((status = 200, body = [FileStat]), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    Path(sandbox): Path<SandboxPath>,
    Query(query): Query<PathQuery>,
) -> Result<axum::Json<Vec<FileStat>>, ApiError> {
    let path = guest_path(&query.path)?;
    Ok(axum::Json(
        app.engine.list_dir(&sandbox.sandbox, path).await?,
    ))
}

#[utoipa::path(post, path = "/v1/sandboxes/{sandbox}/files/mkdir", tag = "files",
    params(SandboxPath), request_body = MkdirRequest,
    responses((status = 204, description = "made"), (status = 404, body = ErrorBody),
              (status = 409, description = "exists", body = ErrorBody)))]
pub async fn mkdir(
    State(app): State<AppState>,
    Path(sandbox): Path<SandboxPath>,
    Json(request): Json<MkdirRequest>,
) -> Result<StatusCode, ApiError> {
    let path = guest_path(&request.path)?;
    let mode = mode(request.mode.as_deref(), DEFAULT_DIR_MODE)?;
    app.engine
        .mkdir(&sandbox.sandbox, path, mode, request.parents)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/sandboxes/{sandbox}/files", tag = "files",
    params(SandboxPath, RemoveQuery),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody),
              (status = 409, description = "directory not empty", body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    Path(sandbox): Path<SandboxPath>,
    Query(query): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let path = guest_path(&query.path)?;
    app.engine
        .remove_path(&sandbox.sandbox, path, query.recursive)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `path` when it is absolute, without `..` or NUL.
pub(crate) fn guest_path(path: &str) -> Result<&str, ApiError> {
    if !path.starts_with('/') {
        return Err(ApiError::invalid_input(format!(
            "guest path `{path}` must be absolute"
        )));
    }
    if path.contains('\0') || path.split('/').any(|part| part == "..") {
        return Err(ApiError::invalid_input(format!(
            "guest path `{}` may not hold `..` or NUL",
            path.escape_default()
        )));
    }
    Ok(path)
}

pub(crate) fn mode(text: Option<&str>, default: u32) -> Result<u32, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => u32::from_str_radix(text, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
            .ok_or_else(|| {
                ApiError::invalid_input(format!("mode `{text}` is not octal bits up to 7777"))
            }),
    }
}

/// Writes `data` to guest `path` (0644), making its missing parent directories (0755) first,
/// as the SDK protocols hearth speaks expect of an upload.
pub(crate) async fn write_with_parents(
    engine: &hearth_engine::Engine,
    sandbox: &str,
    path: &str,
    data: &[u8],
) -> Result<(), hearth_engine::EngineError> {
    if let Some((parent, _)) = path
        .rsplit_once('/')
        .filter(|(parent, _)| !parent.is_empty())
    {
        engine.mkdir(sandbox, parent, 0o755, true).await?;
    }
    engine
        .write_file(sandbox, path, 0o644, &mut &data[..])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_guest_path_refuses_climbing_and_relative_paths() {
        assert!(guest_path("/tmp/a..b/c").is_ok());
        for bad in ["tmp/x", "/tmp/../etc/passwd", "/..", "/tmp/x\0y", ""] {
            assert!(guest_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn test_mode_is_octal_permission_bits() {
        assert_eq!(mode(Some("0755"), 0).unwrap(), 0o755);
        assert_eq!(mode(None, 0o644).unwrap(), 0o644);
        assert!(mode(Some("9"), 0).is_err());
        assert!(mode(Some("17777"), 0).is_err());
    }
}
