//! E2B's protocols on a listener of their own, so that the E2B SDKs (`e2b`,
//! `e2b-code-interpreter`, Python and JS) drive hearth with `E2B_API_URL` and
//! `E2B_SANDBOX_URL` both set to it. Requests without an `E2b-Sandbox-Id` header are the
//! control plane ([`control`]: create, list, kill, timeouts, pause and resume, metrics;
//! `X-API-KEY` is a hearth key);
//! requests with one go to that sandbox's envd ([`process`], [`filesystem`], [`files`]) or,
//! with `E2b-Sandbox-Port: 49999`, to its code interpreter ([`interpreter`]), each checked
//! against the sandbox's access token ([`token`]).

mod connect;
mod control;
mod entry;
mod files;
mod filesystem;
mod interpreter;
mod metrics;
mod paused;
mod process;
mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use tower::ServiceExt;

use crate::auth::ApiKeys;
use crate::server::AppState;

pub use token::{TokenKey, TokenKeyError};

/// The envd version hearth's answers match: octet-stream uploads (0.5.7) and `close_stdin`
/// (0.5.2) are served; file metadata (0.6.2) is not.
pub const ENVD_VERSION: &str = "0.5.7";
/// The port the SDKs name for envd, and for the code interpreter.
const ENVD_PORT: &str = "49983";
const INTERPRETER_PORT: &str = "49999";

/// How templates map to images.
#[derive(Debug, Clone)]
pub struct E2bConfig {
    /// `templateID` → image reference; any other template id is taken as an image reference.
    pub templates: BTreeMap<String, String>,
    pub token_key: TokenKey,
}

