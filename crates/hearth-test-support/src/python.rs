//! A Python virtualenv of real third-party clients (the official MCP SDK, the E2B SDKs, an OpenAPI client
//! generator and validator), made on first use under `<target>/test-python` from the pinned
//! `python/requirements.txt`, under a file lock so parallel test processes do not race.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context};

use crate::assets::{lock_exclusive, target_dir};

const REQUIREMENTS: &str = include_str!("../python/requirements.txt");

/// The virtualenv's `bin/` directory (beside the target dir of `hearth_bin`), made or remade
/// when the requirements changed.
pub fn venv_bin(hearth_bin: &Path) -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match build(&target_dir(hearth_bin)) {
        Ok(bin) => bin,
        Err(e) => panic!(
            "cannot prepare the Python test clients (needs python3 with venv and pip, and \
             PyPI; `apt-get install python3-venv`): {e:#}"
        ),
    })
}

fn build(target: &Path) -> anyhow::Result<PathBuf> {
    let dir = target.join("test-python");
    made_from(&dir, REQUIREMENTS, |dir| {
        run(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
        let requirements = dir.join("requirements.txt");
        std::fs::write(&requirements, REQUIREMENTS)?;
        run(Command::new(dir.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements))
    })?;
    Ok(dir.join("bin"))
}

/// Makes `dir` with `make` unless it was last made from the same `recipe`, under a file lock
/// beside it so parallel test processes do not race.
pub(crate) fn made_from(
    dir: &Path,
    recipe: &str,
    make: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = dir.parent().context("a directory with a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let _lock = lock_exclusive(&dir.with_extension("lock"))?;
    // The recipe it was made from, written last: a half-made dir has none.
    let stamp = dir.join(".made-from");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == recipe) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    make(dir)?;
    std::fs::write(&stamp, recipe)?;
    Ok(())
}

pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
