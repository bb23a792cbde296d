//! `hearth run`: boot, run one command with the caller's stdio, tear down.

use anyhow::{bail, Context};
use hearth_engine::Engine;

use crate::cli::args::RunArgs;
use crate::cli::session::{self, Completion, Interrupts, OnInterrupt};

/// What the default image runs when no command is given.
const DEFAULT_COMMAND: &str = "sh";

pub async fn run(engine: &Engine, args: RunArgs) -> anyhow::Result<i32> {
    if let Some(image) = args.image.as_deref().filter(|i| *i != "default") {
        bail!(
            "unknown image `{image}`: only the built-in `default` image can be run so far; \
             omit IMAGE or use `default`"
        );
    }
    let argv = if args.command.is_empty() {
        vec![DEFAULT_COMMAND.to_owned()]
    } else {
        args.command.clone()
    };
    let request = session::exec_request(argv, &args.process);
    let mut config = engine.default_config();
    config.vcpus = args.cpus;
    config.mem_size_mib = args.memory;
    config.boot_timeout = args.boot_timeout;
    if let Some(kernel) = &args.kernel {
        config.kernel.clone_from(kernel);
    }
    if let Some(initramfs) = &args.initramfs {
        config.initramfs.clone_from(initramfs);
    }
    if args.detach {
        let main = (!args.command.is_empty()).then_some(request);
        return super::detach::start(engine, &args, config, main).await;
    }
    let mut interrupts = Interrupts::new()?;
    let sandbox = tokio::select! {
        booted = engine.boot(&config) => booted.context("failed to boot the sandbox")?,
        signal = interrupts.recv() => return Ok(128 + signal),
    };
    let tty = request.tty.is_some();
    let started = sandbox.exec(request).await;
    let interactive = args.process.interactive;
    let completion = session::attach(
        started,
        tty,
        interactive,
        &mut interrupts,
        OnInterrupt::Detach,
    )
    .await;
    match completion {
        Ok(Completion::Exited(code)) => {
            sandbox.shutdown().await;
            Ok(code)
        }
        Ok(Completion::Interrupted(signal)) => {
            sandbox.kill().await;
            Ok(128 + signal)
        }
        Err(e) => {
            sandbox.kill().await;
            Err(e)
        }
    }
}
