//! The MCP server: sandboxes as Model Context Protocol tools an AI agent calls, over stdio
//! (`hearth mcp`) or streamable HTTP (`/mcp` under `hearth serve`, behind the same key).
//!
//! Each tool's input schema is generated from a request type: `create_sandbox` takes the REST
//! API's `CreateSandbox`, `run_command` its `ExecBody` plus `sandbox`, so the two cannot
//! drift. Each call runs the same code as its REST route. A failed operation is a tool result
//! with `isError` (the agent reads why and can try again); only arguments that do not fit the
//! schema are protocol errors.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::routes::exec::{run_to_end, Encoding, ExecBody};
use crate::routes::files::{guest_path, mode};
use crate::routes::sandboxes::{create_sandbox, CreateSandbox, Sandbox};
use crate::server::{AppState, MAX_JSON_BYTES};

/// Largest file `read_file` returns: tool results go into a model's context.
const MAX_READ_BYTES: u64 = 1024 * 1024;

/// `read_file`'s and `list_files`' argument besides `sandbox`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestPath {
    /// Absolute guest path.
    pub path: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// Absolute guest path; the file is replaced once all of it is written.
    pub path: String,
    pub content: String,
    /// How `content` is encoded: `utf8` text (the default) or `base64` bytes.
    #[serde(default)]
    pub encoding: Encoding,
    /// Octal permission bits, like `644` (the default) or `755`.
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCode {
    /// Python source, run with the image's `python3`.
    pub code: String,
    /// Seconds before it is killed (default 60, at most 3600).
    pub timeout_secs: Option<u64>,
}

/// `destroy_sandbox` takes only `sandbox`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArguments {}

/// The tools, as one handler per connection; all share the server's engine.
#[derive(Debug, Clone)]
pub struct HearthMcp {
    app: AppState,
}

impl HearthMcp {
    pub fn new(app: AppState) -> Self {
        HearthMcp { app }
    }

    /// Serves stdin/stdout until the client closes them.
    pub async fn serve_stdio(self) -> std::io::Result<()> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(std::io::Error::other)?;
        running.waiting().await.map_err(std::io::Error::other)?;
        Ok(())
    }
}

