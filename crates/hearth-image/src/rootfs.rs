//! Turning a merged tree into the read-only erofs base image a VM mounts as `/dev/vda`; also
//! the ext4 the engine makes its built-in default image with ([`make_ext4`]).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("failed to run `{}`", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` failed to make `{}` ({status}): {stderr}", program.display(), path.display())]
    Mkfs {
        program: PathBuf,
        path: PathBuf,
        status: String,
        stderr: String,
    },
}

/// Makes the erofs image at `image` holding `tree`: owners, modes, xattrs, hard links and
/// mtimes as in the tree. erofs rather than ext4 because it is made for read-only images:
/// `bench/base_format.sh` measures it quicker to build and smaller, and it needs no sizing.
pub fn build(mkfs_erofs: &Path, tree: &Path, image: &Path) -> Result<(), RootfsError> {
    let mut command = Command::new(mkfs_erofs);
    command
        .args(["--quiet", "--preserve-mtime"])
        .arg(image)
        .arg(tree);
    run(command, mkfs_erofs, image)
}

/// How big an ext4 image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Size {
    pub bytes: u64,
    /// mkfs's own estimate when `None`.
    pub inodes: Option<u64>,
}

/// Runs `mkfs.ext4 -d` for the built-in default image: from `tree`, owned by root, labelled
/// `label`, with no journal and no reserved blocks (the image is only ever read).
pub fn make_ext4(
    mkfs: &Path,
    tree: &Path,
    image: &Path,
    label: &str,
    size: Ext4Size,
) -> Result<(), RootfsError> {
    let mut command = Command::new(mkfs);
    command
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .args(["-L", label, "-O", "^has_journal", "-m", "0", "-b", "4096"])
        .args(["-E", "root_owner=0:0"]);
    if let Some(inodes) = size.inodes {
        command.args(["-N", &inodes.to_string()]);
    }
    command
        .arg(image)
        .arg(format!("{}k", size.bytes.div_ceil(1024)));
    run(command, mkfs, image)
}

/// Runs a mkfs `command` that makes `image`.
fn run(mut command: Command, program: &Path, image: &Path) -> Result<(), RootfsError> {
    crate::sys::die_with_parent(&mut command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RootfsError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(RootfsError::Mkfs {
            program: program.to_owned(),
            path: image.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
