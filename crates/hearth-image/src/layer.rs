//! Applying one layer (a tar stream) onto a tree, with OCI whiteouts and opaque directories,
//! refusing anything that would write outside the tree.
//!
//! Safety rule: every path is made of normal components (no `..`, leading `/` dropped), and
//! every directory on the way to an entry must be a real directory inside the tree, never a
//! symlink, so a layer cannot plant `a -> /etc` and then write `a/passwd`. Hard-link targets
//! obey the same rule. The entry's own name is replaced, never written through.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// Prefix of a whiteout file: `.wh.NAME` deletes `NAME` from lower layers.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Marks its directory as opaque: lower layers' contents of it are hidden.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry `{path}` escapes the image root")]
    Escapes { path: String },
    #[error("layer entry `{path}` goes through the symlink `{}`", symlink.display())]
    ThroughSymlink { path: String, symlink: PathBuf },
    #[error("layer entry `{path}` needs `{}` to be a directory", parent.display())]
    NotADirectory { path: String, parent: PathBuf },
    #[error("hard link `{path}` points to `{target}`, which is not in the image")]
    LinkTarget { path: String, target: String },
    #[error("whiteout `{path}` names no valid file")]
    BadWhiteout { path: String },
    #[error("failed to read the layer's tar stream")]
    Read(#[source] io::Error),
    #[error("failed to write `{}` from the layer", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Applies the tar stream `layer` onto `root`.
pub fn apply(layer: impl Read, root: &Path) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(layer);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    // Paths this layer wrote: an opaque marker hides only what lower layers left.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(LayerError::Read)? {
        let mut entry = entry.map_err(LayerError::Read)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = normalise(&raw)? else {
            continue; // The root itself.
        };
        let name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = safe_dir(root, parent_rel, &raw)?;
        if name == OPAQUE_MARKER {
            clear_dir(&parent, |child| !written.contains(&parent_rel.join(child)))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(LayerError::BadWhiteout { path: raw });
            }
            remove(&parent.join(hidden))?;
            continue;
        }
        let dest = parent.join(&name);
        let kind = entry.header().entry_type();
        replace_existing(&dest, kind.is_dir())?;
        let write_err = |source| LayerError::Write {
            path: dest.clone(),
            source,
        };
        if kind.is_hard_link() {
            let target = link_target(root, &entry, &raw)?;
            fs::hard_link(&target, &dest).map_err(write_err)?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            make_node(&entry, &dest).map_err(write_err)?;
        } else {
            entry.unpack(&dest).map_err(write_err)?;
        }
        written.insert(rel);
    }
    Ok(())
}

/// The entry's path as normal components; `None` for the root itself.
fn normalise(raw: &str) -> Result<Option<PathBuf>, LayerError> {
    let mut rel = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(LayerError::Escapes {
                    path: raw.to_owned(),
                })
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// `root/rel`, checked (and created where missing) to be real directories all the way down.
fn safe_dir(root: &Path, rel: &Path, raw: &str) -> Result<PathBuf, LayerError> {
    let mut dir = root.to_owned();
    for part in rel.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(LayerError::ThroughSymlink {
                    path: raw.to_owned(),
                    symlink: dir,
                })
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(LayerError::NotADirectory {
                    path: raw.to_owned(),
                    parent: dir,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|source| LayerError::Write {
                    path: dir.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(LayerError::Write { path: dir, source }),
        }
    }
    Ok(dir)
}

/// Makes room for a new entry: a directory onto a directory merges, anything else replaces.
fn replace_existing(dest: &Path, new_is_dir: bool) -> Result<(), LayerError> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() && new_is_dir => Ok(()),
        Ok(_) => remove(dest),
        Err(_) => Ok(()),
    }
}

