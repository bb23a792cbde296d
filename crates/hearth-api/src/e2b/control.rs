//! E2B's control plane: create, connect, list, get, kill and set the timeout of sandboxes,
//! with E2B's error body `{"code": <status>, "message": "..."}`. A template id names an image
//! (see [`super::E2bConfig`]); `metadata` becomes labels, `envVars` the environment every
//! process of the sandbox starts with.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hearth_engine::{SandboxRecord, SandboxState};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{E2bState, ENVD_VERSION};
use crate::error::ApiError;
use crate::routes::sandboxes::{create_sandbox, CreateSandbox, Egress, NetworkRequest};

/// The label that remembers which template a sandbox was made from.
const TEMPLATE_LABEL: &str = "e2b.template";
/// E2B's default when a create gives no timeout (its SDKs document 300 s).
const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Most sandboxes one list answer holds.
const MAX_PAGE: usize = 1000;

pub fn router() -> Router<E2bState> {
    Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/resume", post(connect))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/health", get(|| async { StatusCode::OK }))
        .fallback(unsupported)
}

/// E2B's error answer.
pub fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": status.as_u16(), "message": message })),
    )
        .into_response()
}

fn from_api(e: &ApiError) -> Response {
    Refusal::from(e).into_response()
}

fn from_engine(e: hearth_engine::EngineError) -> Response {
    from_api(&e.into())
}

impl From<&ApiError> for Refusal {
    fn from(e: &ApiError) -> Self {
        Refusal::new(e.status(), e.detail().message.clone())
    }
}

/// A request refused, answered in E2B's error shape.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: String) -> Self {
        Refusal { status, message }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

async fn unsupported() -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "hearth does not serve this part of the E2B API (see docs/e2b.md for what it serves)",
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<u64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    /// The only snake_case field of E2B's create body.
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    auto_pause: Option<bool>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let body = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

async fn create(State(state): State<E2bState>, body: Bytes) -> Response {
    let request: NewSandbox = match parse(&body) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    if request.auto_pause == Some(true) {
        return error(
            StatusCode::BAD_REQUEST,
            "hearth does not pause sandboxes: autoPause must be false",
        );
    }
    let mut labels = request.metadata.unwrap_or_default();
    if labels.keys().any(|k| k.starts_with("e2b.")) {
        return error(
            StatusCode::BAD_REQUEST,
            "metadata keys beginning with `e2b.` are hearth's own",
        );
    }
    labels.insert(TEMPLATE_LABEL.to_owned(), request.template_id.clone());
    let egress = match request.allow_internet_access {
        Some(false) => Egress::DenyAll,
        _ => Egress::AllowAll,
    };
    let create = CreateSandbox::idle_for_sdk(
        Some(state.config.image_of(&request.template_id).to_owned()),
        request.env_vars.unwrap_or_default(),
        NetworkRequest {
            egress,
            ..NetworkRequest::default()
        },
        request.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS),
        labels,
    );
    match create_sandbox(&state.app, create).await {
        Ok(sandbox) => match state.app.engine.find(&sandbox.id) {
            Ok(record) => (
                StatusCode::CREATED,
                axum::Json(sandbox_body(&state, &record)),
            )
                .into_response(),
            Err(e) => from_engine(e),
        },
        Err(e) => from_api(&e),
    }
}

/// The answer to create and connect (E2B's `Sandbox`).
fn sandbox_body(state: &E2bState, record: &SandboxRecord) -> Value {
    json!({
        "templateID": template_of(record),
        "sandboxID": record.id,
        "clientID": "hearth",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": state.config.token_key.token(&record.id),
        // The code interpreter SDK sends only this one on some calls (contexts): it is the
        // same token.
        "trafficAccessToken": state.config.token_key.token(&record.id),
        "domain": null,
    })
}

fn template_of(record: &SandboxRecord) -> &str {
    record
        .labels
        .get(TEMPLATE_LABEL)
        .map_or(record.image.as_str(), String::as_str)
}

/// E2B's `SandboxDetail` and `ListedSandbox`.
fn detail_body(state: &E2bState, record: &SandboxRecord) -> Value {
    let metadata: BTreeMap<&str, &str> = record
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("e2b."))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let end = record.expires_at.unwrap_or(record.created_at);
    json!({
        "templateID": template_of(record),
        "sandboxID": record.id,
        "alias": record.name,
        "clientID": "hearth",
        "startedAt": rfc3339(record.created_at),
        "endAt": rfc3339(end),
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": state.config.token_key.token(&record.id),
        "cpuCount": record.vcpus,
        "memoryMB": record.mem_size_mib,
        "diskSizeMB": 0,
        "metadata": metadata,
        "state": "running",
    })
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A running sandbox by its full id: E2B knows no names or prefixes, and an ended sandbox is
/// gone to it.
fn running(state: &E2bState, id: &str) -> Result<SandboxRecord, Refusal> {
    let not_found = || Refusal::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found"));
    match state.app.engine.find(id) {
        Ok(record) if record.id == id && record.state == SandboxState::Running => Ok(record),
        Ok(_) => Err(not_found()),
        Err(e) if e.kind() == hearth_engine::ErrorKind::NotFound => Err(not_found()),
        Err(e) => Err(Refusal::from(&ApiError::from(e))),
    }
}

