//! Node packages of real third-party clients (the E2B JS SDK, ComputeSDK), installed on first use under
//! `<target>/test-node` from the pinned `node/package.json` with the host's npm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::assets::target_dir;
use crate::python::{made_from, run};

const PACKAGE: &str = include_str!("../node/package.json");

/// The directory holding `node_modules`, where test scripts are run from.
pub fn modules_dir(hearth_bin: &Path) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir(hearth_bin).join("test-node");
        let made = made_from(&dir, PACKAGE, |dir| {
            std::fs::write(dir.join("package.json"), PACKAGE)?;
            run(Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(dir))
        });
        match made {
            Ok(()) => dir,
            Err(e) => panic!(
                "cannot prepare the Node test clients (needs node and npm, and the npm \
                 registry; `apt-get install nodejs npm`): {e:#}"
            ),
        }
    })
}
