//! ComputeSDK's gateway protocol (`computesdk` on npm, 2.5.4, with
//! `COMPUTESDK_PROVIDER=computesdk` and `COMPUTESDK_TRIBUTARY_URL` set to this listener), on
//! a listener of its own: its `/v1/sandboxes` would collide with hearth's `/v1`. The gateway
//! part (`/v1/sandboxes…`, `X-ComputeSDK-API-Key` is a hearth key) makes and ends sandboxes;
//! each sandbox's daemon URL is `/sandboxes/{id}` on the same listener, behind a bearer token
//! per sandbox (the E2B server's [`TokenKey`]). The contract is in
//! `docs/research/computesdk.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::ApiKeys;
use crate::e2b::TokenKey;
use crate::error::ApiError;
use crate::routes::exec::{run_to_end, ExecBody};
use crate::routes::sandboxes::{create_sandbox, CreateSandbox, NetworkRequest};
use crate::server::AppState;

/// Default lifetime of a sandbox, as ComputeSDK's own gateway gives (15 minutes).
const DEFAULT_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// The client gives up on any daemon request after 30 s; commands get the same.
const COMMAND_TIMEOUT_SECS: u64 = 30;
/// Largest file `readFile` returns (its content travels as one JSON string).
const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;
const LABEL_PREFIX: &str = "computesdk.";

#[derive(Debug, Clone)]
struct ComputeState {
    app: AppState,
    keys: Option<Arc<ApiKeys>>,
    tokens: TokenKey,
}

pub fn router(app: AppState, keys: Option<ApiKeys>, tokens: TokenKey) -> Router {
    let state = ComputeState {
        app,
        keys: keys.map(Arc::new),
        tokens,
    };
    Router::new()
        .route("/v1/sandboxes", post(create))
        .route("/v1/sandboxes/{id}", get(get_sandbox).delete(destroy))
        .route("/v1/sandboxes/{id}/extend", post(extend))
        .route("/sandboxes/{id}/health", get(health))
        .route("/sandboxes/{id}/run/command", post(run_command))
        .route("/sandboxes/{id}/run/code", post(run_code))
        .route("/sandboxes/{id}/files", get(list_files).post(write_file))
        .route(
            "/sandboxes/{id}/files/{*path}",
            get(read_file).delete(remove_file),
        )
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "hearth does not serve this part of ComputeSDK's protocol (see docs/e2b.md)",
            )
        })
        .with_state(state)
}

/// Both surfaces read `error` from a failure's body; the gateway's also has `success`.
fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "success": false, "error": message }))).into_response()
}

/// A refusal before any work, in the shape of [`refuse`].
#[derive(Debug)]
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        refuse(self.0, &self.1)
    }
}

fn from_api(e: &ApiError) -> Response {
    refuse(e.status(), &e.detail().message)
}

fn from_engine(e: hearth_engine::EngineError) -> Response {
    from_api(&ApiError::from(e))
}

