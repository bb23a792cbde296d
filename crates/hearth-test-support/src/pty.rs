//! Running `hearth` on a pseudo-terminal, as a person at a terminal would.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

/// A process on a PTY whose screen output is collected in the background.
pub struct PtySession {
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for PtySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtySession").finish_non_exhaustive()
    }
}

impl PtySession {
    /// Spawns `command` on a new PTY of `rows` x `cols`.
    pub fn spawn(command: CommandBuilder, rows: u16, cols: u16) -> anyhow::Result<Self> {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| anyhow!("openpty: {e}"))?;
        let child = pair
            .slave
            .spawn_command(command)
            .map_err(|e| anyhow!("spawning on the pty: {e}"))?;
        drop(pair.slave);
        let mut reader = pair
            .master
            .try_clone_reader()
            .map_err(|e| anyhow!("pty reader: {e}"))?;
        let writer = pair
            .master
            .take_writer()
            .map_err(|e| anyhow!("pty writer: {e}"))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut out) = sink.lock() {
                    out.extend_from_slice(&buf[..n]);
                }
            }
        });
        Ok(PtySession {
            master: pair.master,
            writer,
            child,
            output,
        })
    }

    /// Types `text` as keystrokes.
    pub fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.writer.write_all(text.as_bytes())?;
        self.writer.flush().context("writing to the pty")
    }

    /// Everything the process has printed so far.
    pub fn screen(&self) -> String {
        let out = self.output.lock().map(|o| o.clone()).unwrap_or_default();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Waits until the screen contains `needle` `count` times in all.
    pub fn expect_count(
        &self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        crate::wait_until(timeout, || {
            (self.screen().matches(needle).count() >= count).then_some(())
        })
        .ok_or_else(|| {
            anyhow!(
                "timed out waiting for {needle:?} x{count}; screen:\n{}",
                self.screen()
            )
        })
    }

    /// Waits until the screen contains `needle`.
    pub fn expect(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.expect_count(needle, 1, timeout)
    }

    /// Resizes the terminal; the process gets SIGWINCH.
    pub fn resize(&self, rows: u16, cols: u16) -> anyhow::Result<()> {
        self.master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| anyhow!("resizing the pty: {e}"))
    }

    /// Pid of the process on the PTY.
    pub fn pid(&self) -> Option<u32> {
        self.child.process_id()
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<u32> {
        let status = crate::wait_until(timeout, || self.child.try_wait().ok().flatten())
            .ok_or_else(|| anyhow!("process did not exit in time; screen:\n{}", self.screen()))?;
        Ok(status.exit_code())
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
