//! The kernel modules the guest loads from the initramfs, resolved from the kernel's
//! `modules.dep` into load order (dependencies first, each once).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::fingerprint::Fingerprint;

/// What the guest needs that Debian's cloud kernel builds as modules: virtio over MMIO for
/// disks, network and the agent's virtio-serial port (QEMU) or vsock (Firecracker), overlay
/// for the root, erofs for images and fuse for host dirs mounted in the guest (`-v`).
/// Their dependencies come from `modules.dep`.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "overlay",
    "erofs",
    "fuse",
];

/// Where module files live inside the guest.
const GUEST_MODULES_ROOT: &str = "/lib/modules";

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("failed to read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` line {line} is not `path: dependencies...`", path.display())]
    Syntax { path: PathBuf, line: usize },
    #[error("cannot resolve the guest's kernel modules from `{}`", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: ResolveError,
    },
    #[error(
        "cannot decompress kernel module `{}`: `{program}` is not installed; \
         install it with `apt-get install {package}`",
        path.display()
    )]
    DecompressorMissing {
        path: PathBuf,
        program: &'static str,
        package: &'static str,
    },
    #[error("failed to run `{program}` to decompress kernel module `{}`", path.display())]
    DecompressorSpawn {
        path: PathBuf,
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("`{program}` failed to decompress kernel module `{}`: {stderr}", path.display())]
    Decompress {
        path: PathBuf,
        program: &'static str,
        stderr: String,
    },
    #[error(
        "kernel module `{}` has an unsupported name; expected `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`",
        path.display()
    )]
    UnsupportedName { path: PathBuf },
}

/// Why a set of modules could not be put in load order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("kernel module `{name}` is neither in modules.dep nor built into the kernel (modules.builtin)")]
    Unknown { name: String },
    #[error(
        "modules.dep names `{dependency}` as a dependency of `{module}` but has no line for it"
    )]
    MissingDependency { module: String, dependency: String },
    #[error("modules.dep has a dependency cycle through `{name}`")]
    Cycle { name: String },
}

/// A `modules.dep` line with a bad shape, by 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
}

/// The parsed `modules.dep`: each module's file (relative to the modules dir, or absolute)
/// and its dependencies, by module name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModulesDep {
    modules: HashMap<String, DepEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DepEntry {
    path: String,
    deps: Vec<String>,
}

impl ModulesDep {
    /// Parses `modules.dep`: one `path: dep-path dep-path...` line per module.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut modules = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let syntax = || SyntaxError { line: index + 1 };
            let (path, deps) = line.split_once(':').ok_or_else(syntax)?;
            let path = path.trim();
            let name = module_name(path).ok_or_else(syntax)?;
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            // modprobe uses the first line for a name; so do we.
            modules.entry(name).or_insert(DepEntry {
                path: path.to_owned(),
                deps,
            });
        }
        Ok(ModulesDep { modules })
    }

    /// The file of module `name` as `modules.dep` spells it.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.modules.get(name).map(|entry| entry.path.as_str())
    }
}

/// Module names in `modules.builtin` (one path a line).
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines().filter_map(module_name).collect()
}

/// The module name of a module file path: `kernel/net/core/failover.ko.xz` → `failover`, with
/// `-` read as `_` as the kernel does.
pub fn module_name(path: &str) -> Option<String> {
    let file = path.trim().rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

/// The modules to load for `wanted`, in load order: every module after its dependencies, none
/// twice. Wanted modules built into the kernel are left out and listed in `builtin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// `(name, path as in modules.dep)` in load order.
    pub load_order: Vec<(String, String)>,
    /// Wanted modules that are built into the kernel.
    pub builtin: Vec<String>,
}

pub fn resolve(
    dep: &ModulesDep,
    builtin: &HashSet<String>,
    wanted: &[&str],
) -> Result<Resolution, ResolveError> {
    let mut resolver = Resolver {
        dep,
        done: HashSet::new(),
        visiting: HashSet::new(),
        resolution: Resolution::default(),
    };
    for name in wanted {
        let name = name.replace('-', "_");
        if dep.modules.contains_key(&name) {
            resolver.visit(&name)?;
        } else if builtin.contains(&name) {
            resolver.resolution.builtin.push(name);
        } else {
            return Err(ResolveError::Unknown { name });
        }
    }
    Ok(resolver.resolution)
}

struct Resolver<'a> {
    dep: &'a ModulesDep,
    done: HashSet<String>,
    visiting: HashSet<String>,
    resolution: Resolution,
}

