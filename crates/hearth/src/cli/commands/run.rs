//! `hearth run` and `hearth create`: a spec from the flags, then a one-shot run attached to
//! this terminal, or a detached sandbox.

use anyhow::bail;
use hearth_engine::{DetachOptions, Engine, HealthCheck, ProcessSpec, SandboxSpec};

use crate::cli::args::RunArgs;
use crate::cli::commands::pull::registry_options;
use crate::cli::progress;
use crate::cli::session::{self, Completion, Interrupts, OnInterrupt};

pub async fn run(engine: &Engine, args: RunArgs) -> anyhow::Result<i32> {
    if !args.detach {
        refuse_detached_flags(&args)?;
    }
    let process = session::exec_request(args.command.clone(), &args.process);
    let spec = SandboxSpec {
        image: args.image.clone(),
        registry: registry_options(&args.registry),
        vcpus: args.cpus,
        mem_size_mib: args.memory,
        boot_timeout: args.boot_timeout,
        kernel: args.kernel.clone(),
        initramfs: args.initramfs.clone(),
        network: args.network.config()?,
        from_snapshot: args.from_snapshot.clone(),
        cold: args.cold,
        mounts: args.volumes.clone(),
        process: ProcessSpec {
            command: process.argv,
            entrypoint: args.entrypoint.clone(),
            env: process.env,
            workdir: process.cwd,
            user: process.user,
            tty: process.tty,
            stdin: process.stdin,
            idle: false,
        },
    };
    let spec = engine
        .resolve(spec, progress::pull_reporter(false).as_ref())
        .await?;
    if args.detach {
        let options = detach_options(&args);
        let record = if args.create_only {
            engine.create(&spec, &options)?
        } else {
            engine
                .run_detached(&spec, &options, args.wait_healthy)
                .await?
        };
        println!("{}", record.id);
        return Ok(0);
    }
    let mut interrupts = Interrupts::new()?;
    let one_shot = tokio::select! {
        booted = engine.run(&spec) => booted?,
        signal = interrupts.recv() => return Ok(128 + signal),
    };
    let completion = session::attach(
        one_shot.process,
        args.process.tty,
        args.process.interactive,
        &mut interrupts,
        OnInterrupt::Detach,
    )
    .await;
    let sandbox = one_shot.sandbox;
    match completion {
        // Nothing in a one-shot guest outlives it: its writable layer is guest RAM, its base is
        // read-only and a mounted dir's writes reach the host before the guest's `write`
        // returns. A clean power-off would only add its time to every run; the other processes
        // end as a container's do when its main process exits.
        Ok(Completion::Exited(code)) => {
            sandbox.kill().await;
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

/// Flags that only mean something for a detached sandbox are refused without `-d`, rather than
/// silently ignored.
fn refuse_detached_flags(args: &RunArgs) -> anyhow::Result<()> {
    let given = [
        ("--name", args.name.is_some()),
        ("--rm", args.rm),
        ("--timeout", args.timeout.is_some()),
        ("--health-cmd", args.health_cmd.is_some()),
        ("--label", !args.labels.is_empty()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
        bail!("{flag} needs -d (a detached sandbox) or `hearth create`");
    }
    Ok(())
}

fn detach_options(args: &RunArgs) -> DetachOptions {
    DetachOptions {
        name: args.name.clone(),
        auto_remove: args.rm,
        timeout: args.timeout,
        health: args.health_cmd.as_ref().map(|command| HealthCheck {
            command: command.clone(),
            interval: args.health_interval,
            retries: args.health_retries,
        }),
        labels: args.labels.iter().cloned().collect(),
    }
}
