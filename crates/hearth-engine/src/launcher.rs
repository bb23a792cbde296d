//! How a detached sandbox's supervisor process is started. The engine decides when; the client
//! (the CLI, `hearth serve`) decides which program runs it, since only it knows its binary.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::paths::StateDir;

/// Starts supervisor processes.
///
/// The process must run [`crate::Engine::supervise`] for `id` on the same state dir, and its
/// command line must contain the word `supervise` and the id: that is how `gc` tells a live
/// supervisor from a reused pid.
pub trait SupervisorLauncher: Send + Sync + std::fmt::Debug {
    /// Starts the supervisor of sandbox `id`, with its stdout and stderr going to `log`.
    fn launch(&self, state: &StateDir, id: &str, log: File) -> std::io::Result<Child>;
}

/// Runs `PROGRAM --state-dir DIR supervise ID`: the hearth binary re-executed.
#[derive(Debug, Clone)]
pub struct ReexecLauncher {
    program: PathBuf,
}

impl ReexecLauncher {
    pub fn new(program: PathBuf) -> Self {
        ReexecLauncher { program }
    }

    /// The running binary itself, for clients that are the hearth binary.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(ReexecLauncher::new(std::env::current_exe()?))
    }
}

impl SupervisorLauncher for ReexecLauncher {
    fn launch(&self, state: &StateDir, id: &str, log: File) -> std::io::Result<Child> {
        let mut command = Command::new(&self.program);
        command
            .arg("--state-dir")
            .arg(state.root())
            .arg("supervise")
            .arg(id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: a Ctrl-C in the client's terminal must not reach it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command.spawn()
    }
}
