//! A throwaway state dir per test, sharing the boot assets built once by [`crate::assets`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
pub use hearth_host::processes::{processes_in, processes_mentioning};

use crate::assets;

/// The DNS upstream of sandboxes in tests unless a test names its own: the discard port on
/// loopback, where nothing listens, so no guest query leaves the machine.
pub const NO_DNS_UPSTREAM: &str = "127.0.0.1:9";

/// A fresh state dir whose `boot/` and `images/default.ext4` link to the shared assets. Removed
/// on drop, unless the test is failing, when it is kept and its path printed.
#[derive(Debug)]
pub struct TestHost {
    hearth_bin: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl TestHost {
    /// `hearth_bin` is the binary under test (`env!("CARGO_BIN_EXE_hearth")`).
    pub fn new(hearth_bin: &str) -> anyhow::Result<Self> {
        let hearth_bin = PathBuf::from(hearth_bin);
        let shared = assets::shared_state(&hearth_bin);
        // Under /tmp so socket paths stay within the 108 bytes a Unix socket allows.
        let dir = tempfile::Builder::new()
            .prefix("hearth-test-")
            .tempdir_in("/tmp")
            .context("creating a test state dir")?;
        // `images/` is the test's own, so OCI images it pulls stay apart from other tests'; only
        // the built-in image is shared.
        std::fs::create_dir(dir.path().join("images")).context("creating images/")?;
        for name in ["boot", "images/default.ext4"] {
            std::os::unix::fs::symlink(shared.join(name), dir.path().join(name))
                .with_context(|| format!("linking {name} into the test state dir"))?;
        }
        Ok(TestHost {
            hearth_bin,
            dir: Some(dir),
        })
    }

    pub fn state_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    pub fn hearth_bin(&self) -> &Path {
        &self.hearth_bin
    }

    /// A `hearth` command bound to this state dir.
    pub fn hearth(&self) -> Command {
        let mut command = Command::new(&self.hearth_bin);
        command.env("HEARTH_STATE_DIR", self.state_dir());
        command.env_remove("HEARTH_LOG");
        // Guests' DNS queries must not reach the host's real resolver: by default they go to
        // the discard port on loopback, where nothing answers; DNS tests name their own server.
        command.env("HEARTH_DNS_UPSTREAM", NO_DNS_UPSTREAM);
        command
    }

    /// What VMs of this state dir left behind: run dirs, and live processes whose command line
    /// names the state dir (QEMU). Empty when all is clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.state_dir().join("vms")) {
            for entry in entries.flatten() {
                found.push(format!("run dir {}", entry.path().display()));
            }
        }
        let needle = self.state_dir().to_string_lossy().into_owned();
        for pid in processes_mentioning(needle.as_bytes()) {
            found.push(format!("process {pid}"));
        }
        found
    }

    /// Panics with the list of leftovers, waiting briefly for processes that are exiting.
    pub fn assert_clean(&self) {
        let clean = crate::wait_until(std::time::Duration::from_secs(5), || {
            self.leftovers().is_empty().then_some(())
        });
        if clean.is_none() {
            panic!("left behind after the test: {:?}", self.leftovers());
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Detached sandboxes outlive the commands that started them: when a test fails half-way,
        // their supervisors and VMMs are still running. Everything that names this test's own
        // state dir is this test's.
        let needle = self.state_dir().to_string_lossy().into_owned();
        for pid in processes_mentioning(needle.as_bytes()) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // A killed supervisor leaves its sandbox's network (namespace, host link and table);
        // `hearth gc` removes it once the supervisor is gone.
        let gone = crate::wait_until(std::time::Duration::from_secs(5), || {
            processes_mentioning(needle.as_bytes())
                .is_empty()
                .then_some(())
        });
        if gone.is_some() && self.state_dir().join("hearth.db").exists() {
            match self.hearth().arg("gc").output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "hearth gc after the test failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                ),
                Err(e) => eprintln!("failed to run hearth gc after the test: {e}"),
            }
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("keeping test state dir {}", dir.keep().display());
            }
        }
    }
}
