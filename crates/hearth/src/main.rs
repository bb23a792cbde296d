//! The `hearth` command line: parses arguments, calls the engine, prints results.

mod cli;

use std::io::IsTerminal;

use clap::Parser;

use crate::cli::args::Cli;

fn main() {
    // Everything hearth and its children (supervisors, QEMU) create is for this user alone:
    // specs hold secrets, sockets drive guests as root. Not left to the caller's umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    init_logging(cli.debug);
    let failure = cli.command.failure_code();
    let code = match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            cli::print_error(&e);
            failure
        }
    };
    std::process::exit(code);
}

fn init_logging(debug: u8) {
    let default = match debug {
        0 => "warn",
        1 => "info,hearth=debug,hearth_engine=debug,hearth_vmm=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person: a log file or a pipe gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
