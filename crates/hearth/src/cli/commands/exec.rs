//! `hearth exec`: run a process in a running sandbox, attached to this terminal.

use hearth_engine::Engine;

use crate::cli::args::{ExecArgs, ProcessArgs, SandboxArgs};
use crate::cli::session::{self, Completion, Interrupts, OnInterrupt};

pub async fn exec(engine: &Engine, args: ExecArgs) -> anyhow::Result<i32> {
    let request = session::exec_request(args.command, &args.process);
    let mut interrupts = Interrupts::new()?;
    let started = engine.exec(&args.sandbox, request).await;
    let completion = session::attach(
        started,
        args.process.tty,
        args.process.interactive,
        &mut interrupts,
        OnInterrupt::Forward,
    )
    .await?;
    Ok(match completion {
        Completion::Exited(code) => code,
        Completion::Interrupted(signal) => 128 + signal,
    })
}

/// `hearth shell SANDBOX`: `exec -it SANDBOX -- sh`.
pub async fn shell(engine: &Engine, args: SandboxArgs) -> anyhow::Result<i32> {
    let process = ProcessArgs {
        interactive: true,
        tty: true,
        env: Vec::new(),
        workdir: None,
        user: None,
    };
    exec(
        engine,
        ExecArgs {
            process,
            sandbox: args.sandbox,
            command: vec!["sh".to_owned()],
        },
    )
    .await
}
