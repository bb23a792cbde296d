//! Real namespaces, links and nftables tables; traffic only to a test host the test creates.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hearth_net::{leftovers, link, netns, NetNames, NetworkConfig, NetworkError, SandboxNetwork};
use hearth_test_support::netns::{TestInternet, HTTP_BODY};

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
fn test_v6_cidrs_and_domains_in_an_allowlist_make_a_table_the_kernel_takes() {
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
    network.remove().unwrap();
    assert_eq!(leftovers(&names), Vec::<String>::new());
}
