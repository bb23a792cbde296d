//! Where hearth looks for the programs it runs (QEMU, mkfs tools, busybox).

use std::path::PathBuf;

/// Finds `name` in `PATH`, then where `cargo install` and install.sh put binaries
/// (`$CARGO_HOME/bin` or `~/.cargo/bin`, `/usr/local/bin`, `/usr/bin`), then `/usr/sbin` and
/// `/sbin` (where e2fsprogs lives, often missing from a user's `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    std::env::split_paths(&path)
        .chain(cargo_home)
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
