//! The sandbox's DNS forwarder. It listens on the guest's gateway inside the sandbox's
//! namespace (the only DNS server the policy lets the guest reach), answers names the egress
//! policy does not resolve with NXDOMAIN without asking anyone, and passes the rest to the
//! host's resolver from the host's namespace. Under a domain allowlist every A/AAAA address in
//! an answer goes into the table's resolved-address set, for the record's TTL, before the guest
//! gets the answer: connecting to that address is then allowed.
//!
//! Over UDP and TCP (RFC 7766 framing: a two-byte length before each message); a query is
//! asked upstream over the transport it came on, so an answer too large for UDP, which
//! resolvers then ask again over TCP, comes whole.

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

use crate::netns;
use crate::nft;
use crate::policy::{EgressPolicy, DNS_PORT};
use crate::pool::{GATEWAY_ADDR, GUEST_ADDR};

/// The host's resolver configuration, where the default upstream comes from.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long upstream may take to answer one query (a stub resolver's usual timeout).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Queries answered at once; more are dropped (the guest's resolver retries), so a guest cannot
/// make hearth open sockets without bound.
const MAX_IN_FLIGHT: usize = 64;
/// Shortest time a resolved address stays allowed: with a TTL of 0 the guest could never
/// connect to what it just resolved.
const MIN_ALLOW_TTL: Duration = Duration::from_secs(10);
/// Longest time a resolved address stays allowed, whatever TTL upstream gives: the guest
/// asks again by then, and its sets do not keep addresses of long-gone answers.
const MAX_ALLOW_TTL: Duration = Duration::from_secs(3600);
/// Addresses of one answer put in the sets; the guest still gets the whole answer. Enough for
/// any real name's round robin, and one answer cannot fill the sets.
const MAX_RESOLVED_PER_ANSWER: usize = 32;
/// Largest DNS message over UDP with EDNS (RFC 6891 allows up to 65535; that covers all).
const MAX_MESSAGE: usize = 65535;
/// How long a guest's TCP connection may sit idle between queries (RFC 7766 suggests seconds).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept before the next.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// How a query reached the forwarder, and so how it is asked upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("failed to bind the DNS forwarder on {GATEWAY_ADDR}:{DNS_PORT} in network namespace `{}`", netns.display())]
    Bind {
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to enter network namespace `{}` for the DNS forwarder", netns.display())]
    Netns {
        netns: PathBuf,
        #[source]
        source: netns::NetnsError,
    },
    #[error("failed to hand the DNS forwarder's socket to the runtime")]
    Register(#[source] std::io::Error),
    #[error("failed to read the host's resolver configuration `{HOST_RESOLV_CONF}`")]
    ReadResolvConf(#[source] std::io::Error),
    #[error("`{HOST_RESOLV_CONF}` cannot be parsed")]
    ParseResolvConf(#[source] resolv_conf::ParseError),
    #[error("`{HOST_RESOLV_CONF}` lists no nameserver; give one with --dns-upstream")]
    NoNameserver,
}

/// The first nameserver of the host's `/etc/resolv.conf`, on port 53.
pub fn host_upstream() -> Result<SocketAddr, DnsError> {
    first_nameserver(&std::fs::read(HOST_RESOLV_CONF).map_err(DnsError::ReadResolvConf)?)
}

fn first_nameserver(resolv_conf: &[u8]) -> Result<SocketAddr, DnsError> {
    let config = resolv_conf::Config::parse(resolv_conf).map_err(DnsError::ParseResolvConf)?;
    config
        .nameservers
        .first()
        .map(|ip| SocketAddr::new(IpAddr::from(ip), DNS_PORT))
        .ok_or(DnsError::NoNameserver)
}

/// The forwarder of one sandbox: its socket is bound at creation (so a failure stops the
/// sandbox before its VM starts); it answers once started, and stops when dropped.
#[derive(Debug)]
pub(crate) struct DnsForwarder {
    /// Taken by `start`.
    sockets: Option<(UdpSocket, TcpListener)>,
    task: Option<JoinHandle<()>>,
    /// Shared with the query tasks.
    context: Arc<Context>,
}

#[derive(Debug)]
struct Context {
    policy: EgressPolicy,
    /// `None` when the host has no resolver: every allowed name then gets SERVFAIL.
    upstream: Option<SocketAddr>,
    netns: PathBuf,
    table: CString,
}

impl DnsForwarder {
    /// Binds the forwarder's socket on the gateway address inside `netns`, whose tap must
    /// already carry that address.
    pub(crate) fn bind(
        netns: &Path,
        table: CString,
        policy: EgressPolicy,
        upstream: Option<SocketAddr>,
    ) -> Result<Self, DnsError> {
        let at = SocketAddr::new(IpAddr::V4(GATEWAY_ADDR), DNS_PORT);
        // A socket keeps the namespace it was made in, whichever thread uses it later.
        let sockets = netns::run_in(netns, || Ok((UdpSocket::bind(at)?, TcpListener::bind(at)?)))
            .map_err(|source| DnsError::Netns {
                netns: netns.to_owned(),
                source,
            })?
            .map_err(|source| DnsError::Bind {
                netns: netns.to_owned(),
                source,
            })?;
        Ok(DnsForwarder {
            sockets: Some(sockets),
            task: None,
            context: Arc::new(Context {
                policy,
                upstream,
                netns: netns.to_owned(),
                table,
            }),
        })
    }

    /// Starts answering. Must run inside a tokio runtime.
    pub(crate) fn start(&mut self) -> Result<(), DnsError> {
        let Some((udp, tcp)) = self.sockets.take() else {
            return Ok(());
        };
        udp.set_nonblocking(true).map_err(DnsError::Register)?;
        tcp.set_nonblocking(true).map_err(DnsError::Register)?;
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(DnsError::Register)?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(DnsError::Register)?;
        self.task = Some(tokio::spawn(serve(
            Arc::new(udp),
            tcp,
            self.context.clone(),
        )));
        Ok(())
    }
}

impl Drop for DnsForwarder {
    fn drop(&mut self) {
        // Aborting the serving task drops its query tasks (a `JoinSet`) and the socket.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve(
    socket: Arc<tokio::net::UdpSocket>,
    listener: tokio::net::TcpListener,
    context: Arc<Context>,
) {
    let mut in_flight = JoinSet::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((len, guest)) = received else { continue };
                if !from_guest(guest) || in_flight.len() >= MAX_IN_FLIGHT {
                    continue;
                }
                let query = buf[..len].to_vec();
                let (socket, context) = (socket.clone(), context.clone());
                in_flight.spawn(async move {
                    if let Some(reply) = answer(&context, &query, Transport::Udp).await {
                        let _ = socket.send_to(&reply, guest).await;
                    }
                });
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors (EMFILE), accept fails at once for as long as the
                        // connection waits: pause instead of spinning on it.
                        tracing::debug!(%error, "DNS forwarder failed to accept a connection");
                        tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                        continue;
                    }
                };
                if !from_guest(peer) || in_flight.len() >= MAX_IN_FLIGHT {
                    continue;
                }
                in_flight.spawn(serve_tcp(stream, context.clone()));
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
}

/// Whether a query came from the guest. Only the guest is answered: the answer goes to the
/// query's source, so a query with a forged source (say, an address on the internet) would
/// have its answer, and the question the sender chose, sent out through the uplink: a way out
/// under any policy, and an amplifier. The namespace's rules drop such packets on the tap too.
fn from_guest(source: SocketAddr) -> bool {
    let from = source.ip().to_canonical();
    if from != IpAddr::V4(GUEST_ADDR) {
        tracing::debug!(%source, "DNS query not from the guest; dropped");
        return false;
    }
    true
}

/// Answers the queries of one TCP connection from the guest, in order, until it closes, sends
/// something that is not a query, or idles.
async fn serve_tcp(mut stream: TcpStream, context: Arc<Context>) {
    loop {
        let read = tokio::time::timeout(TCP_IDLE_TIMEOUT, read_framed(&mut stream)).await;
        let Ok(Some(query)) = read else { return };
        let Some(reply) = answer(&context, &query, Transport::Tcp).await else {
            return;
        };
        if write_framed(&mut stream, &reply).await.is_none() {
            return;
        }
    }
}

/// One length-prefixed DNS message from a TCP stream.
async fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let len = stream.read_u16().await.ok()?;
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await.ok()?;
    Some(message)
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> Option<()> {
    let len = u16::try_from(message.len()).ok()?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed).await.ok()
}

/// The reply to one query from the guest, or `None` for something that is not a query.
async fn answer(context: &Context, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let [question] = request.queries() else {
        return reply(&request, ResponseCode::FormErr);
    };
    if request.op_code() != OpCode::Query {
        return reply(&request, ResponseCode::NotImp);
    }
    let name = question.name();
    if !context.policy.resolves(name) {
        tracing::debug!(%name, "name not allowed; answering NXDOMAIN");
        return reply(&request, ResponseCode::NXDomain);
    }
    let Some(upstream) = context.upstream else {
        return reply(&request, ResponseCode::ServFail);
    };
    let Some((raw, response)) = ask_upstream(upstream, query, request.id(), transport).await else {
        return reply(&request, ResponseCode::ServFail);
    };
    if !context.policy.domains().is_empty() {
        let resolved = resolved_addresses(&response);
        if let Err(error) = allow_addresses(context, resolved).await {
            tracing::warn!(%name, error = &error as &dyn std::error::Error, "failed to allow resolved addresses; answering SERVFAIL");
            return reply(&request, ResponseCode::ServFail);
        }
    }
    // Upstream's bytes as they came: re-encoding could drop what the parser does not keep.
    Some(raw)
}

/// An answer with no records and `code`, echoing the question.
fn reply(request: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut message = Message::error_msg(request.id(), request.op_code(), code);
    message
        .add_queries(request.queries().iter().cloned())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    message.to_vec().ok()
}

/// Sends `query` from the host's namespace to `upstream` over `transport` and waits for the
/// answer with `id`, returned as received and parsed.
async fn ask_upstream(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    transport: Transport,
) -> Option<(Vec<u8>, Message)> {
    let is_answer = |raw: &[u8]| {
        Message::from_vec(raw)
            .ok()
            .filter(|m| m.id() == id && m.message_type() == MessageType::Response)
    };
    let exchange = async {
        if transport == Transport::Tcp {
            let mut stream = TcpStream::connect(upstream).await.ok()?;
            write_framed(&mut stream, query).await?;
            let raw = read_framed(&mut stream).await?;
            let message = is_answer(&raw)?;
            return Some((raw, message));
        }
        let local: SocketAddr = match upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = tokio::net::UdpSocket::bind(local).await.ok()?;
        socket.connect(upstream).await.ok()?;
        socket.send(query).await.ok()?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let len = socket.recv(&mut buf).await.ok()?;
            if let Some(message) = is_answer(&buf[..len]) {
                return Some((buf[..len].to_vec(), message));
            }
        }
    };
    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await;
    if answer.is_err() {
        tracing::debug!(%upstream, "upstream DNS server did not answer in time");
    }
    answer.ok().flatten()
}

