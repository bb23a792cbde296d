//! Egress policy and the nftables rules it becomes. The rules are plain data here, so what a
//! policy allows is unit-tested without a kernel; `nft.rs` turns them into netlink messages.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::Name;
pub use ipnetwork::IpNetwork;

pub use crate::domain::{DomainError, DomainPattern};
use crate::pool::{GATEWAY_ADDR, GUEST_ADDR, GUEST_ADDR6};

/// DNS's port; the guest may send to it only on the gateway, where hearth's forwarder listens.
pub const DNS_PORT: u16 = 53;

/// Link-local addresses, where clouds serve instance metadata.
const LINK_LOCAL_V4: &str = "169.254.0.0/16";
const LINK_LOCAL_V6: &str = "fe80::/10";
/// IPv6 unique local addresses, the v6 private range: the host's own ULA networks and hearth's
/// link pools live here. The guest's own link is the tap, which the forward chain never sees.
const UNIQUE_LOCAL_V6: &str = "fc00::/7";
/// ICMPv6 neighbour solicitation and advertisement: the namespace must answer them on the tap
/// and the uplink, or no IPv6 packet finds its next hop. Router solicitations and the rest of
/// ICMPv6 to the namespace stay dropped (routes are static; nothing there advertises).
const NEIGHBOUR_DISCOVERY: [u8; 2] = [135, 136];

/// Where a sandbox may connect to.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Egress {
    /// Anything but the always-blocked destinations.
    #[default]
    AllowAll,
    /// Nothing.
    DenyAll,
    /// Only these networks, and the addresses the listed names resolve to.
    Allow(Vec<AllowEntry>),
}

/// One `--allow` value: a network, or a domain whose resolved addresses are let through.
/// Stored as the string the user gave, so the JSON reads like the flags.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AllowEntry {
    Net(IpNetwork),
    Domain(DomainPattern),
}

impl FromStr for AllowEntry {
    type Err = PolicyError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        parse_allow(value)
    }
}

impl TryFrom<String> for AllowEntry {
    type Error = PolicyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        parse_allow(&value)
    }
}

impl From<AllowEntry> for String {
    fn from(entry: AllowEntry) -> String {
        entry.to_string()
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Net(net) => net.fmt(f),
            AllowEntry::Domain(domain) => domain.fmt(f),
        }
    }
}

/// The egress policy of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    pub egress: Egress,
    /// Lets UDP out (blocked by default: it is the usual tunnel and amplification vector).
    pub allow_udp: bool,
    /// Lets ICMP out (blocked by default).
    pub allow_icmp: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("`{0}` is not an IP address or CIDR (like 10.1.2.0/24 or 2001:db8::/32)")]
    InvalidCidr(String),
    #[error(transparent)]
    InvalidDomain(#[from] DomainError),
    #[error("unknown egress mode `{0}`; use allow-all or deny-all (and --allow for allowlists)")]
    UnknownMode(String),
    #[error("--allow cannot be combined with --egress {0}")]
    AllowWithMode(&'static str),
}

/// `--egress` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressMode {
    AllowAll,
    DenyAll,
}

impl FromStr for EgressMode {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow-all" => Ok(EgressMode::AllowAll),
            "deny-all" => Ok(EgressMode::DenyAll),
            other => Err(PolicyError::UnknownMode(other.to_owned())),
        }
    }
}

/// Parses one `--allow` value: an address or a CIDR (v4 or v6), or a domain (`example.com`,
/// `*.example.com`).
pub fn parse_allow(value: &str) -> Result<AllowEntry, PolicyError> {
    if let Ok(addr) = value.parse::<IpAddr>() {
        return Ok(AllowEntry::Net(IpNetwork::from(addr)));
    }
    match value.parse::<IpNetwork>() {
        // `10.1.2.3/24` is refused rather than silently widened or narrowed.
        Ok(net) if net.network() == net.ip() => Ok(AllowEntry::Net(net)),
        Ok(_) => Err(PolicyError::InvalidCidr(value.to_owned())),
        Err(_) if looks_like_address(value) => Err(PolicyError::InvalidCidr(value.to_owned())),
        Err(_) => Ok(AllowEntry::Domain(value.parse()?)),
    }
}

