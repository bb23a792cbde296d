//! Kernel modules shipped in the initramfs.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// Where the initramfs lists its modules, one absolute path a line, in dependency order.
pub const MODULE_LIST: &str = "/hearth/modules";

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("failed to read the module list {path}")]
    ReadList {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to open kernel module {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to load kernel module {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Loads every module named in `list`, in order, and returns how many it named. A missing list
/// means the kernel needs no modules; a module already loaded (or built in) is fine.
pub fn load_listed(list: &Path) -> Result<usize, ModuleError> {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(ModuleError::ReadList {
                path: list.to_owned(),
                source,
            })
        }
    };
    let paths = module_paths(&text);
    for path in &paths {
        load(path)?;
    }
    Ok(paths.len())
}

fn module_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(PathBuf::from)
        .collect()
}

fn load(path: &Path) -> Result<(), ModuleError> {
    let file = File::open(path).map_err(|source| ModuleError::Open {
        path: path.to_owned(),
        source,
    })?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(source) => Err(ModuleError::Load {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_module_paths_skip_blank_and_comment_lines() {
        let text = "/lib/modules/a.ko\n\n  /lib/modules/b.ko  \n# c\n";
        assert_eq!(
            module_paths(text),
            [
                PathBuf::from("/lib/modules/a.ko"),
                PathBuf::from("/lib/modules/b.ko")
            ]
        );
    }

    #[test]
    fn test_missing_list_means_no_modules() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_listed(&dir.path().join("modules")).unwrap(), 0);
    }

    #[test]
    fn test_missing_module_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("modules");
        std::fs::write(&list, "/nonexistent/virtio.ko\n").unwrap();
        let err = load_listed(&list).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/virtio.ko"), "{err}");
    }
}
