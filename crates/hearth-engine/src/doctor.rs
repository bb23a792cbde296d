//! `hearth doctor`: what hearth found on this host.
//!
//! [`find_program`] locates helper programs the way the rest of hearth does.

use std::path::{Path, PathBuf};

use crate::backend;

/// Finds `name` as hearth does: `PATH`, `$CARGO_HOME/bin` (or `~/.cargo/bin`),
/// `/usr/local/bin`, `/usr/bin`, then `/usr/sbin` and `/sbin` (where e2fsprogs lives, often
/// missing from a user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    backend::find_program(name).or_else(|| {
        ["/usr/sbin", "/sbin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|candidate| candidate.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_find_program_finds_sbin_tools() {
        if !Path::new("/usr/sbin/mkfs.ext4").exists() && !Path::new("/sbin/mkfs.ext4").exists() {
            eprintln!("SKIP test_find_program_finds_sbin_tools: e2fsprogs not installed");
            return;
        }
        assert!(find_program("mkfs.ext4").is_some());
    }

    #[test]
    fn test_find_program_unknown_is_none() {
        assert_eq!(find_program("hearth-no-such-program-x7"), None);
    }
}
