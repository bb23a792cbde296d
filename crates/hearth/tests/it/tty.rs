//! `hearth run -it`: a real shell on a pseudo-terminal.

use std::time::Duration;

use hearth_test_support::pty::PtySession;
use portable_pty::CommandBuilder;

use crate::{host, HEARTH};

const BOOT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(20);

#[test]
fn test_interactive_shell_on_a_pty() {
    let host = host();
    let mut command = CommandBuilder::new(HEARTH);
    command.env("HEARTH_STATE_DIR", host.state_dir());
    command.env("TERM", "xterm");
    command.args(["run", "-it", "--", "sh"]);
    let mut session = PtySession::spawn(command, 30, 100).unwrap();

    // The size of the host terminal is the guest's at start, and follows a resize.
    session.send("stty size\r").unwrap();
    session.expect("30 100", BOOT).unwrap();
    session.resize(40, 120).unwrap();
    // SIGWINCH reaches hearth asynchronously; ask until the new size shows.
    let resized = hearth_test_support::wait_until(STEP, || {
        session.send("stty size\r").ok()?;
        std::thread::sleep(Duration::from_millis(300));
        session.screen().contains("40 120").then_some(())
    });
    assert!(
        resized.is_some(),
        "resize did not propagate:\n{}",
        session.screen()
    );

    // Ctrl-C interrupts the guest's foreground process, not hearth.
    session.send("sleep 1000\r").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    session.send("\x03").unwrap();
    session.send("echo alive-$((40+2))\r").unwrap();
    session.expect("alive-42", STEP).unwrap();

    // Line editing: two backspaces fix a typo before the line is run.
    session.send("echo helxx\x7f\x7flo-edit\r").unwrap();
    session.expect("hello-edit", STEP).unwrap();

    // TERM from the host reaches the guest.
    session.send("echo term=$TERM\r").unwrap();
    session.expect("term=xterm", STEP).unwrap();

    session.send("exit 3\r").unwrap();
    assert_eq!(
        session.wait(STEP).unwrap(),
        3,
        "screen:\n{}",
        session.screen()
    );
    host.assert_clean();
}
