//! Builds QEMU's argument vector. Pure, so the exact command line is unit-tested without
//! starting anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use hearth_agent_proto::AGENT_PORT_NAME;

use crate::config::{Accel, MemoryMode, VmConfig};
use crate::jail;
use crate::sys::{AGENT_FD, CONSOLE_FD, FIRST_DISK_FD, QMP_FD, TAP_FD};

/// The sockets hearth binds in a VM's run dir and hands to QEMU as listening descriptors.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub qmp: PathBuf,
    /// The serial console's socket; the backend reads it into the capped console log.
    pub console_socket: PathBuf,
    pub console_log: PathBuf,
    /// Host end of the agent's virtio-serial port: a socket QEMU serves to one client.
    pub agent_stream: PathBuf,
}

impl RunFiles {
    pub fn new(config: &VmConfig) -> Self {
        RunFiles {
            qmp: config.run_dir.join("qmp.sock"),
            console_socket: config.run_dir.join("console.sock"),
            console_log: config.console_log.clone(),
            agent_stream: config.run_dir.join("agent-port.sock"),
        }
    }
}

/// The paths QEMU opens itself: inside its jail, or the host's when it runs unjailed.
#[derive(Debug, Clone)]
pub struct VmmPaths {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub memory: Option<PathBuf>,
}

impl VmmPaths {
    /// The paths as [`crate::jail::JailPlan`] binds them.
    pub fn jailed(config: &VmConfig) -> Self {
        VmmPaths {
            kernel: jail::JAIL_KERNEL.into(),
            initramfs: jail::JAIL_INITRAMFS.into(),
            memory: config
                .memory_file
                .as_ref()
                .map(|_| jail::JAIL_MEMORY.into()),
        }
    }

    pub fn host(config: &VmConfig) -> Self {
        VmmPaths {
            kernel: config.kernel.clone(),
            initramfs: config.initramfs.clone(),
            memory: config.memory_file.as_ref().map(|file| file.path.clone()),
        }
    }
}

/// The id of guest RAM's backend object. `-m` names its RAM block the same, so a state saved
/// from a VM with either memory loads into the other.
const RAM_ID: &str = "microvm.ram";

/// QEMU's seccomp sandbox as every VM runs it.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Kernel arguments the backend always adds: serial console, and a panic that ends the VM
/// (`panic=-1` reboots at once, and `-no-reboot` turns the reboot into QEMU exiting).
const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 reboot=t";

/// Kernel arguments for TCG guests: a TSC rate given rather than calibrated (see `tsc.rs`), and
/// no clocksource watchdog, which would otherwise distrust the TSC when the host is busy.
fn tcg_cmdline(tsc_khz: u64) -> String {
    format!("tsc_early_khz={tsc_khz} tsc=reliable no_timer_check")
}

