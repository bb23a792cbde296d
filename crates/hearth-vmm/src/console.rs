//! The guest's serial console, kept in a size-capped log. A guest can write to its console
//! without end; the host keeps at most the current file and one rotated predecessor
//! (`<path>.1`), so a chatty or hostile guest cannot fill the host's disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// Size at which the console log is rotated; the host keeps at most twice this.
pub const CONSOLE_LOG_CAP: u64 = 1024 * 1024;

/// The previous part of a rotated console log.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Everything kept of the console: the rotated part, then the current one. Missing files are
/// empty (a VM that never started has no console).
pub fn read_console(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for part in [rotated_path(path), path.to_owned()] {
        match File::open(&part) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(bytes)
}

/// Appends to a log, rotating it when it would pass `cap` (the console here; the supervisor
/// keeps a main process's output the same way).
#[derive(Debug)]
pub struct CappedLog {
    path: PathBuf,
    file: File,
    size: u64,
    cap: u64,
}

impl CappedLog {
    pub fn open(path: &Path, cap: u64) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(CappedLog {
            path: path.to_owned(),
            file,
            size,
            cap,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + bytes.len() as u64 > self.cap {
            std::fs::rename(&self.path, rotated_path(&self.path))?;
            self.file = open_append(&self.path)?;
            self.size = 0;
        }
        // A single chunk larger than the cap keeps only its end.
        let keep = bytes
            .len()
            .saturating_sub(usize::try_from(self.cap).unwrap_or(usize::MAX));
        self.file.write_all(&bytes[keep..])?;
        self.size += (bytes.len() - keep) as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Copies the console stream into `log` on a thread until the VMM closes it (it exits).
pub(crate) fn spawn_pump(
    mut stream: impl Read + Send + 'static,
    mut log: CappedLog,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the guest console failed");
                        return;
                    }
                };
                if let Err(e) = log.write(&buf[..n]) {
                    // Keep reading: a VMM whose console is not drained stalls the guest.
                    tracing::warn!(path = %log.path.display(), error = %e, "writing the console log failed");
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_capped_log_rotates_once_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = CappedLog::open(&path, 10).unwrap();
        for chunk in [&b"aaaa"[..], b"bbbb", b"cccc", b"dddd", b"eeee"] {
            log.write(chunk).unwrap();
        }
        // Each time the next chunk would pass the cap the current file becomes `.1`, replacing
        // the older one: two files at most, the newest bytes last.
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap(), b"ccccdddd");
        assert_eq!(std::fs::read(&path).unwrap(), b"eeee");
        assert_eq!(
            read_console(&path).unwrap(),
            b"ccccdddd"
                .iter()
                .chain(b"eeee")
                .copied()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn test_capped_log_keeps_the_end_of_an_oversized_chunk_and_reopens_at_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        CappedLog::open(&path, 4)
            .unwrap()
            .write(b"0123456789")
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"6789");
        // A restarted VM appends to the same log and still respects the cap.
        let mut log = CappedLog::open(&path, 4).unwrap();
        log.write(b"xy").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"xy");
        assert_eq!(std::fs::read(rotated_path(&path)).unwrap(), b"6789");
    }

    #[test]
    fn test_read_console_of_nothing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_console(&dir.path().join("none.log"))
            .unwrap()
            .is_empty());
    }
}
