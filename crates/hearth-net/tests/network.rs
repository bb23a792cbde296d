//! Real namespaces, links and nftables tables; traffic only to a test host the test creates.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hearth_net::pool::{PoolError, GATEWAY_ADDR, GUEST_ADDR};
use hearth_net::{
    leftovers, link, netns, NetNames, NetworkConfig, NetworkError, PendingNetwork, SandboxNetwork,
};
use hearth_test_support::netns::{TestInternet, HTTP_BODY};
use hearth_test_support::registry::require;
use hearth_test_support::wait_until;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A sandbox id unique to this test process and call.
fn test_id() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t{:07x}{n:04x}", std::process::id())
}

fn http_get(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn test_network_routes_out_through_host_nat_and_is_removed_whole() {
    let mut internet = TestInternet::new().unwrap();
    let server = internet.serve_http(8080).unwrap();
    let id = test_id();
    let network = SandboxNetwork::create(&id, &NetworkConfig::default()).unwrap();
    let names = network.names().clone();
    assert_eq!(
        leftovers(&names).len(),
        3,
        "namespace, host link and host table exist"
    );
    let tap = &names.tap;
    link::run(
        Some(network.netns_path()),
        |l| async move { l.index(tap).await },
    )
    .expect("the tap exists inside the namespace");

    // From the namespace itself (standing in for the guest's next hop), out via the host.
    let reply = netns::run_in(network.netns_path(), || http_get(server))
        .unwrap()
        .unwrap();
    assert!(reply.ends_with(HTTP_BODY), "reply: {reply}");

    // IPv6 too, by NAT66: the test host sees the host's address on its link, not the pool's.
    assert!(network.link6().is_some(), "this host has IPv6");
    let listener = netns::run_in(&netns::path_of(internet.netns()), || {
        std::net::TcpListener::bind((internet.addr6(), 0))
    })
    .unwrap()
    .unwrap();
    let at = listener.local_addr().unwrap();
    netns::run_in(network.netns_path(), || {
        TcpStream::connect_timeout(&at, Duration::from_secs(3))
    })
    .unwrap()
    .unwrap();
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V6(internet.host_addr6()));

    network.remove().unwrap();
    assert_eq!(leftovers(&names), Vec::<String>::new());
}

/// The flags `ip` shows for `link` inside namespace `netns`, as in `BROADCAST,MULTICAST,UP`.
fn link_flags(netns: &str, link: &str) -> String {
    let output = Command::new("ip")
        .args(["-netns", netns, "-o", "link", "show", link])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = text.find('<').unwrap() + 1;
    let end = text.find('>').unwrap();
    text[start..end].to_owned()
}

#[test]
fn test_pending_network_keeps_the_tap_down_until_finished_and_drop_removes_it() {
    let id = test_id();
    let config = NetworkConfig::default();
    let pending = PendingNetwork::begin(&id, &config).unwrap();
    let names = pending.names().clone();
    // What a VMM needs is there; nothing a guest could send through is: the tap is down and
    // there is no uplink, host link or NAT table yet.
    let flags = link_flags(&names.netns, &names.tap);
    assert!(!flags.split(',').any(|f| f == "UP"), "tap flags: {flags}");
    assert_eq!(
        leftovers(&names),
        vec![format!("network namespace {}", names.netns)]
    );
    drop(pending);
    assert_eq!(leftovers(&names), Vec::<String>::new());

    let network = PendingNetwork::begin(&id, &config)
        .unwrap()
        .finish(&config)
        .unwrap();
    let flags = link_flags(&names.netns, &names.tap);
    assert!(flags.split(',').any(|f| f == "UP"), "tap flags: {flags}");
    assert_eq!(leftovers(&names).len(), 3);
    network.remove().unwrap();
    assert_eq!(leftovers(&names), Vec::<String>::new());
}