/// Digits, dots, colons and a slash: meant as an address, so it gets the CIDR error.
fn looks_like_address(value: &str) -> bool {
    value.contains('/')
        || value.contains(':')
        || value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

impl EgressPolicy {
    /// The allowlist's domains; empty unless the policy is an allowlist naming some.
    pub fn domains(&self) -> Vec<&DomainPattern> {
        match &self.egress {
            Egress::Allow(entries) => entries
                .iter()
                .filter_map(|entry| match entry {
                    AllowEntry::Domain(domain) => Some(domain),
                    AllowEntry::Net(_) => None,
                })
                .collect(),
            Egress::AllowAll | Egress::DenyAll => Vec::new(),
        }
    }

    /// Which names hearth's DNS forwarder resolves for the guest. Under deny-all or an
    /// allowlist, a name off the list is not even asked upstream: the query itself would carry
    /// data out.
    pub fn resolves(&self, name: &Name) -> bool {
        match &self.egress {
            Egress::AllowAll => true,
            Egress::DenyAll => false,
            Egress::Allow(_) => self.domains().iter().any(|domain| domain.matches(name)),
        }
    }

    /// Builds the policy from the command-line pieces: mode, allowlist and protocol switches.
    pub fn from_flags(
        mode: Option<EgressMode>,
        allow: Vec<AllowEntry>,
        allow_udp: bool,
        allow_icmp: bool,
    ) -> Result<Self, PolicyError> {
        let egress = match (mode, allow.is_empty()) {
            (None | Some(EgressMode::AllowAll), true) => Egress::AllowAll,
            (Some(EgressMode::DenyAll), true) => Egress::DenyAll,
            (None, false) => Egress::Allow(allow),
            (Some(EgressMode::AllowAll), false) => {
                return Err(PolicyError::AllowWithMode("allow-all"))
            }
            (Some(EgressMode::DenyAll), false) => {
                return Err(PolicyError::AllowWithMode("deny-all"))
            }
        };
        Ok(EgressPolicy {
            egress,
            allow_udp,
            allow_icmp,
        })
    }
}

/// What the rules know about the host when they are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedDestinations {
    /// The host's own addresses (all interfaces), taken when the network is created.
    pub host_addrs: Vec<IpAddr>,
    /// The pool of host↔namespace links: every other sandbox lives in it.
    pub pool: IpNetwork,
    /// The IPv6 pool of host↔namespace links.
    pub pool6: IpNetwork,
}

/// Interfaces a rule refers to, resolved to indexes when the table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iface {
    /// The guest's tap.
    Tap,
    /// The namespace end of the veth pair, towards the host.
    Uplink,
    Loopback,
    /// On the host: the host end of the sandbox's veth pair, where all its traffic arrives.
    HostLink,
}

/// What the routing table says a destination address is (`fib daddr type`), for the kinds a
/// sandbox must never send to on the host. Values are the kernel's `RTN_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrType {
    Local = 2,
    Broadcast = 3,
    Multicast = 5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Iif(Iface),
    Oif(Iface),
    /// Source inside this network (IPv4 or IPv6 rules match only their family).
    Saddr(IpNetwork),
    /// A packet of `net`'s family whose source is outside `net`.
    SaddrOutside(IpNetwork),
    /// Destination inside this network (IPv4 or IPv6 rules match only their family).
    Daddr(IpNetwork),
    /// Destination is an address of this type on the host running the rule.
    DaddrType(AddrType),
    /// Transport protocol number (`IPPROTO_*`).
    L4Proto(u8),
    /// Transport protocol other than this one; several in a rule all have to hold.
    L4ProtoNot(u8),
    /// TCP or UDP destination port; follows an `L4Proto` match, which says how to read it.
    DPort(u16),
    /// Destination is in one of the table's sets of addresses that allowed names resolved to.
    DaddrIn(ResolvedSet),
    /// An ICMPv6 message of this type.
    Icmpv6Type(u8),
    /// Conntrack state is established or related.
    EstablishedOrRelated,
    /// Conntrack could not place the packet in any connection (a lone RST, SYN|FIN, a bad
    /// checksum): NAT skips such packets, so they would leave with the guest's own source.
    Invalid,
}

/// The namespace table's sets of resolved addresses, one per family. hearth's DNS forwarder
/// adds each address an allowed name resolves to, with the record's TTL as its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedSet {
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Masquerade,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// Traffic routed through the namespace: the guest's egress. Policy drop (on the host,
    /// accept: the host's other traffic is not hearth's).
    Forward,
    /// Traffic to the namespace itself. Policy drop (on the host, accept).
    Input,
    /// NAT towards the host. Policy accept.
    Postrouting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub chain: ChainKind,
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