/// Removes a file, symlink or whole directory; a missing one is fine (whiteouts may repeat).
fn remove(path: &Path) -> Result<(), LayerError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|source| LayerError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Removes the children of `dir` for which `hide` is true.
fn clear_dir(dir: &Path, hide: impl Fn(&std::ffi::OsStr) -> bool) -> Result<(), LayerError> {
    let read_err = |source| LayerError::Write {
        path: dir.to_owned(),
        source,
    };
    for child in fs::read_dir(dir).map_err(read_err)? {
        let child = child.map_err(read_err)?;
        if hide(&child.file_name()) {
            remove(&child.path())?;
        }
    }
    Ok(())
}

/// Where a hard link points, checked to be an existing non-directory inside the tree.
fn link_target<R: Read>(
    root: &Path,
    entry: &tar::Entry<'_, R>,
    raw: &str,
) -> Result<PathBuf, LayerError> {
    let target = entry
        .link_name_bytes()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let bad = || LayerError::LinkTarget {
        path: raw.to_owned(),
        target: target.clone(),
    };
    let rel = normalise(&target).map_err(|_| bad())?.ok_or_else(bad)?;
    let parent = safe_dir(root, rel.parent().unwrap_or(Path::new("")), raw)?;
    let path = parent.join(rel.file_name().ok_or_else(bad)?);
    match fs::symlink_metadata(&path) {
        Ok(meta) if !meta.is_dir() => Ok(path),
        _ => Err(bad()),
    }
}

