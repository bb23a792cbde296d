//! Argument definitions, one file per subcommand, and the terminal helpers they share.

pub mod args;
mod commands;
mod network;
pub mod printable;
mod progress;
pub mod session;
pub mod terminal;

use std::sync::Arc;

use anyhow::Context;
use hearth_engine::paths::StateDir;
use hearth_engine::{Engine, EngineError, ReexecLauncher};

use self::args::{Cli, Command};
use self::printable::printable_lines;

/// Runs the chosen subcommand and returns the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let state = cli.state_dir.map_or_else(StateDir::from_env, StateDir::new);
    if let Some(backend) = &cli.backend {
        // The flag is the variable: the engine's backend choice reads it, and the supervisors
        // this process starts inherit it and so choose the same. Set before any thread starts.
        std::env::set_var(hearth_engine::setup::BACKEND_ENV, backend);
    }
    let launcher = ReexecLauncher::current_exe().context("finding the hearth binary")?;
    let shared = Arc::new(Engine::new(state, Box::new(launcher)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let engine = &*shared;
        match cli.command {
            Command::Run(args) => commands::run::run(engine, *args).await,
            Command::Create(mut args) => {
                args.detach = true;
                args.create_only = true;
                commands::run::run(engine, *args).await
            }
            Command::Start(args) => commands::stop::start(engine, &args).await,
            Command::Setup(args) => {
                commands::setup::setup(engine, &args, cli.backend.as_deref()).await
            }
            Command::Doctor(args) => commands::doctor::doctor(engine, &args),
            Command::Pull(args) => commands::pull::pull(engine, &args).await,
            Command::Image(command) => commands::image::image(engine, command),
            Command::Login(args) => commands::login::login(engine, &args).await,
            Command::Logout(args) => commands::login::logout(engine, &args),
            Command::Exec(args) => commands::exec::exec(engine, args).await,
            Command::Ls(args) => commands::ls::ls(engine, &args),
            Command::Inspect(args) => commands::ls::inspect(engine, &args),
            Command::Stop(args) => commands::stop::stop(engine, &args).await,
            Command::Kill(args) => commands::stop::kill(engine, &args).await,
            Command::Rm(args) => commands::rm::rm(engine, &args).await,
            Command::Logs(args) => commands::logs::logs(engine, &args).await,
            Command::Shell(args) => commands::exec::shell(engine, args).await,
            Command::Cp(args) => commands::cp::cp(engine, &args).await,
            Command::Fs(command) => commands::fs::fs(engine, command).await,
            Command::Wait(args) => commands::stop::wait(engine, &args).await,
            Command::Gc => commands::gc::gc(engine),
            Command::Serve(args) => commands::serve::serve(Arc::clone(&shared), &args).await,
            Command::Mcp(args) => commands::serve::mcp(Arc::clone(&shared), &args).await,
            Command::Snapshot(command) => commands::snapshot::snapshot(engine, command).await,
            Command::Template(command) => commands::template::template(engine, command),
            Command::Volume(command) => commands::volume::volume(engine, command),
            Command::Supervise(args) => commands::supervise::supervise(engine, &args).await,
        }
    });
    // A read of our stdin may still be blocked in a runtime thread; do not wait for it.
    runtime.shutdown_background();
    result
}

/// Prints an error and its causes, one per line, the way every hearth command reports failure.
/// Causes can quote the guest (agent errors, guest stderr, console tails), so each is escaped.
pub fn print_error(error: &anyhow::Error) {
    eprintln!("error: {}", printable_lines(&error.to_string(), "  "));
    for cause in error.chain().skip(1) {
        eprintln!(
            "  caused by: {}",
            printable_lines(&cause.to_string(), "    ")
        );
    }
    let denied = error
        .downcast_ref::<EngineError>()
        .is_some_and(EngineError::is_network_permission_denied);
    if denied {
        eprintln!(
            "  hint: sandbox networks need root (CAP_NET_ADMIN and CAP_SYS_ADMIN); \
             run as root, or use --network none"
        );
    }
}
