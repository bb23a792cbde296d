//! The guest's network: loopback up, and the static address and default route the host passes
//! on the kernel command line (`hearth.ip=ADDR/PREFIX hearth.gw=ADDR`) applied to `eth0`; the
//! DNS server (`hearth.dns=ADDR`) written to `/etc/resolv.conf`; likewise the IPv6 address
//! and default route (`hearth.ip6=ADDR/PREFIX hearth.gw6=ADDR`) when the host gives one.
//! Plain interface ioctls: the agent is synchronous and has no netlink stack.
#![expect(
    unsafe_code,
    reason = "SIOCSIFADDR/SIOCSIFNETMASK/SIOCSIFFLAGS/SIOCADDRT ioctls on sockets we own"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// The guest's only network interface (the first virtio-net device).
pub const GUEST_IFACE: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetConfigError {
    #[error("`{param}={value}` is not ADDRESS/PREFIX (like {example})")]
    InvalidAddress {
        param: &'static str,
        value: String,
        example: &'static str,
    },
    #[error("`{param}={value}` is not an {family} address")]
    InvalidGateway {
        param: &'static str,
        value: String,
        family: &'static str,
    },
    #[error("failed to turn off duplicate address detection (`{path}`)")]
    AcceptDad {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`hearth.dns={0}` is not an IP address")]
    InvalidNameserver(String),
    #[error("failed to write `{RESOLV_CONF}`")]
    ResolvConf(#[source] std::io::Error),
    #[error("failed to open a socket for interface configuration")]
    Socket(#[source] nix::Error),
    #[error("failed to {action} on `{iface}`")]
    Ioctl {
        action: &'static str,
        iface: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the guest's resolver reads its DNS server.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Writes `/etc/resolv.conf` naming `nameserver` (given as on the command line) as the only
/// DNS server, in place of whatever the image had (a symlink included, which in an image often
/// points at a file only a service there would write).
pub fn write_resolv_conf(nameserver: &str) -> Result<(), NetConfigError> {
    let addr: IpAddr = nameserver
        .parse()
        .map_err(|_| NetConfigError::InvalidNameserver(nameserver.to_owned()))?;
    let path = Path::new(RESOLV_CONF);
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(NetConfigError::ResolvConf(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(NetConfigError::ResolvConf)?;
    }
    std::fs::write(path, format!("nameserver {addr}\n")).map_err(NetConfigError::ResolvConf)
}

/// An address family of the guest's network: how its command-line parameters are named.
pub trait IpFamily: std::str::FromStr + Copy {
    /// Longest prefix.
    const BITS: u8;
    /// The address and gateway parameters, like `hearth.ip` and `hearth.gw`.
    const PARAMS: (&'static str, &'static str);
    /// A valid address parameter, for error messages.
    const EXAMPLE: &'static str;
    const NAME: &'static str;
}

impl IpFamily for Ipv4Addr {
    const BITS: u8 = 32;
    const PARAMS: (&'static str, &'static str) = ("hearth.ip", "hearth.gw");
    const EXAMPLE: &'static str = "172.30.255.2/30";
    const NAME: &'static str = "IPv4";
}

impl IpFamily for Ipv6Addr {
    const BITS: u8 = 128;
    const PARAMS: (&'static str, &'static str) = ("hearth.ip6", "hearth.gw6");
    const EXAMPLE: &'static str = "fd7a:6865:6172:7468::2/126";
    const NAME: &'static str = "IPv6";
}

/// A parsed `hearth.ip`/`hearth.gw` (or `hearth.ip6`/`hearth.gw6`) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestNet<A> {
    pub addr: A,
    pub prefix_len: u8,
    pub gateway: A,
}

impl<A: IpFamily> GuestNet<A> {
    pub fn parse(ip: &str, gateway: &str) -> Result<Self, NetConfigError> {
        let (addr, prefix_len) = ip
            .split_once('/')
            .and_then(|(addr, prefix)| Some((addr.parse().ok()?, prefix.parse().ok()?)))
            .filter(|(_, prefix_len)| *prefix_len <= A::BITS)
            .ok_or_else(|| NetConfigError::InvalidAddress {
                param: A::PARAMS.0,
                value: ip.to_owned(),
                example: A::EXAMPLE,
            })?;
        let gateway = gateway
            .parse()
            .map_err(|_| NetConfigError::InvalidGateway {
                param: A::PARAMS.1,
                value: gateway.to_owned(),
                family: A::NAME,
            })?;
        Ok(GuestNet {
            addr,
            prefix_len,
            gateway,
        })
    }
}

impl GuestNet<Ipv4Addr> {
    fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.prefix_len))
                .unwrap_or(0),
        )
    }
}

/// `struct in6_rtmsg` from `<net/route.h>`, which SIOCADDRT reads on an IPv6 socket (libc
/// declares it with private fields, so it cannot be filled in from here).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// Addresses `eth0` with `net` (already up, from [`configure`]) and routes IPv6 through its
/// gateway. Duplicate address detection is off first: the link holds only the guest and the
/// tap, and a tentative address would not be usable for a second or more.
pub fn configure6(net: &GuestNet<Ipv6Addr>) -> Result<(), NetConfigError> {
    let path = format!("/proc/sys/net/ipv6/conf/{GUEST_IFACE}/accept_dad");
    std::fs::write(&path, "0").map_err(|source| NetConfigError::AcceptDad { path, source })?;
    let sock = ioctl_socket(AddressFamily::Inet6)?;
    let mut index_req = ifreq(
        GUEST_IFACE,
        libc::__c_anonymous_ifr_ifru { ifru_ifindex: 0 },
    );
    // SAFETY: SIOCGIFINDEX fills the index member of the `struct ifreq` we pass and own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut index_req) } < 0 {
        return Err(ioctl_err("look up the index of", GUEST_IFACE));
    }
    // SAFETY: the kernel has just written `ifru_ifindex`, so that union member is initialized.
    let ifindex = unsafe { index_req.ifr_ifru.ifru_ifindex };
    let mut req = libc::in6_ifreq {
        ifr6_addr: in6(net.addr),
        ifr6_prefixlen: u32::from(net.prefix_len),
        ifr6_ifindex: ifindex,
    };
    // SAFETY: `sock` is an open IPv6 socket; SIOCSIFADDR on it reads a `struct in6_ifreq`,
    // which `req` is, and `req` outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &mut req) } < 0 {
        return Err(ioctl_err("set the IPv6 address", GUEST_IFACE));
    }
    let mut route = In6Rtmsg {
        dst: in6(Ipv6Addr::UNSPECIFIED),
        src: in6(Ipv6Addr::UNSPECIFIED),
        gateway: in6(net.gateway),
        kind: 0,
        dst_len: 0,
        src_len: 0,
        metric: 1,
        info: 0,
        flags: u32::from(libc::RTF_UP | libc::RTF_GATEWAY),
        ifindex,
    };
    // SAFETY: SIOCADDRT on an IPv6 socket reads a `struct in6_rtmsg`, which `In6Rtmsg` matches
    // in layout, and `route` outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &mut route) } < 0 {
        return Err(ioctl_err("add the IPv6 default route", GUEST_IFACE));
    }
    Ok(())
}

