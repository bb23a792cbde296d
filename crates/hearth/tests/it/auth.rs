//! Registry credentials: a real `docker-registry` with htpasswd auth on 127.0.0.1, `hearth
//! login`/`logout` writing docker's config.json, and pulls that use what it holds.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use hearth_test_support::host::TestHost;
use hearth_test_support::oci_layout::{busybox_entries, Compression, TestConfig, TestImage};
use hearth_test_support::pty::PtySession;
use hearth_test_support::registry::LocalRegistry;
use hearth_test_support::token_server::TokenServer;

use crate::{code, host, stderr, stdout};

const USER: &str = "tester";
const PASSWORD: &str = "s3cret:with-colon";
/// Patience for one interactive step (TCG machines under load are slow, not stuck).
const STEP: std::time::Duration = std::time::Duration::from_secs(30);

/// An htpasswd registry holding `private:1`, whose default process prints a marker.
fn private_registry() -> (LocalRegistry, String) {
    let registry = LocalRegistry::start_with_auth(USER, PASSWORD).unwrap();
    let reference = push_private(&registry);
    (registry, reference)
}

/// Pushes `private:1` to `registry`; its reference.
fn push_private(registry: &LocalRegistry) -> String {
    let image = TestImage::new(TestConfig {
        cmd: vec!["echo".into(), "private image ran".into()],
        ..TestConfig::default()
    })
    .layer(&busybox_entries().unwrap(), Compression::Gzip)
    .unwrap();
    let layout = tempfile::tempdir().unwrap();
    image.write_layout(layout.path(), "1").unwrap();
    registry.push_layout(layout.path(), "1", "private").unwrap();
    format!("{}/private:1", registry.host())
}

/// `hearth login -u USER --password-stdin REGISTRY` with `password`.
fn login(mut hearth: Command, registry: &LocalRegistry, password: &str) -> Output {
    hearth.args(["login", "-u", USER, "--password-stdin", &registry.host()]);
    with_stdin(hearth, &format!("{password}\n"))
}

/// Runs `command` with `input` on its stdin.
fn with_stdin(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A `hearth` command of `host` that finds docker's config in `dir`.
fn with_docker_config(host: &TestHost, dir: &Path) -> Command {
    let mut command = host.hearth();
    command.env("DOCKER_CONFIG", dir);
    command
}

fn read_config(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn test_login_pull_run_logout_against_an_htpasswd_registry() {
    let (registry, image) = private_registry();
    let docker = tempfile::tempdir().unwrap();
    // A key hearth does not know, which login must keep.
    std::fs::write(
        docker.path().join("config.json"),
        r#"{"psFormat": "table {{.ID}}"}"#,
    )
    .unwrap();
    let host = host();
    let hearth = || with_docker_config(&host, docker.path());

    // No credentials: refused, with the registry's own words, exit status 1 as docker.
    let output = hearth().args(["pull", &image]).output().unwrap();
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("refused access"), "{text}");
    assert!(text.contains("authentication required"), "{text}");

    // A wrong password: refused at login, nothing saved.
    let output = login(hearth(), &registry, "wrong");
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("refused the credentials of `{USER}`")),
        "{}",
        stderr(&output)
    );
    assert!(read_config(docker.path())["auths"].is_null());

    // The right one, typed at the terminal's prompt without echo: verified, saved 0600 in
    // docker's format beside the other keys.
    let mut command = portable_pty::CommandBuilder::new(crate::HEARTH);
    command.env("HEARTH_STATE_DIR", host.state_dir());
    command.env("DOCKER_CONFIG", docker.path());
    command.args(["login", &registry.host()]);
    let mut session = PtySession::spawn(command, 24, 100).unwrap();
    session.expect("Username: ", STEP).unwrap();
    session.send(&format!("{USER}\r")).unwrap();
    session.expect("Password: ", STEP).unwrap();
    session.send(&format!("{PASSWORD}\r")).unwrap();
    assert_eq!(session.wait(STEP).unwrap(), 0, "{}", session.screen());
    assert!(
        session.screen().contains("Login Succeeded"),
        "{}",
        session.screen()
    );
    // The terminal echoes what is typed, except the password.
    assert!(
        session.screen().contains(&format!("Username: {USER}")),
        "{}",
        session.screen()
    );
    assert!(
        !session.screen().contains(PASSWORD),
        "the password was echoed: {}",
        session.screen()
    );
    let config = read_config(docker.path());
    assert_eq!(config["psFormat"], "table {{.ID}}");
    let auth = config["auths"][registry.host()]["auth"].as_str().unwrap();
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(auth.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(stdout(&decoded), format!("{USER}:{PASSWORD}"));
    let mode = std::fs::metadata(docker.path().join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Ctrl-C at the password prompt ends the login (exit 1, nothing saved) and leaves the
    // terminal as it was: echo, line editing and signals back on.
    let mut command = portable_pty::CommandBuilder::new("sh");
    command.env("HEARTH_STATE_DIR", host.state_dir());
    command.env("DOCKER_CONFIG", docker.path());
    let script = format!(
        "{} login -u other {}; echo status=$?; stty -a",
        crate::HEARTH,
        registry.host()
    );
    command.args(["-c", &script]);
    let mut session = PtySession::spawn(command, 24, 200).unwrap();
    session.expect("Password: ", STEP).unwrap();
    session.send("half-typed\u{3}").unwrap();
    session.expect("status=1", STEP).unwrap();
    assert_eq!(session.wait(STEP).unwrap(), 0, "{}", session.screen());
    let screen = session.screen();
    let flags: Vec<&str> = screen.split_whitespace().collect();
    for flag in ["echo", "icanon", "isig"] {
        assert!(flags.contains(&flag), "`{flag}` not restored: {screen}");
    }
    assert!(
        read_config(docker.path())["auths"]
            .get(registry.host())
            .is_some()
            && !screen.contains("half-typed"),
        "{screen}"
    );

    // Pull and boot with the saved credentials.
    let output = hearth().args(["run", &image]).output().unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "private image ran\n");

    // Logout forgets them: the registry refuses again (a pull always asks for the manifest).
    let output = hearth()
        .args(["logout", &registry.host()])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert!(read_config(docker.path())["auths"]
        .get(registry.host())
        .is_none());
    assert_eq!(read_config(docker.path())["psFormat"], "table {{.ID}}");
    let output = hearth().args(["pull", &image]).output().unwrap();
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    host.assert_clean();
}