fn rule(chain: ChainKind, matches: Vec<Match>, verdict: Verdict) -> RuleSpec {
    RuleSpec {
        chain,
        matches,
        verdict,
    }
}

/// The namespace table's rules for `policy`, in order. Forward and input chains drop what no
/// rule accepts; the defaults (link-local, host, other sandboxes, ICMP, UDP) come before the
/// policy's accepts, so no allowlist can open them.
pub fn namespace_rules(policy: &EgressPolicy, blocked: &BlockedDestinations) -> Vec<RuleSpec> {
    use ChainKind::{Forward, Input, Postrouting};
    let from_guest = || Match::Iif(Iface::Tap);
    let mut rules = vec![rule(Forward, vec![Match::Invalid], Verdict::Drop)];
    rules.extend(spoofed_from_guest(Forward));
    rules.push(rule(
        Forward,
        vec![Match::EstablishedOrRelated],
        Verdict::Accept,
    ));
    let mut always_blocked: Vec<IpNetwork> = [LINK_LOCAL_V4, LINK_LOCAL_V6, UNIQUE_LOCAL_V6]
        .iter()
        .filter_map(|net| net.parse().ok())
        .collect();
    always_blocked.push(blocked.pool);
    always_blocked.push(blocked.pool6);
    always_blocked.extend(blocked.host_addrs.iter().map(|addr| IpNetwork::from(*addr)));
    for net in always_blocked {
        rules.push(rule(
            Forward,
            vec![from_guest(), Match::Daddr(net)],
            Verdict::Drop,
        ));
    }
    // DNS goes to hearth's forwarder only (it is in the namespace, so that is input, not
    // forward): a resolver elsewhere would answer names the policy does not allow.
    for proto in [libc_proto::UDP, libc_proto::TCP] {
        rules.push(rule(
            Forward,
            vec![from_guest(), Match::L4Proto(proto), Match::DPort(DNS_PORT)],
            Verdict::Drop,
        ));
    }
    // Egress by protocol allowlist, not blocklist: UDP-Lite, SCTP, GRE, IPIP, ESP and the rest
    // carry data (and tunnels) just as well as the UDP they would stand in for.
    let mut not_allowed = vec![from_guest()];
    not_allowed.extend(allowed_protocols(policy).into_iter().map(Match::L4ProtoNot));
    rules.push(rule(Forward, not_allowed, Verdict::Drop));
    match &policy.egress {
        Egress::AllowAll => rules.push(rule(Forward, vec![from_guest()], Verdict::Accept)),
        Egress::DenyAll => {}
        Egress::Allow(entries) => {
            for entry in entries {
                if let AllowEntry::Net(net) = entry {
                    rules.push(rule(
                        Forward,
                        vec![from_guest(), Match::Daddr(*net)],
                        Verdict::Accept,
                    ));
                }
            }
            if !policy.domains().is_empty() {
                for set in [ResolvedSet::V4, ResolvedSet::V6] {
                    rules.push(rule(
                        Forward,
                        vec![from_guest(), Match::DaddrIn(set)],
                        Verdict::Accept,
                    ));
                }
            }
        }
    }
    rules.push(rule(Input, vec![Match::Invalid], Verdict::Drop));
    // Neighbour discovery before the source check: the guest may solicit from its link-local
    // address, and these only ever reach the namespace itself.
    for iface in [Iface::Tap, Iface::Uplink] {
        for kind in NEIGHBOUR_DISCOVERY {
            rules.push(rule(
                Input,
                vec![Match::Iif(iface), Match::Icmpv6Type(kind)],
                Verdict::Accept,
            ));
        }
    }
    rules.extend(spoofed_from_guest(Input));
    // Only from the guest's own address: the forwarder answers a query's source, so a forged
    // source would send the answer out to wherever the guest chose.
    for proto in [libc_proto::UDP, libc_proto::TCP] {
        rules.push(rule(
            Input,
            vec![
                from_guest(),
                Match::Saddr(IpNetwork::from(IpAddr::V4(GUEST_ADDR))),
                Match::Daddr(IpNetwork::from(IpAddr::V4(GATEWAY_ADDR))),
                Match::L4Proto(proto),
                Match::DPort(DNS_PORT),
            ],
            Verdict::Accept,
        ));
    }
    rules.push(rule(
        Input,
        vec![Match::EstablishedOrRelated],
        Verdict::Accept,
    ));
    rules.push(rule(
        Input,
        vec![Match::Iif(Iface::Loopback)],
        Verdict::Accept,
    ));
    rules.push(rule(
        Postrouting,
        vec![Match::Oif(Iface::Uplink)],
        Verdict::Masquerade,
    ));
    rules
}

