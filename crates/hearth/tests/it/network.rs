//! Sandbox networks with real packets: guests talk to test hosts in namespaces the test makes
//! (never to outside addresses), under each egress policy.

use std::net::TcpListener;

use hearth_test_support::host::TestHost;
use hearth_test_support::netns::{
    assert_sandbox_network_removed, sandbox_network_leftovers, TestInternet, HTTP_BODY,
};

use crate::{code, host, stderr, stdout};

const HTTP_PORT: u16 = 8080;
const UDP_PORT: u16 = 9000;

/// A shell script that tries each probe and prints `name=exit-status` per line. Timeouts are
/// short: a dropped packet shows as a failure within a few seconds.
fn probes(probes: &[(&str, String)]) -> String {
    let mut script = String::from("hostname;");
    for (name, command) in probes {
        script.push_str(&format!(" {command} >/dev/null 2>&1; echo {name}=$?;"));
    }
    script
}

/// An HTTP GET with nc (the guest busybox's wget crashes on exit), succeeding only when the
/// test host's body comes back; `addr` is `host:port` or a bare host for port 80.
fn http(addr: impl std::fmt::Display) -> String {
    let addr = addr.to_string();
    let (host, port) = addr.split_once(':').unwrap_or((&addr, "80"));
    http_to(host, port)
}

/// [`http`] to an IPv6 address (whose colons `http` would take for a port).
fn http6(addr: std::net::Ipv6Addr, port: u16) -> String {
    http_to(&addr.to_string(), &port.to_string())
}

fn http_to(host: &str, port: &str) -> String {
    format!(r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 {host} {port} | grep -q 'test internet'")
}

/// Succeeds when the guest's `eth0` holds hearth's fixed IPv6 guest address.
const GUEST6_PROBE: &str =
    "grep -q '^fd7a6865617274680000000000000002 .* eth0$' /proc/net/if_inet6";

/// Sends one UDP datagram (a TFTP read request; busybox nc has no UDP mode). Whether it got
/// through is read from the test host's counter, not from this status.
fn udp(addr: impl std::fmt::Display) -> String {
    format!("tftp -g -r probe -l /tmp/probe {addr} {UDP_PORT}")
}

fn ping(addr: impl std::fmt::Display) -> String {
    format!("ping -c 1 -W 2 {addr}")
}

/// Resolves `name` through the guest's /etc/resolv.conf (or through `server`).
fn nslookup(name: &str, server: Option<std::net::Ipv4Addr>) -> String {
    match server {
        Some(server) => format!("nslookup {name} {server}"),
        None => format!("nslookup {name}"),
    }
}

/// Asks the forwarder for `name` over TCP (busybox nslookup only speaks UDP) and succeeds when
/// the answer carries `addr`.
fn tcp_lookup(name: &str, addr: std::net::Ipv4Addr) -> String {
    let query = hearth_test_support::netns::dns_tcp_query_printf(name).unwrap();
    let [a, b, c, d] = addr.octets();
    format!(
        "printf '{query}' | nc -w 3 172.30.255.1 53 | od -An -tu1 -v | tr -s ' \\n' '  ' \
         | grep -q ' {a} {b} {c} {d}'"
    )
}

/// Runs `script` in a sandbox with `flags`, returns the sandbox id and `name=status` lines.
fn run_probes(flags: &[&str], script: &str) -> (String, Vec<String>) {
    run_probes_with_dns(flags, script, None, false)
}

/// [`run_probes_with_dns`] with the sandbox's DNS forwarder asking `dns` (a test DNS server);
/// with `warm`, a first sandbox makes the machine's template, and the probes run in one
/// resumed from it, under its own policy.
fn run_probes_with_dns(
    flags: &[&str],
    script: &str,
    dns: Option<std::net::Ipv4Addr>,
    warm: bool,
) -> (String, Vec<String>) {
    let host = host();
    if warm {
        ok(&host, &["run", "--", "true"]);
        let templates = ok(&host, &["template", "ls", "--json"]);
        assert!(templates.contains("\"network\": true"), "{templates}");
    }
    let mut command = host.hearth();
    if let Some(dns) = dns {
        command.env("HEARTH_DNS_UPSTREAM", dns.to_string());
    }
    let output = command
        .arg("run")
        .args(flags)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let out = stdout(&output);
    let mut lines = out.lines().map(str::to_owned);
    let id = lines.next().unwrap_or_default();
    host.assert_clean();
    assert_sandbox_network_removed(&id);
    (id, lines.collect())
}

/// Starts `hearth run ARGS` whose guest prints its hostname (the sandbox id) first; returns
/// the running child and that id.
fn spawn_run(host: &TestHost, args: &[&str]) -> (std::process::Child, String) {
    let mut child = host
        .hearth()
        .arg("run")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = crate::first_line(&mut child);
    (child, id.trim().to_owned())
}

fn status(lines: &[String], name: &str) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no result for {name} in {lines:?}"))
        .to_owned()
}

