//! E2B's control plane: create, connect, list, get, kill, set the timeout of, pause, resume
//! and sample sandboxes, with E2B's error body `{"code": <status>, "message": "..."}`. A
//! template id names an image (see [`super::E2bConfig`]); `metadata` becomes labels,
//! `envVars` the environment every process of the sandbox starts with.
//!
//! An E2B sandbox outlives the hearth sandboxes that serve it: a pause ends its hearth
//! sandbox (saved as a snapshot, see [`super::paused`]) and a resume starts a new one from
//! that snapshot. So the E2B id is not a hearth id: it is hearth's own, and the hearth sandbox
//! serving it is *named* `e2b-<id>` ([`hearth_name`]). A name because the engine looks names
//! up exactly and keeps them unique (two resumes racing cannot both win), and `hearth ls`
//! shows which sandbox is which; the access token is derived from the E2B id, so it stays
//! the same across pauses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hearth_engine::{ErrorKind, SandboxRecord, SandboxState};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::metrics;
use super::paused::{snapshot_name, Paused, PausedError, PausedStore};
use super::{E2bState, ENVD_VERSION};
use crate::error::ApiError;
use crate::routes::sandboxes::{create_sandbox, CreateSandbox, Egress, NetworkRequest};

/// The label that remembers which template a sandbox was made from.
const TEMPLATE_LABEL: &str = "e2b.template";
/// `"false"` when the sandbox was made with `allow_internet_access: false`: a resume gives
/// the new hearth sandbox the same egress policy.
const INTERNET_LABEL: &str = "e2b.internet";
/// The hearth sandbox serving E2B sandbox `<id>` is named `e2b-<id>`.
const NAME_PREFIX: &str = "e2b-";
/// E2B's ids are about 20 lowercase letters and digits; the SDKs put them in URLs and DNS
/// labels.
const ID_LEN: usize = 20;
const MAX_ID_LEN: usize = 48;
/// E2B's default when a create or resume gives no timeout (its SDKs document 300 s).
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
        .route("/sandboxes/{id}/metrics", get(sandbox_metrics))
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

impl From<&ApiError> for Refusal {
    fn from(e: &ApiError) -> Self {
        Refusal::new(e.status(), e.detail().message.clone())
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::from(&e)
    }
}

impl From<hearth_engine::EngineError> for Refusal {
    fn from(e: hearth_engine::EngineError) -> Self {
        Refusal::from(ApiError::from(e))
    }
}

impl From<PausedError> for Refusal {
    fn from(e: PausedError) -> Self {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            hearth_engine::error_chain(&e),
        )
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

