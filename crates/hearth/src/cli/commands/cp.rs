//! `hearth cp`: copy files and directories between the host and a running sandbox.

use std::path::PathBuf;

use anyhow::bail;
use hearth_engine::Engine;

use crate::cli::args::CpArgs;

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    Host(PathBuf),
    Guest { sandbox: String, path: String },
}

/// `NAME:PATH` names a sandbox path (docker's rule: a prefix without `/`); anything else is a
/// host path, so `./a:b` copies a local file named `a:b`.
fn parse(arg: &str) -> Location {
    match arg.split_once(':') {
        Some((sandbox, path)) if !sandbox.is_empty() && !sandbox.contains('/') => Location::Guest {
            sandbox: sandbox.to_owned(),
            path: path.to_owned(),
        },
        _ => Location::Host(PathBuf::from(arg)),
    }
}

pub async fn cp(engine: &Engine, args: &CpArgs) -> anyhow::Result<i32> {
    match (parse(&args.src), parse(&args.dest)) {
        (Location::Host(src), Location::Guest { sandbox, path }) => {
            engine.copy_in(&sandbox, &src, &path).await?;
        }
        (Location::Guest { sandbox, path }, Location::Host(dest)) => {
            engine.copy_out(&sandbox, &path, &dest).await?;
        }
        _ => bail!("one side of `hearth cp` must be SANDBOX:PATH and the other a host path"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_sandbox_and_host_paths() {
        assert_eq!(
            parse("web:/tmp/x"),
            Location::Guest {
                sandbox: "web".into(),
                path: "/tmp/x".into()
            }
        );
        assert_eq!(parse("./a:b"), Location::Host("./a:b".into()));
        assert_eq!(parse("/abs/a:b"), Location::Host("/abs/a:b".into()));
        assert_eq!(parse("plain"), Location::Host("plain".into()));
    }
}
