//! `hearth run`: boot, run one command with the caller's stdio, tear down.

use anyhow::{bail, Context};
use hearth_engine::image::ImageConfig;
use hearth_engine::images::{self, ProcessOverrides};
use hearth_engine::{Engine, ExecRequest};

use crate::cli::args::RunArgs;
use crate::cli::session::{self, Completion, Interrupts, OnInterrupt};

/// What the default image runs when no command is given.
const DEFAULT_COMMAND: &str = "sh";

pub async fn run(engine: &Engine, args: RunArgs) -> anyhow::Result<i32> {
    let argv = if args.command.is_empty() {
        vec![DEFAULT_COMMAND.to_owned()]
    } else {
        args.command.clone()
    };
    let mut request = session::exec_request(argv, &args.process);
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
    config.network = args.network.config()?;
    let image = args.image.as_deref().filter(|i| *i != "default");
    if let Some(image) = image {
        let record = super::pull::ensure(engine.state(), image, &args.registry).await?;
        config.rootfs = images::store(engine.state()).rootfs(&record.digest);
        apply_image_config(&mut request, &record.config, &args)?;
    }
    if !args.detach {
        super::detach::refuse_detached_flags(&args)?;
    }
    if args.detach {
        // An image's own Entrypoint/Cmd is a main process even without a command.
        let main = (!args.command.is_empty() || image.is_some()).then_some(request);
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

/// The image's Entrypoint/Cmd/Env/WorkingDir/User under the user's flags, as docker applies them.
fn apply_image_config(
    request: &mut ExecRequest,
    config: &ImageConfig,
    args: &RunArgs,
) -> anyhow::Result<()> {
    let process = images::process(
        config,
        ProcessOverrides {
            entrypoint: args.entrypoint.clone(),
            args: args.command.clone(),
            env: std::mem::take(&mut request.env),
            workdir: request.cwd.take(),
            user: request.user.take(),
        },
    );
    if process.argv.is_empty() {
        bail!("the image has no Entrypoint or Cmd; give a command after `--`");
    }
    request.argv = process.argv;
    request.env = process.env;
    request.cwd = process.cwd;
    request.user = process.user;
    Ok(())
}