    fn not_found(id: &str) -> Self {
        Refusal::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found"))
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

/// A fresh E2B sandbox id.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..ID_LEN)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Whether `id` could be one of ours: ids from a client become file and sandbox names.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The name of the hearth sandbox serving E2B sandbox `id`.
fn hearth_name(id: &str) -> String {
    format!("{NAME_PREFIX}{id}")
}

/// The E2B id `record` serves; `None` for a sandbox not made through E2B.
fn e2b_id(record: &SandboxRecord) -> Option<&str> {
    record
        .name
        .strip_prefix(NAME_PREFIX)
        .filter(|id| valid_id(id) && record.labels.contains_key(TEMPLATE_LABEL))
}

fn store(state: &E2bState) -> PausedStore {
    PausedStore::new(state.app.engine.state().root())
}

/// The running hearth sandbox serving E2B sandbox `id`, if one does.
pub fn live(state: &E2bState, id: &str) -> Result<Option<SandboxRecord>, Refusal> {
    if !valid_id(id) {
        return Ok(None);
    }
    match state.app.engine.find(&hearth_name(id)) {
        Ok(record) if e2b_id(&record) == Some(id) && record.state == SandboxState::Running => {
            Ok(Some(record))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The record of paused E2B sandbox `id`, while its snapshot exists.
fn paused(state: &E2bState, id: &str) -> Result<Option<Paused>, Refusal> {
    let Some(record) = store(state).get(id)? else {
        return Ok(None);
    };
    match state.app.engine.snapshot(&snapshot_name(id)) {
        Ok(_) => Ok(Some(record)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An E2B sandbox as it is now. Running wins over paused: a resume cut short after the new
/// sandbox started may leave the paused record behind.
enum Found {
    Running(SandboxRecord),
    Paused(Paused),
}

fn find(state: &E2bState, id: &str) -> Result<Found, Refusal> {
    if let Some(record) = live(state, id)? {
        return Ok(Found::Running(record));
    }
    paused(state, id)?
        .map(Found::Paused)
        .ok_or_else(|| Refusal::not_found(id))
}

/// One lock per E2B id, held by pause, resume and kill: each looks at what the sandbox is,
/// then changes it, and two of them at once (a kill during a pause, two resumes) would act
/// on what the other is replacing.
#[derive(Debug, Clone, Default)]
pub struct Transitions {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Transitions {
    async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Only the map holds a lock nobody waits on or holds.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
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

fn refuse_auto_pause(auto_pause: Option<bool>) -> Result<(), Refusal> {
    if auto_pause == Some(true) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "hearth does not pause sandboxes when they time out: autoPause must be false \
             (pause them with pause())"
                .to_owned(),
        ));
    }
    Ok(())
}

async fn create(State(state): State<E2bState>, body: Bytes) -> Result<Response, Refusal> {
    let request: NewSandbox = parse(&body)?;
    refuse_auto_pause(request.auto_pause)?;
    let mut labels = request.metadata.unwrap_or_default();
    if labels.keys().any(|k| k.starts_with("e2b.")) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "metadata keys beginning with `e2b.` are hearth's own".to_owned(),
        ));
    }
    labels.insert(TEMPLATE_LABEL.to_owned(), request.template_id.clone());
    let internet = request.allow_internet_access != Some(false);
    labels.insert(INTERNET_LABEL.to_owned(), internet.to_string());
    let id = new_id();
    let create = sdk_sandbox(
        &id,
        Some(state.config.image_of(&request.template_id).to_owned()),
        request.env_vars.unwrap_or_default(),
        labels,
        request.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS),
    );
    let record = boot(&state, create).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(sandbox_body(&state, &id, &record.labels)),
    )
        .into_response())
}

/// The hearth sandbox that serves E2B sandbox `id`: its egress policy from `labels`.
fn sdk_sandbox(
    id: &str,
    image: Option<String>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    timeout_secs: u64,
) -> CreateSandbox {
    let egress = match labels.get(INTERNET_LABEL).map(String::as_str) {
        Some("false") => Egress::DenyAll,
        _ => Egress::AllowAll,
    };
    let network = NetworkRequest {
        egress,
        ..NetworkRequest::default()
    };
    let mut create = CreateSandbox::idle_for_sdk(image, env, network, timeout_secs, labels);
    create.name = Some(hearth_name(id));
    create
}

async fn boot(state: &E2bState, create: CreateSandbox) -> Result<SandboxRecord, Refusal> {
    let sandbox = create_sandbox(&state.app, create).await?;
    Ok(state.app.engine.find(&sandbox.id)?)
}

/// The answer to create and connect (E2B's `Sandbox`).
fn sandbox_body(state: &E2bState, id: &str, labels: &BTreeMap<String, String>) -> Value {
    let token = state.config.token_key.token(id);
    json!({
        "templateID": template_of(labels),
        "sandboxID": id,
        "clientID": "hearth",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": token,
        // The code interpreter SDK sends only this one on some calls (contexts): it is the
        // same token.
        "trafficAccessToken": token,
        "domain": null,
    })
}

fn template_of(labels: &BTreeMap<String, String>) -> &str {
    labels.get(TEMPLATE_LABEL).map_or("", String::as_str)
}

/// What E2B lists of a sandbox, running or paused.
struct Listing<'a> {
    id: &'a str,
    labels: &'a BTreeMap<String, String>,
    started_at: i64,
    end_at: i64,
    vcpus: u8,
    mem_size_mib: u32,
    state: &'static str,
}

impl<'a> Listing<'a> {
    fn running(id: &'a str, record: &'a SandboxRecord) -> Self {
        Listing {
            id,
            labels: &record.labels,
            started_at: record.created_at,
            end_at: record.expires_at.unwrap_or(record.created_at),
            vcpus: record.vcpus,
            mem_size_mib: record.mem_size_mib,
            state: "running",
        }
    }

    /// A paused sandbox does not expire: its end is when it paused.
    fn paused(record: &'a Paused) -> Self {
        Listing {
            id: &record.id,
            labels: &record.labels,
            started_at: record.started_at,
            end_at: record.paused_at,
            vcpus: record.vcpus,
            mem_size_mib: record.mem_size_mib,
            state: "paused",
        }
    }

    /// E2B's `SandboxDetail` and `ListedSandbox`.
    fn body(&self, state: &E2bState) -> Value {
        let metadata: BTreeMap<&str, &str> = self
            .labels
            .iter()
            .filter(|(k, _)| !k.starts_with("e2b."))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        json!({
            "templateID": template_of(self.labels),
            "sandboxID": self.id,
            "alias": hearth_name(self.id),
            "clientID": "hearth",
            "startedAt": rfc3339(self.started_at),
            "endAt": rfc3339(self.end_at),
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": state.config.token_key.token(self.id),
            "cpuCount": self.vcpus,
            "memoryMB": self.mem_size_mib,
            "diskSizeMB": 0,
            "metadata": metadata,
            "state": self.state,
        })
    }

