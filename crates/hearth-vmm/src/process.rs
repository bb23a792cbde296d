//! Spawning a VMM process, the same for every backend.

use std::os::fd::OwnedFd;
use std::path::Path;

use tokio::process::{Child, Command};

use crate::config::{NetConfig, NetNamespace};
use crate::{StartVmError, VersionError};

/// The first line `program` prints when run with `flag` alone: how a VMM names its version
/// (`QEMU emulator version 7.2.0 ...`, `Firecracker v1.16.1`).
pub(crate) fn version_line(program: &Path, flag: &str) -> Result<String, VersionError> {
    let error = |reason: String| VersionError {
        program: program.display().to_string(),
        reason,
    };
    let output = std::process::Command::new(program)
        .arg(flag)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| error(e.to_string()))?;
    if !output.status.success() {
        return Err(error(format!("it exited with {}", output.status)));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    if line.is_empty() {
        return Err(error("it printed nothing".to_owned()));
    }
    Ok(line)
}

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