fn ok(data: &Value) -> Response {
    Json(json!({ "success": true, "data": data })).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn gateway_key(state: &ComputeState, headers: &HeaderMap) -> Result<(), Refused> {
    match &state.keys {
        Some(keys) if !keys.accepts(header(headers, "x-computesdk-api-key")) => Err(Refused(
            StatusCode::UNAUTHORIZED,
            "send a hearth API key as X-ComputeSDK-API-Key".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// The daemon's check: the sandbox's own token, and a sandbox that runs.
fn daemon(state: &ComputeState, headers: &HeaderMap, id: &str) -> Result<(), Refused> {
    let token = header(headers, "authorization")
        .strip_prefix("Bearer ")
        .unwrap_or_default();
    if !state.tokens.accepts(id, token) {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            format!("sandbox `{id}`: a valid bearer token is needed"),
        ));
    }
    running(state, id).map(|_| ())
}

fn running(state: &ComputeState, id: &str) -> Result<hearth_engine::SandboxRecord, Refused> {
    match state.app.engine.running(id) {
        Ok(record) if record.id == id => Ok(record),
        _ => Err(Refused(
            StatusCode::NOT_FOUND,
            format!("sandbox `{id}` not found"),
        )),
    }
}

/// The answer to create and get: where the sandbox's daemon is, and its token.
fn sandbox_data(
    state: &ComputeState,
    headers: &HeaderMap,
    record: &hearth_engine::SandboxRecord,
) -> Value {
    let metadata: BTreeMap<&str, &str> = record
        .labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(LABEL_PREFIX)?, v.as_str())))
        .collect();
    let host = header(headers, "host");
    json!({
        "sandboxId": record.id,
        "url": format!("http://{host}/sandboxes/{}", record.id),
        "token": state.tokens.token(&record.id),
        "provider": "hearth",
        "metadata": metadata,
        "name": record.name,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    /// Milliseconds.
    timeout: Option<u64>,
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    /// An image reference; hearth's built-in image without it.
    template_id: Option<String>,
}

async fn create(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Json(request): Json<NewSandbox>,
) -> Response {
    if let Err(refusal) = gateway_key(&state, &headers) {
        return refusal.into_response();
    }
    let labels = request
        .metadata
        .iter()
        .map(|(k, v)| {
            let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            (format!("{LABEL_PREFIX}{k}"), value)
        })
        .collect();
    let timeout_ms = request.timeout.unwrap_or(DEFAULT_TIMEOUT_MS);
    let create = CreateSandbox::idle_for_sdk(
        request.template_id,
        request.envs,
        NetworkRequest::default(),
        timeout_ms.div_ceil(1000).max(1),
        labels,
    );
    let sandbox = match create_sandbox(&state.app, create).await {
        Ok(sandbox) => sandbox,
        Err(e) => return from_api(&e),
    };
    match state.app.engine.find(&sandbox.id) {
        Ok(record) => ok(&sandbox_data(&state, &headers, &record)),
        Err(e) => from_engine(e),
    }
}

async fn get_sandbox(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refusal) = gateway_key(&state, &headers) {
        return refusal.into_response();
    }
    match running(&state, &id) {
        Ok(record) => ok(&sandbox_data(&state, &headers, &record)),
        Err(refusal) => refusal.into_response(),
    }
}

async fn destroy(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refusal) = gateway_key(&state, &headers) {
        return refusal.into_response();
    }
    if let Err(refusal) = running(&state, &id) {
        return refusal.into_response();
    }
    match state.app.engine.remove(&id, true).await {
        // The client parses every 2xx body as JSON.
        Ok(_) => ok(&json!({})),
        Err(e) => from_engine(e),
    }
}

#[derive(Debug, Deserialize)]
struct Extend {
    /// Milliseconds added to what is left.
    duration: Option<u64>,
}

async fn extend(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(request): Json<Extend>,
) -> Response {
    if let Err(refusal) = gateway_key(&state, &headers) {
        return refusal.into_response();
    }
    let record = match running(&state, &id) {
        Ok(record) => record,
        Err(refusal) => return refusal.into_response(),
    };
    let now = chrono::Utc::now().timestamp();
    let left = record
        .expires_at
        .map_or(0, |at| (at - now).max(0))
        .unsigned_abs();
    let added = request
        .duration
        .unwrap_or(DEFAULT_TIMEOUT_MS)
        .div_ceil(1000);
    match state
        .app
        .engine
        .set_timeout(&id, Duration::from_secs(left + added))
        .await
    {
        Ok(_) => ok(&json!({})),
        Err(e) => from_engine(e),
    }
}