    fn matches(&self, metadata: &[(String, String)]) -> bool {
        metadata
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn info(State(state): State<E2bState>, Path(id): Path<String>) -> Result<Response, Refusal> {
    let body = match find(&state, &id)? {
        Found::Running(record) => Listing::running(&id, &record).body(&state),
        Found::Paused(paused) => Listing::paused(&paused).body(&state),
    };
    Ok(axum::Json(body).into_response())
}

async fn kill(State(state): State<E2bState>, Path(id): Path<String>) -> Result<Response, Refusal> {
    let _transition = state.transitions.lock(&id).await;
    if let Found::Running(record) = find(&state, &id)? {
        match state.app.engine.remove(&record.id, true).await {
            Ok(_) => state.kernels.forget(&record.id),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Refusal::not_found(&id)),
            Err(e) => return Err(e.into()),
        }
    }
    // A paused sandbox is its snapshot and record; a running one may have them left over from
    // a resume cut short.
    discard_snapshot(&state, &id)?;
    store(&state).remove(&id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes the snapshot of E2B sandbox `id`, if there is one.
fn discard_snapshot(state: &E2bState, id: &str) -> Result<(), Refusal> {
    match state.app.engine.snapshot_remove(&snapshot_name(id)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn running_only(state: &E2bState, id: &str) -> Result<SandboxRecord, Refusal> {
    match find(state, id)? {
        Found::Running(record) => Ok(record),
        Found::Paused(_) => Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is paused: connect to it to resume it"),
        )),
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
) -> Result<Response, Refusal> {
    let request: Timeout = parse(&body)?;
    let record = running_only(&state, &id)?;
    let Some(secs) = request.timeout else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "`timeout` (seconds) is required".to_owned(),
        ));
    };
    state
        .app
        .engine
        .set_timeout(&record.id, Duration::from_secs(secs.max(1)))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The body of connect (`ConnectSandbox`, `ConnectSandboxV2`) and of 2.0's resume
/// (`ResumedSandbox`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectBody {
    timeout: Option<u64>,
    /// `false` (`on_resume="reboot"`): boot from the disk alone, dropping the memory.
    memory: Option<bool>,
    auto_pause: Option<bool>,
}

/// Connect (and 2.0's resume): a running sandbox answers 200, its timeout reset when the
/// body gives one; a paused one is resumed from its snapshot and answers 201. Both with the
/// access token it always had.
async fn connect(
    State(state): State<E2bState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let request: ConnectBody = parse(&body)?;
    refuse_auto_pause(request.auto_pause)?;
    let _transition = state.transitions.lock(&id).await;
    match find(&state, &id)? {
        Found::Running(record) => {
            if let Some(secs) = request.timeout {
                state
                    .app
                    .engine
                    .set_timeout(&record.id, Duration::from_secs(secs.max(1)))
                    .await?;
            }
            Ok(axum::Json(sandbox_body(&state, &id, &record.labels)).into_response())
        }
        Found::Paused(paused) => {
            if request.memory == Some(false) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "hearth resumes a paused sandbox from its memory only: on_resume=\"reboot\" \
                     (memory: false) is not served"
                        .to_owned(),
                ));
            }
            let timeout = request.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS).max(1);
            let record = resume(&state, paused, timeout).await?;
            Ok((
                StatusCode::CREATED,
                axum::Json(sandbox_body(&state, &id, &record.labels)),
            )
                .into_response())
        }
    }
}

/// Starts a hearth sandbox from paused `record`'s snapshot, under the E2B sandbox's name,
/// then forgets the snapshot (the running clone keeps its memory mapped).
async fn resume(
    state: &E2bState,
    record: Paused,
    timeout_secs: u64,
) -> Result<SandboxRecord, Refusal> {
    let engine = &state.app.engine;
    let name = hearth_name(&record.id);
    // The paused sandbox's own row holds the name if its removal at pause did not get through.
    if let Ok(old) = engine.find(&name) {
        if old.name == name && old.state != SandboxState::Running {
            if let Err(e) = engine.remove(&old.id, true).await {
                tracing::warn!("E2B resume: failed to remove the ended sandbox {name}: {e}");
            }
        }
    }
    let env = record
        .env
        .iter()
        .filter_map(|entry| entry.split_once('='))
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let mut create = sdk_sandbox(&record.id, None, env, record.labels.clone(), timeout_secs);
    create.from_snapshot = Some(snapshot_name(&record.id));
    let started = boot(state, create).await?;
    // The snapshot goes before the record: a record without its snapshot lists as nothing,
    // while a snapshot without a record would be one nothing ever removes.
    if let Err(refusal) = discard_snapshot(state, &record.id) {
        tracing::warn!(
            "E2B resume of {}: failed to remove its snapshot: {}",
            record.id,
            refusal.message
        );
    } else if let Err(e) = store(state).remove(&record.id) {
        tracing::warn!("E2B resume of {}: {e}", record.id);
    }
    Ok(started)
}

