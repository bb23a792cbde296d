//! The `hearth.*` parameters on the kernel command line.

use std::io;
use std::path::PathBuf;

const DEFAULT_ROOTFS_TYPE: &str = "ext4";

/// What the host asks of the boot, from `/proc/cmdline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCmdline {
    /// Block device holding the image's read-only base (`hearth.rootfs=`); without it the agent
    /// stays on the initramfs root.
    pub rootfs: Option<PathBuf>,
    /// Filesystem type of `rootfs` (`hearth.rootfstype=`).
    pub rootfs_type: String,
    /// How many layers the base has (`hearth.layers=`): `rootfs` and the devices after it
    /// (`/dev/vdb`, ...), bottom first, stacked by overlayfs.
    pub layers: usize,
    /// Guest hostname (`hearth.hostname=`).
    pub hostname: Option<String>,
    /// Guest address as `ADDR/PREFIX` on `eth0` (`hearth.ip=`); without it, no network.
    pub ip: Option<String>,
    /// Default gateway (`hearth.gw=`).
    pub gateway: Option<String>,
    /// Guest IPv6 address as `ADDR/PREFIX` on `eth0` (`hearth.ip6=`); without it, no IPv6.
    pub ip6: Option<String>,
    /// IPv6 default gateway (`hearth.gw6=`).
    pub gateway6: Option<String>,
    /// DNS server for `/etc/resolv.conf` (`hearth.dns=`).
    pub nameserver: Option<String>,
    /// What carries the session stream (`hearth.channel=`).
    pub channel: Channel,
}

/// The device the host's session stream arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channel {
    /// The virtio-serial port named [`hearth_agent_proto::AGENT_PORT_NAME`] (QEMU).
    #[default]
    Serial,
    /// Connections to vsock port [`hearth_agent_proto::AGENT_VSOCK_PORT`] (Firecracker,
    /// `hearth.channel=vsock`).
    Vsock,
}

impl KernelCmdline {
    /// Reads `/proc/cmdline`; `/proc` must be mounted.
    pub fn read() -> io::Result<Self> {
        std::fs::read_to_string("/proc/cmdline").map(|text| Self::parse(&text))
    }

    /// Parses a command line; unknown parameters are someone else's and are skipped, the last
    /// occurrence of a repeated one wins (as in the kernel).
    pub fn parse(text: &str) -> Self {
        let mut cmdline = KernelCmdline {
            rootfs: None,
            rootfs_type: DEFAULT_ROOTFS_TYPE.to_owned(),
            layers: 1,
            hostname: None,
            ip: None,
            gateway: None,
            ip6: None,
            gateway6: None,
            nameserver: None,
            channel: Channel::Serial,
        };
        for (key, value) in params(text) {
            let value = Some(value).filter(|v| !v.is_empty());
            match key.as_str() {
                "hearth.rootfs" => cmdline.rootfs = value.map(PathBuf::from),
                "hearth.rootfstype" => {
                    cmdline.rootfs_type = value.unwrap_or_else(|| DEFAULT_ROOTFS_TYPE.to_owned());
                }
                "hearth.layers" => {
                    cmdline.layers = value.and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
                }
                "hearth.hostname" => cmdline.hostname = value,
                "hearth.ip" => cmdline.ip = value,
                "hearth.gw" => cmdline.gateway = value,
                "hearth.ip6" => cmdline.ip6 = value,
                "hearth.gw6" => cmdline.gateway6 = value,
                "hearth.dns" => cmdline.nameserver = value,
                "hearth.channel" => {
                    cmdline.channel = match value.as_deref() {
                        Some("vsock") => Channel::Vsock,
                        _ => Channel::Serial,
                    };
                }
                _ => {}
            }
        }
        cmdline
    }
}

