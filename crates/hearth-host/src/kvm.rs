//! What `/dev/kvm` is on this host and which accelerator hearth uses, with the reason.

use std::fs::OpenOptions;
use std::path::Path;

use hearth_vmm::Accel;
use serde::Serialize;

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

/// The accelerator for this host: `kvm` only with hardware KVM (kvm_intel or kvm_amd) whose
/// `/dev/kvm` this process can open, else `tcg`, with the reason. `kvm_pvm` counts as no KVM:
/// stock guest kernels cannot boot on it.
pub fn accelerator() -> AccelChoice {
    accelerator_at(Path::new("/"))
}

/// [`accelerator`] with `/dev` and `/sys` under `root`.
fn accelerator_at(root: &Path) -> AccelChoice {
    let choice = choose_accel(kvm_kind(root));
    if choice.accel != Accel::Kvm {
        return choice;
    }
    let dev_kvm = root.join("dev/kvm");
    match OpenOptions::new().read(true).write(true).open(&dev_kvm) {
        Ok(_) => choice,
        Err(e) => AccelChoice {
            accel: Accel::Tcg,
            kvm: choice.kvm,
            reason: format!(
                "hardware KVM is present but `{}` cannot be opened ({e}); \
                 add your user to the `kvm` group or run as root",
                dev_kvm.display()
            ),
        },
    }
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

    #[test]
    fn test_accelerator_hardware_openable_is_kvm() {
        let root = fake_root(&["sys/module/kvm_intel", "dev"]);
        std::fs::write(root.path().join("dev/kvm"), "").unwrap();
        let choice = accelerator_at(root.path());
        assert_eq!((choice.kvm, choice.accel), (KvmKind::Hardware, Accel::Kvm));
    }

    #[test]
    fn test_accelerator_hardware_unopenable_is_tcg_with_reason() {
        // A directory in place of the device cannot be opened for writing, like a /dev/kvm
        // the user lacks permission for.
        let root = fake_root(&["sys/module/kvm_amd", "dev/kvm"]);
        let choice = accelerator_at(root.path());
        assert_eq!((choice.kvm, choice.accel), (KvmKind::Hardware, Accel::Tcg));
        assert!(
            choice.reason.contains("cannot be opened"),
            "{}",
            choice.reason
        );
    }
}
