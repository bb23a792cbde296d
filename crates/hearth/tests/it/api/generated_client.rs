//! The OpenAPI document is valid (openapi-spec-validator), and a Python client generated from
//! it (openapi-python-client, both from PyPI) performs create -> exec -> delete on a real VM.

use std::process::Command;

use hearth_test_support::python;
use reqwest::StatusCode;

use super::ApiServer;
use crate::{code, host, stderr, stdout, HEARTH};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/api/generated_client.py"
);

fn run(command: &mut Command) -> String {
    let output = command.output().expect("the Python tool runs");
    assert_eq!(
        code(&output),
        0,
        "{command:?}:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_api_openapi_document_validates_and_a_generated_client_works() {
    let bin = python::venv_bin(std::path::Path::new(HEARTH));
    let host = host();
    let server = ApiServer::start(&host, &[]);
    let key = server.new_key.clone().expect("new key");
    let document = reqwest::Client::new()
        .get(format!("{}/v1/openapi.json", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(document.status(), StatusCode::OK);
    let work = tempfile::tempdir().unwrap();
    let spec = work.path().join("openapi.json");
    std::fs::write(&spec, document.bytes().await.unwrap()).unwrap();

    let validated = run(Command::new(bin.join("openapi-spec-validator")).arg(&spec));
    assert!(validated.contains("OK"), "{validated}");
    run(Command::new(bin.join("openapi-python-client"))
        .args(["generate", "--meta", "none", "--path"])
        .arg(&spec)
        .arg("--output-path")
        .arg(work.path().join("hearth_client")));
    let said = run(Command::new(bin.join("python"))
        .arg(SCRIPT)
        .arg(&server.url)
        .arg(&key)
        .arg(work.path()));
    assert_eq!(said.trim(), "ok");
    drop(server);
    host.assert_clean();
}