/// Splits a command line into `(key, value)` pairs the way the kernel does: whitespace separates
/// parameters except inside double quotes, quotes are dropped, and `--` ends the kernel's part
/// (the rest is init's argv).
fn params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    for word in words(text) {
        if word == "--" {
            break;
        }
        let (key, value) = word.split_once('=').unwrap_or((&word, ""));
        params.push((key.to_owned(), value.to_owned()));
    }
    params
}

fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut started = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if started {
                    words.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_hearth_params_among_kernel_params() {
        let cmdline = KernelCmdline::parse(
            "console=ttyS0 panic=-1 reboot=t quiet hearth.rootfs=/dev/vda \
             hearth.rootfstype=erofs hearth.hostname=brave-otter\n",
        );
        assert_eq!(
            cmdline,
            KernelCmdline {
                rootfs: Some(PathBuf::from("/dev/vda")),
                rootfs_type: "erofs".into(),
                layers: 1,
                hostname: Some("brave-otter".into()),
                ip: None,
                gateway: None,
                ip6: None,
                gateway6: None,
                nameserver: None,
                channel: Channel::Serial,
            }
        );
    }

    #[test]
    fn test_parse_channel_is_vsock_only_when_asked() {
        let parse = |text| KernelCmdline::parse(text).channel;
        assert_eq!(parse("hearth.channel=vsock"), Channel::Vsock);
        assert_eq!(parse("hearth.channel=serial"), Channel::Serial);
        assert_eq!(parse("hearth.channel=VSOCK"), Channel::Serial);
        assert_eq!(parse("quiet"), Channel::Serial);
    }

    #[test]
    fn test_parse_without_hearth_params_stays_on_initramfs() {
        let cmdline = KernelCmdline::parse("console=ttyS0 quiet");
        assert_eq!(cmdline.rootfs, None);
        assert_eq!(cmdline.rootfs_type, "ext4");
        assert_eq!(cmdline.hostname, None);
    }

    #[test]
    fn test_parse_empty_values_mean_unset() {
        let cmdline = KernelCmdline::parse("hearth.rootfs= hearth.rootfstype= hearth.hostname=");
        assert_eq!(cmdline.rootfs, None);
        assert_eq!(cmdline.rootfs_type, "ext4");
        assert_eq!(cmdline.hostname, None);
    }

    #[test]
    fn test_parse_quoted_value_keeps_spaces() {
        let cmdline = KernelCmdline::parse("a=1 hearth.hostname=\"my box\" b=2");
        assert_eq!(cmdline.hostname.as_deref(), Some("my box"));
    }

    #[test]
    fn test_parse_network_params() {
        let cmdline = KernelCmdline::parse(
            "hearth.ip=172.30.255.2/30 hearth.gw=172.30.255.1 \
             hearth.ip6=fd7a:6865:6172:7468::2/126 hearth.gw6=fd7a:6865:6172:7468::1",
        );
        assert_eq!(cmdline.ip.as_deref(), Some("172.30.255.2/30"));
        assert_eq!(cmdline.gateway.as_deref(), Some("172.30.255.1"));
        assert_eq!(cmdline.ip6.as_deref(), Some("fd7a:6865:6172:7468::2/126"));
        assert_eq!(cmdline.gateway6.as_deref(), Some("fd7a:6865:6172:7468::1"));
    }

    #[test]
    fn test_parse_last_occurrence_wins() {
        let cmdline = KernelCmdline::parse("hearth.rootfs=/dev/vda hearth.rootfs=/dev/vdb");
        assert_eq!(cmdline.rootfs, Some(PathBuf::from("/dev/vdb")));
    }

    #[test]
    fn test_parse_stops_at_init_arguments() {
        let cmdline = KernelCmdline::parse("quiet -- hearth.rootfs=/dev/vda");
        assert_eq!(cmdline.rootfs, None);
    }

    #[test]
    fn test_parse_ignores_similar_keys() {
        let cmdline = KernelCmdline::parse("xhearth.rootfs=/dev/vda hearth.rootfsx=/dev/vdb");
        assert_eq!(cmdline.rootfs, None);
    }
}
