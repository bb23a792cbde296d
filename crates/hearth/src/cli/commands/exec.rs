//! `hearth exec`: run a process in a running sandbox, attached to this terminal.

use hearth_engine::paths::StateDir;

use crate::cli::args::{ExecArgs, ProcessArgs, SandboxArgs};
use crate::cli::session::{self, Completion, Interrupts, OnInterrupt};

pub async fn exec(state: &StateDir, args: ExecArgs) -> anyhow::Result<i32> {
    let record = super::running(state, &args.sandbox)?;
    let request = session::exec_request(args.command, &args.process);
    let tty = request.tty.is_some();
    let mut interrupts = Interrupts::new()?;
    let started = hearth_engine::exec_in(state, &record.id, request).await;
    let completion = session::attach(
        started,
        tty,
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
pub async fn shell(state: &StateDir, args: SandboxArgs) -> anyhow::Result<i32> {
    let process = ProcessArgs {
        interactive: true,
        tty: true,
        env: Vec::new(),
        workdir: None,
        user: None,
    };
    exec(
        state,
        ExecArgs {
            process,
            sandbox: args.sandbox,
            command: vec!["sh".to_owned()],
        },
    )
    .await
}
