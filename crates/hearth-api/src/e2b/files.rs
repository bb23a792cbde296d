//! envd's plain HTTP routes: `GET /files` (a file's bytes), `POST /files` (multipart parts
//! named `file`, or a raw `application/octet-stream` body) and `GET /health`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::control::error;
use super::{absolute, user_of, E2bState, SandboxId};
use crate::error::ApiError;
use crate::routes::files::MAX_FILE_BYTES;

pub fn router() -> Router<E2bState> {
    Router::new()
        .route("/files", get(read).post(write))
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FILE_BYTES))
}

#[derive(Debug, Deserialize)]
struct FileQuery {
    path: Option<String>,
    username: Option<String>,
}

fn from_engine(e: hearth_engine::EngineError) -> Response {
    let e = ApiError::from(e);
    // envd answers a full disk with 507.
    let status = if e.detail().message.contains("No space left") {
        StatusCode::INSUFFICIENT_STORAGE
    } else {
        e.status()
    };
    error(status, &e.detail().message)
}

async fn read(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    Query(query): Query<FileQuery>,
) -> Response {
    let Some(path) = query.path.as_deref() else {
        return error(StatusCode::BAD_REQUEST, "`path` is required");
    };
    let user = user_of(&headers, query.username.as_deref());
    let path = absolute(path, user.as_deref());
    let engine = &state.app.engine;
    let stat = match engine.stat(&sandbox, &path).await {
        Ok(stat) => stat,
        Err(e) => return from_engine(e),
    };
    if stat.kind == hearth_engine::FileKind::Dir {
        return error(StatusCode::BAD_REQUEST, &format!("`{path}` is a directory"));
    }
    if stat.size > MAX_FILE_BYTES as u64 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "`{path}` is {} bytes, over the {MAX_FILE_BYTES} one read returns",
                stat.size
            ),
        );
    }
    let mut data = Vec::new();
    match engine.read_file(&sandbox, &path, &mut data).await {
        Ok(_) => ([(CONTENT_TYPE, "application/octet-stream")], data).into_response(),
        Err(e) => from_engine(e),
    }
}

async fn write(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    Query(query): Query<FileQuery>,
    request: Request,
) -> Response {
    let user = user_of(request.headers(), query.username.as_deref());
    let multipart = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut written = Vec::new();
    if multipart {
        let mut parts = match Multipart::from_request(request, &()).await {
            Ok(parts) => parts,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
        };
        loop {
            let field = match parts.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return error(e.status(), &e.body_text()),
            };
            if field.name() != Some("file") {
                continue;
            }
            // Several files in one upload carry their paths as file names.
            let Some(path) = query
                .path
                .clone()
                .or_else(|| field.file_name().map(str::to_owned))
            else {
                return error(StatusCode::BAD_REQUEST, "a file part names no path");
            };
            let data = match field.bytes().await {
                Ok(data) => data,
                Err(e) => return error(e.status(), &e.body_text()),
            };
            match put(&state, &sandbox, &absolute(&path, user.as_deref()), &data).await {
                Ok(info) => written.push(info),
                Err(response) => return response,
            }
        }
    } else {
        let Some(path) = query.path.as_deref() else {
            return error(StatusCode::BAD_REQUEST, "`path` is required");
        };
        let data = match Bytes::from_request(request, &()).await {
            Ok(data) => data,
            Err(e) => return error(e.status(), &e.body_text()),
        };
        match put(&state, &sandbox, &absolute(path, user.as_deref()), &data).await {
            Ok(info) => written.push(info),
            Err(response) => return response,
        }
    }
    if written.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the upload holds no part named `file`",
        );
    }
    axum::Json(Value::Array(written)).into_response()
}

/// Writes `data` to `path`, making its missing parents as envd does.
async fn put(state: &E2bState, sandbox: &str, path: &str, data: &[u8]) -> Result<Value, Response> {
    let engine = &state.app.engine;
    let (_, name) = path.rsplit_once('/').unwrap_or(("", path));
    if name.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("`{path}` names a directory, not a file"),
        ));
    }
    crate::routes::files::write_with_parents(engine, sandbox, path, data)
        .await
        .map_err(from_engine)?;
    Ok(json!({ "name": name, "type": "file", "path": path }))
}
