//! `hearth run`: boot, run one command with the caller's stdio, tear down.

use std::sync::Arc;

use anyhow::{bail, Context};
use hearth_engine::{Engine, ExecError, ExecEvent, ExecInput, ExecRequest, Sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Mutex;

use crate::cli::args::RunArgs;
use crate::cli::terminal::{self, RawMode};

/// What the default image runs when no command is given.
const DEFAULT_COMMAND: &str = "sh";

/// The signals that end `hearth run` (and with it the VM) in non-tty mode or during boot.
struct Interrupts {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Interrupts {
    fn new() -> anyhow::Result<Self> {
        Ok(Interrupts {
            int: signal(SignalKind::interrupt()).context("failed to handle SIGINT")?,
            term: signal(SignalKind::terminate()).context("failed to handle SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("failed to handle SIGHUP")?,
        })
    }

    /// Resolves with the exit status for the signal that arrived (128 + its number).
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => 128 + libc::SIGINT,
            _ = self.term.recv() => 128 + libc::SIGTERM,
            _ = self.hup.recv() => 128 + libc::SIGHUP,
        }
    }
}

pub async fn run(engine: &Engine, args: RunArgs) -> anyhow::Result<i32> {
    if let Some(image) = args.image.as_deref().filter(|i| *i != "default") {
        bail!(
            "unknown image `{image}`: only the built-in `default` image can be run so far; \
             omit IMAGE or use `default`"
        );
    }
    let request = exec_request(&args);
    let mut config = engine.default_config();
    config.vcpus = args.cpus;
    config.mem_size_mib = args.memory;
    config.boot_timeout = args.boot_timeout;
    if let Some(kernel) = args.kernel {
        config.kernel = kernel;
    }
    if let Some(initramfs) = args.initramfs {
        config.initramfs = initramfs;
    }
    let mut interrupts = Interrupts::new()?;
    let sandbox = tokio::select! {
        booted = engine.boot(&config) => booted.context("failed to boot the sandbox")?,
        code = interrupts.recv() => return Ok(code),
    };
    let code = run_in(&sandbox, request, args.interactive, &mut interrupts).await;
    match code {
        Ok(Completion::Exited(code)) => {
            sandbox.shutdown().await;
            Ok(code)
        }
        Ok(Completion::Interrupted(code)) => {
            sandbox.kill().await;
            Ok(code)
        }
        Err(e) => {
            sandbox.kill().await;
            Err(e)
        }
    }
}

enum Completion {
    Exited(i32),
    Interrupted(i32),
}

fn exec_request(args: &RunArgs) -> ExecRequest {
    let argv = if args.command.is_empty() {
        vec![DEFAULT_COMMAND.to_owned()]
    } else {
        args.command.clone()
    };
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
        user: None,
    }
}

async fn run_in(
    sandbox: &Sandbox,
    request: ExecRequest,
    interactive: bool,
    interrupts: &mut Interrupts,
) -> anyhow::Result<Completion> {
    let tty = request.tty.is_some();
    let program = request.argv[0].clone();
    let (_pid, input, mut output) = match sandbox.exec(request).await {
        Ok(started) => started,
        Err(e @ ExecError::Start { .. }) => {
            let code = e.exit_code();
            eprintln!("hearth: {}", error_chain(&e));
            if code == 125 {
                return Err(e).with_context(|| format!("failed to run `{program}`"));
            }
            return Ok(Completion::Exited(code));
        }
        Err(e) => return Err(e.into()),
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
            code = interrupts.recv() => break Completion::Interrupted(code),
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
    let mut buf = vec![0u8; hearth_agent_proto::MAX_CHUNK_LEN];
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

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}
