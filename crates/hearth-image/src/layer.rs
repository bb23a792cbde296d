//! Applying one layer (a tar stream) onto a tree, with OCI whiteouts and opaque directories,
//! refusing anything that would write outside the tree. The tree is either the merged image
//! ([`Form::Merged`]: whiteouts delete) or the layer on its own in overlayfs's form
//! ([`Form::Overlay`]: whiteouts become the marks overlayfs reads when it stacks layers).
//!
//! Safety rule: every path is made of normal components (no `..`, leading `/` dropped), and
//! every directory on the way to an entry must be a real directory inside the tree, never a
//! symlink, so a layer cannot plant `a -> /etc` and then write `a/passwd`. Hard-link targets
//! obey the same rule. The entry's own name is replaced, never written through.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};

/// Prefix of a whiteout file: `.wh.NAME` deletes `NAME` from lower layers.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Marks its directory as opaque: lower layers' contents of it are hidden.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// overlayfs's mark of an opaque directory in a lower layer.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What tree a layer is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The image so far: whiteouts remove what lower layers left, opaque markers clear it.
    Merged,
    /// An empty dir holding this layer alone, to be stacked by overlayfs in the guest: a
    /// whiteout becomes a 0/0 character device, an opaque marker the `trusted.overlay.opaque`
    /// xattr. A hard link to a file of a lower layer cannot be made here
    /// ([`LayerError::LinkBelow`]); such an image is built merged.
    Overlay,
}

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
    #[error("hard link `{path}` points to `{target}`, a file of a lower layer")]
    LinkBelow { path: String, target: String },
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

/// Applies the tar stream `layer` onto `root`, in `form`.
pub fn apply(layer: impl Read, root: &Path, form: Form) -> Result<(), LayerError> {
    let mut archive = tar::Archive::new(layer);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    // Paths this layer wrote: an opaque marker hides only what lower layers left.
    let mut written: HashSet<PathBuf> = HashSet::new();
    // Directory mtimes are set once the layer is in: writing a child changes its parent's.
    let mut dir_mtimes: Vec<(PathBuf, u64)> = Vec::new();
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
            match form {
                Form::Merged => {
                    clear_dir(&parent, |child| !written.contains(&parent_rel.join(child)))?;
                }
                Form::Overlay => mark_opaque(&parent)?,
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(LayerError::BadWhiteout { path: raw });
            }
            let target = parent.join(hidden);
            match form {
                Form::Merged => remove(&target)?,
                // A whiteout hides only lower layers: what this layer wrote stays.
                Form::Overlay if written.contains(&parent_rel.join(hidden)) => {}
                Form::Overlay => {
                    remove(&target)?;
                    make_whiteout(&target)?;
                }
            }
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
            let target = link_target(root, &entry, &raw, form)?;
            fs::hard_link(&target, &dest).map_err(write_err)?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            make_node(&entry, &dest).map_err(write_err)?;
        } else {
            entry.unpack(&dest).map_err(write_err)?;
        }
        if kind.is_dir() {
            let mtime = entry.header().mtime().map_err(LayerError::Read)?;
            dir_mtimes.push((dest.clone(), mtime));
        }
        written.insert(rel);
    }
    for (dir, mtime) in dir_mtimes {
        set_mtime(&dir, mtime)?;
    }
    Ok(())
}

/// Sets a directory's access and modification times to `mtime`; one a later entry of the same
/// layer removed is skipped.
fn set_mtime(dir: &Path, mtime: u64) -> Result<(), LayerError> {
    let seconds = i64::try_from(mtime).unwrap_or(i64::MAX);
    let time = nix::sys::time::TimeSpec::new(seconds, 0);
    match utimensat(None, dir, &time, &time, UtimensatFlags::NoFollowSymlink) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(errno) => Err(LayerError::Write {
            path: dir.to_owned(),
            source: errno.into(),
        }),
    }
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

/// Marks `dir` opaque for overlayfs.
fn mark_opaque(dir: &Path) -> Result<(), LayerError> {
    xattr::set(dir, OVERLAY_OPAQUE_XATTR, b"y").map_err(|source| LayerError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// overlayfs's whiteout: a character device numbered 0/0.
fn make_whiteout(path: &Path) -> Result<(), LayerError> {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|errno| LayerError::Write {
        path: path.to_owned(),
        source: errno.into(),
    })
}

/// Where a hard link points, checked to be an existing non-directory inside the tree.
fn link_target<R: Read>(
    root: &Path,
    entry: &tar::Entry<'_, R>,
    raw: &str,
    form: Form,
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
        // A whiteout of this layer is no file to link to.
        Ok(meta) if form == Form::Overlay && is_whiteout(&meta) => Err(bad()),
        Ok(meta) if !meta.is_dir() => Ok(path),
        Err(e) if form == Form::Overlay && e.kind() == io::ErrorKind::NotFound => {
            Err(LayerError::LinkBelow {
                path: raw.to_owned(),
                target,
            })
        }
        _ => Err(bad()),
    }
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device() && meta.rdev() == 0
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
    let (major, minor) = if kind.is_fifo() {
        // A FIFO has no device number; writers fill the unused fields as they like.
        (0, 0)
    } else {
        device_numbers(header)?
    };
    let mode = Mode::from_bits_truncate(header.mode()?);
    mknod(dest, flag, mode, makedev(major, minor))?;
    std::os::unix::fs::lchown(dest, Some(header.uid()? as u32), Some(header.gid()? as u32))?;
    // mknod applies the umask; the layer's mode is the truth.
    fs::set_permissions(
        dest,
        std::os::unix::fs::PermissionsExt::from_mode(header.mode()?),
    )
}

