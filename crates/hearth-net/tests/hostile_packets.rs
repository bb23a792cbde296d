//! Packets a hostile guest would send, written as raw frames into the sandbox's real tap (what
//! the VMM does with the guest's frames) or sent raw from inside its namespace, against real
//! namespaces and nftables tables. Each test also sends one packet that must pass, so the
//! observer is shown to work. Traffic goes only to a test host and sockets the test makes.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hearth_net::policy::EgressPolicy;
use hearth_net::pool::GUEST_ADDR;
use hearth_net::{netns, NetworkConfig, SandboxNetwork};
use hearth_test_support::netns::TestInternet;
use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;

/// A source address nobody in the test owns (TEST-NET-3).
const FORGED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
/// How long the observer listens after the packets are sent: forwarding takes microseconds.
const LISTEN: Duration = Duration::from_millis(1500);

const ICMP: u8 = 1;
const IPIP: u8 = 4;
const TCP: u8 = 6;
const UDP: u8 = 17;
const GRE: u8 = 47;
const ESP: u8 = 50;
const SCTP: u8 = 132;
const UDP_LITE: u8 = 136;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

static NEXT_SANDBOX: AtomicU32 = AtomicU32::new(0);

fn test_id() -> String {
    let n = NEXT_SANDBOX.fetch_add(1, Ordering::Relaxed);
    format!("h{:07x}{n:04x}", std::process::id())
}

static NEXT_IP_ID: AtomicU16 = AtomicU16::new(1);

/// An IPv4 identification field that tells this test's packets apart from other traffic the
/// observer sees (NAT keeps it).
fn ip_id() -> u16 {
    let pid = std::process::id() as u16;
    pid.wrapping_mul(97)
        .wrapping_add(NEXT_IP_ID.fetch_add(1, Ordering::Relaxed))
}

/// The guest's side of the tap: what it writes arrives on the tap as if the guest had sent it.
struct FakeGuest {
    tap: File,
    tap_mac: [u8; 6],
}

impl FakeGuest {
    fn attach(network: &SandboxNetwork) -> FakeGuest {
        let names = network.names();
        let tap = netns::run_in(network.netns_path(), || hearth_net::attach_tap(&names.tap))
            .unwrap()
            .unwrap();
        let shown = Command::new("ip")
            .args(["-n", &names.netns, "-br", "link", "show", "dev", &names.tap])
            .output()
            .unwrap();
        let text = String::from_utf8(shown.stdout).unwrap();
        let mac = text.split_whitespace().nth(2).unwrap();
        let mut tap_mac = [0u8; 6];
        for (byte, hex) in tap_mac.iter_mut().zip(mac.split(':')) {
            *byte = u8::from_str_radix(hex, 16).unwrap();
        }
        FakeGuest { tap, tap_mac }
    }

    /// Sends the IPv4 `packet` to the gateway, as the guest would.
    fn send(&mut self, packet: &[u8]) {
        let mut frame = Vec::with_capacity(14 + packet.len());
        frame.extend_from_slice(&self.tap_mac);
        frame.extend_from_slice(&[0x02, 0x68, 0x65, 0x61, 0x72, 0x74]);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(packet);
        self.tap.write_all(&frame).unwrap();
    }
}

/// The ones' complement sum of `data` as 16-bit words, folded.
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn checksum(data: &[u8]) -> [u8; 2] {
    (!(sum16(data, 0) as u16)).to_be_bytes()
}

/// The TCP/UDP/UDP-Lite checksum over the IPv4 pseudo-header and `segment`.
fn transport_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> [u8; 2] {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    let sum = sum16(segment, sum16(&pseudo, 0));
    (!(sum as u16)).to_be_bytes()
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum);
    packet.extend_from_slice(payload);
    packet
}

fn tcp(src: Ipv4Addr, dst: Ipv4Addr, flags: u8, id: u16) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&40000u16.to_be_bytes());
    segment.extend_from_slice(&8080u16.to_be_bytes());
    segment.extend_from_slice(&[
        0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    let sum = transport_checksum(src, dst, TCP, &segment);
    segment[16..18].copy_from_slice(&sum);
    ipv4(src, dst, TCP, id, &segment)
}

/// A UDP (or, with `UDP_LITE`, a UDP-Lite) datagram to `port`.
fn udp(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, port: u16, id: u16) -> Vec<u8> {
    let body = b"hearth hostile";
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&40001u16.to_be_bytes());
    datagram.extend_from_slice(&port.to_be_bytes());
    // UDP's length field is UDP-Lite's checksum coverage: here, all of it.
    datagram.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(body);
    // Conntrack checks a UDP-Lite sum with UDP's number in the pseudo-header: summed that way,
    // the datagram is valid to conntrack, so only the protocol allowlist can stop it.
    let sum = transport_checksum(src, dst, UDP, &datagram);
    datagram[6..8].copy_from_slice(&sum);
    ipv4(src, dst, proto, id, &datagram)
}

