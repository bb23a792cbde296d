//! Starting an exec'd process: program lookup, environment, working directory and stdio.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hearth_agent_proto::{ErrorCode, ExecRequest, RemoteError};
use nix::pty::PtyMaster;
use nix::unistd::Pid;

use crate::env::{self, EnvError};
use crate::pty::{self, PtyError};
use crate::reaper::{ExitWatch, Reaper, ReaperError};
use crate::sys;
use crate::user::{self, UserError};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("exec: empty argv")]
    EmptyArgv,
    #[error("exec: invalid environment")]
    Env(#[from] EnvError),
    #[error("exec: working directory {cwd:?} does not exist or is not a directory")]
    Cwd { cwd: String },
    #[error("exec: {program:?}: executable file not found in $PATH")]
    NotInPath { program: String },
    #[error("exec: {program:?}: no such file or directory")]
    NotFound { program: String },
    #[error("exec: {program:?}: permission denied")]
    PermissionDenied { program: String },
    #[error("exec: failed to start {program:?}")]
    Start {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("exec: cannot run as the requested user")]
    User(#[from] UserError),
    #[error("exec: failed to set up a terminal")]
    Pty(#[from] PtyError),
    #[error("exec: failed to watch for the process's exit")]
    Reaper(#[from] ReaperError),
}

impl SpawnError {
    /// The error as the host sees it: a stable code and the message chain.
    pub fn to_remote(&self) -> RemoteError {
        let code = match self {
            SpawnError::EmptyArgv
            | SpawnError::Env(_)
            | SpawnError::Cwd { .. }
            | SpawnError::User(_) => ErrorCode::BadRequest,
            SpawnError::NotInPath { .. } | SpawnError::NotFound { .. } => ErrorCode::NotFound,
            SpawnError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            SpawnError::Start { .. } | SpawnError::Pty(_) | SpawnError::Reaper(_) => {
                ErrorCode::Internal
            }
        };
        RemoteError {
            code,
            chain: crate::log::chain(self),
        }
    }
}

/// A running child and the agent's ends of its stdio.
#[derive(Debug)]
pub struct Spawned {
    pub pid: Pid,
    pub exit: ExitWatch,
    pub stdio: ChildStdio,
}

#[derive(Debug)]
pub enum ChildStdio {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Pty {
        master: PtyMaster,
    },
}

pub fn spawn(request: &ExecRequest) -> Result<Spawned, SpawnError> {
    let (name, args) = request.argv.split_first().ok_or(SpawnError::EmptyArgv)?;
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    let credentials = request
        .user
        .as_deref()
        .map(|spec| user::resolve(spec, Path::new(user::PASSWD), Path::new(user::GROUP)))
        .transpose()?;
    let mut env = env::build(hostname.as_deref(), &request.env, request.tty.is_some())?;
    if let Some(home) = credentials.as_ref().and_then(|c| c.home.as_deref()) {
        // The user's home, unless the request chose one.
        if !request.env.iter().any(|e| e.starts_with("HOME=")) {
            env::set(&mut env, "HOME", home);
        }
    }
    let cwd = request.cwd.as_deref().unwrap_or("/");
    if !Path::new(cwd).is_dir() {
        return Err(SpawnError::Cwd {
            cwd: cwd.to_owned(),
        });
    }
    let program = resolve(name, env::lookup(&env, "PATH").unwrap_or(""))?;

    let mut command = Command::new(&program);
    command
        .arg0(name)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(cwd);
    let master = match request.tty {
        Some(size) => {
            let pty = pty::open(size)?;
            attach_terminal(&mut command, &pty.slave)
                .map_err(|source| start_error(name, source))?;
            Some(pty.master)
        }
        None => {
            command
                .stdin(if request.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own group, so a signal or a hang-up reaches the whole job.
                .process_group(0);
            None
        }
    };
    sys::prepare_child(&mut command, master.is_some(), credentials);

    let (mut child, pid, exit) = Reaper::global()
        .prepare()?
        .spawn(|| {
            let child = command.spawn()?;
            let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
            Ok((child, Pid::from_raw(pid)))
        })
        .map_err(|source| classify(name, source))?;
    // The command holds our copies of the PTY slave; the master reads EIO only once every copy
    // is closed.
    drop(command);

    let stdio = match master {
        Some(master) => ChildStdio::Pty { master },
        None => {
            let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
                // Piped above, so std always hands them back.
                return Err(start_error(name, io::Error::other("missing output pipes")));
            };
            ChildStdio::Pipes {
                stdin: child.stdin.take().map(OwnedFd::from),
                stdout: stdout.into(),
                stderr: stderr.into(),
            }
        }
    };
    Ok(Spawned { pid, exit, stdio })
}

fn attach_terminal(command: &mut Command, slave: &File) -> io::Result<()> {
    command
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave.try_clone()?);
    Ok(())
}

/// Finds a bare program name in `path` (as `execvp` would), so a miss can be reported as such.
/// A name with a `/` is left to exec, relative to the working directory.
fn resolve(name: &str, path: &str) -> Result<PathBuf, SpawnError> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let mut not_executable = None;
    for dir in path.split(':') {
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(name);
        let Ok(metadata) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        if metadata.permissions().mode() & 0o111 != 0 {
            return Ok(candidate);
        }
        // Keep looking; if nothing better turns up, exec reports it as permission denied.
        not_executable.get_or_insert(candidate);
    }
    not_executable.ok_or_else(|| SpawnError::NotInPath {
        program: name.to_owned(),
    })
}

fn classify(name: &str, source: io::Error) -> SpawnError {
    let program = name.to_owned();
    match source.kind() {
        io::ErrorKind::NotFound => SpawnError::NotFound { program },
        io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied { program },
        _ => SpawnError::Start { program, source },
    }
}

fn start_error(name: &str, source: io::Error) -> SpawnError {
    SpawnError::Start {
        program: name.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_resolve_finds_first_executable_in_path() {
        let resolved = resolve("sh", "/nonexistent:/bin:/usr/bin").unwrap();
        assert_eq!(resolved, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn test_resolve_leaves_names_with_slash_to_exec() {
        assert_eq!(resolve("./x", "").unwrap(), PathBuf::from("./x"));
    }

    #[test]
    fn test_resolve_missing_program_is_not_in_path() {
        let err = resolve("hearth-no-such-program", "/bin:/usr/bin").unwrap_err();
        assert_eq!(err.to_remote().code, ErrorCode::NotFound);
        assert_eq!(
            err.to_string(),
            "exec: \"hearth-no-such-program\": executable file not found in $PATH"
        );
    }

    #[test]
    fn test_resolve_skips_non_executable_for_a_later_executable() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        for (dir, mode) in [(&first, 0o644), (&second, 0o755)] {
            let file = dir.path().join("tool");
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let path = format!("{}:{}", first.path().display(), second.path().display());
        assert_eq!(resolve("tool", &path).unwrap(), second.path().join("tool"));
    }
}
