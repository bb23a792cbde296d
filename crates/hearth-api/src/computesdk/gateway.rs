//! The gateway: `compute.sandbox.create`, `getById`, `destroy` and `extendTimeout`. The
//! client parses every 2xx body as JSON and reads a 404 as "no such sandbox".

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{running, Gateway};
use super::{ok, Answer, ComputeState};
use crate::routes::sandboxes::{create_sandbox, CreateSandbox, NetworkRequest};

/// Default lifetime of a sandbox, as ComputeSDK's own gateway gives (15 minutes).
const DEFAULT_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// Where `metadata` is kept among the sandbox's labels.
const LABEL_PREFIX: &str = "computesdk.";

/// The answer to create and get: where the sandbox's daemon is, and its token.
fn sandbox_data(
    state: &ComputeState,
    gateway: &Gateway,
    record: &hearth_engine::SandboxRecord,
) -> Value {
    let metadata: BTreeMap<&str, &str> = record
        .labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(LABEL_PREFIX)?, v.as_str())))
        .collect();
    json!({
        "sandboxId": record.id,
        "url": format!("http://{}/sandboxes/{}", gateway.host, record.id),
        "token": state.tokens.token(&record.id),
        "provider": "hearth",
        "metadata": metadata,
        "name": record.name,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewSandbox {
    /// Milliseconds.
    timeout: Option<u64>,
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    /// An image reference; hearth's built-in image without it.
    template_id: Option<String>,
}

pub(super) async fn create(
    State(state): State<ComputeState>,
    gateway: Gateway,
    Json(request): Json<NewSandbox>,
) -> Answer {
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
    let sandbox = create_sandbox(&state.app, create).await?;
    let record = state.app.engine.find(&sandbox.id)?;
    ok(&sandbox_data(&state, &gateway, &record))
}

pub(super) async fn get_sandbox(
    State(state): State<ComputeState>,
    gateway: Gateway,
    Path(id): Path<String>,
) -> Answer {
    let record = running(&state, &id)?;
    ok(&sandbox_data(&state, &gateway, &record))
}

pub(super) async fn destroy(
    State(state): State<ComputeState>,
    _: Gateway,
    Path(id): Path<String>,
) -> Answer {
    running(&state, &id)?;
    state.app.engine.remove(&id, true).await?;
    state.live.forget(&id);
    // The client parses every 2xx body as JSON.
    ok(&json!({}))
}

#[derive(Debug, Deserialize)]
pub(super) struct Extend {
    /// Milliseconds added to what is left.
    duration: Option<u64>,
}

pub(super) async fn extend(
    State(state): State<ComputeState>,
    _: Gateway,
    Path(id): Path<String>,
    Json(request): Json<Extend>,
) -> Answer {
    let record = running(&state, &id)?;
    let now = chrono::Utc::now().timestamp();
    let left = record
        .expires_at
        .map_or(0, |at| (at - now).max(0))
        .unsigned_abs();
    let added = request
        .duration
        .unwrap_or(DEFAULT_TIMEOUT_MS)
        .div_ceil(1000);
    state
        .app
        .engine
        .set_timeout(&id, Duration::from_secs(left + added))
        .await?;
    ok(&json!({}))
}