fn in6(addr: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: addr.octets(),
    }
}

/// Brings `lo` up, and when `net` is given, addresses `eth0` and routes through the gateway.
pub fn configure(net: Option<&GuestNet<Ipv4Addr>>) -> Result<(), NetConfigError> {
    let sock = ioctl_socket(AddressFamily::Inet)?;
    set_up(&sock, "lo")?;
    let Some(net) = net else {
        return Ok(());
    };
    set_addr(
        &sock,
        GUEST_IFACE,
        libc::SIOCSIFADDR,
        net.addr,
        "set the address",
    )?;
    set_addr(
        &sock,
        GUEST_IFACE,
        libc::SIOCSIFNETMASK,
        net.netmask(),
        "set the netmask",
    )?;
    set_up(&sock, GUEST_IFACE)?;
    add_default_route(&sock, net.gateway)
}

/// A datagram socket of `family` to issue interface ioctls on.
fn ioctl_socket(family: AddressFamily) -> Result<OwnedFd, NetConfigError> {
    socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(NetConfigError::Socket)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    // sockaddr_in laid over sockaddr: family, then port (0) and the address in sa_data.
    let mut data = [0 as libc::c_char; 14];
    for (slot, octet) in data[2..6].iter_mut().zip(addr.octets()) {
        *slot = octet as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: data,
    }
}