impl E2bConfig {
    /// The defaults for E2B's own template names: `base` needs `/bin/bash` (the SDK runs
    /// commands with `bash -l -c`), the code interpreter also `python3`.
    pub fn default_templates() -> BTreeMap<String, String> {
        [
            ("base", "docker.io/library/python:3.12-slim"),
            ("code-interpreter-v1", "docker.io/library/python:3.12-slim"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub fn image_of<'a>(&'a self, template: &'a str) -> &'a str {
        self.templates
            .get(template)
            .map_or(template, String::as_str)
    }
}

/// What the E2B handlers share.
#[derive(Debug, Clone)]
pub struct E2bState {
    pub app: AppState,
    pub config: Arc<E2bConfig>,
    keys: Option<Arc<ApiKeys>>,
    processes: process::Table,
    watchers: filesystem::Watchers,
    kernels: interpreter::Kernels,
    transitions: control::Transitions,
}

/// The E2B router: control plane, envd and code interpreter, told apart by headers.
pub fn router(app: AppState, keys: Option<ApiKeys>, config: E2bConfig) -> Router {
    let state = E2bState {
        app,
        config: Arc::new(config),
        keys: keys.map(Arc::new),
        processes: process::Table::default(),
        watchers: filesystem::Watchers::default(),
        kernels: interpreter::Kernels::default(),
        transitions: control::Transitions::default(),
    };
    let control = control::router().with_state(state.clone());
    let envd = Router::new()
        .merge(process::router())
        .merge(filesystem::router())
        .merge(files::router())
        .fallback(unknown_envd_route)
        .with_state(state.clone());
    let interpreter = interpreter::router().with_state(state.clone());
    Router::new()
        .fallback(dispatch)
        .with_state((state, control, envd, interpreter))
}

/// What the server keeps per sandbox (processes, contexts), by sandbox id and then key.
type PerSandbox<K, V> = HashMap<String, BTreeMap<K, Arc<V>>>;

/// The sandbox a request to envd or the interpreter is for (checked by [`dispatch`]).
#[derive(Debug, Clone)]
pub struct SandboxId(pub String);

type Routers = (E2bState, Router, Router, Router);

async fn dispatch(
    State((state, control, envd, interpreter)): State<Routers>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let Some(sandbox) = header(headers, "e2b-sandbox-id") else {
        if let Some(keys) = &state.keys {
            let key = header(headers, "x-api-key").unwrap_or_default();
            if !keys.accepts(&key) {
                return control::error(
                    StatusCode::UNAUTHORIZED,
                    "Invalid API key: send a hearth API key as X-API-KEY",
                );
            }
        }
        return serve(control, request).await;
    };
    let port = header(headers, "e2b-sandbox-port").unwrap_or_else(|| ENVD_PORT.to_owned());
    // The interpreter SDK sends the traffic token alone on its context calls.
    let token = header(headers, "x-access-token")
        .or_else(|| {
            (port == INTERPRETER_PORT)
                .then(|| header(headers, "e2b-traffic-access-token"))
                .flatten()
        })
        .unwrap_or_default();
    let plain_http = !connect_path(request.uri().path());
    if !state.config.token_key.accepts(&sandbox, &token) {
        let message = format!("sandbox `{sandbox}`: a valid X-Access-Token is needed");
        return if plain_http {
            control::error(StatusCode::UNAUTHORIZED, &message)
        } else {
            connect::RpcError::new(connect::Code::Unauthenticated, message).into_response()
        };
    }
    // The SDKs name the E2B sandbox; envd's handlers get the hearth sandbox serving it now.
    match control::live(&state, &sandbox) {
        Ok(Some(record)) => {
            request.extensions_mut().insert(SandboxId(record.id));
        }
        _ => {
            // The SDKs read a 502 whose message says "was not found" as a sandbox that is
            // not running (a paused one too: E2B's proxy answers the same).
            return (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({
                    "code": 502,
                    "message": format!("The sandbox {sandbox} was not found"),
                    "sandboxId": sandbox,
                })),
            )
                .into_response();
        }
    }
    match port.as_str() {
        INTERPRETER_PORT => serve(interpreter, request).await,
        ENVD_PORT => serve(envd, request).await,
        other => control::error(
            StatusCode::BAD_GATEWAY,
            &format!("The sandbox is running but port is not open: hearth serves envd ({ENVD_PORT}) and the code interpreter ({INTERPRETER_PORT}), not {other}"),
        ),
    }
}

/// envd answers an RPC it does not have with Connect's `unimplemented`.
async fn unknown_envd_route(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if connect_path(path) {
        connect::RpcError::new(
            connect::Code::Unimplemented,
            format!("hearth's envd does not serve `{path}`"),
        )
        .into_response()
    } else {
        control::error(StatusCode::NOT_FOUND, &format!("no route `{path}`"))
    }
}

async fn serve(router: Router, request: Request) -> Response {
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Connect RPCs are `/<package>.<Service>/<Method>`.
fn connect_path(path: &str) -> bool {
    path.split('/')
        .nth(1)
        .is_some_and(|first| first.contains('.'))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

/// The guest user a request acts as: envd's `Authorization: Basic base64(user:)`, else
/// `username=` in the query; `None` is the image's user.
fn user_of(headers: &HeaderMap, query_user: Option<&str>) -> Option<String> {
    use base64::Engine as _;
    let from_header = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Basic ").map(str::to_owned))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|pair| pair.split(':').next().unwrap_or_default().to_owned());
    from_header
        .or_else(|| query_user.map(str::to_owned))
        .filter(|user| !user.is_empty())
}

/// The home directory relative paths start from: envd resolves them against the user's home.
fn home_of(user: Option<&str>) -> String {
    match user {
        None | Some("root") | Some("0") => "/root".to_owned(),
        Some(user) => format!("/home/{user}"),
    }
}

/// `path` made absolute against `user`'s home, with `~` expanded.
fn absolute(path: &str, user: Option<&str>) -> String {
    let home = home_of(user);
    if path.starts_with('/') {
        path.to_owned()
    } else if path == "~" {
        home
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else {
        format!("{home}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_relative_paths_start_at_the_users_home() {
        assert_eq!(absolute("/etc/x", None), "/etc/x");
        assert_eq!(absolute("a/b", None), "/root/a/b");
        assert_eq!(absolute("~/f", Some("user")), "/home/user/f");
        assert_eq!(absolute("~", Some("root")), "/root");
    }

    #[test]
    fn test_the_user_comes_from_basic_auth_first() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Basic dXNlcjo=".parse().unwrap());
        assert_eq!(user_of(&headers, Some("other")).as_deref(), Some("user"));
        assert_eq!(
            user_of(&HeaderMap::new(), Some("other")).as_deref(),
            Some("other")
        );
        assert_eq!(user_of(&HeaderMap::new(), None), None);
    }

    #[test]
    fn test_connect_paths_name_a_service() {
        assert!(connect_path("/process.Process/Start"));
        assert!(!connect_path("/files"));
        assert!(!connect_path("/health"));
    }
}
