//! Running out of disk space, told apart from other I/O failures: a retry cannot help, and the
//! user needs to hear "no space", not "registry request failed".

use std::error::Error;
use std::io;
use std::path::Path;

/// True when an `ENOSPC` (or quota) error is anywhere in `error`'s chain.
pub(crate) fn is_no_space(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        }) {
            return true;
        }
        current = e.source();
    }
    false
}

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that wraps the I/O failure the way the pull's own errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("failed to write the download")]
    struct WriteFailed(#[source] io::Error);

    #[test]
    fn test_is_no_space_finds_enospc_under_other_errors() {
        let full = WriteFailed(io::Error::from_raw_os_error(nix::libc::ENOSPC));
        assert!(is_no_space(&full));
        let refused = WriteFailed(io::Error::from_raw_os_error(nix::libc::EACCES));
        assert!(!is_no_space(&refused));
    }

    #[test]
    fn test_free_bytes_of_an_existing_dir_is_known() {
        assert!(free_bytes(Path::new("/")).is_some());
        assert_eq!(free_bytes(Path::new("/nonexistent/dir")), None);
    }
}