impl Resolver<'_> {
    fn visit(&mut self, name: &str) -> Result<(), ResolveError> {
        if self.done.contains(name) {
            return Ok(());
        }
        if !self.visiting.insert(name.to_owned()) {
            return Err(ResolveError::Cycle {
                name: name.to_owned(),
            });
        }
        let entry = &self.dep.modules[name];
        for dep_path in &entry.deps {
            let dependency = module_name(dep_path).unwrap_or_else(|| dep_path.clone());
            if !self.dep.modules.contains_key(&dependency) {
                return Err(ResolveError::MissingDependency {
                    module: name.to_owned(),
                    dependency,
                });
            }
            self.visit(&dependency)?;
        }
        self.visiting.remove(name);
        self.done.insert(name.to_owned());
        self.resolution
            .load_order
            .push((name.to_owned(), entry.path.clone()));
        Ok(())
    }
}

/// One module file to ship in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestModule {
    pub name: String,
    /// The file on the host, possibly compressed.
    pub host_path: PathBuf,
    /// Where the initramfs holds it, uncompressed: `/lib/modules/<version>/.../<name>.ko`.
    pub guest_path: PathBuf,
}

/// The guest modules of one kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelModules {
    /// In load order.
    pub modules: Vec<GuestModule>,
    /// Wanted modules that the kernel has built in.
    pub builtin: Vec<String>,
    #[serde(skip)]
    modules_dir: PathBuf,
}

impl KernelModules {
    /// No modules: for a kernel with everything built in (or without a modules dir).
    pub fn none() -> Self {
        KernelModules {
            modules: Vec::new(),
            builtin: Vec::new(),
            modules_dir: PathBuf::new(),
        }
    }

    /// Adds everything the modules depend on to `fingerprint`.
    pub(crate) fn add_to(&self, fingerprint: &mut Fingerprint) -> Result<(), ModulesError> {
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ModulesError::Read { path, source }
        };
        if !self.modules.is_empty() {
            let dep = self.modules_dir.join("modules.dep");
            fingerprint
                .file("modules.dep", &dep)
                .map_err(read_err(&dep))?;
        }
        for module in &self.modules {
            fingerprint
                .file("module", &module.host_path)
                .map_err(read_err(&module.host_path))?;
            fingerprint.field("module-in-guest", module.guest_path.display());
        }
        Ok(())
    }
}

/// Resolves `wanted` from `<modules_dir>/modules.dep` and `modules.builtin` of kernel `version`.
pub fn kernel_modules(
    modules_dir: &Path,
    version: &str,
    wanted: &[&str],
) -> Result<KernelModules, ModulesError> {
    let dep_path = modules_dir.join("modules.dep");
    let dep_text = std::fs::read_to_string(&dep_path).map_err(|source| ModulesError::Read {
        path: dep_path.clone(),
        source,
    })?;
    let dep = ModulesDep::parse(&dep_text).map_err(|e| ModulesError::Syntax {
        path: dep_path.clone(),
        line: e.line,
    })?;
    let builtin_path = modules_dir.join("modules.builtin");
    let builtin = match std::fs::read_to_string(&builtin_path) {
        Ok(text) => parse_builtin(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
        Err(source) => {
            return Err(ModulesError::Read {
                path: builtin_path,
                source,
            })
        }
    };
    let resolution = resolve(&dep, &builtin, wanted).map_err(|source| ModulesError::Resolve {
        path: dep_path,
        source,
    })?;
    let modules = resolution
        .load_order
        .into_iter()
        .map(|(name, path)| GuestModule {
            name,
            host_path: modules_dir.join(&path),
            guest_path: guest_path(version, &path),
        })
        .collect();
    Ok(KernelModules {
        modules,
        builtin: resolution.builtin,
        modules_dir: modules_dir.to_owned(),
    })
}

/// `/lib/modules/<version>/<path>` without a compression suffix; absolute paths stay put.
fn guest_path(version: &str, dep_path: &str) -> PathBuf {
    let plain = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|suffix| dep_path.strip_suffix(suffix))
        .map_or_else(|| dep_path.to_owned(), |stem| format!("{stem}.ko"));
    if plain.starts_with('/') {
        PathBuf::from(plain)
    } else {
        Path::new(GUEST_MODULES_ROOT).join(version).join(plain)
    }
}

