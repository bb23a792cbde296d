//! ComputeSDK's gateway protocol (`computesdk` on npm, 2.5.4, with
//! `COMPUTESDK_PROVIDER=computesdk` and `COMPUTESDK_TRIBUTARY_URL` set to this listener), on
//! a listener of its own: its `/v1/sandboxes` would collide with hearth's `/v1`. The gateway
//! part ([`gateway`]: `/v1/sandboxes…`, `X-ComputeSDK-API-Key` is a hearth key) makes and
//! ends sandboxes; each sandbox's daemon URL is `/sandboxes/{id}` on the same listener, behind
//! a bearer token per sandbox (the E2B server's [`TokenKey`]): [`run`] and [`commands`]
//! (commands, background and streamed), [`files`], [`terminals`] (PTY and exec mode) and
//! [`ws`], the one multiplexed WebSocket that streams commands and carries PTYs. The
//! contract is in `docs/research/computesdk.md`; what hearth serves of it, in `docs/e2b.md`.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::auth::ApiKeys;
use crate::e2b::TokenKey;
use crate::error::ApiError;
use crate::server::AppState;

mod auth;
mod commands;
mod files;
mod gateway;
mod process;
mod registry;
mod run;
mod terminals;
mod ws;

/// The client gives up on any daemon request after 30 s (fixed); answers come before that.
const CLIENT_TIMEOUT_SECS: u64 = 30;
/// How long a request may wait on the guest: enough under [`CLIENT_TIMEOUT_SECS`] that the
/// answer, not the client's abort, reaches the caller.
const WAIT_SECS: u64 = CLIENT_TIMEOUT_SECS - 5;

#[derive(Debug, Clone)]
struct ComputeState {
    app: AppState,
    keys: Option<Arc<ApiKeys>>,
    tokens: TokenKey,
    /// What this server keeps per sandbox beyond the engine's records.
    live: Arc<Live>,
}

/// Processes, terminals and sockets this server holds, by sandbox.
#[derive(Debug, Default)]
struct Live {
    commands: registry::Registry<commands::Command>,
    /// Streamed commands between their `POST /run/command` and the socket's `command:start`.
    pending: registry::Registry<run::Pending>,
    terminals: registry::Registry<terminals::Terminal>,
    sockets: registry::Registry<ws::Socket>,
}

impl Live {
    /// Drops what is kept for a sandbox that is gone; its processes went with it.
    fn forget(&self, sandbox: &str) {
        self.commands.forget(sandbox);
        self.pending.forget(sandbox);
        self.terminals.forget(sandbox);
        self.sockets.forget(sandbox);
    }
}

pub fn router(app: AppState, keys: Option<ApiKeys>, tokens: TokenKey) -> Router {
    let state = ComputeState {
        app,
        keys: keys.map(Arc::new),
        tokens,
        live: Arc::default(),
    };
    Router::new()
        .route("/v1/sandboxes", post(gateway::create))
        .route(
            "/v1/sandboxes/{id}",
            get(gateway::get_sandbox).delete(gateway::destroy),
        )
        .route("/v1/sandboxes/{id}/extend", post(gateway::extend))
        .route("/sandboxes/{id}/health", get(run::health))
        .route("/sandboxes/{id}/run/command", post(run::run_command))
        .route("/sandboxes/{id}/run/code", post(run::run_code))
        .route(
            "/sandboxes/{id}/files",
            get(files::list_files).post(files::write_file),
        )
        .route(
            "/sandboxes/{id}/files/{*path}",
            get(files::read_file).delete(files::remove_file),
        )
        .route(
            "/sandboxes/{id}/terminals",
            get(terminals::list).post(terminals::create),
        )
        .route(
            "/sandboxes/{id}/terminals/{terminal}",
            get(terminals::get_terminal).delete(terminals::destroy),
        )
        .route(
            "/sandboxes/{id}/terminals/{terminal}/execute",
            post(terminals::execute),
        )
        .route(
            "/sandboxes/{id}/terminals/{terminal}/commands",
            get(commands::list),
        )
        .route(
            "/sandboxes/{id}/terminals/{terminal}/commands/{cmd}",
            get(commands::get_command),
        )
        .route(
            "/sandboxes/{id}/terminals/{terminal}/commands/{cmd}/wait",
            get(commands::wait),
        )
        .route("/sandboxes/{id}/ws", get(ws::connect))
        // 501, not 404: the client reads a gateway 404 as "no such sandbox" (null, `[]`) and
        // would hide that hearth lacks the feature; any other status surfaces the message.
        .fallback(|| async {
            refuse(
                StatusCode::NOT_IMPLEMENTED,
                "hearth does not serve this part of ComputeSDK's protocol (see docs/e2b.md)",
            )
        })
        .with_state(state)
}

/// Both surfaces read `error` from a failure's body (the daemon's client as
/// `API request failed (<status>): <error>`); the gateway's also has `success`.
fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "success": false, "error": message }))).into_response()
}

/// A refusal, in the shape of [`refuse`].
#[derive(Debug)]
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        refuse(self.0, &self.1)
    }
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused(e.status(), e.detail().message.clone())
    }
}

impl From<hearth_engine::EngineError> for Refused {
    fn from(e: hearth_engine::EngineError) -> Self {
        ApiError::from(e).into()
    }
}

/// What a handler answers: a body, or a refusal in the protocol's shape.
type Answer = Result<Json<Value>, Refused>;

/// The gateway's success envelope.
fn ok(data: &Value) -> Answer {
    Ok(Json(json!({ "success": true, "data": data })))
}

/// The daemon's success envelope: only `data` is read.
fn data(data: Value) -> Answer {
    let mut body = serde_json::Map::new();
    body.insert("data".to_owned(), data);
    Ok(Json(Value::Object(body)))
}

/// A fresh id for a command or terminal, `prefix_` and 16 hex digits.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}