/// Drops in `chain` what comes from the tap with a source other than the guest's own v4 or v6
/// address: a guest forging sources could blame others or slip past NAT.
fn spoofed_from_guest(chain: ChainKind) -> Vec<RuleSpec> {
    [IpAddr::V4(GUEST_ADDR), IpAddr::V6(GUEST_ADDR6)]
        .into_iter()
        .map(|guest| {
            rule(
                chain,
                vec![
                    Match::Iif(Iface::Tap),
                    Match::SaddrOutside(IpNetwork::from(guest)),
                ],
                Verdict::Drop,
            )
        })
        .collect()
}

/// The transport protocols a guest may send with `policy`: TCP always, UDP and ICMP (both
/// versions) when allowed.
fn allowed_protocols(policy: &EgressPolicy) -> Vec<u8> {
    let mut allowed = vec![libc_proto::TCP];
    if policy.allow_udp {
        allowed.push(libc_proto::UDP);
    }
    if policy.allow_icmp {
        allowed.extend([libc_proto::ICMP, libc_proto::ICMPV6]);
    }
    allowed
}

/// The namespace end of a sandbox's veth pair: the only source its traffic may have on the
/// host, since the namespace masquerades everything the guest sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceEnd {
    pub v4: Ipv4Addr,
    /// `None` when the host has no IPv6.
    pub v6: Option<Ipv6Addr>,
}

/// The host table's filter rules for one sandbox's link (its chains accept what no rule
/// drops). Forwarded packets from the link must carry the namespace end's address; packets
/// from the link to the host itself (any of its addresses, now or later, its broadcasts and
/// multicast groups: `fib daddr type`, not a list taken once) are dropped, but replies to the
/// host's own connections and the neighbour discovery the link needs.
pub fn host_rules(end: NamespaceEnd) -> Vec<RuleSpec> {
    use ChainKind::{Forward, Input};
    let from_link = || Match::Iif(Iface::HostLink);
    let sources = std::iter::once(IpAddr::V4(end.v4)).chain(end.v6.map(IpAddr::V6));
    let mut rules: Vec<RuleSpec> = sources
        .map(|source| {
            rule(
                Forward,
                vec![from_link(), Match::SaddrOutside(IpNetwork::from(source))],
                Verdict::Drop,
            )
        })
        .collect();
    rules.push(rule(
        Input,
        vec![from_link(), Match::EstablishedOrRelated],
        Verdict::Accept,
    ));
    for kind in NEIGHBOUR_DISCOVERY {
        rules.push(rule(
            Input,
            vec![from_link(), Match::Icmpv6Type(kind)],
            Verdict::Accept,
        ));
    }
    for kind in [AddrType::Local, AddrType::Broadcast, AddrType::Multicast] {
        rules.push(rule(
            Input,
            vec![from_link(), Match::DaddrType(kind)],
            Verdict::Drop,
        ));
    }
    rules
}

