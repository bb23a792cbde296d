//! Choosing how to run VMs on this host: which programs, which accelerator, and why.

use std::path::{Path, PathBuf};

use hearth_vmm::qemu::QemuVmm;
use hearth_vmm::Accel;
use serde::Serialize;

pub const QEMU: &str = "qemu-system-x86_64";
pub const VHOST_VSOCK: &str = "vhost-device-vsock";

/// What `/dev/kvm` is on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmKind {
    /// Hardware virtualization through kvm_intel or kvm_amd.
    Hardware,
    /// The software "pagetable VM" module: stock guest kernels do not boot on it.
    Pvm,
    /// `/dev/kvm` exists but no known module backs it.
    Unknown,
    None,
}

/// The accelerator hearth will use, with the reason for the choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub kvm: KvmKind,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("`{program}` was not found in PATH, ~/.cargo/bin or /usr/local/bin; {fix}")]
    Missing {
        program: &'static str,
        fix: &'static str,
    },
}

/// Looks at `/sys/module` and `/dev/kvm` under `root` (`/` outside tests).
pub fn kvm_kind(root: &Path) -> KvmKind {
    let module = |name: &str| root.join("sys/module").join(name).exists();
    if !root.join("dev/kvm").exists() {
        KvmKind::None
    } else if module("kvm_pvm") {
        KvmKind::Pvm
    } else if module("kvm_intel") || module("kvm_amd") {
        KvmKind::Hardware
    } else {
        KvmKind::Unknown
    }
}

/// KVM only when it is hardware KVM; everything else runs under TCG.
pub fn choose_accel(kvm: KvmKind) -> AccelChoice {
    let (accel, reason) = match kvm {
        KvmKind::Hardware => (Accel::Kvm, "hardware KVM is available"),
        KvmKind::Pvm => (
            Accel::Tcg,
            "/dev/kvm is kvm_pvm, a software module that stock guest kernels cannot boot on",
        ),
        KvmKind::Unknown => (
            Accel::Tcg,
            "/dev/kvm is not backed by kvm_intel or kvm_amd, so it is not trusted to boot guests",
        ),
        KvmKind::None => (Accel::Tcg, "/dev/kvm does not exist"),
    };
    AccelChoice {
        accel,
        kvm,
        reason: reason.to_owned(),
    }
}

/// Searches PATH, then the places `cargo install` and install.sh put binaries.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    std::env::split_paths(&path)
        .chain(cargo_home)
        .chain([PathBuf::from("/usr/local/bin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn require(program: &'static str, fix: &'static str) -> Result<PathBuf, BackendError> {
    find_program(program).ok_or(BackendError::Missing { program, fix })
}

/// The QEMU backend with the programs found on this host.
pub fn qemu_backend() -> Result<QemuVmm, BackendError> {
    let qemu = require(QEMU, "install it with `apt-get install qemu-system-x86`")?;
    let vhost = require(
        VHOST_VSOCK,
        "install it with `cargo install vhost-device-vsock --version 0.3.0 --locked`",
    )?;
    Ok(QemuVmm::new(qemu, vhost))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(entries: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for entry in entries {
            std::fs::create_dir_all(root.path().join(entry)).unwrap();
        }
        root
    }

    #[test]
    fn test_kvm_pvm_means_tcg() {
        let root = fake_root(&["dev/kvm", "sys/module/kvm", "sys/module/kvm_pvm"]);
        let choice = choose_accel(kvm_kind(root.path()));
        assert_eq!(choice.kvm, KvmKind::Pvm);
        assert_eq!(choice.accel, Accel::Tcg);
        assert!(choice.reason.contains("kvm_pvm"));
    }

    #[test]
    fn test_hardware_kvm_means_kvm() {
        let root = fake_root(&["dev/kvm", "sys/module/kvm_intel"]);
        assert_eq!(choose_accel(kvm_kind(root.path())).accel, Accel::Kvm);
    }

    #[test]
    fn test_no_dev_kvm_means_tcg() {
        let root = fake_root(&["sys/module/kvm_amd"]);
        assert_eq!(kvm_kind(root.path()), KvmKind::None);
        assert_eq!(choose_accel(KvmKind::None).accel, Accel::Tcg);
    }
}