/// The streamable HTTP endpoint for `/mcp`: stateless JSON answers, so no stream outlives
/// its request and a graceful shutdown never waits on one. `stop` ends whatever is in flight.
/// Without keys (loopback only) it also checks `Host`, against DNS rebinding; with keys, a
/// browser cannot forge the bearer key, and the host may be any name the server is reached by.
pub fn http_service(
    app: AppState,
    keyed: bool,
    stop: CancellationToken,
) -> StreamableHttpService<HearthMcp, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_cancellation_token(stop)
        .with_max_request_body_bytes(MAX_JSON_BYTES);
    if keyed {
        config = config.disable_allowed_hosts();
    }
    StreamableHttpService::new(
        move || Ok(HearthMcp::new(app.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// Every tool: name, what it does, and the type its arguments take (`sandboxed`: plus the
/// `sandbox` to act on).
fn tools() -> Vec<Tool> {
    let tool = |name: &'static str, description: &'static str, schema: JsonObject| {
        Tool::new(name, description, Arc::new(schema))
    };
    vec![
        tool(
            "create_sandbox",
            "Boot a new sandbox (a microVM) from an OCI image (default: a small built-in \
             Linux) and return its record; use its `name` or `id` in the other tools.",
            input_schema::<CreateSandbox>(false),
        ),
        tool(
            "list_sandboxes",
            "List every sandbox with its state.",
            input_schema::<NoArguments>(false),
        ),
        tool(
            "run_command",
            "Run a program in a running sandbox and return its exit code, stdout and stderr. \
             `command` is the argv; use [\"sh\", \"-c\", \"...\"] for a shell line.",
            input_schema::<ExecBody>(true),
        ),
        tool(
            "run_code",
            "Run Python code with the sandbox's python3 (its image must have Python, like \
             python:3.12-alpine) and return what it printed.",
            input_schema::<RunCode>(true),
        ),
        tool(
            "read_file",
            "Read a text file in a sandbox (up to 1 MiB; bytes that are not UTF-8 come back \
             as base64).",
            input_schema::<GuestPath>(true),
        ),
        tool(
            "write_file",
            "Create or replace a file in a sandbox.",
            input_schema::<WriteFile>(true),
        ),
        tool(
            "list_files",
            "List a directory in a sandbox: each entry's name, kind and size.",
            input_schema::<GuestPath>(true),
        ),
        tool(
            "destroy_sandbox",
            "Kill a sandbox and forget it.",
            input_schema::<NoArguments>(true),
        ),
    ]
}

/// `T`'s JSON Schema from its `ToSchema` derive (the one the OpenAPI document holds), with the
/// types it refers to under `$defs`; `sandboxed` adds a required `sandbox` property.
fn input_schema<T: ToSchema>(sandboxed: bool) -> JsonObject {
    let mut referenced = Vec::new();
    T::schemas(&mut referenced);
    let mut root = serde_json::to_value(T::schema()).unwrap_or_else(|_| json!({}));
    if !referenced.is_empty() {
        let defs: serde_json::Map<String, Value> = referenced
            .into_iter()
            .map(|(name, schema)| (name, serde_json::to_value(schema).unwrap_or_default()))
            .collect();
        root["$defs"] = Value::Object(defs);
    }
    point_refs_at_defs(&mut root);
    if sandboxed {
        root["properties"]["sandbox"] = json!({
            "type": "string",
            "description": "The sandbox's name, id or unique id prefix."
        });
        match root["required"].as_array_mut() {
            Some(required) => required.insert(0, json!("sandbox")),
            None => root["required"] = json!(["sandbox"]),
        }
    }
    root["type"] = json!("object");
    match root {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// OpenAPI refers to `#/components/schemas/X`; inside one schema, `$defs` is the place.
fn point_refs_at_defs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match (key.as_str(), item) {
                    ("$ref", Value::String(target)) => {
                        if let Some(name) = target.strip_prefix("#/components/schemas/") {
                            *target = format!("#/$defs/{name}");
                        }
                    }
                    (_, item) => point_refs_at_defs(item),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(point_refs_at_defs),
        _ => {}
    }
}

/// Splits off `sandbox` (when the tool takes one) and reads the rest as `T`; arguments that do
/// not fit are a protocol error.
fn arguments<T: DeserializeOwned>(
    mut args: JsonObject,
    sandboxed: bool,
) -> Result<(String, T), ErrorData> {
    let sandbox = if sandboxed {
        match args.remove("sandbox") {
            Some(Value::String(sandbox)) => sandbox,
            _ => {
                return Err(ErrorData::invalid_params(
                    "`sandbox` (a name or id) is required",
                    None,
                ))
            }
        }
    } else {
        String::new()
    };
    let parsed = serde_json::from_value(Value::Object(args))
        .map_err(|e| ErrorData::invalid_params(format!("invalid arguments: {e}"), None))?;
    Ok((sandbox, parsed))
}

fn json_text(value: &impl Serialize) -> CallToolResult {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn failed(error: &ApiError) -> CallToolResult {
    let detail = error.detail();
    CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {}",
        detail.code, detail.message
    ))])
}

impl HearthMcp {
    async fn call(&self, name: &str, args: JsonObject) -> Result<CallToolResult, ErrorData> {
        let app = &self.app;
        let outcome = match name {
            "create_sandbox" => {
                let (_, request) = arguments::<CreateSandbox>(args, false)?;
                create_sandbox(app, request).await.map(|s| json_text(&s))
            }
            "list_sandboxes" => {
                let (_, NoArguments {}) = arguments(args, false)?;
                app.engine
                    .list(true)
                    .map(|records| {
                        let sandboxes: Vec<Sandbox> =
                            records.into_iter().map(Sandbox::from).collect();
                        json_text(&sandboxes)
                    })
                    .map_err(ApiError::from)
            }
            "run_command" => {
                let (sandbox, body) = arguments::<ExecBody>(args, true)?;
                run_to_end(app, &sandbox, body).await.map(|r| json_text(&r))
            }
            "run_code" => {
                let (sandbox, request) = arguments::<RunCode>(args, true)?;
                run_code(app, &sandbox, request).await
            }
            "read_file" => {
                let (sandbox, request) = arguments::<GuestPath>(args, true)?;
                read_file(app, &sandbox, &request.path).await
            }
            "write_file" => {
                let (sandbox, request) = arguments::<WriteFile>(args, true)?;
                write_file(app, &sandbox, request).await
            }
            "list_files" => {
                let (sandbox, request) = arguments::<GuestPath>(args, true)?;
                list_files(app, &sandbox, &request.path).await
            }
            "destroy_sandbox" => {
                let (sandbox, NoArguments {}) = arguments(args, true)?;
                match app.engine.remove(&sandbox, true).await {
                    Ok(record) => Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                        "sandbox {} ({}) is gone",
                        record.name, record.id
                    ))])),
                    Err(e) => Err(e.into()),
                }
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool `{other}`"),
                    None,
                ))
            }
        };
        Ok(outcome.unwrap_or_else(|e| failed(&e)))
    }
}

