//! Spawning a VMM process, the same for every backend.

use std::os::fd::OwnedFd;
use std::path::Path;

use tokio::process::{Child, Command};

use crate::config::{NetConfig, NetNamespace};
use crate::StartVmError;

/// Spawns `command`, saying how to fix a missing `program`.
pub(crate) fn spawn(command: &mut Command, program: &Path) -> Result<Child, StartVmError> {
    command.spawn().map_err(|source| {
        let program = program.display().to_string();
        if source.kind() == std::io::ErrorKind::NotFound {
            StartVmError::ProgramMissing {
                program,
                hint: "run `hearth doctor` to see what to install".to_owned(),
            }
        } else {
            StartVmError::Spawn { program, source }
        }
    })
}

/// A descriptor of the network namespace the VMM runs in, for `sys::enter_netns`.
pub(crate) fn open_netns(net: &NetConfig) -> Result<OwnedFd, StartVmError> {
    match &net.netns {
        NetNamespace::At(path) => std::fs::File::open(path)
            .map(OwnedFd::from)
            .map_err(|source| StartVmError::Prepare {
                path: path.clone(),
                source,
            }),
        NetNamespace::Open(fd) => fd.try_clone().map_err(|source| StartVmError::Prepare {
            path: "network namespace fd".into(),
            source,
        }),
    }
}