#[test]
fn test_pull_uses_docker_config_entries_and_credential_helpers() {
    let (registry, image) = private_registry();

    // `username`/`password` fields in a config.json found through $DOCKER_CONFIG.
    let docker = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "auths": { registry.host(): { "username": USER, "password": PASSWORD } }
    });
    std::fs::write(docker.path().join("config.json"), config.to_string()).unwrap();
    let host = host();
    let output = with_docker_config(&host, docker.path())
        .args(["pull", "-q", &image])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).starts_with("sha256:"),
        "{}",
        stdout(&output)
    );

    // A credential helper named by `credHelpers`, speaking docker's helper protocol: `store`
    // gets the JSON on stdin, `get` and `erase` the registry. This one keeps one entry in a file.
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("docker-credential-hearthtest");
    let saved = bin.path().join("saved.json");
    let script = r#"not_found() { echo 'credentials not found in native keychain'; exit 1; }
case "$1" in
store) cat > "$SAVED" ;;
get) read server; grep -qF "\"ServerURL\":\"$server\"" "$SAVED" 2>/dev/null || not_found; cat "$SAVED" ;;
erase) read server; [ -f "$SAVED" ] || not_found; rm "$SAVED" ;;
*) exit 1 ;;
esac
"#;
    let script = format!("#!/bin/sh\nSAVED='{}'\n{script}", saved.display());
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helped = tempfile::tempdir().unwrap();
    let config = serde_json::json!({ "credHelpers": { registry.host(): "hearthtest" } });
    std::fs::write(helped.path().join("config.json"), config.to_string()).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let fresh = crate::host();
    let hearth = || {
        let mut command = with_docker_config(&fresh, helped.path());
        command.env("PATH", &path);
        command
    };
    let output = login(hearth(), &registry, PASSWORD);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(stored["Username"], USER);
    assert_eq!(stored["Secret"], PASSWORD);
    assert_eq!(
        read_config(helped.path()),
        config,
        "the password stays out of config.json"
    );
    let output = hearth().args(["pull", "-q", &image]).output().unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let output = hearth()
        .args(["logout", &registry.host()])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert!(!saved.exists(), "logout erased the helper's entry");
    let output = hearth().args(["pull", &image]).output().unwrap();
    assert_eq!(code(&output), 1, "anonymous again: {}", stderr(&output));

    // A helper that is not installed is named in the error.
    let config = serde_json::json!({ "credsStore": "hearth-absent" });
    std::fs::write(helped.path().join("config.json"), config.to_string()).unwrap();
    let output = fresh
        .hearth()
        .env("DOCKER_CONFIG", helped.path())
        .args(["pull", &image])
        .output()
        .unwrap();
    assert_eq!(code(&output), 1);
    assert!(
        stderr(&output).contains("docker-credential-hearth-absent"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn test_token_auth_registry_refuses_anonymous_and_wrong_password_then_pulls_after_login() {
    let tokens = TokenServer::start(USER, PASSWORD).unwrap();
    let registry = LocalRegistry::start_with_token_auth(&tokens, USER, PASSWORD).unwrap();
    let image = push_private(&registry);
    let docker = tempfile::tempdir().unwrap();
    let host = host();
    let hearth = || with_docker_config(&host, docker.path());

    // Anonymous: the token server hands out a token that grants nothing.
    let output = hearth().args(["pull", &image]).output().unwrap();
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).contains("refused access"),
        "{}",
        stderr(&output)
    );

    // A wrong password: the token server refuses it, with its reason.
    let output = login(hearth(), &registry, "wrong");
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).contains("invalid user name or password"),
        "{}",
        stderr(&output)
    );

    // Logged in: the Bearer token carries the pull.
    let output = login(hearth(), &registry, PASSWORD);
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let output = hearth().args(["pull", "-q", &image]).output().unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).starts_with("sha256:"),
        "{}",
        stdout(&output)
    );
}
