//! `hearth serve` end to end: the binary under test serves on 127.0.0.1:0 and a real HTTP
//! client drives every route against real VMs. One sandbox serves many assertions, since each
//! boot costs seconds under TCG.

use std::io::BufRead;
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use base64::Engine as _;
use hearth_test_support::host::TestHost;
use hearth_test_support::oci_layout::{Compression, Entry, TestConfig, TestImage};
use hearth_test_support::registry::LocalRegistry;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{code, host, stderr, stdout};

/// A running `hearth serve` and what it printed at start.
struct ApiServer {
    child: Child,
    /// Kept open: the server may still print, and a closed pipe would fail its write.
    _stdout: std::io::BufReader<ChildStdout>,
    url: String,
    /// The key it generated, when it did.
    new_key: Option<String>,
}

impl ApiServer {
    fn start(host: &TestHost, args: &[&str]) -> ApiServer {
        let mut child = host
            .hearth()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning hearth serve");
        match read_start(&mut child) {
            Some((reader, url, new_key)) => ApiServer {
                child,
                _stdout: reader,
                url,
                new_key,
            },
            None => {
                let _ = child.kill();
                let status = child.wait();
                panic!("hearth serve ended before listening: {status:?}");
            }
        }
    }

    fn client(&self, key: Option<&str>) -> Api {
        Api {
            base: self.url.clone(),
            key: key.map(str::to_owned),
            client: reqwest::Client::new(),
        }
    }

    /// SIGTERM, then the exit status: a graceful shutdown exits 0.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `hearth serve` prints before it answers: the key it made, if it did, then its URL.
fn read_start(
    child: &mut Child,
) -> Option<(std::io::BufReader<ChildStdout>, String, Option<String>)> {
    let mut reader = std::io::BufReader::new(child.stdout.take()?);
    let mut new_key = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(key) = line
            .trim()
            .split(": ")
            .nth(1)
            .filter(|_| line.contains("key"))
        {
            new_key = Some(key.to_owned());
        }
        if let Some(url) = line.trim().strip_prefix("listening on ") {
            return Some((reader, url.to_owned(), new_key));
        }
    }
}

