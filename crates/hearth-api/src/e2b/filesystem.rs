//! envd's `filesystem.Filesystem` service over the agent's file operations. Watching a
//! directory is polling: the agent has no inotify channel, so each poll lists the directory
//! and compares it with the last listing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use hearth_engine::{FileKind, FileStat};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, Code, RpcError};
use super::entry::{entry_info, join, Names};
use super::{absolute, user_of, E2bState, SandboxId};

/// Entries one listing or one watcher's snapshot may hold.
const MAX_ENTRIES: usize = 10_000;
/// Deepest `ListDir` and recursive watch.
const MAX_DEPTH: u32 = 16;
/// Watchers one server keeps.
const MAX_WATCHERS: usize = 256;
/// How often a `WatchDir` stream looks again.
const POLL: Duration = Duration::from_millis(500);

pub fn router() -> Router<E2bState> {
    Router::new()
        .route("/filesystem.Filesystem/Stat", post(stat))
        .route("/filesystem.Filesystem/MakeDir", post(make_dir))
        .route("/filesystem.Filesystem/Move", post(move_path))
        .route("/filesystem.Filesystem/ListDir", post(list_dir))
        .route("/filesystem.Filesystem/Remove", post(remove))
        .route("/filesystem.Filesystem/WatchDir", post(watch_dir))
        .route("/filesystem.Filesystem/CreateWatcher", post(create_watcher))
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(get_watcher_events),
        )
        .route("/filesystem.Filesystem/RemoveWatcher", post(remove_watcher))
}

#[derive(Debug, Deserialize)]
struct PathRequest {
    path: String,
}

