//! `hearth setup`: builds the boot assets into a [`StateDir`](crate::StateDir).
//!
//! Up to four outputs, each rebuilt only when its inputs changed (a fingerprint is stored next to
//! it) and each written atomically (temp file + rename):
//! - the guest kernel, copied from the host ([`kernel`]);
//! - hearth's initramfs: the agent as `/init` plus the kernel modules the guest needs, resolved
//!   from `modules.dep` ([`modules`], [`initramfs`]);
//! - the built-in default image, an ext4 made offline from busybox ([`default_image`]);
//! - for Firecracker, the kernel unpacked to the ELF `vmlinux` it boots ([`vmlinux`]).
//!
//! [`setup`] runs them in order and returns a [`SetupReport`]; progress goes to a
//! [`SetupReporter`] so the CLI can print it. With `--fetch-firecracker`, setup first fetches
//! an official Firecracker release ([`firecracker_release`]).

mod assets;
pub mod default_image;
pub(crate) mod elf;
mod fingerprint;
pub mod firecracker_release;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod vmlinux;

pub use assets::{
    setup, HostLayout, NoopReporter, SetupConfig, SetupError, SetupReport, SetupReporter, Step,
    StepOutcome, StepReport,
};
pub use default_image::DefaultImageError;
pub use elf::ElfError;
pub use initramfs::InitramfsError;
pub use kernel::{GuestKernel, KernelError};
pub use modules::{GuestModule, ModulesError, GUEST_MODULES};
pub use vmlinux::VmlinuxError;
