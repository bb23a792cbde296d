//! Turning a merged tree into the read-only ext4 base image a VM mounts as `/dev/vda`; also
//! how the engine makes its built-in default image ([`make_ext4`]).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Filesystem label of OCI base images.
const LABEL: &str = "hearth-image";
/// Room for ext4's own metadata on top of the files (journal off, so this is modest).
const OVERHEAD_BYTES: u64 = 16 << 20;
/// Block size the image is made with; file sizes round up to it.
const BLOCK_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("failed to measure the merged tree at `{}`", path.display())]
    Measure {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to run `{}`", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`mkfs.ext4` failed to make `{}` ({status}): {stderr}", path.display())]
    Mkfs {
        path: PathBuf,
        status: String,
        stderr: String,
    },
}

/// Space and inodes a tree needs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct TreeSize {
    bytes: u64,
    inodes: u64,
}

fn measure(dir: &Path) -> Result<TreeSize, RootfsError> {
    let err = |source| RootfsError::Measure {
        path: dir.to_owned(),
        source,
    };
    let mut size = TreeSize::default();
    for entry in fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let meta = entry.path().symlink_metadata().map_err(err)?;
        size.inodes += 1;
        size.bytes += meta.size().div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        if meta.is_dir() {
            let child = measure(&entry.path())?;
            size.bytes += child.bytes + BLOCK_BYTES;
            size.inodes += child.inodes;
        }
    }
    Ok(size)
}

/// Makes an ext4 image at `image` holding `tree`, sized to fit it.
pub fn build(mkfs: &Path, tree: &Path, image: &Path) -> Result<(), RootfsError> {
    let size = measure(tree)?;
    // A fifth more than the files, for directories' and extents' blocks.
    let ext4 = Ext4Size {
        bytes: size.bytes + size.bytes / 5 + OVERHEAD_BYTES,
        inodes: Some(size.inodes + size.inodes / 5 + 1024),
    };
    make_ext4(mkfs, tree, image, LABEL, ext4)
}

/// How big an ext4 image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Size {
    pub bytes: u64,
    /// mkfs's own estimate when `None`.
    pub inodes: Option<u64>,
}

/// Runs `mkfs.ext4 -d` the way every hearth base image is made: from `tree`, owned by root,
/// labelled `label`, with no journal and no reserved blocks (the image is only ever read).
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
    let output = command
        .arg(image)
        .arg(format!("{}k", size.bytes.div_ceil(1024)))
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RootfsError::Spawn {
            program: mkfs.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(RootfsError::Mkfs {
            path: image.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