/// Runs a unary call: its request parsed from `body`, its answer or error in Connect's form.
async fn unary<T, F, Fut>(headers: &HeaderMap, body: &[u8], call: F) -> Response
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(T, Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Value, RpcError>>,
{
    let request = match connect::request::<T>(headers, body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    match call(request, user_of(headers, None)).await {
        Ok(answer) => connect::unary(&answer),
        Err(e) => e.into_response(),
    }
}

async fn stat_entry(state: &E2bState, sandbox: &str, path: &str) -> Result<Value, RpcError> {
    let stat = state.app.engine.stat(sandbox, path).await?;
    let names = Names::of(&state.app.engine, sandbox, [&stat]).await;
    Ok(entry_info(path, &stat, &names))
}

async fn stat(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    unary(&headers, &body, |r: PathRequest, user| async move {
        let path = absolute(&r.path, user.as_deref());
        Ok(json!({ "entry": stat_entry(&state, &sandbox, &path).await? }))
    })
    .await
}

async fn make_dir(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    unary(&headers, &body, |r: PathRequest, user| async move {
        let path = absolute(&r.path, user.as_deref());
        // envd makes the parents too, and says when the directory was already there.
        if state.app.engine.stat(&sandbox, &path).await.is_ok() {
            return Err(RpcError::new(
                Code::AlreadyExists,
                format!("`{path}` already exists"),
            ));
        }
        state.app.engine.mkdir(&sandbox, &path, 0o755, true).await?;
        Ok(json!({ "entry": stat_entry(&state, &sandbox, &path).await? }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct MoveRequest {
    source: String,
    destination: String,
}

async fn move_path(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    unary(&headers, &body, |r: MoveRequest, user| async move {
        let from = absolute(&r.source, user.as_deref());
        let to = absolute(&r.destination, user.as_deref());
        state.app.engine.rename(&sandbox, &from, &to).await?;
        Ok(json!({ "entry": stat_entry(&state, &sandbox, &to).await? }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct ListRequest {
    path: String,
    #[serde(default)]
    depth: Option<u32>,
}

/// The entries under `dir`, `depth` levels down, as (path, stat), dirs before their contents.
async fn walk(
    state: &E2bState,
    sandbox: &str,
    dir: &str,
    depth: u32,
) -> Result<Vec<(String, FileStat)>, RpcError> {
    let mut found = Vec::new();
    let mut level = vec![dir.to_owned()];
    for _ in 0..depth.clamp(1, MAX_DEPTH) {
        let mut next = Vec::new();
        for dir in level {
            for stat in state.app.engine.list_dir(sandbox, &dir).await? {
                let path = join(&dir, &stat.name);
                if stat.kind == FileKind::Dir {
                    next.push(path.clone());
                }
                found.push((path, stat));
                if found.len() > MAX_ENTRIES {
                    return Err(RpcError::new(
                        Code::ResourceExhausted,
                        format!("`{dir}` holds more than {MAX_ENTRIES} entries"),
                    ));
                }
            }
        }
        level = next;
    }
    Ok(found)
}

async fn list_dir(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    unary(&headers, &body, |r: ListRequest, user| async move {
        let path = absolute(&r.path, user.as_deref());
        let found = walk(&state, &sandbox, &path, r.depth.unwrap_or(1)).await?;
        let names = Names::of(
            &state.app.engine,
            &sandbox,
            found.iter().map(|(_, stat)| stat),
        )
        .await;
        let entries: Vec<Value> = found
            .iter()
            .map(|(path, stat)| entry_info(path, stat, &names))
            .collect();
        Ok(json!({ "entries": entries }))
    })
    .await
}

async fn remove(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    unary(&headers, &body, |r: PathRequest, user| async move {
        let path = absolute(&r.path, user.as_deref());
        state.app.engine.remove_path(&sandbox, &path, true).await?;
        Ok(json!({}))
    })
    .await
}

/// What a watcher compares: each path's kind, size, mode and mtime.
type Snapshot = BTreeMap<String, (FileKind, u64, u32, i64)>;

async fn snapshot(
    state: &E2bState,
    sandbox: &str,
    dir: &str,
    recursive: bool,
) -> Result<Snapshot, RpcError> {
    let depth = if recursive { MAX_DEPTH } else { 1 };
    Ok(walk(state, sandbox, dir, depth)
        .await?
        .into_iter()
        .map(|(path, s)| (path, (s.kind, s.size, s.mode, s.mtime)))
        .collect())
}

/// envd's events between two snapshots of `dir`, named relative to it.
fn changes(dir: &str, before: &Snapshot, after: &Snapshot) -> Vec<Value> {
    let relative = |path: &str| {
        path.strip_prefix(dir)
            .unwrap_or(path)
            .trim_start_matches('/')
            .to_owned()
    };
    let event = |path: &str, kind: &str| json!({ "name": relative(path), "type": kind });
    let mut events = Vec::new();
    for (path, now) in after {
        match before.get(path) {
            None => events.push(event(path, "EVENT_TYPE_CREATE")),
            Some(was) if (was.1, was.3) != (now.1, now.3) => {
                events.push(event(path, "EVENT_TYPE_WRITE"));
            }
            Some(was) if was.2 != now.2 => events.push(event(path, "EVENT_TYPE_CHMOD")),
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        events.push(event(path, "EVENT_TYPE_REMOVE"));
    }
    events
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatchRequest {
    path: String,
    #[serde(default)]
    recursive: bool,
}

async fn watch_dir(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: WatchRequest = match connect::request(&headers, &body) {
        Ok(request) => request,
        Err(e) => return connect::stream_error(e),
    };
    let dir = absolute(&request.path, user_of(&headers, None).as_deref());
    let mut last = match snapshot(&state, &sandbox, &dir, request.recursive).await {
        Ok(snapshot) => snapshot,
        Err(e) => return connect::stream_error(e),
    };
    let (response, sender) = connect::server_stream();
    tokio::spawn(async move {
        if !sender.send(&json!({ "start": {} })).await {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = sender.closed() => return,
            }
            let now = match snapshot(&state, &sandbox, &dir, request.recursive).await {
                Ok(now) => now,
                Err(e) => return sender.end(Some(e)).await,
            };
            for event in changes(&dir, &last, &now) {
                if !sender.send(&json!({ "filesystem": event })).await {
                    return;
                }
            }
            last = now;
        }
    });
    response
}

/// The polling watchers of `CreateWatcher`, by id.
#[derive(Debug, Clone, Default)]
pub struct Watchers {
    inner: Arc<Mutex<HashMap<String, Watcher>>>,
}

#[derive(Debug, Clone)]
struct Watcher {
    sandbox: String,
    dir: String,
    recursive: bool,
    last: Snapshot,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watcher>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, sandbox: &str, id: &str) -> Result<Watcher, RpcError> {
        self.lock()
            .get(id)
            .filter(|w| w.sandbox == sandbox)
            .cloned()
            .ok_or_else(|| RpcError::new(Code::NotFound, format!("watcher {id} not found")))
    }
}

async fn create_watcher(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    unary(&headers, &body, |r: WatchRequest, user| async move {
        let dir = absolute(&r.path, user.as_deref());
        let last = snapshot(&state, &sandbox, &dir, r.recursive).await?;
        let mut watchers = state.watchers.lock();
        // Watchers of sandboxes that are gone would otherwise stay until the server ends.
        let engine = &state.app.engine;
        watchers.retain(|_, w| engine.running(&w.sandbox).is_ok());
        if watchers.len() >= MAX_WATCHERS {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("this server keeps at most {MAX_WATCHERS} watchers"),
            ));
        }
        let mut raw = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut raw);
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        watchers.insert(
            id.clone(),
            Watcher {
                sandbox: sandbox.clone(),
                dir,
                recursive: r.recursive,
                last,
            },
        );
        Ok(json!({ "watcherId": id }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatcherRequest {
    watcher_id: String,
}

async fn get_watcher_events(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    unary(&headers, &body, |r: WatcherRequest, _| async move {
        let watcher = state.watchers.get(&sandbox, &r.watcher_id)?;
        let now = snapshot(&state, &sandbox, &watcher.dir, watcher.recursive).await?;
        let events = changes(&watcher.dir, &watcher.last, &now);
        if let Some(kept) = state.watchers.lock().get_mut(&r.watcher_id) {
            kept.last = now;
        }
        Ok(json!({ "events": events }))
    })
    .await
}

async fn remove_watcher(
    State(state): State<E2bState>,
    Extension(SandboxId(sandbox)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    unary(&headers, &body, |r: WatcherRequest, _| async move {
        state.watchers.get(&sandbox, &r.watcher_id)?;
        state.watchers.lock().remove(&r.watcher_id);
        Ok(json!({}))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_changes_name_created_written_chmodded_and_removed_paths() {
        let before: Snapshot = [
            ("/w/a".to_owned(), (FileKind::File, 1, 0o644, 1)),
            ("/w/b".to_owned(), (FileKind::File, 1, 0o644, 1)),
            ("/w/c".to_owned(), (FileKind::File, 1, 0o644, 1)),
        ]
        .into();
        let after: Snapshot = [
            ("/w/a".to_owned(), (FileKind::File, 2, 0o644, 1)),
            ("/w/b".to_owned(), (FileKind::File, 1, 0o600, 1)),
            ("/w/d/e".to_owned(), (FileKind::File, 0, 0o644, 1)),
        ]
        .into();
        let events: Vec<(String, String)> = changes("/w", &before, &after)
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["type"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            events,
            vec![
                ("a".into(), "EVENT_TYPE_WRITE".into()),
                ("b".into(), "EVENT_TYPE_CHMOD".into()),
                ("d/e".into(), "EVENT_TYPE_CREATE".into()),
                ("c".into(), "EVENT_TYPE_REMOVE".into()),
            ]
        );
    }
}
