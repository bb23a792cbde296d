//! A small "internet" for network tests: a namespace the test owns, joined to the host by a
//! veth pair and routed like any outside host, with an HTTP server, a UDP echo and an
//! authoritative DNS server inside. Each test host has an IPv6 address too ([`v6_of`] its
//! IPv4 one), from the documentation prefix 2001:db8::/32: sandbox policies block unique local
//! addresses (fc00::/7) by default, so a ULA test host would be unreachable under every policy.
//! Sandbox traffic in tests goes only here (and to loopback), never to real outside addresses.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_net::{link, netns};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Serializes subnet choice between test processes running at once.
const LOCK: &str = "/run/hearth-test-internet.lock";
/// Test hosts get a `/24` of this `/16`, outside hearth's default pool (10.213.0.0/16).
const SUBNET_BASE: [u8; 2] = [10, 214];
/// TTL of the test DNS server's records.
pub const DNS_TTL: u32 = 300;
/// What the HTTP server answers to every request.
pub const HTTP_BODY: &str = "hello from the test internet\n";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The IPv6 address paired with test address `v4` (`10.214.N.H` ↔ `2001:db8:6865:N::H`): test
/// hosts and the host ends of their links have one of each, and the test DNS server answers
/// AAAA queries with the pair of what it answers A queries with.
pub fn v6_of(v4: Ipv4Addr) -> Ipv6Addr {
    let [_, _, net, host] = v4.octets();
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x6865,
        u16::from(net),
        0,
        0,
        0,
        u16::from(host),
    )
}

/// Prefix length of the links to test hosts' IPv6 addresses.
const V6_PREFIX_LEN: u8 = 64;

/// A test host: its own namespace with address `addr`, reachable from the host (and so from
/// sandboxes whose policy allows it) over a veth pair. Removed on drop.
#[derive(Debug)]
pub struct TestInternet {
    netns: String,
    netns_path: PathBuf,
    veth_host: String,
    host_addr: Ipv4Addr,
    addr: Ipv4Addr,
    stop: Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
}

impl TestInternet {
    pub fn new() -> anyhow::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}x{n}", std::process::id());
        let netns = format!("hearth-t{tag}");
        let veth_host = format!("htx{tag}");
        let veth_ns = format!("hty{tag}");
        if veth_host.len() > 15 {
            bail!("test link name `{veth_host}` is too long");
        }
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .with_context(|| format!("opening {LOCK}"))?;
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("locking the test subnet allocator")?;
        let used = link::run(None, |l| async move { l.addresses().await })?;
        let octet = (1..=254u8)
            .find(|o| {
                !used.contains(&IpAddr::V4(Ipv4Addr::new(
                    SUBNET_BASE[0],
                    SUBNET_BASE[1],
                    *o,
                    1,
                )))
            })
            .context("no free test subnet in 10.214.0.0/16")?;
        let host_addr = Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], octet, 1);
        let addr = Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], octet, 2);
        let netns_path = netns::create(&netns)?;
        let internet = TestInternet {
            netns,
            netns_path,
            veth_host,
            host_addr,
            addr,
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        let (vh, vn, path) = (&internet.veth_host, &veth_ns, &internet.netns_path);
        link::run(None, |l| async move {
            l.add_veth(vh, vn).await?;
            l.move_to(vn, path).await?;
            l.add_address(vh, IpAddr::V4(host_addr), 24).await?;
            l.add_address(vh, IpAddr::V6(v6_of(host_addr)), V6_PREFIX_LEN)
                .await?;
            l.set_up(vh).await?;
            Ok(())
        })?;
        link::run(Some(path), |l| async move {
            l.set_up("lo").await?;
            l.add_address(vn, IpAddr::V4(addr), 24).await?;
            l.add_address(vn, IpAddr::V6(v6_of(addr)), V6_PREFIX_LEN)
                .await?;
            l.set_up(vn).await?;
            l.add_default_route(IpAddr::V4(host_addr)).await?;
            l.add_default_route(IpAddr::V6(v6_of(host_addr))).await?;
            Ok(())
        })?;
        Ok(internet)
    }

    /// The test host's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The host's address on the link to this test host (a host address, so sandboxes must
    /// not reach it).
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The test host's IPv6 address.
    pub fn addr6(&self) -> Ipv6Addr {
        v6_of(self.addr)
    }

    /// The host's IPv6 address on the link to this test host.
    pub fn host_addr6(&self) -> Ipv6Addr {
        v6_of(self.host_addr)
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Starts an HTTP server on `port` of both addresses that answers [`HTTP_BODY`] to every
    /// request; returns the IPv4 one.
    pub fn serve_http(&mut self, port: u16) -> anyhow::Result<SocketAddr> {
        self.serve_http_at(SocketAddr::new(IpAddr::V6(self.addr6()), port))?;
        self.serve_http_at(SocketAddr::new(IpAddr::V4(self.addr), port))
    }

    fn serve_http_at(&mut self, at: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = netns::run_in(&self.netns_path, || TcpListener::bind(at))?
            .with_context(|| format!("binding {at} in {}", self.netns))?;
        listener.set_nonblocking(true)?;
        let stop = self.stop.clone();
        self.servers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let reply = format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{HTTP_BODY}",
                            HTTP_BODY.len()
                        );
                        let _ = stream.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
        Ok(at)
    }

    /// Starts a UDP echo server on `port`; the counter says how many datagrams arrived.
    pub fn serve_udp_echo(&mut self, port: u16) -> anyhow::Result<Received> {
        self.serve_udp(port, |datagram| Some(datagram.to_vec()))
    }

    /// Starts an authoritative DNS server on UDP port 53 answering A queries for `records`
    /// (name → address, TTL [`DNS_TTL`]) and AAAA queries for the same names with the [`v6_of`]
    /// those addresses: NXDOMAIN for other names, no records for other types
    /// of a known name. The counter says how many queries arrived.
    pub fn serve_dns(&mut self, records: &[(&str, Ipv4Addr)]) -> anyhow::Result<Received> {
        let zone: Vec<(Name, Ipv4Addr)> = records
            .iter()
            .map(|(name, addr)| Ok((Name::from_ascii(format!("{name}."))?.to_lowercase(), *addr)))
            .collect::<anyhow::Result<_>>()?;
        let zone = Arc::new(zone);
        let received = {
            let zone = zone.clone();
            self.serve_udp(53, move |query| dns_answer(&zone, query))?
        };
        self.serve_dns_tcp(zone, received.clone())?;
        Ok(received)
    }

    /// The same zone over TCP on port 53: one length-prefixed message each way, per query.
    fn serve_dns_tcp(
        &mut self,
        zone: Arc<Vec<(Name, Ipv4Addr)>>,
        received: Received,
    ) -> anyhow::Result<()> {
        let at = SocketAddr::new(IpAddr::V4(self.addr), 53);
        let listener = netns::run_in(&self.netns_path, || TcpListener::bind(at))?
            .with_context(|| format!("binding tcp {at} in {}", self.netns))?;
        listener.set_nonblocking(true)?;
        let stop = self.stop.clone();
        self.servers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut len = [0u8; 2];
                while stream.read_exact(&mut len).is_ok() {
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if stream.read_exact(&mut query).is_err() {
                        break;
                    }
                    received.0.fetch_add(1, Ordering::Relaxed);
                    let Some(reply) = dns_answer(&zone, &query) else {
                        break;
                    };
                    let Ok(reply_len) = u16::try_from(reply.len()) else {
                        break;
                    };
                    let mut framed = reply_len.to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    if stream.write_all(&framed).is_err() {
                        break;
                    }
                }
            }
        }));
        Ok(())
    }

    /// Answers each datagram to `port` with what `reply` makes of it (nothing for `None`);
    /// the counter says how many arrived.
    fn serve_udp(
        &mut self,
        port: u16,
        reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> anyhow::Result<Received> {
        let at = SocketAddr::new(IpAddr::V4(self.addr), port);
        let socket = netns::run_in(&self.netns_path, || UdpSocket::bind(at))?
            .with_context(|| format!("binding udp {at} in {}", self.netns))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = self.stop.clone();
        let received = Received(Arc::new(AtomicUsize::new(0)));
        let counter = received.0.clone();
        self.servers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Some(answer) = reply(&buf[..n]) {
                        let _ = socket.send_to(&answer, from);
                    }
                }
            }
        }));
        Ok(received)
    }
}

