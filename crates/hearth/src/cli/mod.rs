//! Argument definitions, one file per subcommand, and the terminal helpers they share.

pub mod args;
mod commands;
mod network;
mod progress;
pub mod session;
pub mod terminal;

use hearth_engine::paths::StateDir;

use self::args::{Cli, Command};

/// Runs the chosen subcommand and returns the process exit status.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let state = cli.state_dir.map_or_else(StateDir::from_env, StateDir::new);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => commands::run::run(&commands::engine(state)?, *args).await,
            Command::Create(mut args) => {
                args.detach = true;
                args.create_only = true;
                commands::run::run(&commands::engine(state)?, *args).await
            }
            Command::Start(args) => commands::detach::start_existing(&state, &args).await,
            Command::Setup(args) => commands::setup::setup(&state, &args),
            Command::Doctor(args) => commands::doctor::doctor(&state, &args),
            Command::Pull(args) => commands::pull::pull(&state, &args).await,
            Command::Image(command) => commands::image::image(&state, command),
            Command::Login(args) => commands::login::login(&args).await,
            Command::Logout(args) => commands::login::logout(&args),
            Command::Exec(args) => commands::exec::exec(&state, args).await,
            Command::Ls(args) => commands::ls::ls(&state, &args),
            Command::Inspect(args) => commands::ls::inspect(&state, &args),
            Command::Stop(args) => commands::stop::stop(&state, &args).await,
            Command::Kill(args) => commands::stop::kill_now(&state, &args).await,
            Command::Rm(args) => commands::rm::rm(&state, &args).await,
            Command::Logs(args) => commands::logs::logs(&state, &args).await,
            Command::Shell(args) => commands::exec::shell(&state, args).await,
            Command::Cp(args) => commands::cp::cp(&state, &args).await,
            Command::Fs(command) => commands::fs::fs(&state, command).await,
            Command::Wait(args) => commands::stop::wait(&state, &args).await,
            Command::Gc => commands::gc::gc(&state),
            Command::Supervise(args) => {
                commands::supervise::supervise(&commands::engine(state)?, &args).await
            }
        }
    });
    // A read of our stdin may still be blocked in a runtime thread; do not wait for it.
    runtime.shutdown_background();
    result
}

/// Prints an error and its causes, one per line, the way every hearth command reports failure.
pub fn print_error(error: &anyhow::Error) {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    let network_denied = error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<hearth_engine::net::NetworkError>())
        .any(hearth_engine::net::NetworkError::is_permission_denied);
    if network_denied {
        eprintln!(
            "  hint: sandbox networks need root (CAP_NET_ADMIN and CAP_SYS_ADMIN); \
             run as root, or use --network none"
        );
    }
}