#[test]
fn test_allow_all_reaches_test_hosts_but_not_defaults_blocked() {
    let mut internet = TestInternet::new().unwrap();
    internet.serve_http(HTTP_PORT).unwrap();
    let udp_received = internet.serve_udp_echo(UDP_PORT).unwrap();
    // Something listening on a host address, so "blocked" cannot be mistaken for "refused".
    let on_host = TcpListener::bind((internet.host_addr(), 0)).unwrap();
    let on_host = on_host.local_addr().unwrap();
    let on_host6 = TcpListener::bind((internet.host_addr6(), 0)).unwrap();
    let on_host6 = on_host6.local_addr().unwrap();
    let inet = internet.addr();
    let script = probes(&[
        ("guest6", GUEST6_PROBE.to_owned()),
        ("http", http(format!("{inet}:{HTTP_PORT}"))),
        ("http6", http6(internet.addr6(), HTTP_PORT)),
        ("host6", http6(internet.host_addr6(), on_host6.port())),
        ("udp", udp(inet)),
        ("icmp", ping(inet)),
        ("icmp6", ping(internet.addr6())),
        ("metadata", http("169.254.169.254")),
        ("host", http(on_host)),
    ]);
    let (_, lines) = run_probes(&[], &script);
    assert_eq!(status(&lines, "guest6"), "0", "{lines:?}");
    assert_eq!(status(&lines, "http"), "0", "{lines:?}");
    assert_eq!(status(&lines, "http6"), "0", "IPv6 egress: {lines:?}");
    assert_ne!(
        status(&lines, "host6"),
        "0",
        "the host over IPv6: {lines:?}"
    );
    assert_eq!(
        udp_received.count(),
        0,
        "UDP is blocked by default: {lines:?}"
    );
    assert_ne!(
        status(&lines, "icmp"),
        "0",
        "ICMP is blocked by default: {lines:?}"
    );
    assert_ne!(
        status(&lines, "icmp6"),
        "0",
        "ICMPv6 is blocked by default: {lines:?}"
    );
    assert_ne!(status(&lines, "metadata"), "0", "{lines:?}");
    assert_ne!(status(&lines, "host"), "0", "{lines:?}");
}

