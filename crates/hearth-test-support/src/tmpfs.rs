//! A small tmpfs the test mounts (as root) to run out of space on purpose; unmounted on drop.

use std::path::Path;

use anyhow::Context;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug)]
pub struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    /// Mounts a tmpfs of `size_bytes` on a fresh temp dir.
    pub fn mount(size_bytes: u64) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hearth-tmpfs-")
            .tempdir()
            .context("creating the tmpfs mount point")?;
        let options = format!("size={size_bytes},mode=0755");
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .with_context(|| format!("mounting a tmpfs on {} (needs root)", dir.path().display()))?;
        Ok(SmallTmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        // Lazy: a file a failing test still holds open must not keep the mount (and the test
        // machine's memory) around.
        if let Err(e) = umount2(self.dir.path(), MntFlags::MNT_DETACH) {
            eprintln!("failed to unmount {}: {e}", self.dir.path().display());
        }
    }
}
