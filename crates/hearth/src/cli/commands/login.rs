//! `hearth login` and `hearth logout`: registry credentials in docker's config.json, shared with
//! docker. This file asks for them; the engine checks and stores them.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use hearth_engine::{Credentials, Engine};

use crate::cli::args::{LoginArgs, LogoutArgs};
use crate::cli::commands::pull::registry_options;
use crate::cli::terminal;

pub async fn login(engine: &Engine, args: &LoginArgs) -> anyhow::Result<i32> {
    let registry = args.registry.as_str();
    let credentials = Credentials {
        username: username(args)?,
        password: password(args)?,
    };
    let options = registry_options(&args.insecure);
    let saved_in = engine.login(registry, &credentials, &options).await?;
    eprintln!("Credentials for {registry} saved in {}", saved_in.display());
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(engine: &Engine, args: &LogoutArgs) -> anyhow::Result<i32> {
    let registry = args.registry.as_str();
    if engine.logout(registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        eprintln!("Not logged in to {registry}");
    }
    Ok(0)
}

fn username(args: &LoginArgs) -> anyhow::Result<String> {
    if let Some(user) = &args.username {
        return Ok(user.clone());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no user name: pass -u USER (stdin is not a terminal to ask on)");
    }
    eprint!("Username: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the user name")?;
    non_empty(line.trim(), "user name")
}

fn password(args: &LoginArgs) -> anyhow::Result<String> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if std::io::stdin().is_terminal() {
        terminal::read_secret("Password: ").context("reading the password")?
    } else {
        bail!("no password: pass --password-stdin (stdin is not a terminal to ask on)");
    };
    non_empty(&password, "password")
}

fn non_empty(value: &str, what: &str) -> anyhow::Result<String> {
    if value.is_empty() {
        bail!("the {what} is empty");
    }
    Ok(value.to_owned())
}
