//! The MCP tools through the official MCP Python SDK (from PyPI), over both transports, each
//! against a real VM: `hearth mcp` on stdio, and `/mcp` under `hearth serve` behind its key.

use std::process::Command;

use hearth_test_support::python;

use super::ApiServer;
use crate::{code, host, stderr, stdout, HEARTH};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/api/mcp_client.py");

fn python(args: &[&str], host: &hearth_test_support::host::TestHost) -> String {
    let bin = python::venv_bin(std::path::Path::new(HEARTH));
    // The state dir and DNS settings every hearth command of this test gets.
    let reference = host.hearth();
    let mut command = Command::new(bin.join("python"));
    command.arg(SCRIPT).args(args);
    for (key, value) in reference.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let output = command.output().expect("python runs");
    assert_eq!(
        code(&output),
        0,
        "mcp_client.py {args:?}:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

#[test]
fn test_mcp_tools_over_stdio_with_the_python_sdk() {
    let host = host();
    assert_eq!(python(&["stdio", HEARTH], &host).trim(), "ok");
    host.assert_clean();
}

#[test]
fn test_mcp_tools_over_streamable_http_with_the_python_sdk() {
    let host = host();
    let server = ApiServer::start(&host, &[]);
    let key = server.new_key.clone().expect("new key");
    let url = format!("{}/mcp", server.url);
    assert_eq!(python(&["http", &url, &key], &host).trim(), "ok");
    assert!(server.stop().success(), "a graceful shutdown exits 0");
    host.assert_clean();
}