#[test]
fn test_allowlist_passes_listed_cidr_only_and_flags_open_udp_icmp() {
    let mut allowed = TestInternet::new().unwrap();
    allowed.serve_http(HTTP_PORT).unwrap();
    let udp_received = allowed.serve_udp_echo(UDP_PORT).unwrap();
    let mut other = TestInternet::new().unwrap();
    other.serve_http(HTTP_PORT).unwrap();
    let allow = format!("{}/32", allowed.addr());
    let allow6 = format!("{}/128", allowed.addr6());
    let script = probes(&[
        ("allowed", http(format!("{}:{HTTP_PORT}", allowed.addr()))),
        ("allowed6", http6(allowed.addr6(), HTTP_PORT)),
        ("other6", http6(other.addr6(), HTTP_PORT)),
        ("other", http(format!("{}:{HTTP_PORT}", other.addr()))),
        ("udp", udp(allowed.addr())),
        ("icmp", ping(allowed.addr())),
        ("icmp6", ping(allowed.addr6())),
    ]);
    let flags = [
        "--allow",
        &allow,
        "--allow",
        &allow6,
        "--allow-udp",
        "--allow-icmp",
    ];
    // In a sandbox resumed from a template made under allow-all: the policy is its own.
    let (_, lines) = run_probes_with_dns(&flags, &script, None, true);
    assert_eq!(status(&lines, "allowed"), "0", "{lines:?}");
    assert_eq!(status(&lines, "allowed6"), "0", "{lines:?}");
    assert_ne!(
        status(&lines, "other6"),
        "0",
        "not on the allowlist: {lines:?}"
    );
    assert_ne!(
        status(&lines, "other"),
        "0",
        "not on the allowlist: {lines:?}"
    );
    assert!(
        udp_received.count() > 0,
        "--allow-udp lets UDP out: {lines:?}"
    );
    assert_eq!(status(&lines, "icmp"), "0", "{lines:?}");
    assert_eq!(
        status(&lines, "icmp6"),
        "0",
        "--allow-icmp lets ICMPv6 out: {lines:?}"
    );
}

#[test]
fn test_deny_all_blocks_a_host_that_allow_all_reaches_and_resolves_nothing() {
    let zone = TestZone::new();
    let script = probes(&[
        ("http", http(format!("{}:{HTTP_PORT}", zone.other.addr()))),
        ("http6", http6(zone.other.addr6(), HTTP_PORT)),
        ("lookup", nslookup("other.example.test", None)),
    ]);
    let (_, lines) = run_probes_with_dns(
        &["--egress", "deny-all"],
        &script,
        Some(zone.dns.addr()),
        false,
    );
    assert_ne!(status(&lines, "http"), "0", "{lines:?}");
    assert_ne!(status(&lines, "http6"), "0", "{lines:?}");
    assert_ne!(status(&lines, "lookup"), "0", "{lines:?}");
    // The host is up and serving (the host reaches it): only the policy kept the guest out.
    let server = std::net::SocketAddr::from((zone.other.addr(), HTTP_PORT));
    std::net::TcpStream::connect_timeout(&server, std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the test host {server} is not serving: {e}"));
    assert_eq!(
        zone.queries.count(),
        0,
        "under deny-all no query leaves the host: it would carry data out"
    );
}

#[test]
fn test_network_none_gives_only_loopback() {
    let (_, lines) = run_probes(&["--network", "none"], "hostname; ls /sys/class/net");
    assert_eq!(lines, vec!["lo".to_owned()]);
}

#[test]
fn test_invalid_allow_is_refused_before_any_vm_starts() {
    let host = host();
    for bad in ["10.1.2.3/24", "*.", "a..b", "*.*.x"] {
        let output = host
            .hearth()
            .args(["run", "--allow", bad, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(code(&output), 2, "{bad}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(&format!("`{bad}`")),
            "{bad}: {}",
            stderr(&output)
        );
    }
    host.assert_clean();
}

#[test]
fn test_guest_downloads_the_test_hosts_body() {
    let mut internet = TestInternet::new().unwrap();
    internet.serve_http(HTTP_PORT).unwrap();
    let host = host();
    let output = host
        .hearth()
        .args(["run", "--", "sh", "-c"])
        .arg(format!(
            r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 {} {HTTP_PORT} | tail -n 1",
            internet.addr()
        ))
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), HTTP_BODY);
    host.assert_clean();
}

#[test]
fn test_sigterm_during_a_run_removes_the_network() {
    let host = host();
    let (child, id) = spawn_run(&host, &["--", "sh", "-c", "hostname; sleep 600"]);
    assert_eq!(
        sandbox_network_leftovers(&id).len(),
        3,
        "namespace, host link and host table exist while the sandbox runs"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 143, "stderr: {}", stderr(&output));
    host.assert_clean();
    assert_sandbox_network_removed(&id);
}

/// Runs `hearth ARGS`, which must succeed; returns its stdout.
fn ok(host: &TestHost, args: &[&str]) -> String {
    let output = host.hearth().args(args).output().unwrap();
    assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
    stdout(&output)
}

/// What a published port at `addr` answers, polling up to `wait` (the guest's listener may not
/// be up yet: a connection that finds nothing closes empty).
fn published_reply(addr: std::net::SocketAddr, wait: std::time::Duration) -> Option<String> {
    hearth_test_support::wait_until(wait, || {
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut stream, &mut reply).ok()?;
        (!reply.is_empty()).then_some(reply)
    })
}