/// The module file's contents, decompressed.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModulesError> {
    let name = path.to_string_lossy();
    let (program, package) = if name.ends_with(".ko") {
        return std::fs::read(path).map_err(|source| ModulesError::Read {
            path: path.to_owned(),
            source,
        });
    } else if name.ends_with(".ko.xz") {
        ("xz", "xz-utils")
    } else if name.ends_with(".ko.zst") {
        ("zstd", "zstd")
    } else if name.ends_with(".ko.gz") {
        ("gzip", "gzip")
    } else {
        return Err(ModulesError::UnsupportedName {
            path: path.to_owned(),
        });
    };
    let output = Command::new(program)
        .args(["-d", "-c", "-q"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ModulesError::DecompressorMissing {
                    path: path.to_owned(),
                    program,
                    package,
                }
            } else {
                ModulesError::DecompressorSpawn {
                    path: path.to_owned(),
                    program,
                    source,
                }
            }
        })?;
    if !output.status.success() {
        return Err(ModulesError::Decompress {
            path: path.to_owned(),
            program,
            stderr: format!(
                "{} ({})",
                String::from_utf8_lossy(&output.stderr).trim(),
                output.status
            ),
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines recorded from Debian 12's `/lib/modules/6.1.0-56-cloud-amd64/modules.dep`, with a
    /// few unrelated ones kept to show they are ignored.
    const MODULES_DEP: &str = "\
kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/fs/fuse/fuse.ko
kernel/fs/fuse/fuse.ko:
kernel/fs/overlayfs/overlay.ko:
kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/lib/libcrc32c.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
";

    const MODULES_BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n";

    fn names(resolution: &Resolution) -> Vec<&str> {
        resolution
            .load_order
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    #[test]
    fn test_parse_reads_paths_by_name() {
        let dep = ModulesDep::parse(MODULES_DEP).unwrap();
        assert_eq!(dep.path_of("failover"), Some("kernel/net/core/failover.ko"));
        assert_eq!(
            dep.path_of("crc32c_intel"),
            Some("kernel/arch/x86/crypto/crc32c-intel.ko")
        );
    }

    #[test]
    fn test_parse_line_without_colon_is_syntax_error() {
        let err = ModulesDep::parse("kernel/a.ko:\nkernel/b.ko kernel/a.ko\n").unwrap_err();
        assert_eq!(err, SyntaxError { line: 2 });
    }

    #[test]
    fn test_module_name_strips_compression_and_dashes() {
        assert_eq!(
            module_name("kernel/net/core/failover.ko.xz").as_deref(),
            Some("failover")
        );
        assert_eq!(
            module_name("kernel/x/crc32c-intel.ko.zst").as_deref(),
            Some("crc32c_intel")
        );
        assert_eq!(module_name("kernel/x/readme.txt"), None);
    }

    #[test]
    fn test_resolve_guest_modules_puts_dependencies_first_once() {
        let dep = ModulesDep::parse(MODULES_DEP).unwrap();
        let resolution = resolve(&dep, &parse_builtin(MODULES_BUILTIN), GUEST_MODULES).unwrap();
        assert_eq!(
            names(&resolution),
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_console",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
                "overlay",
                "libcrc32c",
                "erofs",
                "fuse",
            ]
        );
    }

    #[test]
    fn test_resolve_builtin_module_is_skipped() {
        let dep = ModulesDep::parse(MODULES_DEP).unwrap();
        let resolution =
            resolve(&dep, &parse_builtin(MODULES_BUILTIN), &["ext4", "overlay"]).unwrap();
        assert_eq!(names(&resolution), ["overlay"]);
        assert_eq!(resolution.builtin, ["ext4"]);
    }

    #[test]
    fn test_resolve_unknown_module_is_error() {
        let dep = ModulesDep::parse(MODULES_DEP).unwrap();
        let err = resolve(&dep, &HashSet::new(), &["btrfs"]).unwrap_err();
        assert_eq!(
            err,
            ResolveError::Unknown {
                name: "btrfs".to_owned()
            }
        );
    }

    #[test]
    fn test_resolve_dependency_without_line_is_error() {
        let dep = ModulesDep::parse("kernel/a.ko: kernel/b.ko\n").unwrap();
        let err = resolve(&dep, &HashSet::new(), &["a"]).unwrap_err();
        assert!(
            matches!(err, ResolveError::MissingDependency { .. }),
            "{err}"
        );
    }

    #[test]
    fn test_resolve_cycle_is_error() {
        let dep =
            ModulesDep::parse("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n").unwrap();
        let err = resolve(&dep, &HashSet::new(), &["a"]).unwrap_err();
        assert!(matches!(err, ResolveError::Cycle { .. }), "{err}");
    }

    #[test]
    fn test_guest_path_drops_compression_suffix() {
        assert_eq!(
            guest_path("6.1.0-56-cloud-amd64", "kernel/net/core/failover.ko.zst"),
            Path::new("/lib/modules/6.1.0-56-cloud-amd64/kernel/net/core/failover.ko")
        );
        assert_eq!(
            guest_path("6.1", "kernel/fs/overlayfs/overlay.ko"),
            Path::new("/lib/modules/6.1/kernel/fs/overlayfs/overlay.ko")
        );
    }

    #[test]
    fn test_read_module_decompresses_xz() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("m.ko");
        std::fs::write(&plain, b"\x7fELF module bytes").unwrap();
        let status = Command::new("xz").arg("-k").arg(&plain).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("SKIP test_read_module_decompresses_xz: xz is not installed");
            return;
        }
        let data = read_module(&dir.path().join("m.ko.xz")).unwrap();
        assert_eq!(data, b"\x7fELF module bytes");
    }

    #[test]
    fn test_read_module_unsupported_name_is_error() {
        let err = read_module(Path::new("/tmp/m.ko.bz2")).unwrap_err();
        assert!(matches!(err, ModulesError::UnsupportedName { .. }), "{err}");
    }
}