/// CRC32c (Castagnoli), reflected, as SCTP checksums its packets.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP INIT, well formed so conntrack takes it as a new association.
fn sctp_init(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut packet = Vec::new();
    packet.extend_from_slice(&40002u16.to_be_bytes());
    packet.extend_from_slice(&9999u16.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    packet.extend_from_slice(&[1, 0, 0, 20]);
    packet.extend_from_slice(&0x4845_4152u32.to_be_bytes());
    packet.extend_from_slice(&65535u32.to_be_bytes());
    packet.extend_from_slice(&[0, 1, 0, 1]);
    packet.extend_from_slice(&1u32.to_be_bytes());
    let crc = crc32c(&packet);
    packet[8..12].copy_from_slice(&crc.to_le_bytes());
    ipv4(src, dst, SCTP, id, &packet)
}

fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut message = vec![8, 0, 0, 0, 0x48, 0x54, 0, 1];
    message.extend_from_slice(b"hearth");
    let sum = checksum(&message);
    message[2..4].copy_from_slice(&sum);
    ipv4(src, dst, ICMP, id, &message)
}

/// A packet socket that sees every IPv4 packet in one namespace, in and out.
struct Observer(OwnedFd);

/// What identifies a test packet wherever it is seen: protocol, IP id and destination.
type Seen = (u8, u16, Ipv4Addr);

impl Observer {
    fn open_in(netns_path: Option<&Path>) -> Observer {
        let open = || -> nix::Result<OwnedFd> {
            let fd = socket::socket(
                AddressFamily::Packet,
                SockType::Datagram,
                SockFlag::empty(),
                SockProtocol::EthAll,
            )?;
            socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))?;
            Ok(fd)
        };
        let fd = match netns_path {
            Some(path) => netns::run_in(path, open).unwrap(),
            None => open(),
        };
        Observer(fd.unwrap())
    }

    /// Every IPv4 packet seen for `LISTEN` from now.
    fn collect(&self) -> HashSet<Seen> {
        let mut seen = HashSet::new();
        let mut buffer = [0u8; 2048];
        let deadline = Instant::now() + LISTEN;
        while Instant::now() < deadline {
            let Ok(len) = socket::recv(self.0.as_raw_fd(), &mut buffer, MsgFlags::empty()) else {
                continue;
            };
            let packet = &buffer[..len];
            if len >= 20 && packet[0] >> 4 == 4 {
                let id = u16::from_be_bytes([packet[4], packet[5]]);
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                seen.insert((packet[9], id, dst));
            }
        }
        seen
    }
}

fn network_with(policy: EgressPolicy) -> SandboxNetwork {
    let config = NetworkConfig {
        policy,
        // No query is made; never the host's real resolver in tests.
        dns_upstream: Some("127.0.0.1:9".parse().unwrap()),
        ..NetworkConfig::default()
    };
    SandboxNetwork::create(&test_id(), &config).unwrap()
}

#[test]
fn test_guest_packets_with_a_forged_source_never_reach_the_host() {
    let internet = TestInternet::new().unwrap();
    let network = network_with(EgressPolicy::default());
    let mut guest = FakeGuest::attach(&network);
    let observer = Observer::open_in(None);
    let target = internet.addr();
    let (genuine, forged) = (ip_id(), ip_id());

    guest.send(&tcp(GUEST_ADDR, target, TCP_SYN, genuine));
    guest.send(&tcp(FORGED, target, TCP_SYN, forged));
    let seen = observer.collect();

    assert!(
        seen.contains(&(TCP, genuine, target)),
        "control SYN not seen"
    );
    assert!(!seen.contains(&(TCP, forged, target)), "forged SYN left");
    network.remove().unwrap();
}

#[test]
fn test_guest_packets_conntrack_finds_invalid_never_reach_the_host() {
    let internet = TestInternet::new().unwrap();
    let network = network_with(EgressPolicy::default());
    let mut guest = FakeGuest::attach(&network);
    let observer = Observer::open_in(None);
    let target = internet.addr();
    let (genuine, syn_fin, rst) = (ip_id(), ip_id(), ip_id());

    guest.send(&tcp(GUEST_ADDR, target, TCP_SYN, genuine));
    guest.send(&tcp(GUEST_ADDR, target, TCP_SYN | TCP_FIN, syn_fin));
    guest.send(&tcp(GUEST_ADDR, target, TCP_RST, rst));
    let seen = observer.collect();

    assert!(
        seen.contains(&(TCP, genuine, target)),
        "control SYN not seen"
    );
    assert!(!seen.contains(&(TCP, syn_fin, target)), "SYN|FIN left");
    assert!(!seen.contains(&(TCP, rst, target)), "lone RST left");
    network.remove().unwrap();
}

