//! The engine as a library: many execs on one VM, without leaks on either side.

use std::time::Duration;

use hearth_engine::{Engine, ExecEvent, ExecOutput, ExecRequest, ExitStatus, Sandbox};

use crate::host;

fn request(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..ExecRequest::default()
    }
}

async fn collect(mut output: ExecOutput) -> (Vec<u8>, ExitStatus) {
    let mut stdout = Vec::new();
    loop {
        match output.next().await.expect("exec stream") {
            Some(ExecEvent::Stdout(data)) => stdout.extend(data),
            Some(ExecEvent::Stderr(_)) => {}
            Some(ExecEvent::Exited(status)) => return (stdout, status),
            None => panic!("stream ended without exit status"),
        }
    }
}

async fn run(sandbox: &Sandbox, argv: &[&str]) -> (String, ExitStatus) {
    let (_pid, _input, output) = sandbox.exec(request(argv)).await.expect("exec");
    let (stdout, status) = collect(output).await;
    (String::from_utf8_lossy(&stdout).into_owned(), status)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Open fds of the agent and zombie processes in the guest, as one comparable line.
const GUEST_RESOURCES: &str = "echo fds=$(ls /proc/1/fd | wc -l) zombies=$(grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l)";

/// Other tests of this binary run in parallel threads and hold a few fds of their own at any
/// moment; a leak of one fd per exec would show as a growth of about 1000.
const HOST_FD_NOISE: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_thousand_rapid_execs_on_one_vm_leak_nothing() {
    let host = host();
    let engine = Engine::detect(hearth_engine::paths::StateDir::new(host.state_dir()))
        .expect("engine for this host");
    let sandbox = engine.boot(&engine.default_config()).await.expect("boot");
    sandbox.ping().await.expect("ping");

    let (before, _) = run(&sandbox, &["sh", "-c", GUEST_RESOURCES]).await;
    let host_fds_before = open_fds();
    for i in 0..1000 {
        let (out, status) = run(&sandbox, &["echo", &i.to_string()]).await;
        assert_eq!(status, ExitStatus::Code(0));
        assert_eq!(out, format!("{i}\n"));
    }
    let (after, _) = run(&sandbox, &["sh", "-c", GUEST_RESOURCES]).await;
    assert_eq!(before, after, "guest resources grew over 1000 execs");
    let host_fds_after = open_fds();
    assert!(
        host_fds_after < host_fds_before + HOST_FD_NOISE,
        "host fds grew from {host_fds_before} to {host_fds_after} over 1000 execs"
    );

    let exit = tokio::time::timeout(Duration::from_secs(30), sandbox.shutdown())
        .await
        .expect("shutdown in time");
    assert_eq!(
        exit,
        hearth_engine::VmExit::Exited(Some(0)),
        "clean power-off"
    );
    host.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_concurrent_execs_and_early_input_drop_on_one_vm() {
    let host = host();
    let engine = Engine::detect(hearth_engine::paths::StateDir::new(host.state_dir()))
        .expect("engine for this host");
    let sandbox = engine.boot(&engine.default_config()).await.expect("boot");
    let runs = (0..8).map(|i| {
        let sandbox = &sandbox;
        async move { run(sandbox, &["sh", "-c", &format!("sleep 0.2; echo {i}")]).await }
    });
    let results = futures::future::join_all(runs).await;
    for (i, (out, status)) in results.into_iter().enumerate() {
        assert_eq!(status, ExitStatus::Code(0));
        assert_eq!(out, format!("{i}\n"));
    }

    // Dropping the input half early must not cut off the output still to come.
    let (_pid, input, output) = sandbox
        .exec(request(&["sh", "-c", "sleep 0.3; echo late"]))
        .await
        .expect("exec");
    drop(input);
    let (stdout, status) = collect(output).await;
    assert_eq!((stdout, status), (b"late\n".to_vec(), ExitStatus::Code(0)));

    sandbox.kill().await;
    host.assert_clean();
}