fn dns_answer(zone: &[(Name, Ipv4Addr)], query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries().first()?.clone();
    let name = question.name().to_lowercase();
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired())
        .add_query(question.clone());
    let found: Vec<Ipv4Addr> = zone
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, addr)| *addr)
        .collect();
    if found.is_empty() {
        response.set_response_code(ResponseCode::NXDomain);
    } else {
        for addr in found {
            let rdata = match question.query_type() {
                RecordType::A => RData::A(A(addr)),
                RecordType::AAAA => RData::AAAA(AAAA(v6_of(addr))),
                _ => continue,
            };
            response.add_answer(Record::from_rdata(name.clone(), DNS_TTL, rdata));
        }
    }
    response.to_vec().ok()
}

/// A DNS query for the A records of `name`, framed for TCP (length first) and written as
/// printf octal escapes, for sending from a guest shell with `printf '…' | nc`.
pub fn dns_tcp_query_printf(name: &str) -> anyhow::Result<String> {
    let mut message = Message::new();
    message
        .set_id(0x4845)
        .set_recursion_desired(true)
        .add_query(hickory_proto::op::Query::query(
            Name::from_ascii(format!("{name}."))?,
            RecordType::A,
        ));
    let query = message.to_vec()?;
    let mut framed = u16::try_from(query.len())?.to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    Ok(framed.iter().map(|b| format!("\\{b:03o}")).collect())
}

/// How many datagrams a test server has received.
#[derive(Debug, Clone)]
pub struct Received(Arc<AtomicUsize>);

impl Received {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for TestInternet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for server in self.servers.drain(..) {
            let _ = server.join();
        }
        let veth = &self.veth_host;
        if let Err(e) = link::run(None, |l| async move { l.delete(veth).await }) {
            eprintln!("failed to delete test link {veth}: {e}");
        }
        if let Err(e) = netns::remove(&self.netns) {
            eprintln!("failed to remove test namespace {}: {e}", self.netns);
        }
    }
}

/// Panics unless nothing of sandbox `id`'s network remains: no namespace, no host link, no
/// host table. Polls briefly, since a killed VMM releases its namespace asynchronously.
pub fn assert_sandbox_network_removed(id: &str) {
    let clean = crate::wait_until(Duration::from_secs(5), || {
        sandbox_network_leftovers(id).is_empty().then_some(())
    });
    if clean.is_none() {
        panic!(
            "network of sandbox {id} left behind: {:?}",
            sandbox_network_leftovers(id)
        );
    }
}

/// What exists of sandbox `id`'s network on the host (namespace, host link, host table).
pub fn sandbox_network_leftovers(id: &str) -> Vec<String> {
    match hearth_net::NetNames::for_sandbox(id) {
        Ok(names) => hearth_net::leftovers(&names),
        Err(e) => vec![format!("cannot name the network of sandbox `{id}`: {e}")],
    }
}
