//! Builds QEMU's argument vector. Pure, so the exact command line is unit-tested without
//! starting anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use hearth_agent_proto::AGENT_PORT_NAME;

use crate::config::{Accel, MemoryMode, VmConfig};

/// Files a VM creates in its run dir.
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

/// QEMU's arguments; `tsc_khz` is the host's TSC rate, used under TCG.
pub fn qemu_args(config: &VmConfig, accel: Accel, files: &RunFiles, tsc_khz: u64) -> Vec<OsString> {
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
    match &config.memory_file {
        None => push(&[&"-m", &mem]),
        Some(file) => {
            let share = match file.mode {
                MemoryMode::Shared => "on",
                MemoryMode::Private => "off",
            };
            push(&[
                &"-object",
                &format!(
                    "memory-backend-file,id={RAM_ID},size={mem},mem-path={},share={share}",
                    escape_option(&file.path)
                ),
            ]);
        }
    }
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
            &config.kernel,
            &"-initrd",
            &config.initramfs,
            &"-append",
            &format!("{BASE_CMDLINE}{accel_cmdline} {}", config.cmdline),
        ]);
    }
    push(&[
        &"-chardev",
        // wait=on: QEMU starts the guest only once the backend reads the console, so no
        // output is lost; once that reader is gone QEMU drops the output instead of stalling.
        &format!(
            "{},server=on,wait=on",
            chardev_arg("socket", "console", &files.console_socket)
        ),
        &"-serial",
        &"chardev:console",
        // The agent's stream: a virtio-serial port (it migrates, unlike vhost-user-vsock) on a
        // socket the host connects to; wait=off, as the host connects once QEMU runs and may
        // reconnect later.
        &"-device",
        &"virtio-serial-device,id=vser0",
        &"-chardev",
        &format!(
            "{},server=on,wait=off",
            chardev_arg("socket", "agent", &files.agent_stream)
        ),
        &"-device",
        &format!("virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT_NAME}"),
        &"-chardev",
        &format!(
            "{},server=on,wait=off",
            chardev_arg("socket", "qmp", &files.qmp)
        ),
        &"-mon",
        &"chardev=qmp,mode=control",
    ]);
    for (i, disk) in config.disks.iter().enumerate() {
        let readonly = if disk.read_only { "on" } else { "off" };
        push(&[
            &"-drive",
            &format!(
                "id=disk{i},file={},format=raw,if=none,readonly={readonly}",
                escape_option(&disk.path)
            ),
            &"-device",
            &format!("virtio-blk-device,drive=disk{i}"),
        ]);
    }
    if config.net.is_some() {
        push(&[
            &"-netdev",
            // The tap is already attached on this fd by the jail (see `sys::jail`), so QEMU
            // needs neither `/dev/net/tun` nor CAP_NET_ADMIN, and runs no script.
            &format!("tap,id=net0,fd={}", crate::sys::TAP_FD),
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

fn chardev_arg(kind: &str, id: &str, path: &Path) -> String {
    format!("{kind},id={id},path={}", escape_option(path))
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
        qemu_args(&config, accel, &RunFiles::new(&config), 2_445_406)
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
             -chardev socket,id=agent,path=/run/vm/agent-port.sock,server=on,wait=off \
             -device virtserialport,bus=vser0.0,chardev=agent,name=org.hearth.agent"
        ));
        assert!(!args.contains("vsock"));
    }

    #[test]
    fn test_restore_is_the_same_machine_waiting_for_its_state_without_boot_files() {
        let cold = joined(Accel::Tcg);
        let mut config = config();
        config.restore = Some("/snapshots/a/state".into());
        let restore = qemu_args(&config, Accel::Tcg, &RunFiles::new(&config), 2_445_406)
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
        let args = qemu_args(&config, Accel::Tcg, &RunFiles::new(&config), 1)
            .join(std::ffi::OsStr::new(" "));
        let args = args.to_string_lossy();
        assert!(args.contains("-M microvm,acpi=on,pcie=off,rtc=on,memory-backend=microvm.ram "));
        assert!(args.contains(
            "-object memory-backend-file,id=microvm.ram,size=512M,mem-path=/snapshots/a/ram,share=off"
        ));
        assert!(!args.contains("-m 512M"));
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
    fn test_qemu_args_escape_commas_in_disk_paths() {
        assert!(
            joined(Accel::Tcg).contains("file=/images/a,,b.ext4,format=raw,if=none,readonly=on")
        );
    }

    #[test]
    fn test_qemu_args_open_the_given_tap_without_scripts() {
        let mut config = config();
        assert!(!joined(Accel::Tcg).contains("-netdev"));
        config.net = Some(crate::config::NetConfig {
            netns: crate::config::NetNamespace::At("/run/netns/hearth-x".into()),
            tap: "httx".into(),
        });
        let args = qemu_args(&config, Accel::Tcg, &RunFiles::new(&config), 1)
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
            "-chardev socket,id=console,path=/run/vm/console.sock,server=on,wait=on -serial chardev:console"
        ));
        assert!(args.contains("-no-reboot"));
    }
}
