//! A guest process attached to this terminal: stdio, PTY, resize and signals. Shared by
//! `run` and `exec`.

use std::sync::Arc;

use anyhow::{bail, Context};
use hearth_engine::{EngineError, ExecError, ExecEvent, ExecInput, ExecRequest, Started};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Mutex;

use crate::cli::args::ProcessArgs;
use crate::cli::printable::printable_lines;
use crate::cli::terminal::{self, RawMode};

/// How much of our stdin one read takes; the engine splits it into frames as needed.
const STDIN_BUFFER: usize = 64 * 1024;

/// The signals that interrupt hearth while it is attached (or booting).
pub struct Interrupts {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Interrupts {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Interrupts {
            int: signal(SignalKind::interrupt()).context("failed to handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("failed to handle SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("failed to handle SIGHUP")?,
        })
    }

    /// Resolves with the number of the signal that arrived.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

/// What an interrupt does while attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Stop attaching and report [`Completion::Interrupted`] (`run` then kills the VM).
    Detach,
    /// Pass the signal on to the guest process and keep going (`exec`).
    Forward,
}

/// How an attached process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// With this shell exit status (also for a process that could not start: 126, 127).
    Exited(i32),
    /// hearth got this signal number.
    Interrupted(i32),
}

/// The exec request for `argv` with the terminal/stdio flags shared by `run` and `exec`.
pub fn exec_request(argv: Vec<String>, args: &ProcessArgs) -> ExecRequest {
    let mut env: Vec<String> = args
        .env
        .iter()
        .filter_map(|entry| {
            if entry.contains('=') {
                Some(entry.clone())
            } else {
                // docker's `-e KEY`: pass the host's value, or nothing if it is unset.
                std::env::var(entry).ok().map(|v| format!("{entry}={v}"))
            }
        })
        .collect();
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push(format!(
            "TERM={}",
            std::env::var("TERM").unwrap_or_else(|_| "xterm".to_owned())
        ));
    }
    ExecRequest {
        argv,
        env,
        cwd: args.workdir.clone(),
        tty: args.tty.then(terminal::size),
        stdin: args.interactive,
        user: args.user.clone(),
    }
}

/// Attaches this process's stdio to a guest process being started, until it exits or an
/// interrupt says otherwise.
pub async fn attach(
    started: Result<Started, EngineError>,
    request_tty: bool,
    interactive: bool,
    interrupts: &mut Interrupts,
    on_interrupt: OnInterrupt,
) -> anyhow::Result<Completion> {
    let tty = request_tty;
    let (_pid, input, mut output) = match started {
        Ok(started) => started,
        Err(e) => match e.process_exit_code() {
            // Not found (127) or not executable (126): the guest's answer, as docker reports it.
            Some(code) => {
                eprintln!(
                    "hearth: {}",
                    printable_lines(&hearth_engine::error_chain(&e), "  ")
                );
                return Ok(Completion::Exited(code));
            }
            None => return Err(e.into()),
        },
    };
    let raw_mode = if tty {
        RawMode::enter().context("failed to put the terminal in raw mode")?
    } else {
        None
    };
    let input = Arc::new(Mutex::new(input));
    let stdin_task = interactive.then(|| tokio::spawn(pump_stdin(input.clone(), tty)));
    let mut winch = signal(SignalKind::window_change()).context("failed to handle SIGWINCH")?;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut stdout_closed = false;
    let completion = loop {
        tokio::select! {
            event = output.next() => match event? {
                Some(ExecEvent::Stdout(data)) => {
                    if !write_out(&mut stdout, &data).await {
                        // Our reader is gone (`| head`): the guest writer gets what a local
                        // one would, SIGPIPE. Only once, then its output is dropped.
                        if !stdout_closed {
                            input.lock().await.signal(libc::SIGPIPE).await?;
                        }
                        stdout_closed = true;
                    }
                }
                Some(ExecEvent::Stderr(data)) => {
                    write_out(&mut stderr, &data).await;
                }
                Some(ExecEvent::Exited(status)) => break Completion::Exited(status.shell_code()),
                None => bail!("the guest process ended without an exit status"),
            },
            _ = winch.recv(), if tty => {
                input.lock().await.resize(terminal::size()).await?;
            }
            signal = interrupts.recv() => match on_interrupt {
                OnInterrupt::Detach => break Completion::Interrupted(signal),
                OnInterrupt::Forward => input.lock().await.signal(signal).await?,
            },
        }
    };
    if let Some(task) = stdin_task {
        task.abort();
    }
    drop(raw_mode);
    Ok(completion)
}

/// Writes guest output; false when the reader has gone away.
async fn write_out(out: &mut (impl AsyncWriteExt + Unpin), data: &[u8]) -> bool {
    out.write_all(data).await.is_ok() && out.flush().await.is_ok()
}

/// Copies our stdin to the guest process until EOF.
async fn pump_stdin(input: Arc<Mutex<ExecInput>>, tty: bool) -> Result<(), ExecError> {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; STDIN_BUFFER];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => input.lock().await.stdin(buf[..n].to_vec()).await?,
        }
    }
    // On a terminal, EOF is a key (Ctrl-D) that the guest's line discipline already saw.
    if !tty {
        input.lock().await.close_stdin().await?;
    }
    Ok(())
}