#[test]
fn test_exhausted_pool_fails_before_creating_anything() {
    let id = test_id();
    // A /30 pool has room for one link; the host's own address in it makes it full.
    let busy = TestInternet::new().unwrap();
    let pool = format!("{}/30", busy.addr())
        .parse::<ipnetwork::Ipv4Network>()
        .unwrap();
    let pool = ipnetwork::Ipv4Network::new(pool.network(), 30).unwrap();
    let config = NetworkConfig {
        pool,
        ..NetworkConfig::default()
    };
    let err = SandboxNetwork::create(&id, &config).unwrap_err();
    assert!(matches!(err, NetworkError::Pool(_)), "{err}");
    assert!(
        err.to_string().contains("pick host-side addresses"),
        "{err}"
    );
    assert_eq!(
        leftovers(&NetNames::for_sandbox(&id).unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn test_exhausted_v6_pool_fails_before_creating_anything() {
    let id = test_id();
    // A /126 pool has room for one link; the host's own address in it makes it full.
    let busy = TestInternet::new().unwrap();
    let pool6 = ipnetwork::Ipv6Network::new(busy.host_addr6(), 126).unwrap();
    let pool6 = ipnetwork::Ipv6Network::new(pool6.network(), 126).unwrap();
    let config = NetworkConfig {
        pool6,
        ..NetworkConfig::default()
    };
    let err = SandboxNetwork::create(&id, &config).unwrap_err();
    assert!(
        err.to_string().contains("pick host-side addresses"),
        "{err}"
    );
    assert!(
        matches!(
            &err,
            NetworkError::Pool(PoolError::Exhausted { slots: 1, .. })
        ),
        "{err:?}"
    );
    assert_eq!(
        leftovers(&NetNames::for_sandbox(&id).unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn test_v6_cidrs_and_domains_in_an_allowlist_make_a_table_the_kernel_takes_with_bounded_sets() {
    use hearth_net::policy::{Egress, EgressPolicy};
    let id = test_id();
    let allow = ["2001:db8::/32", "fd00::1", "10.1.2.0/24", "*.example.test"];
    let config = NetworkConfig {
        policy: EgressPolicy {
            egress: Egress::Allow(allow.iter().map(|a| a.parse().unwrap()).collect()),
            ..EgressPolicy::default()
        },
        // No query is made here; never the host's real resolver in tests.
        dns_upstream: Some("127.0.0.1:9".parse().unwrap()),
        ..NetworkConfig::default()
    };
    let names = NetNames::for_sandbox(&id).unwrap();
    let network = SandboxNetwork::create(&id, &config).unwrap();
    assert_eq!(leftovers(&names).len(), 3, "namespace, host link and table");
    // The resolved-address sets are bounded and their elements expire.
    require("nft", "nftables").unwrap();
    for set in ["resolved4", "resolved6"] {
        let listed = netns::run_in(network.netns_path(), || {
            Command::new("nft")
                .args(["list", "set", "inet", &names.table, set])
                .output()
        })
        .unwrap()
        .unwrap();
        let text = String::from_utf8_lossy(&listed.stdout);
        assert!(listed.status.success(), "{listed:?}");
        assert!(text.contains("flags timeout"), "{text}");
        assert!(text.contains("size 65536"), "{text}");
    }
    network.remove().unwrap();
    assert_eq!(leftovers(&names), Vec::<String>::new());
}

/// A UDP socket inside `netns` sending from `from`, which need not be the namespace's own
/// address (IP_TRANSPARENT): what a forged source looks like to the forwarder.
fn udp_from(netns_path: &Path, from: SocketAddrV4) -> UdpSocket {
    netns::run_in(netns_path, || -> nix::Result<UdpSocket> {
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::empty(),
            None,
        )?;
        socket::setsockopt(&fd, sockopt::IpTransparent, &true)?;
        socket::bind(fd.as_raw_fd(), &SockaddrIn::from(from))?;
        Ok(UdpSocket::from(fd))
    })
    .unwrap()
    .unwrap()
}

fn a_query(name: &str) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(0x4845)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

#[test]
fn test_dns_forwarder_answers_only_the_guest_address_never_a_forged_source() {
    let mut internet = TestInternet::new().unwrap();
    let upstream = internet
        .serve_dns(&[("www.example.test", Ipv4Addr::new(10, 214, 255, 9))])
        .unwrap();
    let victim_port = 5353;
    let victim = internet.serve_udp_echo(victim_port).unwrap();
    let id = test_id();
    let config = NetworkConfig {
        dns_upstream: Some(SocketAddr::new(internet.addr().into(), 53)),
        ..NetworkConfig::default()
    };
    let mut network = SandboxNetwork::create(&id, &config).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    network.start_services().unwrap();
    let forwarder = SocketAddr::from((GATEWAY_ADDR, 53));
    let query = a_query("www.example.test.");

    // A query whose source is the test host: answered, it would go out to that host.
    let forged = udp_from(
        network.netns_path(),
        SocketAddrV4::new(internet.addr(), victim_port),
    );
    forged.send_to(&query, forwarder).unwrap();
    // Then one from the guest's address, which the forwarder asks upstream about.
    let guest = udp_from(network.netns_path(), SocketAddrV4::new(GUEST_ADDR, 5354));
    guest.send_to(&query, forwarder).unwrap();

    let asked = wait_until(Duration::from_secs(10), || {
        (upstream.count() >= 1).then_some(())
    });
    assert!(asked.is_some(), "the guest's query never reached upstream");
    // The forged query came first; give its answer, if any, time to arrive.
    let leaked = wait_until(Duration::from_secs(2), || {
        (victim.count() > 0 || upstream.count() > 1).then_some(())
    });
    assert!(
        leaked.is_none(),
        "forged query answered: {} datagrams reached the forged source, upstream asked {} times",
        victim.count(),
        upstream.count()
    );
    drop(_entered);
    drop(runtime);
    network.remove().unwrap();
}
