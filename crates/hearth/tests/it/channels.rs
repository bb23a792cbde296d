//! The agent's multiplexed channel on a real VM: a stalled client stalls only its own channel
//! and costs the owner bounded memory, and a host that reconnects gets a fresh session.

use std::process::Stdio;
use std::time::{Duration, Instant};

use hearth_engine::paths::StateDir;
use hearth_engine::{
    Engine, ExecEvent, ExecRequest, ExitStatus, NoReporter, ReexecLauncher, SandboxSpec,
};

use crate::{code, host, stderr, stdout, HEARTH};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn test_stalled_exec_client_neither_blocks_others_nor_grows_the_owner() {
    let host = host();
    let output = host
        .hearth()
        .args(["run", "-d", "--name", "flood"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let id = stdout(&output).trim().to_owned();
    let record = host.hearth().args(["inspect", &id]).output().unwrap();
    let record: serde_json::Value = serde_json::from_str(&stdout(&record)).unwrap();
    let supervisor = u32::try_from(record[0]["supervisor_pid"].as_u64().unwrap()).unwrap();

    // The guest writes without end; this client's stdout is a pipe nobody reads.
    let mut flood = host
        .hearth()
        .args(["exec", "flood", "--", "cat", "/dev/zero"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let before = rss_kib(supervisor);
    let started = Instant::now();
    for i in 0..5 {
        let output = host
            .hearth()
            .args(["exec", "flood", "--", "echo", &i.to_string()])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        assert_eq!(stdout(&output), format!("{i}\n"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "execs beside a stalled channel took {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(supervisor);
    // Unbounded buffering of `cat /dev/zero` would add hundreds of MiB by now; one window and
    // the socket buffers are well under this.
    assert!(
        after < before + 8 * 1024,
        "the supervisor grew from {before} KiB to {after} KiB"
    );
    let _ = flood.kill();
    let _ = flood.wait();
    let output = host.hearth().args(["rm", "-f", "flood"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    host.assert_clean();
}

fn request(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..ExecRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_reconnected_host_gets_a_fresh_session_and_the_agent_keeps_serving() {
    let host = host();
    let engine = Engine::new(
        StateDir::new(host.state_dir()),
        Box::new(ReexecLauncher::new(HEARTH.into())),
    );
    let spec = SandboxSpec {
        network: None,
        ..SandboxSpec::default()
    };
    let spec = engine.resolve(spec, &NoReporter).await.expect("resolve");
    let sandbox = engine.boot(&spec).await.expect("boot");
    let (_pid, _input, mut old) = sandbox
        .exec(request(&["sleep", "1000"]))
        .await
        .expect("exec");

    sandbox.reconnect_agent().await.expect("a fresh session");
    let ended = tokio::time::timeout(Duration::from_secs(10), old.next())
        .await
        .expect("the old session's exec ends at once");
    assert!(ended.is_err(), "{ended:?}");
    // The old session's process goes with its channel (the agent kills it as it would for a
    // vanished client), and new execs are served meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_pid, _input, mut output) = sandbox
            .exec(request(&["sh", "-c", "pgrep -x sleep || echo gone"]))
            .await
            .expect("exec after reconnecting");
        let mut stdout = Vec::new();
        loop {
            match output.next().await.expect("stream") {
                Some(ExecEvent::Stdout(data)) => stdout.extend(data),
                Some(ExecEvent::Exited(status)) => {
                    assert_eq!(status, ExitStatus::Code(0));
                    break;
                }
                Some(_) => {}
                None => panic!("no exit status"),
            }
        }
        if stdout == b"gone\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old session's exec still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), sandbox.shutdown())
        .await
        .expect("shutdown in time");
    assert_eq!(exit, hearth_engine::VmExit::Exited(Some(0)));
    host.assert_clean();
}
