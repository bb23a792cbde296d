//! A detached sandbox's logs: its main process's output and its guest console. Both rotate
//! (the newest part is kept), so a reader follows them across a rotation.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use hearth_vmm::console::rotated_path;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::supervisor;

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// The main process's stdout and stderr.
    Output,
    /// The guest's serial console (kernel and agent messages).
    Console,
}

/// Reads a sandbox's log from its start, then what is added.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    id: String,
    /// Where the next read of the current file starts; `None` before the first read.
    offset: Option<u64>,
}

impl Engine {
    /// A reader of sandbox `query`'s log, live or ended.
    pub fn logs(&self, query: &str, kind: LogKind) -> Result<LogReader, EngineError> {
        let id = self.find(query)?.id;
        let path = match kind {
            LogKind::Output => supervisor::log_path(self.state(), &id),
            LogKind::Console => supervisor::console_path(self.state(), &id),
        };
        Ok(LogReader {
            path,
            id,
            offset: None,
        })
    }

    /// Whether the sandbox a log reader reads is still live (so its log may grow).
    pub fn log_is_live(&self, reader: &LogReader) -> Result<bool, EngineError> {
        Ok(self.db()?.find(&reader.id)?.state.is_live())
    }
}

impl LogReader {
    /// What was written since the last call; the first call returns the whole kept log, the
    /// rotated older part first.
    pub fn read_new(&mut self) -> Result<Vec<u8>, EngineError> {
        let mut bytes = Vec::new();
        let offset = match self.offset {
            Some(offset) => offset,
            None => {
                read_from(&rotated_path(&self.path), 0, &mut bytes)?;
                0
            }
        };
        self.offset = Some(read_from(&self.path, offset, &mut bytes)?);
        Ok(bytes)
    }
}

/// Appends the log at `path` from `offset` on to `out` and returns the new end. A missing log is
/// empty. A log shorter than `offset` was rotated: the rest of the rotated part comes first,
/// then the new file from its start.
fn read_from(path: &Path, mut offset: u64, out: &mut Vec<u8>) -> Result<u64, EngineError> {
    let io_error = |source| EngineError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(io_error(e)),
    };
    let len = file.metadata().map_err(io_error)?.len();
    if len < offset {
        read_from(&rotated_path(path), offset, out)?;
        offset = 0;
    }
    file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
    let read = file.read_to_end(out).map_err(io_error)?;
    Ok(offset + read as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reader_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        std::fs::write(rotated_path(&path), "old ").unwrap();
        std::fs::write(&path, "one two ").unwrap();
        let mut reader = LogReader {
            path: path.clone(),
            id: "x".into(),
            offset: None,
        };
        assert_eq!(reader.read_new().unwrap(), b"old one two ");
        assert_eq!(reader.read_new().unwrap(), b"");
        // Rotation: the current file, grown, becomes `.1`, and a new (shorter) file starts.
        std::fs::write(rotated_path(&path), "one two three ").unwrap();
        std::fs::write(&path, "four").unwrap();
        assert_eq!(reader.read_new().unwrap(), b"three four");
    }
}