/// QEMU's arguments; `tsc_khz` is the host's TSC rate, used under TCG. Sockets, disks and the
/// tap are descriptors `sys::confine` places (see `sys::TAP_FD` and its neighbours).
pub fn qemu_args(config: &VmConfig, accel: Accel, paths: &VmmPaths, tsc_khz: u64) -> Vec<OsString> {
    let mem = format!("{}M", config.mem_size_mib);
    let accel_cmdline = match accel {
        Accel::Kvm => String::new(),
        Accel::Tcg => format!(" {}", tcg_cmdline(tsc_khz)),
    };
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&dyn AsRef<std::ffi::OsStr>]| {
        for part in parts {
            args.push(part.as_ref().to_owned());
        }
    };
    let machine = match &config.memory_file {
        None => "microvm,acpi=on,pcie=off,rtc=on".to_owned(),
        Some(_) => format!("microvm,acpi=on,pcie=off,rtc=on,memory-backend={RAM_ID}"),
    };
    push(&[
        &"-M",
        &machine,
        &"-accel",
        &accel.name(),
        &"-cpu",
        &"max",
        &"-smp",
        &config.vcpus.to_string(),
    ]);
    match (&config.memory_file, &paths.memory) {
        (Some(file), Some(path)) => {
            let share = match file.mode {
                MemoryMode::Shared => "on",
                MemoryMode::Private => "off",
            };
            push(&[
                &"-object",
                &format!(
                    "memory-backend-file,id={RAM_ID},size={mem},mem-path={},share={share}",
                    escape_option(path)
                ),
            ]);
        }
        _ => push(&[&"-m", &mem]),
    }
    // A label naming the run dir: every file QEMU uses is a descriptor or a jail path, so this
    // is how `ps`, and gc looking for a dead sandbox's processes, tell which sandbox it serves.
    let mut run_dir = escape_option(&config.run_dir);
    run_dir.push('/');
    push(&[&"-name", &format!("guest={run_dir}")]);
    push(&[
        // QEMU's own seccomp filter: no obsolete syscalls, no set*id, no fork/exec (migrations
        // go through descriptors hearth hands over), no scheduler or affinity changes.
        &"-sandbox",
        &SANDBOX,
        &"-nodefaults",
        &"-no-user-config",
        &"-display",
        &"none",
        &"-no-reboot",
    ]);
    // A restored guest's kernel is already in its RAM; QEMU would only keep the blobs in
    // memory for nothing (13.5 MiB a VM).
    if config.restore.is_none() {
        push(&[
            &"-kernel",
            &paths.kernel,
            &"-initrd",
            &paths.initramfs,
            &"-append",
            &format!("{BASE_CMDLINE}{accel_cmdline} {}", config.cmdline),
        ]);
    }
    push(&[
        &"-chardev",
        // wait=on: QEMU starts the guest only once the backend reads the console, so no
        // output is lost; once that reader is gone QEMU drops the output instead of stalling.
        &format!("socket,id=console,fd={CONSOLE_FD},server=on,wait=on"),
        &"-serial",
        &"chardev:console",
        // The agent's stream: a virtio-serial port (it migrates, unlike vhost-user-vsock) on a
        // socket the host connects to; wait=off, as the host connects once QEMU runs and may
        // reconnect later.
        &"-device",
        &"virtio-serial-device,id=vser0",
        &"-chardev",
        &format!("socket,id=agent,fd={AGENT_FD},server=on,wait=off"),
        &"-device",
        &format!("virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT_NAME}"),
        &"-chardev",
        &format!("socket,id=qmp,fd={QMP_FD},server=on,wait=off"),
        &"-mon",
        &"chardev=qmp,mode=control",
    ]);
    for (i, disk) in config.disks.iter().enumerate() {
        let readonly = if disk.read_only { "on" } else { "off" };
        // Each disk is a descriptor in an fd set of its own; QEMU opens `/dev/fdset/N` by
        // duplicating the set's descriptor whose access mode matches.
        let set = i + 1;
        push(&[
            &"-add-fd",
            &format!("fd={},set={set}", disk_fd(i)),
            &"-drive",
            &format!("id=disk{i},file=/dev/fdset/{set},format=raw,if=none,readonly={readonly}"),
            &"-device",
            &format!("virtio-blk-device,drive=disk{i}"),
        ]);
    }
    if config.net.is_some() {
        push(&[
            &"-netdev",
            // The tap is already attached on this fd (see `sys::confine`), so QEMU
            // needs neither `/dev/net/tun` nor CAP_NET_ADMIN, and runs no script.
            &format!("tap,id=net0,fd={TAP_FD}"),
            &"-device",
            &"virtio-net-device,netdev=net0",
        ]);
    }
    // The same machine, waiting for its state over QMP (`migrate-incoming`) instead of booting;
    // `defer` because the state's location is given only once QMP is up.
    if config.restore.is_some() {
        push(&[&"-incoming", &"defer"]);
    }
    args
}

/// The descriptor number disk `index` is handed over on.
pub fn disk_fd(index: usize) -> i32 {
    FIRST_DISK_FD + i32::try_from(index).unwrap_or(i32::MAX - FIRST_DISK_FD)
}

