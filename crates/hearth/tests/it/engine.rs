//! The engine as a library, driven as a second client would drive it (no CLI in the loop):
//! the whole life of a detached sandbox, and many execs on one VM without leaks on either side.

use std::time::Duration;

use hearth_engine::paths::StateDir;
use hearth_engine::{
    DetachOptions, Engine, ErrorKind, ExecEvent, ExecOutput, ExecRequest, ExitStatus, LogKind,
    NoReporter, ProcessSpec, ReexecLauncher, Sandbox, SandboxSpec, SandboxState,
};
use hearth_test_support::host::TestHost;

use crate::{host, HEARTH};

/// An engine over the test host's state dir whose supervisors are the hearth binary under test.
fn engine(host: &TestHost) -> Engine {
    Engine::new(
        StateDir::new(host.state_dir()),
        Box::new(ReexecLauncher::new(HEARTH.into())),
    )
}

/// The built-in image with a network whose DNS forwarder asks nobody real.
fn spec() -> SandboxSpec {
    let mut spec = SandboxSpec::default();
    if let Some(network) = spec.network.as_mut() {
        network.dns_upstream = Some(hearth_test_support::host::NO_DNS_UPSTREAM.parse().unwrap());
    }
    spec
}

async fn booted(engine: &Engine) -> Sandbox {
    let spec = engine.resolve(spec(), &NoReporter).await.expect("resolve");
    engine.boot(&spec).await.expect("boot")
}

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
    let engine = engine(&host);
    let sandbox = booted(&engine).await;
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
    let engine = engine(&host);
    let sandbox = booted(&engine).await;
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

/// Every operation of a detached sandbox's life through `Engine` alone: create, start, exec,
/// file operations, copies both ways, logs, list, inspect, stop, start again, kill, wait and
/// remove, with the lifecycle's refusals on the way. (Image operations are driven through the
/// same `Engine` methods by `hearth pull`/`image` in `images.rs`, against a real registry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_engine_runs_a_detached_sandbox_through_its_whole_life() {
    let host = host();
    let engine = engine(&host);
    let spec = engine.resolve(spec(), &NoReporter).await.expect("resolve");
    let options = DetachOptions {
        name: Some("lifecycle".into()),
        ..DetachOptions::default()
    };

    let created = engine.create(&spec, &options).expect("create");
    assert_eq!(created.state, SandboxState::Created);
    assert!(created.backend.starts_with("qemu-"), "{}", created.backend);
    let refused = engine
        .exec("lifecycle", request(&["true"]))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    let taken = engine.create(&spec, &options).unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::Conflict, "{taken}");

    let started = engine.start("lifecycle").await.expect("start");
    assert_eq!(started.id, created.id);
    assert_eq!(started.state, SandboxState::Running);
    let again = engine.start(&created.id).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict, "{again}");

    let (_pid, _input, output) = engine
        .exec(
            "lifecycle",
            request(&["sh", "-c", "echo $((6 * 7)) > /tmp/answer; hostname"]),
        )
        .await
        .expect("exec");
    let (stdout, status) = collect(output).await;
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), created.id);

    let written = engine
        .write_file(
            "lifecycle",
            "/tmp/note",
            0o600,
            &mut &b"from the engine"[..],
        )
        .await
        .expect("write");
    assert_eq!(written, 15);
    let mut read = Vec::new();
    let stat = engine
        .read_file("lifecycle", "/tmp/answer", &mut read)
        .await
        .expect("read");
    assert_eq!((read.as_slice(), stat.size), (&b"42\n"[..], 3));
    let note = engine.stat("lifecycle", "/tmp/note").await.expect("stat");
    assert_eq!(note.mode & 0o777, 0o600);
    let missing = engine.stat("lifecycle", "/nope").await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let out = tempfile::tempdir().unwrap();
    engine
        .copy_out("lifecycle", "/tmp/note", &out.path().join("note"))
        .await
        .expect("copy out");
    assert_eq!(
        std::fs::read(out.path().join("note")).unwrap(),
        b"from the engine"
    );

    engine
        .mkdir("lifecycle", "/tmp/in/deep", 0o755, true)
        .await
        .expect("mkdir");
    std::fs::write(out.path().join("host.txt"), b"from the host").unwrap();
    engine
        .copy_in("lifecycle", &out.path().join("host.txt"), "/tmp/in/deep")
        .await
        .expect("copy in");
    let entries = engine
        .list_dir("lifecycle", "/tmp/in/deep")
        .await
        .expect("ls");
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["host.txt"]);
    engine
        .remove_path("lifecycle", "/tmp/in", true)
        .await
        .expect("rm -r");
    let removed = engine.stat("lifecycle", "/tmp/in").await.unwrap_err();
    assert_eq!(removed.kind(), ErrorKind::NotFound, "{removed}");
    let mut console = engine
        .logs("lifecycle", LogKind::Console)
        .expect("console log");
    assert!(!console.read_new().expect("read console").is_empty());
    assert!(engine.log_is_live(&console).expect("live"));

    let listed = engine.list(false).expect("list");
    assert!(listed.iter().any(|r| r.id == created.id));
    let inspected = engine.inspect("lifecycle").expect("inspect");
    assert!(inspected.network.is_some(), "the sandbox has a network");

    let busy = engine.remove("lifecycle", false).await.unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Conflict, "{busy}");
    let stopped = engine
        .stop("lifecycle", Duration::from_secs(5))
        .await
        .expect("stop");
    assert_eq!(stopped.id, created.id);
    let ended = engine.find("lifecycle").expect("find");
    assert_eq!(ended.state, SandboxState::Exited);
    assert_eq!(
        engine.wait("lifecycle").await.expect("wait"),
        ended.exit_code
    );

    // Started again from its stored spec, then killed.
    engine.start("lifecycle").await.expect("restart");
    engine.kill("lifecycle").await.expect("kill");
    assert_eq!(engine.wait("lifecycle").await.expect("wait"), Some(137));

    engine.remove("lifecycle", false).await.expect("remove");
    let gone = engine.find("lifecycle").unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
    assert!(!host
        .state_dir()
        .join("sandboxes")
        .join(&created.id)
        .exists());
    host.assert_clean();
}

/// A one-shot run of an unknown program: the sandbox boots, the process does not start, and
/// the error says so in docker's terms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_engine_one_shot_run_reports_a_missing_program() {
    let host = host();
    let engine = engine(&host);
    let mut spec = spec();
    spec.process = ProcessSpec {
        command: vec!["/nope".into()],
        ..ProcessSpec::default()
    };
    let spec = engine.resolve(spec, &NoReporter).await.expect("resolve");
    let one_shot = engine.run(&spec).await.expect("boot");
    let error = one_shot.process.expect_err("no such program");
    assert_eq!(error.process_exit_code(), Some(127), "{error}");
    one_shot.sandbox.shutdown().await;
    host.assert_clean();
}
