//! Other projects' SDKs, unmodified, against `hearth serve` and real VMs: the E2B SDKs from
//! PyPI and npm (`e2b_client.py` drives commands, PTYs, files, the code interpreter, metrics,
//! pause and resume and the control plane; `e2b_client.mjs` the JS core flow) on `--e2b-listen`, and ComputeSDK from
//! npm (`computesdk_client.mjs`) on `--computesdk-listen`. One server and one pair of images
//! serve them all.

use std::io::BufRead;
use std::process::Command;

use hearth_test_support::host_files::bash_and_python_entries;
use hearth_test_support::oci_layout::{busybox_entries, Compression, TestConfig, TestImage};
use hearth_test_support::registry::LocalRegistry;
use hearth_test_support::{node, python};

use super::ApiServer;
use crate::{code, host, stderr, stdout, HEARTH};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/api/e2b_client.py");
const JS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/api/e2b_client.mjs");
const COMPUTESDK_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/api/computesdk_client.mjs"
);

#[test]
fn test_the_e2b_sdks_and_computesdk_drive_sandboxes_unmodified() {
    let host = host();
    let registry = LocalRegistry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let busybox = TestImage::new(TestConfig::default())
        .layer(&busybox_entries().unwrap(), Compression::Gzip)
        .unwrap();
    busybox.write_layout(layout.path(), "1").unwrap();
    registry.push_layout(layout.path(), "1", "busybox").unwrap();
    let layout = tempfile::tempdir().unwrap();
    TestImage::new(TestConfig::default())
        .layer(&busybox_entries().unwrap(), Compression::Gzip)
        .unwrap()
        .layer(&bash_and_python_entries().unwrap(), Compression::Zstd)
        .unwrap()
        .write_layout(layout.path(), "1")
        .unwrap();
    registry.push_layout(layout.path(), "1", "python").unwrap();
    let python_image = format!("{}/python:1", registry.host());
    let busybox_image = format!("{}/busybox:1", registry.host());

    let template = format!("code-interpreter-v1={python_image}");
    let mut server = ApiServer::start(
        &host,
        &[
            "--e2b-listen",
            "127.0.0.1:0",
            "--e2b-template",
            &template,
            "--computesdk-listen",
            "127.0.0.1:0",
        ],
    );
    let key = server.new_key.clone().expect("a new key");
    let e2b_url = listener_url(&mut server, "e2b");
    let computesdk_url = listener_url(&mut server, "computesdk");

    let bin = python::venv_bin(std::path::Path::new(HEARTH));
    let mut python = Command::new(bin.join("python"));
    python.arg(SCRIPT).arg(&busybox_image);
    sdk_passes("e2b_client.py", &mut python, &e2b_url, &key);
    // Node resolves `e2b` from the script's own directory up, so the script goes beside the
    // node_modules it needs.
    let modules = node::modules_dir(std::path::Path::new(HEARTH));
    let script = modules.join("e2b_client.mjs");
    std::fs::copy(JS_SCRIPT, &script).unwrap();
    let mut node = Command::new("node");
    node.arg(&script).arg(&python_image);
    sdk_passes("e2b_client.mjs", &mut node, &e2b_url, &key);

    let script = modules.join("computesdk_client.mjs");
    std::fs::copy(COMPUTESDK_SCRIPT, &script).unwrap();
    // ComputeSDK wants a global WebSocket, which Node 20 has only behind this flag.
    let mut node = Command::new("node");
    node.arg("--experimental-websocket")
        .arg(&script)
        .arg(&python_image)
        .env("COMPUTESDK_API_KEY", &key)
        .env("COMPUTESDK_TRIBUTARY_URL", &computesdk_url)
        .env("COMPUTESDK_PROVIDER", "computesdk");
    sdk_passes("computesdk_client.mjs", &mut node, &e2b_url, &key);

    let listed = host.hearth().args(["ps", "-a", "-q"]).output().unwrap();
    assert_eq!(stdout(&listed).trim(), "", "killed sandboxes are removed");
    let snapshots = host
        .hearth()
        .args(["snapshot", "ls", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&snapshots).trim(),
        "[]",
        "resumed and killed sandboxes leave no snapshot"
    );
    let paused = std::fs::read_dir(host.state_dir().join("api/e2b-paused"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(paused, 0, "nor a paused-sandbox record");
    assert!(server.stop().success(), "a graceful shutdown exits 0");
    host.assert_clean();
}

/// The URL `hearth serve` printed for its `protocol` listener (printed in a fixed order).
fn listener_url(server: &mut ApiServer, protocol: &str) -> String {
    let mut line = String::new();
    server._stdout.read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix(&format!("{protocol} listening on "))
        .unwrap_or_else(|| panic!("no {protocol} listener line, got {line:?}"))
        .to_owned()
}

/// Runs an SDK script against the E2B listener; it must print "ok" last and exit 0.
fn sdk_passes(name: &str, command: &mut Command, url: &str, key: &str) {
    let output = command
        .env("E2B_API_URL", url)
        .env("E2B_SANDBOX_URL", url)
        .env("E2B_API_KEY", key)
        .env_remove("E2B_DEBUG")
        .output()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    assert_eq!(
        code(&output),
        0,
        "{name}:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(stdout(&output).lines().last(), Some("ok"), "{name}");
}