async fn run_code(
    app: &AppState,
    sandbox: &str,
    request: RunCode,
) -> Result<CallToolResult, ApiError> {
    let body = ExecBody {
        command: vec!["python3".to_owned(), "-c".to_owned(), request.code],
        env: Default::default(),
        cwd: None,
        user: None,
        stdin: None,
        encoding: Encoding::Utf8,
        timeout_secs: request.timeout_secs,
        max_output_bytes: None,
    };
    let result = run_to_end(app, sandbox, body).await?;
    if result.exit_code == Some(127) {
        return Err(ApiError::invalid_input(
            "this sandbox's image has no python3: create one from an image with Python, \
             like python:3.12-alpine",
        ));
    }
    Ok(json_text(&result))
}

async fn read_file(app: &AppState, sandbox: &str, path: &str) -> Result<CallToolResult, ApiError> {
    let path = guest_path(path)?;
    let stat = app.engine.stat(sandbox, path).await?;
    if stat.size > MAX_READ_BYTES {
        return Err(ApiError::invalid_input(format!(
            "`{path}` is {} bytes, over the {MAX_READ_BYTES} read_file returns; read part of \
             it with run_command (head, tail, sed -n)",
            stat.size
        )));
    }
    let mut data = Vec::new();
    app.engine.read_file(sandbox, path, &mut data).await?;
    let text = match String::from_utf8(data) {
        Ok(text) => text,
        Err(e) => format!(
            "(not UTF-8; base64) {}",
            Encoding::Base64.encode(e.as_bytes())
        ),
    };
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

async fn write_file(
    app: &AppState,
    sandbox: &str,
    request: WriteFile,
) -> Result<CallToolResult, ApiError> {
    let path = guest_path(&request.path)?;
    let mode = mode(request.mode.as_deref(), 0o644)?;
    let data = request.encoding.decode("content", request.content)?;
    let written = app
        .engine
        .write_file(sandbox, path, mode, &mut data.as_slice())
        .await?;
    Ok(CallToolResult::success(vec![ContentBlock::text(format!(
        "wrote {written} bytes to {path}"
    ))]))
}

async fn list_files(app: &AppState, sandbox: &str, path: &str) -> Result<CallToolResult, ApiError> {
    let path = guest_path(path)?;
    Ok(json_text(&app.engine.list_dir(sandbox, path).await?))
}

impl ServerHandler for HearthMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("hearth", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Sandboxes are microVMs for running untrusted code. Create one with \
                 create_sandbox, run commands and files in it by its name, and destroy it when \
                 done.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        Ok(self.call(&request.name, args).await?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tool_schemas_come_from_the_request_types() {
        let tools = tools();
        let schema = |name: &str| -> Value {
            let tool = tools.iter().find(|t| t.name == name).unwrap();
            Value::Object((*tool.input_schema).clone())
        };
        let run = schema("run_command");
        assert_eq!(run["type"], "object");
        assert_eq!(run["required"], json!(["sandbox", "command"]));
        assert!(run["properties"]["max_output_bytes"].is_object(), "{run}");
        let create = schema("create_sandbox");
        assert!(create["properties"]["labels"].is_object(), "{create}");
        assert!(create["properties"].get("sandbox").is_none());
        let text = create.to_string();
        assert!(!text.contains("#/components/"), "{text}");
        assert!(create["$defs"]["NetworkRequest"].is_object(), "{text}");
        assert_eq!(schema("destroy_sandbox")["required"], json!(["sandbox"]));
    }

    #[test]
    fn test_arguments_take_sandbox_apart_and_refuse_what_does_not_fit() {
        let args = |value: Value| match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let (sandbox, path) =
            arguments::<GuestPath>(args(json!({"sandbox": "box", "path": "/tmp"})), true).unwrap();
        assert_eq!((sandbox.as_str(), path.path.as_str()), ("box", "/tmp"));
        assert!(arguments::<GuestPath>(args(json!({"path": "/tmp"})), true).is_err());
        assert!(arguments::<GuestPath>(
            args(json!({"sandbox": "b", "path": "/", "extra": 1})),
            true
        )
        .is_err());
    }
}