/// `pause()`: the sandbox is saved as snapshot `e2b-<id>` and ends; 409 when already paused.
/// The body's `memory: false` (keep the filesystem only) gets a full snapshot all the same:
/// a hearth guest's writes live in its memory, so there is no disk to keep alone.
async fn pause(State(state): State<E2bState>, Path(id): Path<String>) -> Result<Response, Refusal> {
    let _transition = state.transitions.lock(&id).await;
    let record = match find(&state, &id)? {
        Found::Running(record) => record,
        Found::Paused(_) => {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!("sandbox {id} is already paused"),
            ))
        }
    };
    let engine = &state.app.engine;
    let env = engine.sandbox_env(&record.id)?;
    // A snapshot of this name while the sandbox runs is one a resume cut short left behind.
    discard_snapshot(&state, &id)?;
    let store = store(&state);
    store.save(&Paused {
        id: id.clone(),
        labels: record.labels.clone(),
        env,
        vcpus: record.vcpus,
        mem_size_mib: record.mem_size_mib,
        started_at: record.created_at,
        paused_at: chrono::Utc::now().timestamp(),
    })?;
    if let Err(e) = engine
        .snapshot_create(&record.id, Some(&snapshot_name(&id)), true)
        .await
    {
        if let Err(e) = store.remove(&id) {
            tracing::warn!("E2B pause of {id}: {e}");
        }
        return Err(e.into());
    }
    state.kernels.forget(&record.id);
    // The save ended it; its row goes now rather than when its supervisor gets to it, so that
    // a resume right after finds the name free.
    if let Err(e) = engine.remove(&record.id, true).await {
        if e.kind() != ErrorKind::NotFound {
            tracing::warn!("E2B pause of {id}: failed to remove the ended sandbox: {e}");
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `get_metrics()`: one sample of a running sandbox, none of a paused one (it uses nothing).
async fn sandbox_metrics(
    State(state): State<E2bState>,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let record = match find(&state, &id)? {
        Found::Running(record) => record,
        Found::Paused(_) => return Ok(axum::Json(json!([])).into_response()),
    };
    let engine = &state.app.engine;
    let env = engine.sandbox_env(&record.id)?;
    let sample = metrics::sample(engine, &record.id, env)
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                hearth_engine::error_chain(&e),
            )
        })?;
    let now = chrono::Utc::now().timestamp();
    Ok(axum::Json(json!([metrics::metric_json(&sample, now)])).into_response())
}

/// `GET /sandboxes` and `/v2/sandboxes`: E2B's sandboxes, running and paused, filtered by
/// `metadata` (URL-encoded `k=v&k2=v2`) and `state`. One page holds them all: hearth runs far
/// fewer than a page's limit on a host.
async fn list(
    State(state): State<E2bState>,
    RawQuery(query): RawQuery,
) -> Result<Response, Refusal> {
    let filters = metadata_filter(query.as_deref().unwrap_or_default());
    let wants = |name: &str| {
        filters
            .states
            .as_ref()
            .is_none_or(|states| states.iter().any(|s| s == name))
    };
    let records = state.app.engine.list(false)?;
    let running: Vec<(&str, &SandboxRecord)> = records
        .iter()
        .filter(|r| r.state == SandboxState::Running)
        .filter_map(|r| e2b_id(r).map(|id| (id, r)))
        .collect();
    let mut listings: Vec<Listing> = Vec::new();
    if wants("running") {
        listings.extend(running.iter().map(|(id, r)| Listing::running(id, r)));
    }
    let paused_records = if wants("paused") {
        let snapshots: HashSet<String> = state
            .app
            .engine
            .snapshots()?
            .into_iter()
            .map(|meta| meta.name)
            .collect();
        let live: HashSet<&str> = running.iter().map(|(id, _)| *id).collect();
        store(&state)
            .list()?
            .into_iter()
            .filter(|p| !live.contains(p.id.as_str()) && snapshots.contains(&snapshot_name(&p.id)))
            .collect()
    } else {
        Vec::new()
    };
    listings.extend(paused_records.iter().map(Listing::paused));
    let listed: Vec<Value> = listings
        .iter()
        .filter(|l| l.matches(&filters.metadata))
        .take(MAX_PAGE)
        .map(|l| l.body(&state))
        .collect();
    Ok(axum::Json(Value::Array(listed)).into_response())
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
    fn test_e2b_ids_are_safe_names_and_map_to_hearth_names() {
        let id = new_id();
        assert_eq!(id.len(), ID_LEN);
        assert!(valid_id(&id));
        for bad in [
            "",
            "../x",
            "ABC",
            "a/b",
            "a.json",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        assert_eq!(hearth_name("abc"), "e2b-abc");
    }

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
