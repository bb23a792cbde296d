//! Guest processes this server starts and reads on its own (background and streamed
//! commands, PTYs), on the engine's `exec`.

use std::collections::BTreeMap;

use hearth_engine::{ExecEvent, ExecOutput, ExecRequest, ExitStatus, Started, TermSize};

use super::{ComputeState, Refused};
use crate::routes::sandboxes::env_entries;

/// `command` run by `shell` (`sh` without one), as the client's server does.
pub(super) fn shell_argv(shell: Option<String>, command: String) -> Vec<String> {
    vec![
        shell.unwrap_or_else(|| "sh".to_owned()),
        "-c".to_owned(),
        command,
    ]
}

pub(super) async fn start(
    state: &ComputeState,
    sandbox: &str,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    tty: Option<TermSize>,
) -> Result<Started, Refused> {
    let request = ExecRequest {
        argv,
        env: env_entries(env)?,
        cwd,
        tty,
        // Only a terminal is written to; other processes get an empty stdin.
        stdin: tty.is_some(),
        user: None,
    };
    Ok(state.app.engine.exec(sandbox, request).await?)
}

/// A non-zero exit is an answer, not an error, in this protocol; a signal is 128 + N.
pub(super) fn exit_code(status: ExitStatus) -> i32 {
    match status {
        ExitStatus::Code(code) => code,
        ExitStatus::Signal(signal) => 128 + signal,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// Where [`pump`] puts a process's output.
pub(super) trait Sink {
    /// Takes a chunk; false when nobody wants more.
    async fn chunk(&mut self, stream: Stream, data: Vec<u8>) -> bool;
}

/// How a pumped process ended.
#[derive(Debug)]
pub(super) enum Ending {
    Exited(i32),
    /// The sink wanted no more; the process may still run.
    Abandoned,
    /// The connection to the guest process broke (its sandbox ended, say).
    Lost(String),
}

/// Reads `output` into `sink` until the process exits or the sink gives up.
pub(super) async fn pump(output: &mut ExecOutput, sink: &mut impl Sink) -> Ending {
    loop {
        let (stream, data) = match output.next().await {
            Ok(Some(ExecEvent::Stdout(data))) => (Stream::Stdout, data),
            Ok(Some(ExecEvent::Stderr(data))) => (Stream::Stderr, data),
            Ok(Some(ExecEvent::Exited(status))) => return Ending::Exited(exit_code(status)),
            Ok(None) => return Ending::Lost("the output ended without an exit status".into()),
            Err(e) => return Ending::Lost(hearth_engine::error_chain(&e)),
        };
        if !sink.chunk(stream, data).await {
            return Ending::Abandoned;
        }
    }
}

/// Turns chunks of a byte stream into text without splitting a character across two chunks:
/// an incomplete sequence at a chunk's end waits for the next.
#[derive(Debug, Default)]
pub(super) struct Utf8 {
    carry: Vec<u8>,
}

/// Longest incomplete UTF-8 sequence worth waiting for.
const MAX_CARRY: usize = 3;

impl Utf8 {
    pub fn push(&mut self, data: &[u8]) -> String {
        self.carry.extend_from_slice(data);
        let keep = match std::str::from_utf8(&self.carry) {
            Ok(_) => 0,
            // `error_len` is `None` only for a sequence cut off at the end.
            Err(e)
                if e.error_len().is_none() && self.carry.len() - e.valid_up_to() <= MAX_CARRY =>
            {
                self.carry.len() - e.valid_up_to()
            }
            Err(_) => 0,
        };
        let rest = self.carry.split_off(self.carry.len() - keep);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_characters_split_across_chunks_arrive_whole() {
        let mut utf8 = Utf8::default();
        let bytes = "é!".as_bytes();
        assert_eq!(utf8.push(&bytes[..1]), "");
        assert_eq!(utf8.push(&bytes[1..]), "é!");
        assert_eq!(utf8.push(b"\xff a"), "\u{fffd} a");
    }

    #[test]
    fn test_signals_exit_as_128_plus_n() {
        assert_eq!(exit_code(ExitStatus::Signal(9)), 137);
        assert_eq!(exit_code(ExitStatus::Code(3)), 3);
    }
}
