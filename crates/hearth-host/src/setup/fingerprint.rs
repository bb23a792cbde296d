//! Up-to-date checks and atomic writes for setup outputs.
//!
//! A [`Fingerprint`] is text describing every input of one output (paths, sizes, mtimes,
//! versions). It is stored next to the output as `<output>.stamp`, followed by the output's own
//! size, so an output is current when it exists, has the recorded size, and its inputs still
//! print the same fingerprint.

use std::ffi::OsString;
use std::fmt::{Display, Write as _};
use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Bumped when the layout of an output changes, so old outputs get rebuilt.
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    text: String,
}

impl Fingerprint {
    pub(crate) fn new(output_kind: &str) -> Self {
        let mut fingerprint = Fingerprint {
            text: String::new(),
        };
        fingerprint.field(
            "format",
            format_args!("hearth-setup {output_kind} v{FORMAT}"),
        );
        fingerprint.field("hearth", env!("CARGO_PKG_VERSION"));
        fingerprint
    }

    /// Adds `key value` as one line.
    pub(crate) fn field(&mut self, key: &str, value: impl Display) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "{key} {value}");
    }

    /// Adds the path, size and modification time of the input file at `path`.
    pub(crate) fn file(&mut self, key: &str, path: &Path) -> io::Result<()> {
        let meta = fs::metadata(path)?;
        self.field(
            key,
            format_args!(
                "{:?} size={} mtime={}.{:09}",
                path,
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec()
            ),
        );
        Ok(())
    }

    /// The stamp text for an output of `output_size` bytes.
    fn stamp(&self, output_size: u64) -> String {
        format!("{}output-size {output_size}\n", self.text)
    }
}

/// `<output>.stamp`.
pub(crate) fn stamp_path(output: &Path) -> PathBuf {
    let mut name = OsString::from(output.as_os_str());
    name.push(".stamp");
    PathBuf::from(name)
}

/// Whether `output` exists and was made from inputs that still print `fingerprint`.
pub(crate) fn is_current(output: &Path, fingerprint: &Fingerprint) -> bool {
    let Ok(meta) = fs::metadata(output) else {
        return false;
    };
    match fs::read_to_string(stamp_path(output)) {
        Ok(stored) => stored == fingerprint.stamp(meta.len()),
        Err(_) => false,
    }
}

/// Records that `output` (already in place) was made from inputs printing `fingerprint`.
pub(crate) fn record(output: &Path, fingerprint: &Fingerprint) -> io::Result<()> {
    let size = fs::metadata(output)?.len();
    let stamp = stamp_path(output);
    let mut file = AtomicFile::create(&stamp)?;
    io::Write::write_all(file.file(), fingerprint.stamp(size).as_bytes())?;
    file.commit(0o644)
}

/// A file written under a temporary name in its destination's directory and renamed over the
/// destination by [`commit`](AtomicFile::commit), so readers see the old file or the whole new
/// one, never a part. Dropped without commit, the temporary file is removed.
#[derive(Debug)]
pub(crate) struct AtomicFile {
    temp: NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    pub(crate) fn create(dest: &Path) -> io::Result<Self> {
        let (dir, prefix) = temp_location(dest)?;
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(dir)?;
        Ok(AtomicFile {
            temp,
            dest: dest.to_owned(),
        })
    }

    pub(crate) fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Where the temporary file is, for tools that write to a path.
    pub(crate) fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// Flushes the data to disk, sets `mode` and renames the file over the destination.
    pub(crate) fn commit(self, mode: u32) -> io::Result<()> {
        let file = self.temp.as_file();
        file.sync_all()?;
        file.set_permissions(Permissions::from_mode(mode))?;
        self.temp.persist(&self.dest).map_err(|e| e.error)?;
        if let Some(dir) = self.dest.parent() {
            // Make the rename itself durable; not every filesystem lets a directory be synced.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

/// The directory of `dest` and the name prefix its temporary files get.
fn temp_location(dest: &Path) -> io::Result<(&Path, OsString)> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not a file path", dest.display()),
        )
    };
    let dir = dest.parent().ok_or_else(invalid)?;
    let name = dest.file_name().ok_or_else(invalid)?;
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    Ok((dir, prefix))
}

/// Removes temporary files that a killed earlier run left beside `dest`. Call only while holding
/// the setup lock, so no other run is writing them. Best effort.
pub(crate) fn remove_leftovers(dest: &Path) {
    let Ok((dir, prefix)) = temp_location(dest) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = prefix.to_string_lossy().into_owned();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint_of(input: &Path) -> Fingerprint {
        let mut fingerprint = Fingerprint::new("test");
        fingerprint.file("input", input).unwrap();
        fingerprint
    }

    #[test]
    fn test_is_current_without_output_is_false() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        fs::write(&input, "a").unwrap();
        assert!(!is_current(
            &dir.path().join("out"),
            &fingerprint_of(&input)
        ));
    }

    #[test]
    fn test_is_current_after_record_is_true() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in"), dir.path().join("out"));
        fs::write(&input, "a").unwrap();
        fs::write(&output, "built").unwrap();
        record(&output, &fingerprint_of(&input)).unwrap();
        assert!(is_current(&output, &fingerprint_of(&input)));
    }

    #[test]
    fn test_is_current_after_input_changes_is_false() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in"), dir.path().join("out"));
        fs::write(&input, "a").unwrap();
        fs::write(&output, "built").unwrap();
        record(&output, &fingerprint_of(&input)).unwrap();
        fs::write(&input, "longer").unwrap();
        assert!(!is_current(&output, &fingerprint_of(&input)));
    }

    #[test]
    fn test_is_current_after_output_truncated_is_false() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in"), dir.path().join("out"));
        fs::write(&input, "a").unwrap();
        fs::write(&output, "built").unwrap();
        record(&output, &fingerprint_of(&input)).unwrap();
        fs::write(&output, "bu").unwrap();
        assert!(!is_current(&output, &fingerprint_of(&input)));
    }

    #[test]
    fn test_atomic_file_dropped_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut file = AtomicFile::create(&dest).unwrap();
        io::Write::write_all(file.file(), b"half").unwrap();
        drop(file);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn test_atomic_file_commit_replaces_dest_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        fs::write(&dest, "old").unwrap();
        let mut file = AtomicFile::create(&dest).unwrap();
        io::Write::write_all(file.file(), b"new").unwrap();
        file.commit(0o755).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o755);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn test_remove_leftovers_removes_only_temp_files_of_dest() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        fs::write(dir.path().join(".out.abc123.tmp"), "stale").unwrap();
        fs::write(dir.path().join(".other.abc123.tmp"), "keep").unwrap();
        remove_leftovers(&dest);
        assert!(!dir.path().join(".out.abc123.tmp").exists());
        assert!(dir.path().join(".other.abc123.tmp").exists());
    }
}
