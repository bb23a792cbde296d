//! Exec over the real connection handler: pipes, PTYs, signals, exit and hang-ups.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::{connect, process_exists, request, run, run_request};
use hearth_agent_proto::{
    write_frame, ErrorCode, ExecRequest, ExitStatus, GuestMessage, HostMessage, TermSize,
    MAX_CHUNK_LEN,
};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

#[test]
fn test_exec_echo_sends_started_output_and_exit_code() {
    let mut host = connect();
    host.exec(request(&["echo", "hi"])).unwrap();
    assert_eq!(host.recv(), Some(GuestMessage::Stdout(b"hi\n".to_vec())));
    assert_eq!(host.recv(), Some(GuestMessage::Exited(ExitStatus::Code(0))));
    assert_eq!(host.recv(), None);
    host.finish();
}

#[test]
fn test_exec_exit_code_passes_through() {
    let (_, status) = run(&["sh", "-c", "exit 7"]);
    assert_eq!(status, ExitStatus::Code(7));
}

#[test]
fn test_exec_stderr_is_separate_from_stdout() {
    let (output, status) = run(&["sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    assert_eq!(status, ExitStatus::Code(0));
}

#[test]
fn test_exec_missing_absolute_program_is_not_found() {
    let mut host = connect();
    let err = host.exec(request(&["/nope"])).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(err.chain, ["exec: \"/nope\": no such file or directory"]);
    assert_eq!(host.recv(), None);
    host.finish();
}

#[test]
fn test_exec_missing_program_in_path_is_not_found() {
    let mut host = connect();
    let err = host.exec(request(&["hearth-no-such-program"])).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    host.finish();
}

#[test]
fn test_exec_non_executable_file_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut host = connect();
    let err = host.exec(request(&[script.to_str().unwrap()])).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    host.finish();
}

#[test]
fn test_exec_empty_argv_is_bad_request() {
    let mut host = connect();
    let err = host.exec(request(&[])).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    host.finish();
}

#[test]
fn test_exec_missing_cwd_is_bad_request() {
    let mut host = connect();
    let err = host
        .exec(ExecRequest {
            cwd: Some("/nonexistent/dir".into()),
            ..request(&["true"])
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.chain[0].contains("/nonexistent/dir"), "{err}");
    host.finish();
}

#[test]
fn test_exec_env_and_cwd_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = run_request(ExecRequest {
        env: vec!["GREETING=hello there".into(), "HOME=/home/test".into()],
        cwd: Some(dir.path().to_str().unwrap().into()),
        ..request(&[
            "sh",
            "-c",
            "echo \"$GREETING\"; echo \"$HOME\"; pwd; echo \"$PATH\"",
        ])
    });
    let expected = format!(
        "hello there\n/home/test\n{}\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        dir.path().display()
    );
    assert_eq!(output.stdout_text(), expected);
}

#[test]
fn test_exec_default_cwd_is_root_and_env_is_clean() {
    // Variables of the agent's own environment must not leak into the process.
    let (output, _) = run(&["sh", "-c", "pwd; env | cut -d= -f1 | sort | tr '\\n' ' '"]);
    let text = output.stdout_text();
    let (cwd, keys) = text.split_once('\n').unwrap();
    assert_eq!(cwd, "/");
    for key in keys.split_whitespace() {
        assert!(
            ["HOME", "HOSTNAME", "PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&key),
            "unexpected variable {key} in {keys}"
        );
    }
}

#[test]
fn test_exec_stdin_pipes_binary_data_through_cat() {
    // A few MB of every byte value, more than any pipe or socket buffer holds.
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut host = connect();
    host.exec(ExecRequest {
        stdin: true,
        ..request(&["cat"])
    })
    .unwrap();
    // Input goes from another thread: cat's output must be drained while it is fed.
    let mut input = host.stream.try_clone().unwrap();
    let to_send = data.clone();
    let feeder = std::thread::spawn(move || {
        for chunk in to_send.chunks(MAX_CHUNK_LEN) {
            write_frame(&mut input, &HostMessage::Stdin(chunk.to_vec())).unwrap();
        }
        write_frame(&mut input, &HostMessage::StdinEof).unwrap();
    });
    let (output, status) = host.wait();
    feeder.join().unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    assert!(output.stdout == data, "cat's output differs from its input");
    host.finish();
}

#[test]
fn test_exec_without_stdin_reads_dev_null() {
    let (output, status) = run(&["cat"]);
    assert_eq!(output.stdout, b"");
    assert_eq!(status, ExitStatus::Code(0));
}

#[test]
fn test_exec_large_output_arrives_complete_and_in_order() {
    // About 55 MB of distinct lines, so loss or reordering shows.
    let (output, status) = run(&["seq", "1", "7000000"]);
    assert_eq!(status, ExitStatus::Code(0));
    let mut expected = String::with_capacity(output.stdout.len());
    for i in 1..=7_000_000 {
        expected.push_str(&i.to_string());
        expected.push('\n');
    }
    assert_eq!(output.stdout.len(), expected.len());
    assert!(
        output.stdout == expected.as_bytes(),
        "output differs from seq's"
    );
}

#[test]
fn test_exec_signal_kills_the_process() {
    let mut host = connect();
    host.exec(request(&["sleep", "100"])).unwrap();
    host.send(&HostMessage::Signal(9));
    let (_, status) = host.wait();
    assert_eq!(status, ExitStatus::Signal(9));
    host.finish();
}

#[test]
fn test_exec_unknown_signal_is_ignored() {
    let mut host = connect();
    host.exec(ExecRequest {
        stdin: true,
        ..request(&["cat"])
    })
    .unwrap();
    host.send(&HostMessage::Signal(12345));
    host.send(&HostMessage::Stdin(b"still here\n".to_vec()));
    host.send(&HostMessage::StdinEof);
    let (output, status) = host.wait();
    assert_eq!(output.stdout, b"still here\n");
    assert_eq!(status, ExitStatus::Code(0));
    host.finish();
}

#[test]
fn test_exec_background_child_holding_stdout_does_not_block_exit() {
    let mut host = connect();
    let pid = host
        .exec(request(&["sh", "-c", "sleep 100 & echo started"]))
        .unwrap();
    let (output, status) = host.wait();
    assert_eq!(output.stdout, b"started\n");
    assert_eq!(status, ExitStatus::Code(0));
    host.finish();
    // The sleep is still in the exec's process group: clean it up.
    killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
}

#[test]
fn test_exec_host_hang_up_kills_the_process() {
    let mut host = connect();
    let pid = host
        .exec(ExecRequest {
            stdin: true,
            ..request(&["sleep", "100"])
        })
        .unwrap();
    host.hang_up();
    // The handler returns only once its child has been reaped.
    assert!(!process_exists(pid), "pid {pid} survived the hang-up");
}

#[test]
fn test_exec_host_hang_up_while_stdin_is_blocked_kills_the_process() {
    // `sleep` never reads its stdin: the first chunk fills the 64 KiB pipe and the agent's write
    // of the second stalls. (Few enough that the socket buffer takes them all, so this side
    // does not block before it can hang up.)
    let mut host = connect();
    let pid = host
        .exec(ExecRequest {
            stdin: true,
            ..request(&["sleep", "100"])
        })
        .unwrap();
    for _ in 0..3 {
        host.send(&HostMessage::Stdin(vec![b'x'; MAX_CHUNK_LEN]));
    }
    host.hang_up();
    assert!(!process_exists(pid), "pid {pid} survived the hang-up");
}

#[test]
fn test_exec_host_half_close_keeps_the_process_running() {
    // A host that has no more input closes its write side but still reads output.
    let mut host = connect();
    host.exec(ExecRequest {
        stdin: true,
        ..request(&["sh", "-c", "cat; echo done"])
    })
    .unwrap();
    host.send(&HostMessage::Stdin(b"data\n".to_vec()));
    host.send(&HostMessage::StdinEof);
    host.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let (output, status) = host.wait();
    assert_eq!(output.stdout, b"data\ndone\n");
    assert_eq!(status, ExitStatus::Code(0));
    host.finish();
}

#[test]
fn test_exec_tty_reports_requested_size_and_resize() {
    let mut host = connect();
    host.exec(ExecRequest {
        tty: Some(TermSize {
            rows: 33,
            cols: 101,
        }),
        ..request(&["sh", "-c", "stty size; read line; stty size"])
    })
    .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("33 101\r\n") {
        match host.recv() {
            Some(GuestMessage::Stdout(data)) => seen.extend(data),
            other => panic!("expected the first size, got {other:?}"),
        }
    }
    host.send(&HostMessage::Resize(TermSize { rows: 20, cols: 70 }));
    host.send(&HostMessage::Stdin(b"\n".to_vec()));
    let (output, status) = host.wait();
    assert!(
        output.stdout_text().ends_with("20 70\r\n"),
        "{:?}",
        output.stdout_text()
    );
    assert_eq!(status, ExitStatus::Code(0));
    host.finish();
}

#[test]
fn test_exec_tty_is_controlling_terminal_with_term() {
    let (output, status) = run_request(ExecRequest {
        tty: Some(TermSize { rows: 24, cols: 80 }),
        ..request(&[
            "sh",
            "-c",
            "test -t 0 && test -t 1 && test -t 2 && echo $TERM && tty >/dev/tty",
        ])
    });
    assert_eq!(status, ExitStatus::Code(0), "{:?}", output.stdout_text());
    assert!(output.stdout_text().starts_with("xterm\r\n/dev/pts/"));
}

#[test]
fn test_exec_tty_ctrl_c_byte_interrupts_the_foreground_job() {
    let mut host = connect();
    host.exec(ExecRequest {
        tty: Some(TermSize { rows: 24, cols: 80 }),
        ..request(&["cat"])
    })
    .unwrap();
    host.send(&HostMessage::Stdin(vec![0x03]));
    let (_, status) = host.wait();
    assert_eq!(status, ExitStatus::Signal(2));
    host.finish();
}

#[test]
fn test_exec_tty_signal_goes_to_the_process_group() {
    let mut host = connect();
    host.exec(ExecRequest {
        tty: Some(TermSize { rows: 24, cols: 80 }),
        ..request(&["sleep", "100"])
    })
    .unwrap();
    host.send(&HostMessage::Signal(15));
    let (_, status) = host.wait();
    assert_eq!(status, ExitStatus::Signal(15));
    host.finish();
}

#[test]
fn test_exec_frames_sent_with_the_request_are_not_lost() {
    // Request, input and EOF in one write: the agent must not drop what it buffered.
    let mut host = connect();
    host.hello();
    let mut bytes = Vec::new();
    for message in [
        HostMessage::Exec(ExecRequest {
            stdin: true,
            ..request(&["cat"])
        }),
        HostMessage::Stdin(b"early\n".to_vec()),
        HostMessage::StdinEof,
    ] {
        hearth_agent_proto::encode_frame(&message, &mut bytes).unwrap();
    }
    host.stream.write_all(&bytes).unwrap();
    assert!(matches!(host.recv(), Some(GuestMessage::Started { .. })));
    let (output, status) = host.wait();
    assert_eq!(output.stdout, b"early\n");
    assert_eq!(status, ExitStatus::Code(0));
    host.finish();
}

#[test]
fn test_exec_user_drops_to_passwd_ids_and_home() {
    // `nobody` (65534) is in every Debian /etc/passwd, which the agent reads here on the host.
    let (output, status) = run_request(ExecRequest {
        user: Some("nobody".into()),
        ..request(&["sh", "-c", "id -u; id -g; echo \"$HOME\""])
    });
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(output.stdout_text(), "65534\n65534\n/nonexistent\n");
}

#[test]
fn test_exec_unknown_user_is_bad_request_naming_it() {
    let mut host = connect();
    let err = host
        .exec(ExecRequest {
            user: Some("hearth-no-such-user".into()),
            ..request(&["true"])
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(
        err.chain.iter().any(|c| c.contains("hearth-no-such-user")),
        "{err}"
    );
    host.finish();
}