struct Api {
    base: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl Api {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `body` as JSON (none when `Null`); the status and the JSON answer (`Null` when
    /// empty).
    async fn call(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if !body.is_null() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        answer(request.send().await.expect("request")).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Value::Null).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, body).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Value::Null).await
    }

    /// Runs `command` through the request/response exec route; its result must be 200.
    async fn exec(&self, sandbox: &str, body: Value) -> Value {
        let (status, result) = self
            .post(&format!("/v1/sandboxes/{sandbox}/exec"), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{result}");
        result
    }

    /// `sh -c script` in the sandbox; its stdout.
    async fn sh(&self, sandbox: &str, script: &str) -> String {
        let result = self
            .exec(sandbox, json!({"command": ["sh", "-c", script]}))
            .await;
        result["stdout"].as_str().unwrap().to_owned()
    }

    /// Waits up to 10 s until no guest process's command line holds `marker`.
    async fn until_none_run(&self, sandbox: &str, marker: &str) -> bool {
        self.until_running(sandbox, marker, false).await
    }

    /// Waits up to 10 s until some guest process's command line holds `marker` (`running`), or
    /// none does.
    async fn until_running(&self, sandbox: &str, marker: &str, running: bool) -> bool {
        for _ in 0..50 {
            if (self.sh(sandbox, &count_script(marker)).await.trim() != "0") == running {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.expect("response body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// The error code of an error answer, checking its shape.
/// The `name` of every object in a JSON array answer, in order.
fn names_in(listed: &Value) -> Vec<&str> {
    listed
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|item| item["name"].as_str().expect("a name"))
        .collect()
}

fn error_code(body: &Value) -> &str {
    assert!(body["error"]["message"].is_string(), "error body: {body}");
    body["error"]["code"].as_str().expect("error code")
}

/// Guest processes whose command line holds `marker`; the `[x]` trick keeps the search itself
/// out of the count.
fn count_script(marker: &str) -> String {
    let (first, rest) = marker.split_at(1);
    format!(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done 2>/dev/null | grep -c '[{first}]{rest}' || true"
    )
}

fn hearth_ok(host: &TestHost, args: &[&str]) -> String {
    let output = host.hearth().args(args).output().unwrap();
    assert_eq!(code(&output), 0, "hearth {args:?}: {}", stderr(&output));
    stdout(&output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_sandbox_lifecycle_exec_and_files_on_one_vm() {
    let host = host();
    let server = ApiServer::start(&host, &[]);
    let key = server
        .new_key
        .clone()
        .expect("a key is made at the first start");
    let api = server.client(Some(&key));

    let (status, health) = server.client(None).get("/health").await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));
    let (status, version) = api.get("/v1/version").await;
    assert_eq!(status, StatusCode::OK);
    assert!(version["backend"].as_str().unwrap().starts_with("qemu-"));

    // Host paths are for servers that allow them; bad targets are refused before anything.
    let (status, refused) = api
        .post(
            "/v1/sandboxes",
            json!({"volumes": [{"source": "/etc", "target": "/host-etc"}]}),
        )
        .await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::FORBIDDEN, "permission_denied"),
        "{refused}"
    );
    let (status, refused) = api
        .post(
            "/v1/sandboxes",
            json!({"volumes": [{"source": "apivol", "target": "data"}]}),
        )
        .await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::BAD_REQUEST, "invalid_input"),
        "{refused}"
    );

    // Created, not started: the lifecycle's refusals. It mounts a named volume.
    let (status, created) = api
        .post(
            "/v1/sandboxes",
            json!({"name": "api", "start": false,
                   "volumes": [{"source": "apivol", "target": "/data"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "created");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, taken) = api
        .post("/v1/sandboxes", json!({"name": "api", "start": false}))
        .await;
    assert_eq!(
        (status, error_code(&taken)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, refused) = api
        .post("/v1/sandboxes/api/exec", json!({"command": ["true"]}))
        .await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::CONFLICT, "conflict")
    );

    // Not found, on every route that names a sandbox.
    for (method, path) in [
        (Method::GET, "/v1/sandboxes/nope"),
        (Method::DELETE, "/v1/sandboxes/nope"),
        (Method::POST, "/v1/sandboxes/nope/start"),
        (Method::POST, "/v1/sandboxes/nope/stop"),
        (Method::POST, "/v1/sandboxes/nope/kill"),
        (Method::GET, "/v1/sandboxes/nope/files/stat?path=/"),
        (Method::GET, "/v1/sandboxes/nope/files/list?path=/"),
        (
            Method::GET,
            "/v1/sandboxes/nope/files/content?path=/etc/hostname",
        ),
        (Method::DELETE, "/v1/sandboxes/nope/files?path=/tmp/x"),
    ] {
        let (status, body) = api.call(method.clone(), path, Value::Null).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert_eq!(error_code(&body), "not_found");
    }
    let (status, _) = api
        .post("/v1/sandboxes/nope/exec", json!({"command": ["true"]}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, started) = api.post("/v1/sandboxes/api/start", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(
        (started["id"].as_str(), &started["state"]),
        (Some(&*id), &json!("running"))
    );
    let (status, again) = api
        .post(&format!("/v1/sandboxes/{id}/start"), Value::Null)
        .await;
    assert_eq!(
        (status, error_code(&again)),
        (StatusCode::CONFLICT, "conflict")
    );
    assert!(hearth_ok(&host, &["ls"]).contains("api"), "the CLI sees it");
    let (status, running) = api.get("/v1/sandboxes?state=running").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(running[0]["id"].as_str(), Some(&*id));
    let (_, none) = api.get("/v1/sandboxes?state=exited").await;
    assert_eq!(none, json!([]));
    let (status, details) = api.get("/v1/sandboxes/api").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(details["network"]["policy"]["egress"], "allow_all");

    // Exec: output, exit code, stdin, env and cwd.
    let result = api
        .exec(
            "api",
            json!({"command": ["sh", "-c", "cat; echo \"$MORE\"; echo oops >&2; exit 3"],
                   "stdin": "in\n", "env": {"MORE": "more"}, "cwd": "/tmp"}),
        )
        .await;
    assert_eq!(result["stdout"], "in\nmore\n");
    assert_eq!(result["stderr"], "oops\n");
    assert_eq!(result["exit_code"], 3);
    let shown = api.sh("api", "echo $MORE; pwd").await;
    assert_eq!(shown, "\n/\n", "request env and cwd do not stick");
    api.sh("api", "echo via-api > /data/f").await;
    let volume: Value =
        serde_json::from_str(&hearth_ok(&host, &["volume", "inspect", "apivol"])).unwrap();
    let data = std::path::Path::new(volume[0]["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(data.join("f")).unwrap(),
        "via-api\n"
    );
    let bytes: Vec<u8> = (0..=255).collect();
    let binary = api
        .exec(
            "api",
            json!({"command": ["cat"], "encoding": "base64",
                   "stdin": base64::engine::general_purpose::STANDARD.encode(&bytes)}),
        )
        .await;
    let echoed = base64::engine::general_purpose::STANDARD
        .decode(binary["stdout"].as_str().unwrap())
        .unwrap();
    assert_eq!(echoed, bytes, "binary-safe both ways");
    let bounded = api
        .exec(
            "api",
            json!({"command": ["head", "-c", "100000", "/dev/zero"], "max_output_bytes": 10}),
        )
        .await;
    assert_eq!(bounded["stdout"].as_str().unwrap().len(), 10);
    assert_eq!(
        (&bounded["stdout_truncated"], &bounded["exit_code"]),
        (&json!(true), &json!(0))
    );
    let missing = api
        .exec("api", json!({"command": ["/no/such/program"]}))
        .await;
    assert_eq!(missing["exit_code"], 127);
    let timed_out = api
        .exec(
            "api",
            json!({"command": ["sleep", "307"], "timeout_secs": 1}),
        )
        .await;
    assert_eq!(
        (&timed_out["timed_out"], &timed_out["exit_code"]),
        (&json!(true), &Value::Null)
    );
    assert!(
        api.until_none_run("api", "sleep 307").await,
        "the timed-out process was killed"
    );

    // A client that gives up on a request/response exec leaves no guest process either.
    let gave_up = api
        .request(Method::POST, "/v1/sandboxes/api/exec")
        .header("content-type", "application/json")
        .body(json!({"command": ["sleep", "306"]}).to_string())
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    assert!(
        api.until_none_run("api", "sleep 306").await,
        "the abandoned exec's process was killed"
    );

    // Streamed exec: NDJSON events in order, the exit last.
    let response = api
        .request(Method::POST, "/v1/sandboxes/api/exec/stream")
        .header("content-type", "application/json")
        .body(json!({"command": ["sh", "-c", "echo 1; sleep 0.2; echo 2 >&2; exit 4"]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events,
        vec![
            json!({"type": "stdout", "data": "1\n"}),
            json!({"type": "stderr", "data": "2\n"}),
            json!({"type": "exit", "exit_code": 4, "signal": null, "timed_out": false}),
        ]
    );
    // A client that leaves mid-stream leaves no guest process behind.
    let mut response = api
        .request(Method::POST, "/v1/sandboxes/api/exec/stream")
        .header("content-type", "application/json")
        .body(json!({"command": ["sh", "-c", "echo up; exec sleep 308"]}).to_string())
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().expect("first event");
    assert!(String::from_utf8_lossy(&first).contains("up"));
    let running = api.sh("api", &count_script("sleep 308")).await;
    assert_eq!(running.trim(), "1");
    drop(response);
    assert!(
        api.until_none_run("api", "sleep 308").await,
        "the abandoned stream's process was killed"
    );

    // Files.
    let written = api
        .request(
            Method::PUT,
            "/v1/sandboxes/api/files/content?path=/tmp/note&mode=600",
        )
        .body(b"from the api\0\xff".to_vec())
        .send()
        .await
        .unwrap();
    let (status, body) = answer(written).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"bytes_written": 14}))
    );
    let read = api
        .request(
            Method::GET,
            "/v1/sandboxes/api/files/content?path=/tmp/note",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().await.unwrap().as_ref(), b"from the api\0\xff");
    let (status, stat) = api.get("/v1/sandboxes/api/files/stat?path=/tmp/note").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            &stat["kind"],
            &stat["size"],
            stat["mode"].as_u64().unwrap() & 0o777
        ),
        (&json!("file"), &json!(14), 0o600)
    );
    let (status, _) = api
        .post(
            "/v1/sandboxes/api/files/mkdir",
            json!({"path": "/tmp/d/e", "parents": true}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, exists) = api
        .post("/v1/sandboxes/api/files/mkdir", json!({"path": "/tmp/d/e"}))
        .await;
    assert_eq!(
        (status, error_code(&exists)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, listed) = api.get("/v1/sandboxes/api/files/list?path=/tmp").await;
    assert_eq!(status, StatusCode::OK);
    let names = names_in(&listed);
    assert!(names.contains(&"note") && names.contains(&"d"), "{names:?}");
    let (status, not_empty) = api.delete("/v1/sandboxes/api/files?path=/tmp/d").await;
    assert_eq!(
        (status, error_code(&not_empty)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, _) = api
        .delete("/v1/sandboxes/api/files?path=/tmp/d&recursive=true")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/v1/sandboxes/api/files/stat?path=/tmp/d").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .get("/v1/sandboxes/api/files/content?path=/tmp/none")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Malformed requests: 4xx with the error body, and nothing written.
    let bad_requests = [
        (
            "/v1/sandboxes/api/files/content?path=/tmp/../tmp/escape",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/sandboxes/api/files/content?path=tmp/relative",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/sandboxes/api/files/content?path=/tmp/x&mode=999",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/sandboxes/api/files/content?path=/tmp/x&typo=1",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/sandboxes/api/files/content", StatusCode::BAD_REQUEST),
    ];
    for (path, expected) in bad_requests {
        let response = api
            .request(Method::PUT, path)
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, body) = answer(response).await;
        assert_eq!(status, expected, "{path}: {body}");
        error_code(&body);
    }
    assert_eq!(
        api.sh("api", "ls /tmp/escape /tmp/x 2>/dev/null | wc -l")
            .await
            .trim(),
        "0"
    );
    for (body, expected) in [
        (
            "{\"command\": [\"true\"], \"comand\": 1}",
            StatusCode::BAD_REQUEST,
        ),
        ("{\"command\": ", StatusCode::BAD_REQUEST),
        ("{\"command\": \"true\"}", StatusCode::BAD_REQUEST),
        ("{\"command\": []}", StatusCode::BAD_REQUEST),
        (
            "{\"command\": [\"true\"], \"timeout_secs\": 0}",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let response = api
            .request(Method::POST, "/v1/sandboxes/api/exec")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, answer) = answer(response).await;
        assert_eq!(status, expected, "{body}: {answer}");
        error_code(&answer);
    }
    let unsupported = api
        .request(Method::POST, "/v1/sandboxes/api/exec")
        .body("{\"command\": [\"true\"]}")
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A client of its own: the server answers 413 without reading the rest, then closes the
    // connection, which a pooled client could otherwise pick for the next request.
    let huge = server
        .client(Some(&key))
        .request(Method::POST, "/v1/sandboxes")
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    let (status, body) = answer(huge).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    for network in [
        json!({"mode": "none", "egress": "deny_all"}),
        json!({"egress": "allow_list"}),
        json!({"egress": "deny_all", "allow": ["10.0.0.1"]}),
        json!({"publish": ["not-a-port"]}),
        json!({"allow": ["10.1.2.3/8"], "egress": "allow_list"}),
    ] {
        let (status, body) = api
            .post("/v1/sandboxes", json!({"network": network, "start": false}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{network}: {body}");
    }
    let (_, all) = api.get("/v1/sandboxes").await;
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "refused creates made nothing: {all}"
    );

    // Metrics: the running sandbox, the requests above by their matched routes.
    let (status, metrics) = api.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().expect("exposition text");
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{series}` in:\n{metrics}"))
    };
    assert_eq!(value("hearth_sandboxes{state=\"running\"}"), 1.0);
    assert_eq!(value("hearth_sandboxes{state=\"failed\"}"), 0.0);
    assert!(value("hearth_api_operation_duration_seconds_count{operation=\"exec\"}") >= 5.0);
    assert!(value("hearth_api_operation_duration_seconds_count{operation=\"start\"}") >= 1.0);
    assert!(value("hearth_api_errors_total{status=\"404\"}") >= 9.0);
    assert!(value("hearth_api_errors_total{status=\"409\"}") >= 2.0);
    assert!(
        metrics.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );

    // The end: delete refuses a live sandbox, stop ends it, then delete removes it.
    let (status, busy) = api.delete("/v1/sandboxes/api").await;
    assert_eq!(
        (status, error_code(&busy)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, stopped) = api
        .post("/v1/sandboxes/api/stop?grace_secs=5", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["state"], "exited");
    let (status, not_running) = api.get("/v1/sandboxes/api/files/stat?path=/").await;
    assert_eq!(
        (status, error_code(&not_running)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, _) = api.delete("/v1/sandboxes/api").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/v1/sandboxes/api").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert!(server.stop().success(), "a graceful shutdown exits 0");
    host.assert_clean();
}

/// A restarted server sees the sandbox the last one made and can still use it; sandboxes made
/// by the CLI show in the API's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_restart_keeps_detached_sandboxes_usable() {
    let host = host();
    let first = ApiServer::start(&host, &[]);
    let key = first.new_key.clone().expect("new key");
    let (status, created) = first
        .client(Some(&key))
        .post(
            "/v1/sandboxes",
            json!({"name": "keep", "network": {"mode": "none"}, "labels": {"origin": "api"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["labels"], json!({"origin": "api"}));
    assert_eq!(created["expires_at"], Value::Null);
    assert!(first.stop().success());
    assert!(
        hearth_ok(&host, &["ls"]).contains("keep"),
        "the sandbox outlives the server"
    );
    hearth_ok(
        &host,
        &[
            "create",
            "--name",
            "from-cli",
            "--network",
            "none",
            "--label",
            "origin=cli",
        ],
    );
    let by_cli = hearth_ok(&host, &["ls", "-a", "--label", "origin=cli"]);
    assert!(
        by_cli.contains("from-cli") && !by_cli.contains("keep"),
        "{by_cli}"
    );

    let second = ApiServer::start(&host, &[]);
    assert_eq!(second.new_key, None, "the key is shown only once");
    let api = second.client(Some(&key));
    assert_eq!(api.sh("keep", "echo still here").await, "still here\n");
    let (_, listed) = api.get("/v1/sandboxes").await;
    let mut names = names_in(&listed);
    names.sort_unstable();
    assert_eq!(names, ["from-cli", "keep"]);
    for (selector, expected) in [
        ("origin=cli", vec!["from-cli"]),
        ("origin=api", vec!["keep"]),
        ("origin=nobody", vec![]),
        ("other", vec![]),
    ] {
        let (_, listed) = api.get(&format!("/v1/sandboxes?label={selector}")).await;
        assert_eq!(names_in(&listed), expected, "label {selector}");
    }
    let (status, bad) = api
        .post(
            "/v1/sandboxes",
            json!({"labels": {"bad key": "x"}, "start": false}),
        )
        .await;
    assert_eq!(
        (status, error_code(&bad)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );

    // A timeout set on a running sandbox stops it; none can be set on one that is not running.
    let (status, refused) = api
        .post(
            "/v1/sandboxes/from-cli/timeout",
            json!({"timeout_secs": 60}),
        )
        .await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::CONFLICT, "conflict")
    );
    for bad in [
        json!({"timeout_secs": 0}),
        json!({"timeout_secs": 99_999_999}),
    ] {
        let (status, body) = api.post("/v1/sandboxes/keep/timeout", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = api
        .post("/v1/sandboxes/nope/timeout", json!({"timeout_secs": 60}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (status, extended) = api
        .post("/v1/sandboxes/keep/timeout", json!({"timeout_secs": 3600}))
        .await;
    assert_eq!(status, StatusCode::OK, "{extended}");
    let expires_at = extended["expires_at"].as_i64().expect("an expiry");
    assert!(
        (before + 3600..=before + 3700).contains(&expires_at),
        "{extended}"
    );
    let (status, _) = api
        .post("/v1/sandboxes/keep/timeout", json!({"timeout_secs": 1}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut ended = Value::Null;
    for _ in 0..300 {
        ended = api.get("/v1/sandboxes/keep").await.1;
        if ended["state"] == "exited" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        ended["state"], "exited",
        "the shortened timeout stopped it: {ended}"
    );
    assert!(
        ended["error"].as_str().unwrap_or("").contains("timeout"),
        "{ended}"
    );
    assert_eq!(ended["expires_at"], Value::Null);
    let (status, _) = api.delete("/v1/sandboxes/keep").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.delete("/v1/sandboxes/from-cli?force=true").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    drop(second);
    host.assert_clean();
}

/// Snapshots through the API: save a running sandbox, list and get the record, start a new
/// sandbox from it that sees the saved file, refuse what cannot work, remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_snapshot_create_list_restore_and_remove() {
    let host = host();
    let server = ApiServer::start(&host, &[]);
    let api = server.client(server.new_key.as_deref());
    let none = json!({"mode": "none"});
    let (status, created) = api
        .post("/v1/sandboxes", json!({"name": "orig", "network": none}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        api.sh("orig", "echo saved > /tmp/mark; echo ok").await,
        "ok\n"
    );

    let (status, snap) = api
        .post("/v1/sandboxes/orig/snapshots", json!({"name": "snap1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{snap}");
    assert_eq!(
        (snap["name"].as_str(), snap["sandbox_name"].as_str()),
        (Some("snap1"), Some("orig"))
    );
    assert_eq!(snap["network"], json!(false));
    assert_eq!(
        api.sh("orig", "cat /tmp/mark").await,
        "saved\n",
        "the sandbox resumed"
    );

    let (status, listed) = api.get("/v1/snapshots").await;
    assert_eq!(status, StatusCode::OK);
    let names = names_in(&listed);
    assert_eq!(names, ["snap1"]);
    let (status, one) = api.get("/v1/snapshots/snap1").await;
    assert_eq!(
        (status, one["name"].as_str()),
        (StatusCode::OK, Some("snap1"))
    );
    let (status, missing) = api.get("/v1/snapshots/nope").await;
    assert_eq!(
        (status, error_code(&missing)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, missing) = api.post("/v1/sandboxes/nope/snapshots", json!({})).await;
    assert_eq!(
        (status, error_code(&missing)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, bad) = api
        .post(
            "/v1/sandboxes/orig/snapshots",
            json!({"name": "x", "bogus": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    let (status, clone) = api
        .post(
            "/v1/sandboxes",
            json!({"name": "clone", "from_snapshot": "snap1", "network": none}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{clone}");
    assert_eq!(api.sh("clone", "cat /tmp/mark").await, "saved\n");
    assert_ne!(
        api.sh("clone", "hostname").await,
        api.sh("orig", "hostname").await
    );

    let (status, _) = api.post("/v1/sandboxes/orig/kill", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ended) = api
        .post("/v1/sandboxes/orig/snapshots", json!({"name": "snap2"}))
        .await;
    assert_eq!(
        (status, error_code(&ended)),
        (StatusCode::CONFLICT, "conflict"),
        "{ended}"
    );

    for sandbox in ["clone", "orig"] {
        let (status, _) = api
            .delete(&format!("/v1/sandboxes/{sandbox}?force=true"))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, _) = api.delete("/v1/snapshots/snap1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/v1/snapshots/snap1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(server);
    host.assert_clean();
}

/// No key or a wrong one: 401 with the error body, and nothing done. No VM boots here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_refuses_requests_without_a_valid_key() {
    let host = host();
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "first-key\nsecond-key\n").unwrap();
    let socket = host.state_dir().join("api.sock");
    let server = ApiServer::start(
        &host,
        &[
            "--api-key-file",
            keys.path().to_str().unwrap(),
            "--unix",
            socket.to_str().unwrap(),
        ],
    );
    assert_eq!(server.new_key, None, "keys from the file, none made");
    for key in [None, Some("wrong-key"), Some("")] {
        let api = server.client(key);
        for (method, path) in [
            (Method::POST, "/v1/sandboxes"),
            (Method::GET, "/v1/sandboxes"),
            (Method::GET, "/v1/version"),
            (Method::GET, "/v1/openapi.json"),
            (Method::DELETE, "/v1/sandboxes/x"),
            (Method::POST, "/v1/images/pull"),
            (Method::GET, "/metrics"),
        ] {
            let (status, body) = api
                .call(method.clone(), path, json!({"name": "sneaky"}))
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {key:?}"
            );
            assert_eq!(error_code(&body), "unauthorized");
        }
    }
    assert_eq!(
        hearth_ok(&host, &["ls", "-a", "--json"]).trim(),
        "[]",
        "nothing was made"
    );
    for key in ["first-key", "second-key"] {
        let (status, _) = server.client(Some(key)).get("/v1/sandboxes").await;
        assert_eq!(status, StatusCode::OK, "{key}");
    }

    // The Unix socket serves the same routes behind the same keys.
    let unauthorized = unix_get(&socket, "/v1/sandboxes", None).await;
    assert!(unauthorized.starts_with("HTTP/1.1 401"), "{unauthorized}");
    let listed = unix_get(&socket, "/v1/sandboxes", Some("first-key")).await;
    assert!(
        listed.starts_with("HTTP/1.1 200") && listed.ends_with("[]"),
        "{listed}"
    );
    assert!(server.stop().success());
    assert!(!socket.exists(), "the socket goes with the server");

    // Without keys only loopback is allowed.
    let refused = host
        .hearth()
        .args(["serve", "--no-auth", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_ne!(code(&refused), 0);
    assert!(
        stderr(&refused).contains("without API keys"),
        "{}",
        stderr(&refused)
    );
}

/// `GET path` over the Unix socket, by hand: the whole answer.
async fn unix_get(socket: &std::path::Path, path: &str, key: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let auth = key.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    let request = format!("GET {path} HTTP/1.1\r\nHost: hearth\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// Pull, list and remove an image from a registry on 127.0.0.1; the OpenAPI document lists
/// every route. No VM boots here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_images_and_openapi() {
    let host = host();
    let registry = LocalRegistry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    TestImage::new(TestConfig {
        cmd: vec!["/hello".into()],
        ..TestConfig::default()
    })
    .layer(&[Entry::file("hello", "hi")], Compression::Gzip)
    .unwrap()
    .write_layout(layout.path(), "1")
    .unwrap();
    registry.push_layout(layout.path(), "1", "small").unwrap();
    let reference = format!("{}/small:1", registry.host());

    let server = ApiServer::start(&host, &[]);
    let api = server.client(server.new_key.as_deref());
    let (status, pulled) = api
        .post("/v1/images/pull", json!({"reference": reference}))
        .await;
    assert_eq!(status, StatusCode::OK, "{pulled}");
    assert!(pulled["id"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(pulled["names"], json!([reference]));
    let (_, images) = api.get("/v1/images").await;
    assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
    let (status, missing) = api
        .post(
            "/v1/images/pull",
            json!({"reference": format!("{}/none:1", registry.host())}),
        )
        .await;
    assert_eq!(
        (status, error_code(&missing)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, bad) = api
        .post("/v1/images/pull", json!({"reference": "UPPER/case"}))
        .await;
    assert_eq!(
        (status, error_code(&bad)),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    let (status, _) = api.delete(&format!("/v1/images/{reference}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.delete(&format!("/v1/images/{reference}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, images) = api.get("/v1/images").await;
    assert_eq!(images, json!([]));

    let (status, doc) = api.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/health",
        "/v1/version",
        "/v1/sandboxes",
        "/v1/sandboxes/{sandbox}",
        "/v1/sandboxes/{sandbox}/exec",
        "/v1/sandboxes/{sandbox}/exec/stream",
        "/v1/sandboxes/{sandbox}/files/content",
        "/v1/images/pull",
        "/v1/images/{name}",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the document");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

mod concurrency;
mod generated_client;
mod mcp;
mod sdks;
mod terminal;