/// Protocol numbers from `<netinet/in.h>`, named here so the rules read as words.
pub(crate) mod libc_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked() -> BlockedDestinations {
        BlockedDestinations {
            host_addrs: vec!["192.0.2.10".parse().unwrap()],
            pool: "10.213.0.0/16".parse().unwrap(),
            pool6: "fd7a:6865:6172:7400::/112".parse().unwrap(),
        }
    }

    fn forward_verdict_for(rules: &[RuleSpec], net: &str) -> Option<Verdict> {
        let net: IpNetwork = net.parse().unwrap();
        rules
            .iter()
            .find(|r| r.chain == ChainKind::Forward && r.matches.contains(&Match::Daddr(net)))
            .map(|r| r.verdict)
    }

    fn accepts_all_from_guest(rules: &[RuleSpec]) -> bool {
        rules.contains(&rule(
            ChainKind::Forward,
            vec![Match::Iif(Iface::Tap)],
            Verdict::Accept,
        ))
    }

    #[test]
    fn test_allow_all_accepts_guest_traffic_after_defaults() {
        let rules = namespace_rules(&EgressPolicy::default(), &blocked());
        let accept = rules
            .iter()
            .position(|r| r.matches == vec![Match::Iif(Iface::Tap)]);
        let metadata = rules.iter().position(|r| {
            r.matches
                .contains(&Match::Daddr("169.254.0.0/16".parse().unwrap()))
        });
        assert!(accepts_all_from_guest(&rules));
        assert!(metadata.unwrap() < accept.unwrap());
    }

    #[test]
    fn test_defaults_block_metadata_host_pool_udp_icmp() {
        let rules = namespace_rules(&EgressPolicy::default(), &blocked());
        assert_eq!(
            forward_verdict_for(&rules, "169.254.0.0/16"),
            Some(Verdict::Drop)
        );
        assert_eq!(
            forward_verdict_for(&rules, "192.0.2.10/32"),
            Some(Verdict::Drop)
        );
        assert_eq!(
            forward_verdict_for(&rules, "10.213.0.0/16"),
            Some(Verdict::Drop)
        );
        assert!(rules.contains(&rule(
            ChainKind::Forward,
            vec![Match::Iif(Iface::Tap), Match::L4ProtoNot(libc_proto::TCP)],
            Verdict::Drop
        )));
    }

    #[test]
    fn test_allow_udp_and_icmp_lift_protocol_blocks_only() {
        let policy = EgressPolicy {
            egress: Egress::DenyAll,
            allow_udp: true,
            allow_icmp: true,
        };
        let rules = namespace_rules(&policy, &blocked());
        let allowlist = vec![
            Match::Iif(Iface::Tap),
            Match::L4ProtoNot(libc_proto::TCP),
            Match::L4ProtoNot(libc_proto::UDP),
            Match::L4ProtoNot(libc_proto::ICMP),
            Match::L4ProtoNot(libc_proto::ICMPV6),
        ];
        assert!(rules.contains(&rule(ChainKind::Forward, allowlist, Verdict::Drop)));
        assert!(!accepts_all_from_guest(&rules));
    }

    #[test]
    fn test_invalid_packets_are_dropped_before_anything_else_in_each_chain() {
        let rules = namespace_rules(&EgressPolicy::default(), &blocked());
        for chain in [ChainKind::Forward, ChainKind::Input] {
            let first = rules.iter().find(|r| r.chain == chain).unwrap();
            assert_eq!(first, &rule(chain, vec![Match::Invalid], Verdict::Drop));
        }
    }

    #[test]
    fn test_tap_sources_other_than_the_guest_are_dropped_before_any_accept() {
        let rules = namespace_rules(&EgressPolicy::default(), &blocked());
        for guest in [IpAddr::V4(GUEST_ADDR), IpAddr::V6(GUEST_ADDR6)] {
            let spoof = vec![
                Match::Iif(Iface::Tap),
                Match::SaddrOutside(IpNetwork::from(guest)),
            ];
            for chain in [ChainKind::Forward, ChainKind::Input] {
                let drop = rules
                    .iter()
                    .position(|r| r.chain == chain && r.matches == spoof)
                    .unwrap();
                let first_tap_accept = rules
                    .iter()
                    .position(|r| {
                        r.chain == chain
                            && r.verdict == Verdict::Accept
                            && r.matches.contains(&Match::Iif(Iface::Tap))
                            && !r.matches.iter().any(|m| matches!(m, Match::Icmpv6Type(_)))
                    })
                    .unwrap();
                assert!(drop < first_tap_accept, "{chain:?} {guest}");
            }
        }
    }

    #[test]
    fn test_host_rules_pin_the_link_source_and_drop_local_broadcast_multicast_by_type() {
        let end = NamespaceEnd {
            v4: "10.213.0.2".parse().unwrap(),
            v6: Some("fd7a:6865:6172:7400::2".parse().unwrap()),
        };
        let rules = host_rules(end);
        let forward: Vec<_> = rules
            .iter()
            .filter(|r| r.chain == ChainKind::Forward)
            .collect();
        assert_eq!(forward.len(), 2);
        assert!(forward.iter().all(|r| r.verdict == Verdict::Drop
            && r.matches[0] == Match::Iif(Iface::HostLink)
            && matches!(r.matches[1], Match::SaddrOutside(_))));
        let input: Vec<_> = rules
            .iter()
            .filter(|r| r.chain == ChainKind::Input)
            .map(|r| (r.matches.last().unwrap().clone(), r.verdict))
            .collect();
        assert_eq!(
            input,
            vec![
                (Match::EstablishedOrRelated, Verdict::Accept),
                (Match::Icmpv6Type(135), Verdict::Accept),
                (Match::Icmpv6Type(136), Verdict::Accept),
                (Match::DaddrType(AddrType::Local), Verdict::Drop),
                (Match::DaddrType(AddrType::Broadcast), Verdict::Drop),
                (Match::DaddrType(AddrType::Multicast), Verdict::Drop),
            ]
        );
    }

    #[test]
    fn test_deny_all_accepts_nothing_from_guest() {
        let policy = EgressPolicy {
            egress: Egress::DenyAll,
            ..EgressPolicy::default()
        };
        let rules = namespace_rules(&policy, &blocked());
        let accepts_from_guest = rules.iter().any(|r| {
            r.chain == ChainKind::Forward
                && r.verdict == Verdict::Accept
                && r.matches.contains(&Match::Iif(Iface::Tap))
        });
        assert!(!accepts_from_guest);
    }

    #[test]
    fn test_allowlist_accepts_only_listed_networks() {
        let policy = EgressPolicy {
            egress: Egress::Allow(vec!["10.1.2.0/24".parse().unwrap()]),
            ..EgressPolicy::default()
        };
        let rules = namespace_rules(&policy, &blocked());
        assert_eq!(
            forward_verdict_for(&rules, "10.1.2.0/24"),
            Some(Verdict::Accept)
        );
        assert!(!accepts_all_from_guest(&rules));
    }

    #[test]
    fn test_parse_allow_accepts_addresses_and_cidrs() {
        assert_eq!(
            parse_allow("10.1.2.0/24").unwrap().to_string(),
            "10.1.2.0/24"
        );
        assert_eq!(parse_allow("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(
            parse_allow("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn test_parse_allow_refuses_host_bits_garbage_and_domains() {
        assert!(matches!(
            parse_allow("10.1.2.3/24"),
            Err(PolicyError::InvalidCidr(_))
        ));
        assert!(matches!(
            parse_allow("10.1.2.0/33"),
            Err(PolicyError::InvalidCidr(_))
        ));
        assert!(matches!(
            parse_allow("not a net"),
            Err(PolicyError::InvalidDomain(_))
        ));
        assert!(matches!(
            parse_allow("10.1.2"),
            Err(PolicyError::InvalidCidr(_))
        ));
        assert!(matches!(
            parse_allow("a..b"),
            Err(PolicyError::InvalidDomain(_))
        ));
    }

    #[test]
    fn test_parse_allow_takes_exact_and_wildcard_domains() {
        assert!(matches!(
            parse_allow("example.com"),
            Ok(AllowEntry::Domain(_))
        ));
        assert_eq!(
            parse_allow("*.Example.org").unwrap().to_string(),
            "*.example.org"
        );
    }

    #[test]
    fn test_allow_entries_round_trip_through_json_as_strings() {
        let policy = EgressPolicy {
            egress: Egress::Allow(vec![
                "10.1.2.0/24".parse().unwrap(),
                "*.example.test".parse().unwrap(),
            ]),
            ..EgressPolicy::default()
        };
        let json = serde_json::to_string(&policy.egress).unwrap();
        assert_eq!(json, r#"{"allow":["10.1.2.0/24","*.example.test"]}"#);
        assert_eq!(
            serde_json::from_str::<Egress>(&json).unwrap(),
            policy.egress
        );
    }

    #[test]
    fn test_domain_allowlist_accepts_resolved_sets_and_resolves_listed_names_only() {
        let policy = EgressPolicy {
            egress: Egress::Allow(vec!["*.example.test".parse().unwrap()]),
            ..EgressPolicy::default()
        };
        let rules = namespace_rules(&policy, &blocked());
        for set in [ResolvedSet::V4, ResolvedSet::V6] {
            assert!(rules.contains(&rule(
                ChainKind::Forward,
                vec![Match::Iif(Iface::Tap), Match::DaddrIn(set)],
                Verdict::Accept
            )));
        }
        assert!(policy.resolves(&Name::from_ascii("www.example.test.").unwrap()));
        assert!(!policy.resolves(&Name::from_ascii("example.org.").unwrap()));
    }

    #[test]
    fn test_resolving_follows_the_egress_mode() {
        let cidr_only = EgressPolicy {
            egress: Egress::Allow(vec!["10.0.0.0/8".parse().unwrap()]),
            ..EgressPolicy::default()
        };
        let deny_all = EgressPolicy {
            egress: Egress::DenyAll,
            ..EgressPolicy::default()
        };
        assert!(EgressPolicy::default().resolves(&Name::from_ascii("anything.example.").unwrap()));
        assert!(!deny_all.resolves(&Name::from_ascii("anything.example.").unwrap()));
        assert!(!cidr_only.resolves(&Name::from_ascii("anything.example.").unwrap()));
        assert!(!namespace_rules(&cidr_only, &blocked())
            .iter()
            .any(|r| r.matches.iter().any(|m| matches!(m, Match::DaddrIn(_)))));
    }

    #[test]
    fn test_dns_goes_only_to_the_forwarder_even_with_udp_allowed() {
        let policy = EgressPolicy {
            allow_udp: true,
            ..EgressPolicy::default()
        };
        let rules = namespace_rules(&policy, &blocked());
        let accept_all = rules
            .iter()
            .position(|r| r.matches == vec![Match::Iif(Iface::Tap)])
            .unwrap();
        for proto in [libc_proto::UDP, libc_proto::TCP] {
            let dns = vec![
                Match::Iif(Iface::Tap),
                Match::L4Proto(proto),
                Match::DPort(DNS_PORT),
            ];
            let drop = rules
                .iter()
                .position(|r| r.matches == dns && r.verdict == Verdict::Drop);
            assert!(drop.unwrap() < accept_all);
        }
        for proto in [libc_proto::UDP, libc_proto::TCP] {
            assert!(rules.iter().any(|r| r.chain == ChainKind::Input
                && r.verdict == Verdict::Accept
                && r.matches.contains(&Match::L4Proto(proto))
                && r.matches.contains(&Match::DPort(DNS_PORT))));
        }
    }

    #[test]
    fn test_dns_to_the_forwarder_is_accepted_only_from_the_guest_address() {
        let rules = namespace_rules(&EgressPolicy::default(), &blocked());
        let guest = IpNetwork::from(IpAddr::V4(GUEST_ADDR));
        let dns_inputs: Vec<_> = rules
            .iter()
            .filter(|r| r.chain == ChainKind::Input && r.matches.contains(&Match::DPort(DNS_PORT)))
            .collect();
        assert_eq!(dns_inputs.len(), 2);
        for r in dns_inputs {
            assert_eq!(r.verdict, Verdict::Accept);
            assert!(r.matches.contains(&Match::Saddr(guest)), "{r:?}");
            assert!(r.matches.contains(&Match::Iif(Iface::Tap)), "{r:?}");
        }
        // Nothing else from the tap reaches the namespace itself, but neighbour discovery.
        assert!(!rules.iter().any(|r| r.chain == ChainKind::Input
            && r.verdict == Verdict::Accept
            && r.matches.contains(&Match::Iif(Iface::Tap))
            && !r.matches.contains(&Match::Saddr(guest))
            && !r
                .matches
                .iter()
                .any(|m| matches!(m, Match::Icmpv6Type(135..=136)))));
    }

    #[test]
    fn test_v6_defaults_block_ula_and_pool6_and_admit_only_neighbour_discovery() {
        let rules = namespace_rules(&EgressPolicy::default(), &blocked());
        for net in ["fc00::/7", "fe80::/10", "fd7a:6865:6172:7400::/112"] {
            assert_eq!(
                forward_verdict_for(&rules, net),
                Some(Verdict::Drop),
                "{net}"
            );
        }
        let icmpv6_inputs: Vec<_> = rules
            .iter()
            .filter(|r| r.chain == ChainKind::Input)
            .filter_map(|r| {
                r.matches.iter().find_map(|m| match m {
                    Match::Icmpv6Type(kind) => Some((*kind, r.verdict)),
                    _ => None,
                })
            })
            .collect();
        assert_eq!(icmpv6_inputs.len(), 4, "tap and uplink, two types each");
        assert!(icmpv6_inputs
            .iter()
            .all(|(kind, verdict)| (135..=136).contains(kind) && *verdict == Verdict::Accept));
    }

    #[test]
    fn test_from_flags_refuses_allow_with_explicit_mode() {
        let nets = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(EgressPolicy::from_flags(Some(EgressMode::DenyAll), nets, false, false).is_err());
    }
}