/// A free port on 127.0.0.1 (bound and released; the kernel does not hand it out again soon).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn test_published_port_reaches_the_guest_from_host_loopback() {
    let host = host();
    let port = free_port();
    let publish = format!("{port}:8000");
    let script = "hostname; nc -l -p 8000 -e echo published";
    let (child, id) = spawn_run(&host, &["-p", &publish, "--", "sh", "-c", script]);
    let reply = published_reply(
        ([127, 0, 0, 1], port).into(),
        std::time::Duration::from_secs(20),
    );
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        reply.as_deref(),
        Some("published\n"),
        "stderr: {}",
        stderr(&output)
    );
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    host.assert_clean();
    assert_sandbox_network_removed(&id);
}

#[test]
fn test_publishing_a_port_in_use_fails_before_any_vm_starts() {
    let host = host();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = host
        .hearth()
        .args(["run", "-p", &format!("{port}:80"), "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 125, "stderr: {}", stderr(&output));
    assert!(
        stderr(&output).contains("already in use"),
        "{}",
        stderr(&output)
    );
    host.assert_clean();
}

#[test]
fn test_detached_sandbox_gets_its_network_flags_and_rm_removes_its_network() {
    let zone = TestZone::new();
    let host = host();
    let run = |args: &[&str]| ok(&host, args);
    let upstream = zone.dns.addr().to_string();
    // The supervisor owns the network, so it runs the DNS forwarder.
    let plain = run(&["run", "-d", "--dns-upstream", &upstream])
        .trim()
        .to_owned();
    let none = run(&["run", "-d", "--network", "none"]).trim().to_owned();
    assert_eq!(run(&["exec", &none, "--", "ls", "/sys/class/net"]), "lo\n");
    let fetch = http(format!("other.example.test:{HTTP_PORT}"));
    run(&["exec", &plain, "--", "sh", "-c", &fetch]);
    assert_eq!(
        sandbox_network_leftovers(&plain).len(),
        3,
        "{plain} has a network"
    );
    run(&["rm", "-f", &plain, &none]);
    assert_sandbox_network_removed(&plain);
    host.assert_clean();
}

/// A test zone `example.test` served from `dns`'s namespace, with one HTTP test host per name.
struct TestZone {
    dns: TestInternet,
    /// `allowed.example.test`.
    allowed: TestInternet,
    /// `other.example.test`.
    other: TestInternet,
    /// `a.wild.example.test` and `wild.example.test`.
    wild: TestInternet,
    queries: hearth_test_support::netns::Received,
}

fn http_host() -> TestInternet {
    let mut host = TestInternet::new().unwrap();
    host.serve_http(HTTP_PORT).unwrap();
    host
}

impl TestZone {
    fn new() -> TestZone {
        let (allowed, other, wild) = (http_host(), http_host(), http_host());
        let records = [
            ("allowed.example.test", allowed.addr()),
            ("other.example.test", other.addr()),
            ("a.wild.example.test", wild.addr()),
            ("wild.example.test", wild.addr()),
        ];
        let mut dns = TestInternet::new().unwrap();
        let queries = dns.serve_dns(&records).unwrap();
        TestZone {
            dns,
            allowed,
            other,
            wild,
            queries,
        }
    }
}

#[test]
fn test_domain_allowlist_resolves_and_reaches_listed_names_only() {
    let zone = TestZone::new();
    let script = probes(&[
        (
            "resolv_conf",
            "grep -qx 'nameserver 172.30.255.1' /etc/resolv.conf".to_owned(),
        ),
        // Before any name resolved to it, the wildcard's host is not reachable by address.
        (
            "wild_ip_first",
            http(format!("{}:{HTTP_PORT}", zone.wild.addr())),
        ),
        ("lookup_allowed", nslookup("allowed.example.test", None)),
        ("allowed", http(format!("allowed.example.test:{HTTP_PORT}"))),
        // The lookup's AAAA answer opened the allowed name's IPv6 address.
        ("allowed6", http6(zone.allowed.addr6(), HTTP_PORT)),
        ("other6", http6(zone.other.addr6(), HTTP_PORT)),
        ("lookup_other", nslookup("other.example.test", None)),
        (
            "other_ip",
            http(format!("{}:{HTTP_PORT}", zone.other.addr())),
        ),
        ("wildcard", http(format!("a.wild.example.test:{HTTP_PORT}"))),
        (
            "tcp_dns",
            tcp_lookup("allowed.example.test", zone.allowed.addr()),
        ),
        ("apex", nslookup("wild.example.test", None)),
    ]);
    let flags = [
        "--allow",
        "allowed.example.test",
        "--allow",
        "*.wild.example.test",
    ];
    let (_, lines) = run_probes_with_dns(&flags, &script, Some(zone.dns.addr()), true);
    assert_eq!(status(&lines, "resolv_conf"), "0", "{lines:?}");
    assert_ne!(status(&lines, "wild_ip_first"), "0", "{lines:?}");
    assert_eq!(status(&lines, "lookup_allowed"), "0", "{lines:?}");
    assert_eq!(status(&lines, "allowed"), "0", "{lines:?}");
    assert_eq!(status(&lines, "allowed6"), "0", "AAAA-resolved: {lines:?}");
    assert_ne!(status(&lines, "other6"), "0", "no allowed name: {lines:?}");
    assert_ne!(
        status(&lines, "lookup_other"),
        "0",
        "not on the allowlist: {lines:?}"
    );
    assert_ne!(
        status(&lines, "other_ip"),
        "0",
        "reachable by address only through an allowed name: {lines:?}"
    );
    assert_eq!(status(&lines, "wildcard"), "0", "{lines:?}");
    assert_eq!(status(&lines, "tcp_dns"), "0", "DNS over TCP: {lines:?}");
    assert_ne!(
        status(&lines, "apex"),
        "0",
        "`*.` does not cover the apex: {lines:?}"
    );
    assert!(zone.queries.count() > 0, "allowed names are asked upstream");
}

#[test]
fn test_allow_all_resolves_every_name_but_only_through_the_forwarder() {
    let zone = TestZone::new();
    let script = probes(&[
        ("other", http(format!("other.example.test:{HTTP_PORT}"))),
        ("wild", http(format!("wild.example.test:{HTTP_PORT}"))),
        (
            "direct_dns",
            nslookup("allowed.example.test", Some(zone.dns.addr())),
        ),
    ]);
    let (_, lines) = run_probes_with_dns(&["--allow-udp"], &script, Some(zone.dns.addr()), false);
    assert_eq!(status(&lines, "other"), "0", "{lines:?}");
    assert_eq!(status(&lines, "wild"), "0", "{lines:?}");
    assert_ne!(
        status(&lines, "direct_dns"),
        "0",
        "DNS to any server but hearth's forwarder is blocked, even with --allow-udp: {lines:?}"
    );
}

/// Answers `published` to every connection on a listener bound to `at` (in the host's
/// namespace), for as long as the test process runs; returns where it listens.
fn serve_published(at: impl std::net::ToSocketAddrs) -> std::net::SocketAddr {
    use std::io::Write;
    let listener = TcpListener::bind(at).unwrap();
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"published\n");
        }
    });
    // The host itself reaches it: what a sandbox fails to reach is there.
    let reply = published_reply(local, std::time::Duration::from_secs(5));
    assert_eq!(reply.as_deref(), Some("published\n"), "{local}");
    local
}

