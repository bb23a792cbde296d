//! Finding the guest kernel on the host and copying it into the state dir.

use std::cmp::Ordering;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::fingerprint::{AtomicFile, Fingerprint};

/// Debian's kernel flavour for VMs: small, and boots under QEMU `microvm` with a few modules.
const PREFERRED_FLAVOUR: &str = "-cloud-amd64";

/// Bytes of a bzImage read to find its version string.
const HEADER_READ_LEN: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "no guest kernel found: no `{}/vmlinuz-<version>` has a matching `{}/<version>`; \
         install one with `apt-get install linux-image-cloud-amd64` or pass `--kernel PATH`",
        boot_dir.display(),
        modules_root.display()
    )]
    NotFound {
        boot_dir: PathBuf,
        modules_root: PathBuf,
    },
    #[error("guest kernel `{}` does not exist or is not a file; pass an existing `--kernel PATH`", path.display())]
    Missing { path: PathBuf },
    #[error("failed to list `{}` while looking for a guest kernel", path.display())]
    ListBootDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read the guest kernel `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to copy the guest kernel `{}` to `{}`", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write the guest kernel to `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A kernel on the host to boot guests with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestKernel {
    /// The kernel image on the host.
    pub path: PathBuf,
    /// `uname -r` of the kernel, when known (from its bzImage header or its file name).
    pub version: Option<String>,
    /// `<modules_root>/<version>`, when it exists.
    pub modules_dir: Option<PathBuf>,
}

/// The kernel at `explicit`, else the newest `<boot_dir>/vmlinuz-<version>` that has a
/// `<modules_root>/<version>` directory, preferring Debian's `-cloud-amd64` flavour.
pub fn find_kernel(
    explicit: Option<&Path>,
    boot_dir: &Path,
    modules_root: &Path,
) -> Result<GuestKernel, KernelError> {
    match explicit {
        Some(path) => explicit_kernel(path, modules_root),
        None => newest_installed(boot_dir, modules_root),
    }
}

fn explicit_kernel(path: &Path, modules_root: &Path) -> Result<GuestKernel, KernelError> {
    if !path.is_file() {
        return Err(KernelError::Missing {
            path: path.to_owned(),
        });
    }
    let from_header = kernel_version(path).map_err(|source| KernelError::Read {
        path: path.to_owned(),
        source,
    })?;
    let version = from_header.or_else(|| {
        path.file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("vmlinuz-"))
            .map(str::to_owned)
    });
    let modules_dir = version
        .as_ref()
        .map(|v| modules_root.join(v))
        .filter(|dir| dir.is_dir());
    Ok(GuestKernel {
        path: path.to_owned(),
        version,
        modules_dir,
    })
}

fn newest_installed(boot_dir: &Path, modules_root: &Path) -> Result<GuestKernel, KernelError> {
    let not_found = || KernelError::NotFound {
        boot_dir: boot_dir.to_owned(),
        modules_root: modules_root.to_owned(),
    };
    let entries = match fs::read_dir(boot_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(source) => {
            return Err(KernelError::ListBootDir {
                path: boot_dir.to_owned(),
                source,
            })
        }
    };
    let versions: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("vmlinuz-").map(str::to_owned)
        })
        .filter(|version| !version.is_empty() && modules_root.join(version).is_dir())
        .collect();
    let version = pick_version(&versions).ok_or_else(not_found)?.to_owned();
    Ok(GuestKernel {
        path: boot_dir.join(format!("vmlinuz-{version}")),
        modules_dir: Some(modules_root.join(&version)),
        version: Some(version),
    })
}

/// The preferred flavour's newest version if there is one, else the newest of all.
fn pick_version(versions: &[String]) -> Option<&str> {
    versions
        .iter()
        .max_by(|a, b| {
            let preferred = |v: &str| v.ends_with(PREFERRED_FLAVOUR);
            preferred(a)
                .cmp(&preferred(b))
                .then_with(|| version_cmp(a, b))
        })
        .map(String::as_str)
}

/// Compares version strings piecewise, numbers as numbers: `6.1.0-9` < `6.1.0-56`.
fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        let (a_piece, a_rest) = split_piece(a);
        let (b_piece, b_rest) = split_piece(b);
        let a_digits = a_piece.starts_with(|c: char| c.is_ascii_digit());
        let b_digits = b_piece.starts_with(|c: char| c.is_ascii_digit());
        let order = if a_digits && b_digits {
            let (a_num, b_num) = (
                a_piece.trim_start_matches('0'),
                b_piece.trim_start_matches('0'),
            );
            a_num.len().cmp(&b_num.len()).then_with(|| a_num.cmp(b_num))
        } else {
            a_piece.cmp(b_piece)
        };
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (a_rest, b_rest);
    }
}