async fn health(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match daemon(&state, &headers, &id) {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct RunCommand {
    command: String,
    shell: Option<String>,
    #[serde(default)]
    background: bool,
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

async fn run_command(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(request): Json<RunCommand>,
) -> Response {
    if let Err(refusal) = daemon(&state, &headers, &id) {
        return refusal.into_response();
    }
    let shell = request.shell.unwrap_or_else(|| "sh".to_owned());
    let mut command = vec![shell, "-c".to_owned(), request.command];
    if request.background {
        // Detached from this request: the shell starts it and returns at once.
        command[2] = format!("({}) >/dev/null 2>&1 &", command[2]);
    }
    run(
        &state,
        &id,
        command,
        request.cwd,
        request.env,
        |result, ms| {
            json!({
                "stdout": result.stdout,
                "stderr": result.stderr,
                "exit_code": exit_code(&result),
                "duration_ms": ms,
            })
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
struct RunCode {
    code: String,
    language: Option<String>,
}

async fn run_code(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(request): Json<RunCode>,
) -> Response {
    if let Err(refusal) = daemon(&state, &headers, &id) {
        return refusal.into_response();
    }
    let language = request.language.unwrap_or_else(|| "python".to_owned());
    let command = match language.as_str() {
        "python" => vec!["python3".to_owned(), "-c".to_owned(), request.code],
        "node" | "javascript" => vec!["node".to_owned(), "-e".to_owned(), request.code],
        other => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("hearth runs python and node code, not `{other}`"),
            )
        }
    };
    run(&state, &id, command, None, BTreeMap::new(), |result, _| {
        json!({
            "output": format!("{}{}", result.stdout, result.stderr),
            "exit_code": exit_code(&result),
            "language": language,
        })
    })
    .await
}

/// A non-zero exit is an answer, not an error, in this protocol; a signal is 128 + N.
fn exit_code(result: &crate::routes::exec::ExecResult) -> i32 {
    result
        .exit_code
        .or(result.signal.map(|s| 128 + s))
        .unwrap_or(-1)
}

async fn run(
    state: &ComputeState,
    id: &str,
    command: Vec<String>,
    cwd: Option<String>,
    env: BTreeMap<String, String>,
    answer: impl FnOnce(crate::routes::exec::ExecResult, u128) -> Value,
) -> Response {
    let started = Instant::now();
    let body = ExecBody {
        command,
        env,
        cwd,
        user: None,
        stdin: None,
        encoding: crate::routes::exec::Encoding::Utf8,
        timeout_secs: Some(COMMAND_TIMEOUT_SECS),
        max_output_bytes: None,
    };
    match run_to_end(&state.app, id, body).await {
        Ok(result) => {
            Json(json!({ "data": answer(result, started.elapsed().as_millis()) })).into_response()
        }
        Err(e) => from_api(&e),
    }
}

/// Guest paths: the client sends them as they were given, `/`-rooted or not.
fn guest_path(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

#[derive(Debug, Deserialize)]
struct WriteFile {
    path: String,
    content: String,
}

async fn write_file(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(request): Json<WriteFile>,
) -> Response {
    if let Err(refusal) = daemon(&state, &headers, &id) {
        return refusal.into_response();
    }
    let path = guest_path(&request.path);
    let written = crate::routes::files::write_with_parents(
        &state.app.engine,
        &id,
        &path,
        request.content.as_bytes(),
    )
    .await;
    match written {
        Ok(()) => Json(json!({ "data": { "path": path } })).into_response(),
        Err(e) => from_engine(e),
    }
}

async fn read_file(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
) -> Response {
    if let Err(refusal) = daemon(&state, &headers, &id) {
        return refusal.into_response();
    }
    let path = guest_path(&path);
    let engine = &state.app.engine;
    match engine.stat(&id, &path).await {
        Ok(stat) if stat.size > MAX_READ_BYTES => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("`{path}` is over {MAX_READ_BYTES} bytes; hearth cp copies it out"),
            )
        }
        Ok(_) => {}
        Err(e) => return from_engine(e),
    }
    let mut content = Vec::new();
    match engine.read_file(&id, &path, &mut content).await {
        Ok(_) => Json(json!({
            "data": { "path": path, "content": String::from_utf8_lossy(&content) }
        }))
        .into_response(),
        Err(e) => from_engine(e),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    path: String,
}

async fn list_files(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(refusal) = daemon(&state, &headers, &id) {
        return refusal.into_response();
    }
    let path = guest_path(&query.path);
    match state.app.engine.list_dir(&id, &path).await {
        Ok(entries) => {
            let files: Vec<Value> = entries
                .iter()
                .map(|entry| {
                    let modified = chrono::DateTime::from_timestamp(entry.mtime, 0)
                        .unwrap_or_default()
                        .to_rfc3339();
                    json!({
                        "name": entry.name,
                        "is_dir": entry.kind == hearth_engine::FileKind::Dir,
                        "size": entry.size,
                        "modified_at": modified,
                    })
                })
                .collect();
            Json(json!({ "data": { "path": path, "files": files } })).into_response()
        }
        Err(e) => from_engine(e),
    }
}

async fn remove_file(
    State(state): State<ComputeState>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
) -> Response {
    if let Err(refusal) = daemon(&state, &headers, &id) {
        return refusal.into_response();
    }
    match state
        .app
        .engine
        .remove_path(&id, &guest_path(&path), true)
        .await
    {
        Ok(()) => Json(json!({ "data": {} })).into_response(),
        Err(e) => from_engine(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_guest_paths_are_rooted_once() {
        assert_eq!(guest_path("/tmp/x"), "/tmp/x");
        assert_eq!(guest_path("//tmp/x"), "/tmp/x");
        assert_eq!(guest_path("rel/x"), "/rel/x");
    }
}
