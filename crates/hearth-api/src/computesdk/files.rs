//! `/files`: `filesystem.readFile`, `writeFile`, `readdir` and `remove` (`mkdir` and `exists`
//! are shell commands the client sends to `/run/command`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Daemon;
use super::{data, Answer, ComputeState, Refused};

/// Largest file `readFile` returns (its content travels as one JSON string).
const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;

/// Guest paths: the client sends them as they were given, `/`-rooted or not.
fn guest_path(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

#[derive(Debug, Deserialize)]
pub(super) struct WriteFile {
    path: String,
    content: String,
}

pub(super) async fn write_file(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Json(request): Json<WriteFile>,
) -> Answer {
    let path = guest_path(&request.path);
    crate::routes::files::write_with_parents(
        &state.app.engine,
        &id,
        &path,
        request.content.as_bytes(),
    )
    .await?;
    data(json!({ "path": path }))
}

/// `readFile` (`?content=true`), `file.retrieve`, and `file.exists` as `HEAD`, which reads
/// only the status.
pub(super) async fn read_file(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Path((_, path)): Path<(String, String)>,
) -> Answer {
    let path = guest_path(&path);
    let engine = &state.app.engine;
    if engine.stat(&id, &path).await?.size > MAX_READ_BYTES {
        return Err(Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("`{path}` is over {MAX_READ_BYTES} bytes; hearth cp copies it out"),
        ));
    }
    let mut content = Vec::new();
    engine.read_file(&id, &path, &mut content).await?;
    data(json!({ "path": path, "content": String::from_utf8_lossy(&content) }))
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    path: String,
}

pub(super) async fn list_files(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Query(query): Query<ListQuery>,
) -> Answer {
    let path = guest_path(&query.path);
    let entries = state.app.engine.list_dir(&id, &path).await?;
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
    data(json!({ "path": path, "files": files }))
}

/// `filesystem.remove`, for files and directories alike, so recursive.
pub(super) async fn remove_file(
    State(state): State<ComputeState>,
    Daemon(id): Daemon,
    Path((_, path)): Path<(String, String)>,
) -> Answer {
    state
        .app
        .engine
        .remove_path(&id, &guest_path(&path), true)
        .await?;
    data(json!({}))
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
