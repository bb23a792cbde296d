//! Owner locks on the scratch files and dirs of a pull (`.partial-*` blobs, `.building-*`
//! staging dirs): the process writing one holds an exclusive `flock` on it, which the kernel
//! drops when that process dies however it dies. Cleanup removes only those whose lock it can
//! take, so it never touches a live pull's work.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// A held owner lock; released when dropped.
pub(crate) type OwnerLock = Flock<File>;

/// Takes the owner lock of `path` (a file or a directory) for this process.
pub(crate) fn hold(path: &Path) -> io::Result<OwnerLock> {
    let file = File::open(path)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| errno.into())
}

/// Removes the entries of `dir` named `prefix*` whose owner is gone; returns what it removed.
/// A missing `dir` has nothing to remove.
pub(crate) fn remove_abandoned(dir: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        // Held: a live pull's. Gone already: its owner finished meanwhile.
        let Ok(_lock) = hold(&path) else {
            continue;
        };
        let result = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_remove_abandoned_keeps_locked_entries_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join(".partial-live");
        let dead = dir.path().join(".building-dead");
        let other = dir.path().join("kept");
        fs::write(&live, "x").unwrap();
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("file"), "x").unwrap();
        fs::write(&other, "x").unwrap();
        let _owner = hold(&live).unwrap();
        let mut removed = remove_abandoned(dir.path(), ".partial-").unwrap();
        removed.extend(remove_abandoned(dir.path(), ".building-").unwrap());
        assert_eq!(removed, vec![dead.clone()]);
        assert!(live.exists() && other.exists() && !dead.exists());
    }
}
