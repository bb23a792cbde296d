//! `hearth login` and `hearth logout`: registry credentials in docker's config.json, shared with
//! docker; also the lookup `pull` does before it talks to a registry.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use hearth_engine::image::{self, Credentials, CredentialsError, DockerConfig, PullConfig};

use crate::cli::args::{LoginArgs, LogoutArgs};
use crate::cli::terminal;

pub async fn login(args: &LoginArgs) -> anyhow::Result<i32> {
    let registry = args.registry.as_str();
    let credentials = Credentials {
        username: username(args)?,
        password: password(args)?,
    };
    let config = PullConfig {
        insecure_registries: args.insecure.insecure_registry.clone(),
        credentials: None,
    };
    image::verify_login(registry, &credentials, &config)
        .await
        .with_context(|| format!("failed to log in to `{registry}`"))?;
    let mut docker = DockerConfig::load_default()?;
    docker.set_credentials(registry, &credentials)?;
    docker.save()?;
    eprintln!(
        "Credentials for {registry} saved in {}",
        docker.path().display()
    );
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(args: &LogoutArgs) -> anyhow::Result<i32> {
    let registry = args.registry.as_str();
    let mut docker = DockerConfig::load_default()?;
    if !docker.remove_credentials(registry)? {
        eprintln!("Not logged in to {registry}");
        return Ok(0);
    }
    docker.save()?;
    println!("Removing login credentials for {registry}");
    Ok(0)
}

/// The saved credentials for `registry`, if any. No config dir at all (no $HOME) means an
/// anonymous pull, not a failure.
pub fn saved_credentials(registry: &str) -> anyhow::Result<Option<Credentials>> {
    let docker = match DockerConfig::load_default() {
        Err(CredentialsError::NoConfigDir) => return Ok(None),
        other => other?,
    };
    docker
        .credentials(registry)
        .with_context(|| format!("failed to read the credentials for `{registry}`"))
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