/// The first [`MAX_RESOLVED_PER_ANSWER`] A/AAAA addresses among the answers, each with how long
/// it may be used: its TTL within [`MIN_ALLOW_TTL`]..=[`MAX_ALLOW_TTL`].
fn resolved_addresses(response: &Message) -> Vec<(IpAddr, Duration)> {
    response
        .answers()
        .iter()
        .filter_map(|record| {
            let addr = match record.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => return None,
            };
            let ttl = Duration::from_secs(u64::from(record.ttl()));
            Some((addr, ttl.clamp(MIN_ALLOW_TTL, MAX_ALLOW_TTL)))
        })
        .take(MAX_RESOLVED_PER_ANSWER)
        .collect()
}

/// Why resolved addresses could not be allowed; the guest then gets SERVFAIL.
#[derive(Debug, thiserror::Error)]
enum AllowError {
    #[error("failed to enter network namespace `{}` to allow resolved addresses", netns.display())]
    Netns {
        netns: PathBuf,
        #[source]
        source: netns::NetnsError,
    },
    #[error("failed to add a resolved address to the allowed set")]
    Nft(#[source] nft::NftError),
    #[error("the task adding resolved addresses did not finish")]
    Task(#[source] tokio::task::JoinError),
}

/// Adds the addresses to the table's sets, from a thread inside the namespace.
async fn allow_addresses(
    context: &Context,
    resolved: Vec<(IpAddr, Duration)>,
) -> Result<(), AllowError> {
    if resolved.is_empty() {
        return Ok(());
    }
    let (netns, table) = (context.netns.clone(), context.table.clone());
    let added = tokio::task::spawn_blocking(move || {
        netns::run_in(&netns, || {
            resolved
                .iter()
                .try_for_each(|(addr, ttl)| nft::add_resolved(&table, *addr, *ttl))
        })
    })
    .await;
    match added {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(AllowError::Nft(e)),
        Ok(Err(source)) => Err(AllowError::Netns {
            netns: context.netns.clone(),
            source,
        }),
        Err(e) => Err(AllowError::Task(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, Record, RecordType};

    fn query(name: &str) -> Message {
        let mut message = Message::new();
        message
            .set_id(7)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message
    }

    #[test]
    fn test_reply_echoes_id_and_question_with_the_code() {
        let bytes = reply(&query("blocked.example.test."), ResponseCode::NXDomain).unwrap();
        let message = Message::from_vec(&bytes).unwrap();
        assert_eq!(message.id(), 7);
        assert_eq!(message.message_type(), MessageType::Response);
        assert_eq!(message.response_code(), ResponseCode::NXDomain);
        assert_eq!(message.queries(), query("blocked.example.test.").queries());
    }

    #[test]
    fn test_resolved_addresses_take_a_records_with_ttl_floor() {
        let mut response = query("a.example.test.");
        let name = Name::from_ascii("a.example.test.").unwrap();
        response.add_answer(Record::from_rdata(
            name.clone(),
            300,
            RData::A(A::new(10, 0, 0, 1)),
        ));
        response.add_answer(Record::from_rdata(name, 0, RData::A(A::new(10, 0, 0, 2))));
        let resolved = resolved_addresses(&response);
        assert_eq!(
            resolved,
            vec![
                ("10.0.0.1".parse().unwrap(), Duration::from_secs(300)),
                ("10.0.0.2".parse().unwrap(), MIN_ALLOW_TTL),
            ]
        );
    }

    #[test]
    fn test_only_the_guest_address_is_answered() {
        assert!(from_guest("172.30.255.2:5353".parse().unwrap()));
        assert!(from_guest("[::ffff:172.30.255.2]:5353".parse().unwrap()));
        for other in ["172.30.255.1:5353", "192.0.2.7:53", "[2001:db8::2]:53"] {
            assert!(!from_guest(other.parse().unwrap()), "{other}");
        }
    }

    #[test]
    fn test_resolved_addresses_are_capped_in_number_and_ttl() {
        let mut response = query("many.example.test.");
        let name = Name::from_ascii("many.example.test.").unwrap();
        for i in 0..40 {
            response.add_answer(Record::from_rdata(
                name.clone(),
                7 * 24 * 3600,
                RData::A(A::new(10, 0, 0, i)),
            ));
        }
        let resolved = resolved_addresses(&response);
        assert_eq!(resolved.len(), MAX_RESOLVED_PER_ANSWER);
        assert_eq!(resolved[0], ("10.0.0.0".parse().unwrap(), MAX_ALLOW_TTL));
        assert!(resolved.iter().all(|(_, ttl)| *ttl == MAX_ALLOW_TTL));
        assert_eq!(MAX_ALLOW_TTL, Duration::from_secs(3600));
    }

    #[test]
    fn test_first_nameserver_is_the_upstream_on_port_53() {
        let text = b"search example.test\nnameserver 10.255.255.53\nnameserver ::1\n";
        assert_eq!(
            first_nameserver(text).unwrap(),
            "10.255.255.53:53".parse().unwrap()
        );
        assert!(matches!(
            first_nameserver(b"search example.test\n"),
            Err(DnsError::NoNameserver)
        ));
    }
}