#[test]
fn test_two_sandboxes_reach_neither_each_others_links_nor_published_ports() {
    let host = host();
    let run = |args: &[&str]| ok(&host, args);
    let listener = "while true; do nc -l -p 8000 -e echo published; done";
    let ports = [free_port(), free_port()];
    let ids = ports.map(|port| {
        let publish = format!("0.0.0.0:{port}:8000");
        run(&["run", "-d", "-p", &publish, "--", "sh", "-c", listener])
            .trim()
            .to_owned()
    });
    let views = ids.clone().map(|id| {
        let inspected: serde_json::Value = serde_json::from_str(&run(&["inspect", &id])).unwrap();
        inspected[0]["network"].clone()
    });
    for ((id, view), port) in ids.iter().zip(&views).zip(ports) {
        assert_eq!(view["guest"], "172.30.255.2/30", "{view}");
        assert_eq!(view["nameserver"], "172.30.255.1", "{view}");
        assert_eq!(view["guest6"], "fd7a:6865:6172:7468::2/126", "{view}");
        assert_eq!(view["gateway6"], "fd7a:6865:6172:7468::1", "{view}");
        assert_eq!(view["policy"]["egress"], "allow_all", "{view}");
        assert_eq!(view["host_link"]["name"], format!("hth{id}"), "{view}");
        assert_eq!(
            view["published"],
            serde_json::json!([format!("0.0.0.0:{port}->8000/tcp")])
        );
    }
    let addr = |view: &serde_json::Value, end: &str| -> std::net::Ipv4Addr {
        view["host_link"][end].as_str().unwrap().parse().unwrap()
    };
    // The host reaches each published port by the sandbox's pool address: what the other
    // sandbox fails to reach below is there.
    for (view, port) in views.iter().zip(ports) {
        let at = (addr(view, "host"), port).into();
        let reply = published_reply(at, std::time::Duration::from_secs(30));
        assert_eq!(reply.as_deref(), Some("published\n"));
    }
    // Something on each sandbox's host-side IPv6 address, so "blocked" is not "refused".
    let on_host6 = views.clone().map(|view| {
        let host6: std::net::Ipv6Addr = view["host_link"]["host6"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        serve_published((host6, 0))
    });
    for (me, other) in [(0, 1), (1, 0)] {
        let reach = |target: std::net::IpAddr, port: u16| {
            format!("nc -w 3 {target} {port} </dev/null | grep -q published")
        };
        let script = probes(&[
            (
                "published",
                reach(addr(&views[other], "host").into(), ports[other]),
            ),
            ("host_end", reach(addr(&views[other], "host").into(), 8000)),
            (
                "namespace_end",
                reach(addr(&views[other], "namespace").into(), 8000),
            ),
            (
                "host_end6",
                reach(on_host6[other].ip(), on_host6[other].port()),
            ),
        ]);
        let out = run(&["exec", &ids[me], "--", "sh", "-c", &script]);
        let lines: Vec<String> = out.lines().map(str::to_owned).collect();
        for probe in ["published", "host_end", "namespace_end", "host_end6"] {
            assert_ne!(
                status(&lines, probe),
                "0",
                "{probe} from {}: {lines:?}",
                ids[me]
            );
        }
    }
    run(&["rm", "-f", &ids[0], &ids[1]]);
    for id in &ids {
        assert_sandbox_network_removed(id);
    }
    host.assert_clean();
}

#[test]
fn test_without_cap_net_admin_run_fails_before_any_vm_starts_and_leaves_nothing() {
    let host = host();
    let hearth = host.hearth();
    // As root but without CAP_NET_ADMIN in the bounding set: the namespace can be made, the
    // veth pair cannot, so what was made first must be removed again.
    let output = std::process::Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-net_admin"])
        .arg(hearth.get_program())
        .args(["run", "--", "sh", "-c", "echo booted"])
        .envs(hearth.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .expect("setpriv (util-linux) runs hearth without CAP_NET_ADMIN");
    let err = stderr(&output);
    assert_eq!(code(&output), 125, "stderr: {err}");
    assert!(!stdout(&output).contains("booted"), "no VM ran");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("hint: sandbox networks need root"), "{err}");
    let id = err
        .split("network namespace `hearth-")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no sandbox id in: {err}"));
    assert_sandbox_network_removed(id);
    host.assert_clean();
}