/// QEMU option values separate fields with `,`; a literal comma is written twice.
fn escape_option(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiskConfig;

    fn config() -> VmConfig {
        VmConfig {
            kernel: "/boot/vmlinuz".into(),
            initramfs: "/boot/initramfs.cpio".into(),
            cmdline: "quiet hearth.rootfs=/dev/vda".into(),
            disks: vec![DiskConfig {
                path: "/images/a,b.ext4".into(),
                read_only: true,
            }],
            vcpus: 2,
            mem_size_mib: 512,
            run_dir: "/run/vm".into(),
            console_log: "/logs/console.log".into(),
            net: None,
            restore: None,
            memory_file: None,
        }
    }

    fn joined(accel: Accel) -> String {
        let config = config();
        qemu_args(&config, accel, &VmmPaths::host(&config), 2_445_406)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn test_qemu_args_use_plain_ram() {
        let args = joined(Accel::Tcg);
        assert!(args.contains("-m 512M"));
        assert!(!args.contains("memory-backend"));
    }

    #[test]
    fn test_qemu_args_put_the_agent_on_a_named_virtio_serial_port() {
        let args = joined(Accel::Tcg);
        assert!(args.contains(
            "-device virtio-serial-device,id=vser0 \
             -chardev socket,id=agent,fd=203,server=on,wait=off \
             -device virtserialport,bus=vser0.0,chardev=agent,name=org.hearth.agent"
        ));
        assert!(!args.contains("vsock"));
    }

    #[test]
    fn test_restore_is_the_same_machine_waiting_for_its_state_without_boot_files() {
        let cold = joined(Accel::Tcg);
        let mut config = config();
        config.restore = Some("/snapshots/a/state".into());
        let restore = qemu_args(&config, Accel::Tcg, &VmmPaths::host(&config), 2_445_406)
            .join(std::ffi::OsStr::new(" "));
        let restore = restore.to_string_lossy();
        let boot_files = cold
            .split(" -kernel ")
            .nth(1)
            .and_then(|rest| rest.split(" -chardev ").next())
            .unwrap();
        let without = cold.replace(&format!(" -kernel {boot_files}"), "");
        assert_eq!(restore, format!("{without} -incoming defer"));
    }

    #[test]
    fn test_memory_files_back_ram_under_the_id_plain_ram_has() {
        let mut config = config();
        config.memory_file = Some(crate::config::MemoryFile {
            path: "/snapshots/a/ram".into(),
            mode: MemoryMode::Private,
        });
        let args = qemu_args(&config, Accel::Tcg, &VmmPaths::host(&config), 1)
            .join(std::ffi::OsStr::new(" "));
        let args = args.to_string_lossy();
        assert!(args.contains("-M microvm,acpi=on,pcie=off,rtc=on,memory-backend=microvm.ram "));
        assert!(args.contains(
            "-object memory-backend-file,id=microvm.ram,size=512M,mem-path=/snapshots/a/ram,share=off"
        ));
        assert!(!args.contains("-m 512M"));
    }

    #[test]
    fn test_the_guest_name_is_the_run_dir() {
        assert!(joined(Accel::Tcg).contains("-name guest=/run/vm/ "));
    }

    #[test]
    fn test_qemu_args_pick_accelerator() {
        assert!(joined(Accel::Tcg).contains("-accel tcg"));
        assert!(joined(Accel::Kvm).contains("-accel kvm"));
    }

    #[test]
    fn test_tsc_rate_is_given_only_under_tcg() {
        assert!(joined(Accel::Tcg).contains("tsc_early_khz=2445406"));
        assert!(!joined(Accel::Kvm).contains("tsc_early_khz"));
    }

    #[test]
    fn test_disks_are_descriptors_in_fd_sets() {
        assert!(joined(Accel::Tcg).contains(
            "-add-fd fd=210,set=1 -drive id=disk0,file=/dev/fdset/1,format=raw,if=none,readonly=on"
        ));
    }

    #[test]
    fn test_memory_path_commas_are_escaped() {
        let mut config = config();
        config.memory_file = Some(crate::config::MemoryFile {
            path: "/snap,a/ram".into(),
            mode: MemoryMode::Private,
        });
        let args = qemu_args(&config, Accel::Tcg, &VmmPaths::host(&config), 1)
            .join(std::ffi::OsStr::new(" "));
        assert!(args
            .to_string_lossy()
            .contains("mem-path=/snap,,a/ram,share=off"));
    }

    #[test]
    fn test_jailed_paths_are_the_jails() {
        let mut config = config();
        config.memory_file = Some(crate::config::MemoryFile {
            path: "/snap/ram".into(),
            mode: MemoryMode::Shared,
        });
        let args = qemu_args(&config, Accel::Tcg, &VmmPaths::jailed(&config), 1)
            .join(std::ffi::OsStr::new(" "));
        let args = args.to_string_lossy();
        assert!(args.contains("-kernel /boot/vmlinuz -initrd /boot/initramfs "));
        assert!(args.contains("mem-path=/memory,share=on"));
    }

    #[test]
    fn test_qemu_args_open_the_given_tap_without_scripts() {
        let mut config = config();
        assert!(!joined(Accel::Tcg).contains("-netdev"));
        config.net = Some(crate::config::NetConfig {
            netns: crate::config::NetNamespace::At("/run/netns/hearth-x".into()),
            tap: "httx".into(),
        });
        let args = qemu_args(&config, Accel::Tcg, &VmmPaths::host(&config), 1)
            .join(std::ffi::OsStr::new(" "));
        let args = args.to_string_lossy();
        assert!(args.contains("-netdev tap,id=net0,fd=200"));
        assert!(args.contains(&format!("-sandbox {SANDBOX}")));
        assert!(args.contains("-device virtio-net-device,netdev=net0"));
    }

    #[test]
    fn test_qemu_args_console_and_cmdline() {
        let args = joined(Accel::Tcg);
        assert!(
            args.contains("-append console=ttyS0 panic=-1 reboot=t tsc_early_khz=2445406 tsc=reliable no_timer_check quiet hearth.rootfs=/dev/vda")
        );
        assert!(args.contains(
            "-chardev socket,id=console,fd=201,server=on,wait=on -serial chardev:console"
        ));
        assert!(args.contains("-no-reboot"));
    }
}