/// With UDP and ICMP allowed, the most open policy: still only TCP, UDP and ICMP leave.
#[test]
fn test_guest_protocols_outside_the_allowlist_never_reach_the_host() {
    let internet = TestInternet::new().unwrap();
    let network = network_with(EgressPolicy {
        allow_udp: true,
        allow_icmp: true,
        ..EgressPolicy::default()
    });
    let mut guest = FakeGuest::attach(&network);
    let observer = Observer::open_in(None);
    let target = internet.addr();
    let (tcp_id, udp_id, icmp_id) = (ip_id(), ip_id(), ip_id());
    let (gre, esp, ipip, sctp, lite) = (ip_id(), ip_id(), ip_id(), ip_id(), ip_id());
    let inner = tcp(GUEST_ADDR, target, TCP_SYN, ip_id());

    guest.send(&tcp(GUEST_ADDR, target, TCP_SYN, tcp_id));
    guest.send(&udp(UDP, GUEST_ADDR, target, 9999, udp_id));
    guest.send(&icmp_echo(GUEST_ADDR, target, icmp_id));
    // GRE version 0 carrying IPv4, then an ESP header (SPI, sequence) and some ciphertext.
    let mut gre_packet = vec![0, 0, 0x08, 0x00];
    gre_packet.extend_from_slice(&inner);
    guest.send(&ipv4(GUEST_ADDR, target, GRE, gre, &gre_packet));
    guest.send(&ipv4(
        GUEST_ADDR,
        target,
        ESP,
        esp,
        &[0, 0, 1, 0, 0, 0, 0, 1, 9, 9],
    ));
    guest.send(&ipv4(GUEST_ADDR, target, IPIP, ipip, &inner));
    guest.send(&sctp_init(GUEST_ADDR, target, sctp));
    guest.send(&udp(UDP_LITE, GUEST_ADDR, target, 9999, lite));
    let seen = observer.collect();

    for (proto, id, what) in [
        (TCP, tcp_id, "TCP"),
        (UDP, udp_id, "UDP"),
        (ICMP, icmp_id, "ICMP"),
    ] {
        assert!(
            seen.contains(&(proto, id, target)),
            "{what} (allowed) not seen"
        );
    }
    let left: Vec<_> = [
        (GRE, gre, "GRE"),
        (ESP, esp, "ESP"),
        (IPIP, ipip, "IPIP"),
        (SCTP, sctp, "SCTP"),
        (UDP_LITE, lite, "UDP-Lite"),
    ]
    .into_iter()
    .filter(|(proto, id, _)| seen.contains(&(*proto, *id, target)))
    .map(|(_, _, what)| what)
    .collect();
    assert_eq!(left, Vec::<&str>::new(), "these left the namespace");
    network.remove().unwrap();
}

/// The test host's link is made after the sandbox network, so its host address is one the
/// host gained later (as with a VPN coming up): no list taken at creation can hold it.
#[test]
fn test_guest_udp_to_host_addresses_and_broadcasts_never_reaches_a_host_socket() {
    let network = network_with(EgressPolicy {
        allow_udp: true,
        ..EgressPolicy::default()
    });
    let internet = TestInternet::new().unwrap();
    let mut guest = FakeGuest::attach(&network);
    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let port = socket.local_addr().unwrap().port();
    socket.set_read_timeout(Some(LISTEN)).unwrap();
    let [a, b, c, _] = internet.host_addr().octets();
    let broadcast = Ipv4Addr::new(a, b, c, 255);

    guest.send(&udp(UDP, GUEST_ADDR, internet.host_addr(), port, ip_id()));
    guest.send(&udp(UDP, GUEST_ADDR, broadcast, port, ip_id()));
    let mut buffer = [0u8; 64];
    let received = socket.recv_from(&mut buffer);
    // The socket works: a datagram from the host itself arrives.
    let local = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    local
        .send_to(b"control", (Ipv4Addr::LOCALHOST, port))
        .unwrap();
    let control = socket.recv_from(&mut buffer);

    assert!(
        received.is_err(),
        "a guest datagram reached {:?}",
        received.map(|r| r.1)
    );
    assert!(control.is_ok(), "the host socket received nothing at all");
    network.remove().unwrap();
}

/// Sent raw from inside the namespace, past the namespace's own rules (which see only what
/// the guest routes through it): the host still drops a source that is not the link's.
#[test]
fn test_host_forwards_from_a_sandbox_link_only_the_link_address() {
    let internet = TestInternet::new().unwrap();
    let network = network_with(EgressPolicy::default());
    let observer = Observer::open_in(Some(&netns::path_of(internet.netns())));
    let target = internet.addr();
    let (genuine, forged) = (ip_id(), ip_id());
    // Lone RSTs: conntrack finds them invalid, so no NAT rewrites their sources on the way.
    let packets = [
        tcp(network.link().ns, target, TCP_RST, genuine),
        tcp(FORGED, target, TCP_RST, forged),
    ];

    netns::run_in(network.netns_path(), || -> nix::Result<()> {
        let raw = socket::socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::Raw,
        )?;
        for packet in &packets {
            socket::sendto(
                raw.as_raw_fd(),
                packet,
                &SockaddrIn::from(SocketAddrV4::new(target, 0)),
                MsgFlags::empty(),
            )?;
        }
        Ok(())
    })
    .unwrap()
    .unwrap();
    let seen = observer.collect();

    assert!(
        seen.contains(&(TCP, genuine, target)),
        "control RST not seen"
    );
    assert!(
        !seen.contains(&(TCP, forged, target)),
        "forged RST forwarded"
    );
    network.remove().unwrap();
}
