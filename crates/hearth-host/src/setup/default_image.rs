//! The built-in default image: a small ext4 made offline from busybox-static, so
//! `hearth run -- uname -a` works with no registry.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use hearth_image::{make_ext4, Ext4Size, RootfsError};

use super::elf::{self, ElfError};
use super::fingerprint::{AtomicFile, Fingerprint};
use crate::find_program;

/// Size of the image: busybox is about 2 MiB; the rest is room for ext4's metadata.
pub const SIZE_MIB: u32 = 16;

/// Filesystem label of the image.
pub const LABEL: &str = "hearth-default";

/// Bumped whenever the files written below change, so old images get rebuilt.
const CONTENT_VERSION: u32 = 1;

/// Directories of the image, with their modes.
const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("tmp", 0o1777),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
];

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";

const GROUP: &str = "\
root:x:0:
nogroup:x:65534:
";

const HOSTNAME: &str = "hearth\n";

const HOSTS: &str = "\
127.0.0.1\tlocalhost
::1\tlocalhost
";

#[derive(Debug, thiserror::Error)]
pub enum DefaultImageError {
    #[error("`{}` does not exist; install it with `apt-get install busybox-static`", path.display())]
    BusyboxMissing { path: PathBuf },
    #[error(
        "`{}` is dynamically linked and cannot run alone in the image; \
         install the static build with `apt-get install busybox-static`",
        path.display()
    )]
    BusyboxNotStatic { path: PathBuf },
    #[error("failed to read `{}`", path.display())]
    ReadBusybox {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to inspect busybox")]
    BusyboxElf(#[source] ElfError),
    #[error("failed to run `{} --list-full`", path.display())]
    ListApplets {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{} --list-full` failed ({status}): {stderr}", path.display())]
    ListAppletsFailed {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error(
        "`busybox --list-full` printed `{applet}`, which is not a relative path inside the image"
    )]
    BadApplet { applet: String },
    #[error("failed to prepare `{}` in the image's staging dir", path.display())]
    Staging {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`mkfs.ext4` was not found in PATH, ~/.cargo/bin, /usr/local/bin, /usr/sbin or /sbin; \
         install it with `apt-get install e2fsprogs`"
    )]
    MkfsMissing,
    #[error("failed to make the default image `{}`", path.display())]
    Mkfs {
        path: PathBuf,
        #[source]
        source: RootfsError,
    },
    #[error("failed to write the default image `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the image depends on.
pub(crate) fn fingerprint(busybox: &Path) -> Result<Fingerprint, DefaultImageError> {
    let mut fingerprint = Fingerprint::new("default-image");
    fingerprint.field("content", CONTENT_VERSION);
    fingerprint.field("size-mib", SIZE_MIB);
    fingerprint.field("label", LABEL);
    fingerprint
        .file("busybox", busybox)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => DefaultImageError::BusyboxMissing {
                path: busybox.to_owned(),
            },
            _ => DefaultImageError::ReadBusybox {
                path: busybox.to_owned(),
                source,
            },
        })?;
    Ok(fingerprint)
}

/// Builds the image from `busybox` into `dest`, atomically.
pub(crate) fn build(dest: &Path, busybox: &Path) -> Result<(), DefaultImageError> {
    check_busybox(busybox)?;
    let mkfs = find_program("mkfs.ext4").ok_or(DefaultImageError::MkfsMissing)?;
    let applets = list_applets(busybox)?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".default-image-staging.")
        .tempdir_in(parent)
        .map_err(|source| DefaultImageError::Staging {
            path: parent.to_owned(),
            source,
        })?;
    stage(staging.path(), busybox, &applets)?;
    let write_err = |source| DefaultImageError::Write {
        path: dest.to_owned(),
        source,
    };
    let out = AtomicFile::create(dest).map_err(write_err)?;
    let size = Ext4Size {
        bytes: u64::from(SIZE_MIB) << 20,
        inodes: None,
    };
    make_ext4(&mkfs, staging.path(), out.temp_path(), LABEL, size).map_err(|source| {
        DefaultImageError::Mkfs {
            path: dest.to_owned(),
            source,
        }
    })?;
    out.commit(0o644).map_err(write_err)
    // `staging` is removed when dropped, on success and on every error above.
}

fn check_busybox(busybox: &Path) -> Result<(), DefaultImageError> {
    if !busybox.is_file() {
        return Err(DefaultImageError::BusyboxMissing {
            path: busybox.to_owned(),
        });
    }
    if elf::needs_interpreter(busybox).map_err(DefaultImageError::BusyboxElf)? {
        return Err(DefaultImageError::BusyboxNotStatic {
            path: busybox.to_owned(),
        });
    }
    Ok(())
}