/// Splits off the leading run of digits or of non-digits.
fn split_piece(s: &str) -> (&str, &str) {
    let digits = s.starts_with(|c: char| c.is_ascii_digit());
    let end = s
        .find(|c: char| c.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// The version (`uname -r`) recorded in the x86 boot header of the bzImage at `path`, if it has
/// one.
pub fn kernel_version(path: &Path) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    File::open(path)?
        .take(HEADER_READ_LEN)
        .read_to_end(&mut head)?;
    Ok(bzimage_version(&head))
}

/// Reads the version from a bzImage's setup header: magic `HdrS` at 0x202, and at 0x20e the
/// offset (minus 0x200) of a NUL-terminated string starting with the version.
fn bzimage_version(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let pointer = u16::from_le_bytes([*head.get(0x20e)?, *head.get(0x20f)?]);
    if pointer == 0 {
        return None;
    }
    let text = head.get(usize::from(pointer) + 0x200..)?;
    let text = &text[..text.iter().position(|&b| b == 0)?];
    let version = std::str::from_utf8(text).ok()?.split_whitespace().next()?;
    Some(version.to_owned())
}

/// What the copy in the state dir depends on.
pub(crate) fn fingerprint(kernel: &GuestKernel) -> Result<Fingerprint, KernelError> {
    fingerprint_as(kernel, "kernel")
}

/// The fingerprint of an output made from the kernel alone, named `output`.
pub(crate) fn fingerprint_as(
    kernel: &GuestKernel,
    output: &str,
) -> Result<Fingerprint, KernelError> {
    let mut fingerprint = Fingerprint::new(output);
    fingerprint
        .file("source", &kernel.path)
        .map_err(|source| KernelError::Read {
            path: kernel.path.clone(),
            source,
        })?;
    Ok(fingerprint)
}

/// Copies the kernel to `dest`, atomically.
pub(crate) fn install(kernel: &GuestKernel, dest: &Path) -> Result<(), KernelError> {
    let write_err = |source| KernelError::Write {
        path: dest.to_owned(),
        source,
    };
    let mut source = File::open(&kernel.path).map_err(|source| KernelError::Read {
        path: kernel.path.clone(),
        source,
    })?;
    let mut out = AtomicFile::create(dest).map_err(write_err)?;
    io::copy(&mut source, out.file()).map_err(|source| KernelError::Copy {
        from: kernel.path.clone(),
        to: dest.to_owned(),
        source,
    })?;
    out.commit(0o644).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[&str]) -> Vec<String> {
        list.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn test_version_cmp_compares_numbers_numerically() {
        assert_eq!(
            version_cmp("6.1.0-9-amd64", "6.1.0-56-amd64"),
            Ordering::Less
        );
        assert_eq!(version_cmp("6.10.0", "6.9.0"), Ordering::Greater);
        assert_eq!(version_cmp("6.1.0", "6.1.0"), Ordering::Equal);
    }

    #[test]
    fn test_pick_version_prefers_cloud_flavour_over_newer_generic() {
        let list = versions(&[
            "6.5.0-1-amd64",
            "6.1.0-56-cloud-amd64",
            "6.1.0-9-cloud-amd64",
        ]);
        assert_eq!(pick_version(&list), Some("6.1.0-56-cloud-amd64"));
    }

    #[test]
    fn test_pick_version_without_cloud_takes_newest() {
        let list = versions(&["6.1.0-9-amd64", "6.1.0-10-amd64"]);
        assert_eq!(pick_version(&list), Some("6.1.0-10-amd64"));
    }

    #[test]
    fn test_find_kernel_skips_kernels_without_modules() {
        let root = tempfile::tempdir().unwrap();
        let (boot, modules) = (root.path().join("boot"), root.path().join("modules"));
        fs::create_dir_all(modules.join("6.1.0-9-cloud-amd64")).unwrap();
        fs::create_dir_all(&boot).unwrap();
        fs::write(boot.join("vmlinuz-6.1.0-9-cloud-amd64"), "old").unwrap();
        fs::write(boot.join("vmlinuz-6.1.0-56-cloud-amd64"), "no modules").unwrap();
        let kernel = find_kernel(None, &boot, &modules).unwrap();
        assert_eq!(kernel.version.as_deref(), Some("6.1.0-9-cloud-amd64"));
        assert_eq!(kernel.path, boot.join("vmlinuz-6.1.0-9-cloud-amd64"));
        assert_eq!(
            kernel.modules_dir,
            Some(modules.join("6.1.0-9-cloud-amd64"))
        );
    }

    #[test]
    fn test_find_kernel_none_installed_names_the_package() {
        let root = tempfile::tempdir().unwrap();
        let err = find_kernel(None, &root.path().join("boot"), root.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("apt-get install linux-image-cloud-amd64"),
            "{message}"
        );
        assert!(message.contains("--kernel PATH"), "{message}");
    }

    #[test]
    fn test_find_kernel_explicit_missing_is_error() {
        let err = find_kernel(
            Some(Path::new("/nonexistent/vmlinuz")),
            Path::new("/boot"),
            Path::new("/lib/modules"),
        )
        .unwrap_err();
        assert!(matches!(err, KernelError::Missing { .. }), "{err}");
    }

    #[test]
    fn test_bzimage_version_reads_setup_header() {
        let mut head = vec![0u8; 0x1000];
        head[0x202..0x206].copy_from_slice(b"HdrS");
        // The string sits at 0x200 + 0x300.
        head[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let text = b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        head[0x500..0x500 + text.len()].copy_from_slice(text);
        assert_eq!(
            bzimage_version(&head).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
    }

    #[test]
    fn test_bzimage_version_without_magic_is_none() {
        assert_eq!(bzimage_version(&[0u8; 0x1000]), None);
    }

    #[test]
    fn test_kernel_version_of_installed_debian_kernel_matches_its_name() {
        let Ok(kernel) = find_kernel(None, Path::new("/boot"), Path::new("/lib/modules")) else {
            eprintln!("SKIP test_kernel_version_of_installed_debian_kernel_matches_its_name: no kernel in /boot");
            return;
        };
        assert_eq!(kernel_version(&kernel.path).unwrap(), kernel.version);
    }
}
