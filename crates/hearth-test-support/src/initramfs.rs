//! Throwaway initramfs images whose `/init` is a busybox script, for guests that misbehave on
//! purpose (never answer, panic) without the agent.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// Writes an uncompressed newc initramfs to `out` holding `/bin/busybox` and `/init` running
/// `script` under busybox sh.
pub fn busybox_initramfs(out: &Path, script: &str) -> anyhow::Result<()> {
    let staging = tempfile::tempdir().context("staging dir")?;
    let root = staging.path();
    std::fs::create_dir_all(root.join("bin"))?;
    for dir in ["dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("copying /bin/busybox (apt-get install busybox-static)")?;
    let init = root.join("init");
    std::fs::write(&init, format!("#!/bin/busybox sh\n{script}\n"))?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio --quiet -o -H newc > \"$0\"")
        .arg(out)
        .current_dir(root)
        .status()
        .context("running cpio (apt-get install cpio)")?;
    if !status.success() {
        bail!("cpio failed to write {}", out.display());
    }
    Ok(())
}