/// The applet paths busybox installs, relative to `/` (`bin/sh`, `usr/bin/env`, ...).
fn list_applets(busybox: &Path) -> Result<Vec<PathBuf>, DefaultImageError> {
    let output = Command::new(busybox)
        .arg("--list-full")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| DefaultImageError::ListApplets {
            path: busybox.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(DefaultImageError::ListAppletsFailed {
            path: busybox.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    parse_applets(&String::from_utf8_lossy(&output.stdout))
}

/// Parses `busybox --list-full`: one path a line, relative to `/`. The busybox binary itself
/// is skipped; anything that could leave the image is refused.
fn parse_applets(text: &str) -> Result<Vec<PathBuf>, DefaultImageError> {
    let mut applets = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new(line.trim_start_matches('/'));
        let inside = path.components().all(|c| matches!(c, Component::Normal(_)));
        if !inside || path.as_os_str().is_empty() {
            return Err(DefaultImageError::BadApplet {
                applet: line.to_owned(),
            });
        }
        if path != Path::new("bin/busybox") {
            applets.push(path.to_owned());
        }
    }
    Ok(applets)
}

/// Lays out the image's tree under `root`.
fn stage(root: &Path, busybox: &Path, applets: &[PathBuf]) -> Result<(), DefaultImageError> {
    let staging = |path: &Path| {
        let path = path.to_owned();
        move |source| DefaultImageError::Staging { path, source }
    };
    // mkfs.ext4 -d copies the root's mode too; a temp dir starts as 0700.
    set_mode(root, 0o755).map_err(staging(root))?;
    for (dir, mode) in DIRS {
        let path = root.join(dir);
        fs::create_dir_all(&path).map_err(staging(&path))?;
        set_mode(&path, *mode).map_err(staging(&path))?;
    }
    let target = root.join("bin/busybox");
    fs::copy(busybox, &target).map_err(staging(&target))?;
    set_mode(&target, 0o755).map_err(staging(&target))?;
    for applet in applets {
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(staging(parent))?;
        }
        match symlink("/bin/busybox", &link) {
            // busybox lists a few applets twice; the first link is the same.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            other => other.map_err(staging(&link))?,
        }
    }
    let os_release = os_release();
    let files: [(&str, &str, u32); 5] = [
        ("etc/passwd", PASSWD, 0o644),
        ("etc/group", GROUP, 0o644),
        ("etc/hostname", HOSTNAME, 0o644),
        ("etc/hosts", HOSTS, 0o644),
        ("etc/os-release", &os_release, 0o644),
    ];
    for (name, contents, mode) in files {
        let path = root.join(name);
        fs::write(&path, contents).map_err(staging(&path))?;
        set_mode(&path, mode).map_err(staging(&path))?;
    }
    Ok(())
}

fn os_release() -> String {
    format!(
        "NAME=\"hearth busybox\"\n\
         ID=hearth-busybox\n\
         VERSION_ID={version}\n\
         PRETTY_NAME=\"hearth's busybox default image (hearth {version})\"\n",
        version = env!("CARGO_PKG_VERSION")
    )
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// `mkfs.ext4` the tree at `staging` into the file `image` (named `dest` in messages).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_applets_skips_busybox_itself() {
        let applets = parse_applets("bin/busybox\nbin/sh\nusr/bin/[\n").unwrap();
        assert_eq!(
            applets,
            [PathBuf::from("bin/sh"), PathBuf::from("usr/bin/[")]
        );
    }

    #[test]
    fn test_parse_applets_refuses_escaping_path() {
        let err = parse_applets("bin/sh\nbin/../../etc/shadow\n").unwrap_err();
        assert!(matches!(err, DefaultImageError::BadApplet { .. }), "{err}");
    }

    #[test]
    fn test_parse_applets_keeps_top_level_linuxrc() {
        // busybox-static lists `linuxrc` at the root, as `busybox --install` places it.
        let applets = parse_applets("linuxrc\nbin/sh\n").unwrap();
        assert_eq!(applets, [PathBuf::from("linuxrc"), PathBuf::from("bin/sh")]);
    }

    #[test]
    fn test_parse_applets_refuses_absolute_escape() {
        let err = parse_applets("/../etc/passwd\n").unwrap_err();
        assert!(matches!(err, DefaultImageError::BadApplet { .. }), "{err}");
    }

    #[test]
    fn test_check_busybox_missing_names_the_package() {
        let err = check_busybox(Path::new("/nonexistent/busybox")).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install busybox-static"),
            "{err}"
        );
    }

    #[test]
    fn test_check_busybox_dynamic_is_refused() {
        // /bin/true is dynamically linked, like Debian's non-static busybox.
        let err = check_busybox(Path::new("/bin/true")).unwrap_err();
        assert!(
            matches!(err, DefaultImageError::BusyboxNotStatic { .. }),
            "{err}"
        );
    }

    #[test]
    fn test_stage_lays_out_links_and_etc() {
        let root = tempfile::tempdir().unwrap();
        let applets = [PathBuf::from("bin/sh"), PathBuf::from("usr/bin/env")];
        stage(root.path(), Path::new("/bin/true"), &applets).unwrap();
        assert_eq!(
            fs::read_link(root.path().join("usr/bin/env")).unwrap(),
            Path::new("/bin/busybox")
        );
        let passwd = fs::read_to_string(root.path().join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"));
        let tmp_mode = fs::metadata(root.path().join("tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
    }
}
