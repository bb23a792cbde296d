//! End-to-end tests of the `hearth` binary. Every test here boots real microVMs (QEMU with TCG
//! on machines without hardware KVM) through the same command line a user types.

mod api;
mod auth;
mod channels;
mod detached;
mod doctor;
mod engine;
mod failures;
mod hostile;
mod images;
mod interrupted_pull;
mod jail;
mod network;
mod run;
mod snapshot;
mod templates;
mod tty;
mod volumes;

use std::process::Output;

use hearth_test_support::host::TestHost;

pub const HEARTH: &str = env!("CARGO_BIN_EXE_hearth");

pub fn host() -> TestHost {
    TestHost::new(HEARTH).expect("test host")
}

pub fn hearth(host: &TestHost, args: &[&str]) -> Output {
    host.hearth().args(args).output().unwrap()
}

/// Runs hearth and returns its stdout, failing the test on a non-zero exit.
pub fn ok(host: &TestHost, args: &[&str]) -> String {
    let output = hearth(host, args);
    assert_eq!(code(&output), 0, "hearth {args:?}: {}", stderr(&output));
    stdout(&output)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The first line a spawned hearth prints on its piped stdout (empty if it closed stdout).
pub fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    let stdout = child.stdout.as_mut().expect("stdout piped");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("reading hearth's stdout");
    line
}

/// Exit code, with a readable failure when the process was killed by a signal instead.
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| {
        panic!(
            "hearth ended by signal: {:?}\nstderr:\n{}",
            output.status,
            stderr(output)
        )
    })
}