/// Major and minor of a device entry. An empty (NUL- or space-filled) field reads as 0, as GNU
/// tar and docker read it; the tar crate refuses it.
fn device_numbers(header: &tar::Header) -> io::Result<(u64, u64)> {
    let raw = header
        .as_ustar()
        .map(|h| (h.dev_major, h.dev_minor))
        .or_else(|| header.as_gnu().map(|h| (h.dev_major, h.dev_minor)));
    let blank = |field: &[u8; 8]| field.iter().all(|b| *b == 0 || *b == b' ');
    let major = match &raw {
        Some((major, _)) if blank(major) => 0,
        _ => header.device_major()?.unwrap_or(0),
    };
    let minor = match &raw {
        Some((_, minor)) if blank(minor) => 0,
        _ => header.device_minor()?.unwrap_or(0),
    };
    Ok((u64::from(major), u64::from(minor)))
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
            apply(layer.as_slice(), root, Form::Merged)?;
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

    /// A header of `kind` whose device fields are NUL-filled, as Python's `tarfile` writes them
    /// for entries that are not devices.
    fn blank_device_fields(kind: tar::EntryType, path: &str) -> Vec<u8> {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(0o640);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        header.set_path(path).unwrap();
        let ustar = header.as_ustar_mut().unwrap();
        ustar.dev_major = [0; 8];
        ustar.dev_minor = [0; 8];
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &[][..]).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn test_apply_fifo_with_nul_device_fields_is_made() {
        let root = tempfile::tempdir().unwrap();
        let layer = blank_device_fields(tar::EntryType::Fifo, "run/pipe");
        apply_all(root.path(), &[layer]).unwrap();
        let meta = fs::symlink_metadata(root.path().join("run/pipe")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
        assert_eq!(meta.mode() & 0o7777, 0o640);
    }

    #[test]
    fn test_apply_device_with_blank_numbers_is_device_zero_zero() {
        let root = tempfile::tempdir().unwrap();
        let layer = blank_device_fields(tar::EntryType::Char, "dev/zero0");
        apply_all(root.path(), &[layer]).unwrap();
        let meta = fs::symlink_metadata(root.path().join("dev/zero0")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &meta.file_type()
        ));
        assert_eq!(meta.rdev(), 0);
    }

    #[test]
    fn test_apply_keeps_directory_mtime_after_its_children_are_written() {
        let root = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_uid(0);
        dir.set_gid(0);
        dir.set_mtime(1_000_000_000);
        dir.set_size(0);
        builder.append_data(&mut dir, "usr/bin", &[][..]).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o755);
        file.set_uid(0);
        file.set_gid(0);
        file.set_mtime(1_100_000_000);
        file.set_size(1);
        builder
            .append_data(&mut file, "usr/bin/tool", &b"x"[..])
            .unwrap();
        apply_all(root.path(), &[builder.into_inner().unwrap()]).unwrap();
        let dir = fs::metadata(root.path().join("usr/bin")).unwrap();
        let file = fs::metadata(root.path().join("usr/bin/tool")).unwrap();
        assert_eq!((dir.mtime(), file.mtime()), (1_000_000_000, 1_100_000_000));
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

    fn overlay_layer(layer: &[u8]) -> (tempfile::TempDir, Result<(), LayerError>) {
        let root = tempfile::tempdir().unwrap();
        let result = apply(layer, root.path(), Form::Overlay);
        (root, result)
    }

    #[test]
    fn test_overlay_form_turns_whiteouts_into_overlayfs_marks() {
        let layer = tar_of(&[
            Item::Dir("d"),
            Item::File("d/.wh..wh..opq", b""),
            Item::File("d/new", b"2"),
            Item::File("a/.wh.gone", b""),
        ]);
        let (root, result) = overlay_layer(&layer);
        result.unwrap();
        let gone = fs::symlink_metadata(root.path().join("a/gone")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &gone.file_type()
        ));
        assert_eq!(gone.rdev(), 0);
        assert_eq!(
            xattr::get(root.path().join("d"), OVERLAY_OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
        assert_eq!(fs::read(root.path().join("d/new")).unwrap(), b"2");
        assert!(!root.path().join("d/.wh..wh..opq").exists());
        assert!(!root.path().join("a/.wh.gone").exists());
    }

    #[test]
    fn test_overlay_form_whiteout_keeps_what_the_same_layer_wrote() {
        let layer = tar_of(&[Item::File("kept", b"mine"), Item::File(".wh.kept", b"")]);
        let (root, result) = overlay_layer(&layer);
        result.unwrap();
        assert_eq!(fs::read(root.path().join("kept")).unwrap(), b"mine");
    }

    #[test]
    fn test_overlay_form_names_links_to_lower_layers_and_still_refuses_escapes() {
        let (_root, result) = overlay_layer(&tar_of(&[Item::HardLink("b", "usr/lower")]));
        assert!(
            matches!(result, Err(LayerError::LinkBelow { .. })),
            "{result:?}"
        );
        let (_root, result) = overlay_layer(&tar_of(&[Item::HardLink("b", "../../etc/passwd")]));
        assert!(
            matches!(result, Err(LayerError::LinkTarget { .. })),
            "{result:?}"
        );
        let (root, result) =
            overlay_layer(&tar_of(&[Item::File("a", b"x"), Item::HardLink("b", "a")]));
        result.unwrap();
        assert_eq!(fs::read(root.path().join("b")).unwrap(), b"x");
    }
}