fn ifreq(iface: &str, ifru: libc::__c_anonymous_ifr_ifru) -> libc::ifreq {
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (slot, byte) in name.iter_mut().zip(iface.bytes().take(libc::IFNAMSIZ - 1)) {
        *slot = byte as libc::c_char;
    }
    libc::ifreq {
        ifr_name: name,
        ifr_ifru: ifru,
    }
}

fn ioctl_err(action: &'static str, iface: &str) -> NetConfigError {
    NetConfigError::Ioctl {
        action,
        iface: iface.to_owned(),
        source: std::io::Error::last_os_error(),
    }
}

fn set_addr(
    sock: &OwnedFd,
    iface: &str,
    request: libc::Ioctl,
    addr: Ipv4Addr,
    action: &'static str,
) -> Result<(), NetConfigError> {
    let mut req = ifreq(
        iface,
        libc::__c_anonymous_ifr_ifru {
            ifru_addr: sockaddr(addr),
        },
    );
    // SAFETY: `sock` is an open socket; SIOCSIFADDR/SIOCSIFNETMASK read a `struct ifreq` whose
    // union holds a sockaddr, which `req` is, and `req` outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } < 0 {
        return Err(ioctl_err(action, iface));
    }
    Ok(())
}

fn set_up(sock: &OwnedFd, iface: &str) -> Result<(), NetConfigError> {
    let mut req = ifreq(iface, libc::__c_anonymous_ifr_ifru { ifru_flags: 0 });
    // SAFETY: SIOCGIFFLAGS fills the flags member of the `struct ifreq` we pass and own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(ioctl_err("read the flags", iface));
    }
    // SAFETY: the kernel has just written `ifru_flags`, so that union member is initialized.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the flags member of the `struct ifreq` we pass and own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) } < 0 {
        return Err(ioctl_err("bring up", iface));
    }
    Ok(())
}

fn add_default_route(sock: &OwnedFd, gateway: Ipv4Addr) -> Result<(), NetConfigError> {
    // SAFETY: `struct rtentry` is plain integers, sockaddrs and one pointer; all zeroes is a
    // valid value (no device pinned, a null `rt_dev`).
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT reads a `struct rtentry`, which `route` is, and it outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &mut route) } < 0 {
        return Err(ioctl_err("add the default route", GUEST_IFACE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_guest_net_parses_address_prefix_and_gateway() {
        let net = GuestNet::<Ipv4Addr>::parse("172.30.255.2/30", "172.30.255.1").unwrap();
        assert_eq!(net.addr, Ipv4Addr::new(172, 30, 255, 2));
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(net.gateway, Ipv4Addr::new(172, 30, 255, 1));
    }

    #[test]
    fn test_guest_net6_parses_and_refuses() {
        let net =
            GuestNet::<Ipv6Addr>::parse("fd7a:6865:6172:7468::2/126", "fd7a:6865:6172:7468::1")
                .unwrap();
        assert_eq!(net.prefix_len, 126);
        assert_eq!(
            net.gateway,
            "fd7a:6865:6172:7468::1".parse::<Ipv6Addr>().unwrap()
        );
        assert!(GuestNet::<Ipv6Addr>::parse("fd7a::2/129", "fd7a::1").is_err());
        assert!(GuestNet::<Ipv6Addr>::parse("172.30.255.2/30", "fd7a::1").is_err());
        assert!(matches!(
            GuestNet::<Ipv6Addr>::parse("fd7a::2/126", "172.30.255.1"),
            Err(NetConfigError::InvalidGateway {
                param: "hearth.gw6",
                ..
            })
        ));
    }

    #[test]
    fn test_guest_net_refuses_malformed_values() {
        assert!(GuestNet::<Ipv4Addr>::parse("172.30.255.2", "172.30.255.1").is_err());
        assert!(GuestNet::<Ipv4Addr>::parse("172.30.255.2/33", "172.30.255.1").is_err());
        assert!(GuestNet::<Ipv4Addr>::parse("172.30.255.2/30", "gateway").is_err());
        assert!(matches!(
            write_resolv_conf("dns.example"),
            Err(NetConfigError::InvalidNameserver(_))
        ));
    }
}