async fn info(State(state): State<E2bState>, Path(id): Path<String>) -> Response {
    match running(&state, &id) {
        Ok(record) => axum::Json(detail_body(&state, &record)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn kill(State(state): State<E2bState>, Path(id): Path<String>) -> Response {
    if let Err(refusal) = running(&state, &id) {
        return refusal.into_response();
    }
    match state.app.engine.remove(&id, true).await {
        Ok(_) => {
            state.kernels.forget(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) if e.kind() == hearth_engine::ErrorKind::NotFound => {
            error(StatusCode::NOT_FOUND, &format!("sandbox {id} not found"))
        }
        Err(e) => from_engine(e),
    }
}

#[derive(Debug, Deserialize)]
struct Timeout {
    timeout: Option<u64>,
}

async fn set_timeout(
    State(state): State<E2bState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request: Timeout = match parse(&body) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = running(&state, &id) {
        return refusal.into_response();
    }
    let Some(secs) = request.timeout else {
        return error(StatusCode::BAD_REQUEST, "`timeout` (seconds) is required");
    };
    match state
        .app
        .engine
        .set_timeout(&id, Duration::from_secs(secs.max(1)))
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => from_engine(e),
    }
}

/// Connect (and 2.0's resume): a running sandbox answers 200 with its access token; its
/// timeout is reset when the body gives one.
async fn connect(State(state): State<E2bState>, Path(id): Path<String>, body: Bytes) -> Response {
    let request: Timeout = match parse(&body) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let record = match running(&state, &id) {
        Ok(record) => record,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(secs) = request.timeout {
        if let Err(e) = state
            .app
            .engine
            .set_timeout(&id, Duration::from_secs(secs.max(1)))
            .await
        {
            return from_engine(e);
        }
    }
    axum::Json(sandbox_body(&state, &record)).into_response()
}

async fn pause(State(state): State<E2bState>, Path(id): Path<String>) -> Response {
    if let Err(refusal) = running(&state, &id) {
        return refusal.into_response();
    }
    error(
        StatusCode::NOT_IMPLEMENTED,
        "hearth does not pause E2B sandboxes: use hearth's snapshots (POST /v1/sandboxes/{id}/snapshots)",
    )
}

/// `GET /sandboxes` and `/v2/sandboxes`: running sandboxes, filtered by `metadata`
/// (URL-encoded `k=v&k2=v2`) and `state`. One page holds them all: hearth runs far fewer
/// than a page's limit on a host.
async fn list(State(state): State<E2bState>, RawQuery(query): RawQuery) -> Response {
    let filters = metadata_filter(query.as_deref().unwrap_or_default());
    if let Some(states) = &filters.states {
        if !states.iter().any(|s| s == "running") {
            return axum::Json(json!([])).into_response();
        }
    }
    let records = match state.app.engine.list(false) {
        Ok(records) => records,
        Err(e) => return from_engine(e),
    };
    let listed: Vec<Value> = records
        .iter()
        .filter(|r| r.state == SandboxState::Running)
        .filter(|r| {
            filters
                .metadata
                .iter()
                .all(|(k, v)| r.labels.get(k).is_some_and(|have| have == v))
        })
        .take(MAX_PAGE)
        .map(|r| detail_body(&state, r))
        .collect();
    axum::Json(Value::Array(listed)).into_response()
}

#[derive(Debug, Default)]
struct ListFilters {
    metadata: Vec<(String, String)>,
    states: Option<Vec<String>>,
}

fn metadata_filter(query: &str) -> ListFilters {
    let mut filters = ListFilters::default();
    for (key, value) in form_pairs(query) {
        match key.as_str() {
            "metadata" => filters.metadata.extend(form_pairs(&value)),
            "state" => {
                filters.states = Some(value.split(',').map(|s| s.trim().to_owned()).collect());
            }
            _ => {}
        }
    }
    filters
}

/// `application/x-www-form-urlencoded` pairs.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_list_filters_decode_the_nested_metadata_query() {
        let filters =
            metadata_filter("state=running%2Cpaused&metadata=team%3Dai%26run%3D7&limit=100");
        assert_eq!(
            filters.metadata,
            vec![("team".into(), "ai".into()), ("run".into(), "7".into())]
        );
        assert_eq!(
            filters.states,
            Some(vec!["running".to_owned(), "paused".to_owned()])
        );
    }
}