/// A device node or FIFO with the entry's mode and owner.
fn make_node<R: Read>(entry: &tar::Entry<'_, R>, dest: &Path) -> io::Result<()> {
    let header = entry.header();
    let kind = header.entry_type();
    let flag = if kind.is_character_special() {
        SFlag::S_IFCHR
    } else if kind.is_block_special() {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFIFO
    };
    let major = u64::from(header.device_major()?.unwrap_or(0));
    let minor = u64::from(header.device_minor()?.unwrap_or(0));
    let mode = Mode::from_bits_truncate(header.mode()?);
    mknod(dest, flag, mode, makedev(major, minor))?;
    std::os::unix::fs::lchown(dest, Some(header.uid()? as u32), Some(header.gid()? as u32))?;
    // mknod applies the umask; the layer's mode is the truth.
    fs::set_permissions(
        dest,
        std::os::unix::fs::PermissionsExt::from_mode(header.mode()?),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// Builds a tar in memory from (path, kind) pairs.
    enum Item<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
    }

    fn tar_of(items: &[Item<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for item in items {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(1000);
            header.set_gid(1000);
            let (path, data): (&str, &[u8]) = match item {
                Item::File(path, data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    (path, data)
                }
                Item::Dir(path) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o750);
                    header.set_size(0);
                    (path, b"")
                }
                Item::Symlink(path, target) | Item::HardLink(path, target) => {
                    header.set_entry_type(if matches!(item, Item::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    header.set_size(0);
                    // Raw names, so hostile values are not cleaned up by the builder.
                    header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                    (path, b"")
                }
            };
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn apply_all(root: &Path, layers: &[Vec<u8>]) -> Result<(), LayerError> {
        for layer in layers {
            apply(layer.as_slice(), root)?;
        }
        Ok(())
    }

    #[test]
    fn test_apply_files_keep_mode_and_owner() {
        let root = tempfile::tempdir().unwrap();
        apply_all(root.path(), &[tar_of(&[Item::File("etc/hello", b"hi")])]).unwrap();
        let meta = fs::metadata(root.path().join("etc/hello")).unwrap();
        assert_eq!(fs::read(root.path().join("etc/hello")).unwrap(), b"hi");
        assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o644, 1000));
    }

    #[test]
    fn test_apply_whiteout_removes_lower_file_and_dir() {
        let root = tempfile::tempdir().unwrap();
        let lower = tar_of(&[Item::File("a/file", b"1"), Item::File("b/x/y", b"2")]);
        let upper = tar_of(&[Item::File("a/.wh.file", b""), Item::File(".wh.b", b"")]);
        apply_all(root.path(), &[lower, upper]).unwrap();
        assert!(!root.path().join("a/file").exists());
        assert!(root.path().join("a").is_dir());
        assert!(!root.path().join("b").exists());
    }

    #[test]
    fn test_apply_opaque_dir_hides_lower_children_but_keeps_its_own() {
        let root = tempfile::tempdir().unwrap();
        let lower = tar_of(&[Item::File("d/old", b"1")]);
        let upper = tar_of(&[
            Item::Dir("d"),
            Item::File("d/new", b"2"),
            Item::File("d/.wh..wh..opq", b""),
        ]);
        apply_all(root.path(), &[lower, upper]).unwrap();
        assert!(!root.path().join("d/old").exists());
        assert!(root.path().join("d/new").exists());
        assert!(!root.path().join("d/.wh..wh..opq").exists());
    }

    #[test]
    fn test_apply_hard_link_shares_the_inode() {
        let root = tempfile::tempdir().unwrap();
        let layer = tar_of(&[Item::File("a", b"x"), Item::HardLink("b", "a")]);
        apply_all(root.path(), &[layer]).unwrap();
        let (a, b) = (
            fs::metadata(root.path().join("a")).unwrap(),
            fs::metadata(root.path().join("b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
    }

    #[test]
    fn test_apply_file_replaces_a_symlink_instead_of_writing_through_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "safe").unwrap();
        let lower = tar_of(&[Item::Symlink("link", victim.to_str().unwrap())]);
        let upper = tar_of(&[Item::File("link", b"owned")]);
        apply_all(root.path(), &[lower, upper]).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "safe");
        assert_eq!(fs::read(root.path().join("link")).unwrap(), b"owned");
    }

    #[test]
    fn test_apply_refuses_dotdot_paths() {
        let root = tempfile::tempdir().unwrap();
        let err = apply_all(root.path(), &[tar_of(&[Item::File("a/../../x", b"")])]);
        assert!(matches!(err, Err(LayerError::Escapes { .. })), "{err:?}");
    }

    #[test]
    fn test_apply_absolute_paths_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        apply_all(root.path(), &[tar_of(&[Item::File("/abs", b"1")])]).unwrap();
        assert!(root.path().join("abs").is_file());
    }

    #[test]
    fn test_apply_refuses_writes_through_a_symlinked_dir() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let layer = tar_of(&[
            Item::Symlink("escape", outside.path().to_str().unwrap()),
            Item::File("escape/planted", b"x"),
        ]);
        let err = apply_all(root.path(), &[layer]);
        assert!(
            matches!(err, Err(LayerError::ThroughSymlink { .. })),
            "{err:?}"
        );
        assert!(!outside.path().join("planted").exists());
    }

    #[test]
    fn test_apply_refuses_relative_symlink_escape_too() {
        let root = tempfile::tempdir().unwrap();
        let layer = tar_of(&[
            Item::Symlink("up", "../../../../tmp"),
            Item::File("up/hearth-planted", b"x"),
        ]);
        let err = apply_all(root.path(), &[layer]);
        assert!(
            matches!(err, Err(LayerError::ThroughSymlink { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn test_apply_refuses_hard_links_to_outside_targets() {
        let root = tempfile::tempdir().unwrap();
        for target in ["../../etc/passwd", "/etc/passwd"] {
            let err = apply_all(root.path(), &[tar_of(&[Item::HardLink("h", target)])]);
            assert!(
                matches!(err, Err(LayerError::LinkTarget { .. })),
                "{target}: {err:?}"
            );
        }
        assert!(!root.path().join("h").exists());
    }

    #[test]
    fn test_apply_refuses_whiteout_of_dotdot() {
        let root = tempfile::tempdir().unwrap();
        let err = apply_all(root.path(), &[tar_of(&[Item::File("a/.wh...", b"")])]);
        assert!(
            matches!(err, Err(LayerError::BadWhiteout { .. })),
            "{err:?}"
        );
    }
}
