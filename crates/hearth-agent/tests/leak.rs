//! Many sequential execs leave no fds, threads or zombies behind. Its own test binary, so no
//! other test's connections run while it counts.

mod common;

use common::{run, run_request};
use hearth_agent_proto::{ExecRequest, ExitStatus, TermSize};

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Children of this process that have exited but were not reaped.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, ...
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            zombies.push(pid);
        }
    }
    zombies
}

/// What an exec could leak, counted for this whole process.
#[derive(Debug, PartialEq, Eq)]
struct Usage {
    fds: usize,
    threads: usize,
    zombies: Vec<u32>,
}

fn usage() -> Usage {
    Usage {
        fds: count_entries("/proc/self/fd"),
        threads: count_entries("/proc/self/task"),
        zombies: zombie_children(),
    }
}

fn tty_request(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        tty: Some(TermSize { rows: 24, cols: 80 }),
        ..common::request(argv)
    }
}

// One test, not several: tests in one binary run in parallel and would count each other's fds.
#[test]
fn test_thousand_sequential_execs_leak_nothing() {
    // The first exec starts the reaper thread, which stays.
    assert_eq!(run(&["true"]).1, ExitStatus::Code(0));
    let before = usage();

    for i in 0..1000 {
        match i % 4 {
            0 => assert_eq!(run(&["true"]).1, ExitStatus::Code(0)),
            1 => {
                let (output, status) = run(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
                assert_eq!(
                    (output.stdout.as_slice(), status),
                    (&b"out\n"[..], ExitStatus::Code(3))
                );
            }
            2 => {
                let mut host = common::connect();
                assert!(host.exec(common::request(&["/nope"])).is_err());
                host.finish();
            }
            _ => {
                let (output, status) = run_request(tty_request(&["echo", "hi"]));
                assert_eq!(
                    (output.stdout.as_slice(), status),
                    (&b"hi\r\n"[..], ExitStatus::Code(0))
                );
            }
        }
    }

    assert_eq!(settled_usage(&before), before);
}

/// The usage once exiting threads are gone. A joined thread's task can stay listed in
/// `/proc/self/task` for a moment: `pthread_join` returns when the kernel clears the thread's
/// tid, which happens before the task is released. A real leak never settles.
fn settled_usage(expected: &Usage) -> Usage {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = usage();
        if &now == expected || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
