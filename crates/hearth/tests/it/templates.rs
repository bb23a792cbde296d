//! Warm starts: the first start of a machine is saved as its template; later starts resume it
//! and run exactly what a cold start runs. `--cold`, `template ls/rm/prune`.

use std::process::Output;

use hearth_test_support::host::TestHost;

use crate::{code, host, ok, stderr, stdout};

/// `hearth run ARGS` with the engine's log on stderr, which says whether it resumed a template.
fn run_logged(host: &TestHost, args: &[&str]) -> Output {
    let output = host
        .hearth()
        .env("HEARTH_LOG", "hearth_engine=info")
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "hearth run {args:?}: {}", stderr(&output));
    output
}

fn resumed_template(output: &Output) -> bool {
    stderr(output).contains("snapshot=Some(\"template t-")
}

fn templates(host: &TestHost) -> Vec<serde_json::Value> {
    let listed = ok(host, &["template", "ls", "--json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&listed).unwrap()
}

#[test]
fn test_warm_starts_run_what_cold_starts_run() {
    let host = host();
    let what = [
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "env | grep -v '^HOSTNAME=' | sort; id; pwd; echo host=$(hostname)",
    ];
    let split = |output: &Output| {
        let text = stdout(output);
        let (rest, hostname) = text.trim_end().rsplit_once('\n').unwrap();
        (rest.to_owned(), hostname.to_owned())
    };

    let first = run_logged(&host, &what);
    assert!(!resumed_template(&first), "nothing to resume yet");
    let made = templates(&host);
    assert_eq!(made.len(), 1, "the first start made a template: {made:?}");
    assert_eq!(made[0]["network"], false);
    assert_eq!(made[0]["image"], "default");

    let warm = run_logged(&host, &what);
    assert!(resumed_template(&warm), "{}", stderr(&warm));
    let cold = run_logged(&host, &[&["--cold"], &what[..]].concat());
    assert!(!resumed_template(&cold));
    assert_eq!(templates(&host).len(), 1, "--cold makes no template");

    let (first, first_host) = split(&first);
    let (warm, warm_host) = split(&warm);
    let (cold, cold_host) = split(&cold);
    assert!(
        first.contains("GREETING=hi") && first.contains("uid=1000"),
        "{first}"
    );
    assert!(first.ends_with("/tmp"), "{first}");
    assert_eq!(warm, first, "a warm start runs what a cold one runs");
    assert_eq!(cold, first);
    assert!(
        first_host != warm_host && warm_host != cold_host,
        "each its own hostname"
    );

    // Another machine shape is another template.
    run_logged(
        &host,
        &["--network", "none", "--memory", "256M", "--", "true"],
    );
    assert_eq!(templates(&host).len(), 2);

    // Pruning keeps what still resumes; removing one makes the next start boot cold again.
    assert_eq!(ok(&host, &["template", "prune"]), "");
    let name = made[0]["name"].as_str().unwrap().to_owned();
    assert_eq!(ok(&host, &["template", "rm", &name]).trim(), name);
    let again = run_logged(&host, &what);
    assert!(!resumed_template(&again));
    assert_eq!(templates(&host).len(), 2, "and makes it again");
    host.assert_clean();
}

/// A detached sandbox resumed from a template has its own network, DNS and identity.
#[test]
fn test_warm_detached_sandboxes_get_their_own_network() {
    let host = host();
    ok(&host, &["run", "-d", "--name", "first"]);
    assert_eq!(templates(&host).len(), 1);
    ok(&host, &["run", "-d", "--name", "second"]);
    let resolv = ok(&host, &["exec", "second", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver"), "{resolv}");
    let route = ok(&host, &["exec", "second", "--", "ip", "route"]);
    assert!(route.contains("default via"), "{route}");
    let second_id = ok(&host, &["inspect", "second"]);
    let hostname = ok(&host, &["exec", "second", "--", "hostname"]);
    assert!(
        second_id.contains(hostname.trim()),
        "hostname is the sandbox id"
    );
    ok(&host, &["rm", "-f", "first", "second"]);
    host.assert_clean();
}
