//! nftables through netlink (libnftnl + libmnl): each table is written in one batch, so it
//! appears whole or not at all, and removed as a whole.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, Icmpv6HeaderField, Lookup, Masquerade, Meta, Payload, States,
    TransportHeaderField,
};
use nftnl::set::{Set, SetKey};
use nftnl::{
    nft_expr, Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, Policy, ProtoFamily, Rule,
    Table,
};

use crate::policy::{ChainKind, Iface, Match, ResolvedSet, RuleSpec, Verdict};
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables: failed to open a netfilter netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("nftables: failed to send the batch for table `{table}`")]
    Send {
        table: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nftables: the kernel refused the batch for table `{table}`")]
    Refused {
        table: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "nftables: a rule for table `{table}` refers to {what}, which that table does not have"
    )]
    NotInTable { table: String, what: String },
    #[error("nftables: failed to build the element {addr} for table `{table}`")]
    Element {
        table: String,
        addr: IpAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Interface indexes the rules of one table refer to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IfaceIndexes {
    /// Inside the namespace.
    Namespace {
        tap: u32,
        uplink: u32,
        loopback: u32,
    },
    /// On the host: the host end of the sandbox's veth pair.
    Host { link: u32 },
}

impl IfaceIndexes {
    fn of(&self, iface: Iface) -> Option<u32> {
        match (self, iface) {
            (IfaceIndexes::Namespace { tap, .. }, Iface::Tap) => Some(*tap),
            (IfaceIndexes::Namespace { uplink, .. }, Iface::Uplink) => Some(*uplink),
            (IfaceIndexes::Namespace { loopback, .. }, Iface::Loopback) => Some(*loopback),
            (IfaceIndexes::Host { link }, Iface::HostLink) => Some(*link),
            _ => None,
        }
    }
}

const FORWARD: &CStr = c"forward";
const INPUT: &CStr = c"input";
const POSTROUTING: &CStr = c"postrouting";
/// The sets of addresses that allowed names resolved to (see [`ResolvedSet`]).
const RESOLVED4: &CStr = c"resolved4";
const RESOLVED6: &CStr = c"resolved6";
/// Ids that let rules in the same batch refer to the sets before the kernel names them.
const RESOLVED4_ID: u32 = 1;
const RESOLVED6_ID: u32 = 2;
/// Most addresses a resolved-address set holds. The kernel refuses more (ENFILE), and the
/// forwarder then answers SERVFAIL until some expire: a guest cannot grow the sets without bound.
const RESOLVED_SET_SIZE: u32 = 65536;
/// `srcnat` priority, as `nft` names it.
const NAT_PRIORITY: i32 = 100;

/// Writes the namespace's policy table (family `inet`) in one batch. Call inside the namespace.
pub(crate) fn write_namespace_table(
    name: &CStr,
    rules: &[RuleSpec],
    ifaces: IfaceIndexes,
) -> Result<(), NftError> {
    let table = Table::new(name, ProtoFamily::Inet);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    let chains = Chains {
        forward: filter_chain(&table, FORWARD, Hook::Forward, Policy::Drop),
        input: filter_chain(&table, INPUT, Hook::In, Policy::Drop),
        postrouting: nat_postrouting_chain(&table),
    };
    chains.add_to(&mut batch);
    let resolved4 = resolved_set::<Ipv4Addr>(&table, RESOLVED4, RESOLVED4_ID);
    let resolved6 = resolved_set::<Ipv6Addr>(&table, RESOLVED6, RESOLVED6_ID);
    batch.add(&resolved4, MsgType::Add);
    batch.add(&resolved6, MsgType::Add);
    let lookups = Lookups {
        v4: Lookup::new(&resolved4),
        v6: Lookup::new(&resolved6),
    };
    let context = RuleContext {
        table: name,
        ifaces,
        lookups: Some(&lookups),
    };
    add_rules(&mut batch, &chains, rules, &context)?;
    send(&batch.finalize(), name)
}

/// Writes the host's table (family `inet`) for one sandbox's link: the filter `rules` (see
/// [`crate::policy::host_rules`]) in chains that accept by default, and NAT: traffic from the
/// sandbox's links (IPv4, and IPv6 when it has one) that leaves by another interface is
/// masqueraded to that interface's address (NAT66 for IPv6, so the guest's ULA never shows
/// outside).
pub(crate) fn write_host_table(
    name: &CStr,
    rules: &[RuleSpec],
    link_net: Ipv4Network,
    link_net6: Option<Ipv6Network>,
    veth_host_index: u32,
) -> Result<(), NftError> {
    let table = Table::new(name, HOST_FAMILY);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    let chains = Chains {
        forward: filter_chain(&table, FORWARD, Hook::Forward, Policy::Accept),
        input: filter_chain(&table, INPUT, Hook::In, Policy::Accept),
        postrouting: nat_postrouting_chain(&table),
    };
    chains.add_to(&mut batch);
    let context = RuleContext {
        table: name,
        ifaces: IfaceIndexes::Host {
            link: veth_host_index,
        },
        lookups: None,
    };
    add_rules(&mut batch, &chains, rules, &context)?;
    let links = std::iter::once(IpNetwork::V4(link_net)).chain(link_net6.map(IpNetwork::V6));
    for net in links {
        let mut rule = Rule::new(&chains.postrouting);
        add_addr_match(&mut rule, net, Field::Source, CmpOp::Eq);
        rule.add_expr(&nft_expr!(meta oif));
        rule.add_expr(&Cmp::new(CmpOp::Neq, veth_host_index));
        rule.add_expr(&Masquerade);
        batch.add(&rule, MsgType::Add);
    }
    send(&batch.finalize(), name)
}

/// The chains of one table.
struct Chains<'a> {
    forward: Chain<'a>,
    input: Chain<'a>,
    postrouting: Chain<'a>,
}

impl Chains<'_> {
    fn add_to(&self, batch: &mut Batch) {
        batch.add(&self.forward, MsgType::Add);
        batch.add(&self.input, MsgType::Add);
        batch.add(&self.postrouting, MsgType::Add);
    }
}

/// What a table offers its rules to refer to.
struct RuleContext<'a> {
    table: &'a CStr,
    ifaces: IfaceIndexes,
    lookups: Option<&'a Lookups>,
}

impl RuleContext<'_> {
    fn missing(&self, what: String) -> NftError {
        NftError::NotInTable {
            table: self.table.to_string_lossy().into_owned(),
            what,
        }
    }
}

fn add_rules(
    batch: &mut Batch,
    chains: &Chains<'_>,
    rules: &[RuleSpec],
    context: &RuleContext<'_>,
) -> Result<(), NftError> {
    for spec in rules {
        let chain = match spec.chain {
            ChainKind::Forward => &chains.forward,
            ChainKind::Input => &chains.input,
            ChainKind::Postrouting => &chains.postrouting,
        };
        let mut rule = Rule::new(chain);
        for m in &spec.matches {
            add_match(&mut rule, m, context)?;
        }
        match spec.verdict {
            Verdict::Accept => rule.add_expr(&nft_expr!(verdict accept)),
            Verdict::Drop => rule.add_expr(&nft_expr!(verdict drop)),
            Verdict::Masquerade => rule.add_expr(&Masquerade),
        }
        batch.add(&rule, MsgType::Add);
    }
    Ok(())
}

/// Deletes table `name` of `family`; a table that does not exist is not an error.
pub(crate) fn delete_table(name: &CStr, family: ProtoFamily) -> Result<(), NftError> {
    let table = Table::new(name, family);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Del);
    match send(&batch.finalize(), name) {
        Err(NftError::Refused { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other,
    }
}

/// The family of the host's NAT tables.
pub(crate) const HOST_FAMILY: ProtoFamily = ProtoFamily::Inet;
/// The family hearth's host NAT tables had while sandboxes were IPv4-only.
pub(crate) const LEGACY_HOST_FAMILY: ProtoFamily = ProtoFamily::Ipv4;

/// Names of the nftables tables (any family) in the calling thread's namespace.
pub(crate) fn table_names() -> Result<HashSet<CString>, NftError> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(NftError::Socket)?;
    let portid = socket.portid();
    let request = nftnl::table::get_tables_nlmsg(0);
    // The buffer is sized for the largest message; only the header's length is the request.
    let len = request
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(request.len(), |b| u32::from_ne_bytes(b) as usize);
    let list_err = |source| NftError::Send {
        table: "(list)".to_owned(),
        source,
    };
    socket.send(&request[..len]).map_err(list_err)?;
    let mut tables = HashSet::new();
    let mut buffer = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
    loop {
        let messages = socket.recv(&mut buffer[..]).map_err(list_err)?;
        for message in messages {
            let message = message.map_err(list_err)?;
            let done = mnl::cb_run2(message, 0, portid, nftnl::table::get_tables_cb, &mut tables)
                .map_err(list_err)?;
            if matches!(done, mnl::CbResult::Stop) {
                return Ok(tables);
            }
        }
    }
}

/// Puts `addr` in the table's resolved-address set of its family for `timeout`; an element
/// already there is replaced, so its timeout starts again at `timeout`, even when what was left
/// of the old one was longer (keeping the longer would need reading the element back first):
/// the address stays allowed for as long as the newest answer said, which is what the guest
/// caches too. Call inside the namespace.
pub(crate) fn add_resolved(table: &CStr, addr: IpAddr, timeout: Duration) -> Result<(), NftError> {
    // The element is added with NLM_F_EXCL (all the nftnl crate offers): one already there
    // fails with EEXIST and is deleted and added again in one batch. That delete fails with
    // ENOENT if the element expired in between, and the add is tried afresh.
    for _ in 0..3 {
        match send(&elements_batch(table, addr, timeout, false)?, table) {
            Err(NftError::Refused { source, .. })
                if source.raw_os_error() == Some(libc::EEXIST) => {}
            other => return other,
        }
        match send(&elements_batch(table, addr, timeout, true)?, table) {
            Err(NftError::Refused { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
    }
    Err(NftError::Refused {
        table: table.to_string_lossy().into_owned(),
        source: std::io::Error::from_raw_os_error(libc::EEXIST),
    })
}

/// A batch adding `addr` to its family's set (deleting it first when `replace`).
fn elements_batch(
    table: &CStr,
    addr: IpAddr,
    timeout: Duration,
    replace: bool,
) -> Result<FinalizedBatch, NftError> {
    let table_obj = Table::new(table, ProtoFamily::Inet);
    let mut batch = Batch::new();
    let element_err = |source| NftError::Element {
        table: table.to_string_lossy().into_owned(),
        addr,
        source,
    };
    match addr {
        IpAddr::V4(v4) => {
            add_element(&mut batch, &table_obj, RESOLVED4, &v4, timeout, replace)
                .map_err(element_err)?;
        }
        IpAddr::V6(v6) => {
            add_element(&mut batch, &table_obj, RESOLVED6, &v6, timeout, replace)
                .map_err(element_err)?;
        }
    }
    Ok(batch.finalize())
}

fn add_element<K: SetKey>(
    batch: &mut Batch,
    table: &Table,
    set_name: &CStr,
    key: &K,
    timeout: Duration,
    replace: bool,
) -> std::io::Result<()> {
    if replace {
        let mut old = Set::<K>::new_named(set_name, 0, table, ProtoFamily::Inet);
        old.add(key);
        for message in old.elems_iter() {
            batch.add(&message, MsgType::Del);
        }
    }
    let mut new = Set::<K>::new_named(set_name, 0, table, ProtoFamily::Inet);
    sys::add_elem_with_timeout(&mut new, key, timeout)?;
    for message in new.elems_iter() {
        batch.add(&message, MsgType::Add);
    }
    Ok(())
}

/// A named set of at most [`RESOLVED_SET_SIZE`] addresses whose elements carry timeouts.
fn resolved_set<'a, K: SetKey>(table: &'a Table, name: &CStr, id: u32) -> Set<'a, K> {
    let set = Set::new_named(name, id, table, ProtoFamily::Inet);
    sys::set_timeout_flag_and_size(&set, RESOLVED_SET_SIZE);
    set
}

/// Lookup expressions for the resolved-address sets.
struct Lookups {
    v4: Lookup,
    v6: Lookup,
}

/// A filter chain whose verdict for what no rule decides is `policy`.
fn filter_chain<'a>(table: &'a Table, name: &CStr, hook: Hook, policy: Policy) -> Chain<'a> {
    let mut chain = Chain::new(name, table);
    chain.set_hook(hook, 0);
    chain.set_type(ChainType::Filter);
    chain.set_policy(policy);
    chain
}

/// The source-NAT chain; it only rewrites, so it accepts by default.
fn nat_postrouting_chain(table: &Table) -> Chain<'_> {
    let mut chain = Chain::new(POSTROUTING, table);
    chain.set_hook(Hook::PostRouting, NAT_PRIORITY);
    chain.set_type(ChainType::Nat);
    chain.set_policy(Policy::Accept);
    chain
}

fn add_match(rule: &mut Rule<'_>, m: &Match, context: &RuleContext<'_>) -> Result<(), NftError> {
    let index_of = |iface: Iface| {
        context
            .ifaces
            .of(iface)
            .ok_or_else(|| context.missing(format!("interface {iface:?}")))
    };
    let lookups = || {
        context
            .lookups
            .ok_or_else(|| context.missing("resolved-address sets".to_owned()))
    };
    match m {
        Match::Iif(iface) => {
            rule.add_expr(&nft_expr!(meta iif));
            rule.add_expr(&Cmp::new(CmpOp::Eq, index_of(*iface)?));
        }
        Match::Oif(iface) => {
            rule.add_expr(&nft_expr!(meta oif));
            rule.add_expr(&Cmp::new(CmpOp::Eq, index_of(*iface)?));
        }
        Match::Saddr(net) => add_addr_match(rule, *net, Field::Source, CmpOp::Eq),
        Match::SaddrOutside(net) => add_addr_match(rule, *net, Field::Source, CmpOp::Neq),
        Match::Daddr(net) => add_addr_match(rule, *net, Field::Destination, CmpOp::Eq),
        Match::DaddrType(kind) => {
            rule.add_expr(&sys::FibDaddrType);
            rule.add_expr(&Cmp::new(CmpOp::Eq, *kind as u32));
        }
        Match::L4Proto(proto) => {
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, *proto));
        }
        Match::L4ProtoNot(proto) => {
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Neq, *proto));
        }
        Match::DPort(port) => {
            // TCP and UDP both keep the destination port at bytes 2..4 of their header, so the
            // TCP field reads either.
            rule.add_expr(&nft_expr!(payload tcp dport));
            rule.add_expr(&Cmp::new(CmpOp::Eq, port.to_be()));
        }
        Match::DaddrIn(ResolvedSet::V4) => {
            let lookups = lookups()?;
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::NFPROTO_IPV4 as u8));
            rule.add_expr(&nft_expr!(payload ipv4 daddr));
            rule.add_expr(&lookups.v4);
        }
        Match::DaddrIn(ResolvedSet::V6) => {
            let lookups = lookups()?;
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::NFPROTO_IPV6 as u8));
            rule.add_expr(&nft_expr!(payload ipv6 daddr));
            rule.add_expr(&lookups.v6);
        }
        Match::Icmpv6Type(kind) => {
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::NFPROTO_IPV6 as u8));
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::IPPROTO_ICMPV6 as u8));
            rule.add_expr(&Payload::Transport(TransportHeaderField::Icmpv6(
                Icmpv6HeaderField::Type,
            )));
            rule.add_expr(&Cmp::new(CmpOp::Eq, *kind));
        }
        Match::EstablishedOrRelated => {
            add_ct_state_match(rule, States::ESTABLISHED | States::RELATED);
        }
        Match::Invalid => add_ct_state_match(rule, States::INVALID),
    }
    Ok(())
}

/// Matches packets whose conntrack state is any of `states`.
fn add_ct_state_match(rule: &mut Rule<'_>, states: States) {
    rule.add_expr(&Conntrack::State);
    rule.add_expr(&Bitwise::new(states.bits(), 0u32));
    rule.add_expr(&Cmp::new(CmpOp::Neq, 0u32));
}

/// Which address of the IP header a match reads.
#[derive(Clone, Copy)]
enum Field {
    Source,
    Destination,
}

/// Matches packets of `net`'s family whose `field` address is in `net` (`op` Eq) or outside
/// it (`op` Neq).
fn add_addr_match(rule: &mut Rule<'_>, net: IpNetwork, field: Field, op: CmpOp) {
    match net {
        IpNetwork::V4(net) => {
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::NFPROTO_IPV4 as u8));
            match field {
                Field::Source => rule.add_expr(&nft_expr!(payload ipv4 saddr)),
                Field::Destination => rule.add_expr(&nft_expr!(payload ipv4 daddr)),
            }
            rule.add_expr(&Bitwise::new(net.mask(), Ipv4Addr::UNSPECIFIED));
            rule.add_expr(&Cmp::new(op, net.network()));
        }
        IpNetwork::V6(net) => {
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::NFPROTO_IPV6 as u8));
            match field {
                Field::Source => rule.add_expr(&nft_expr!(payload ipv6 saddr)),
                Field::Destination => rule.add_expr(&nft_expr!(payload ipv6 daddr)),
            }
            rule.add_expr(&Bitwise::new(net.mask(), Ipv6Addr::UNSPECIFIED));
            rule.add_expr(&Cmp::new(op, net.network()));
        }
    }
}

fn send(batch: &FinalizedBatch, table: &CStr) -> Result<(), NftError> {
    let table = table.to_string_lossy().into_owned();
    let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(NftError::Socket)?;
    let portid = socket.portid();
    socket.send_all(batch).map_err(|source| NftError::Send {
        table: table.clone(),
        source,
    })?;
    let mut buffer = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
    let mut expected = batch.sequence_numbers();
    while !expected.is_empty() {
        let messages = socket
            .recv(&mut buffer[..])
            .map_err(|source| NftError::Send {
                table: table.clone(),
                source,
            })?;
        for message in messages {
            let message = message.map_err(|source| NftError::Refused {
                table: table.clone(),
                source,
            })?;
            let Some(seq) = expected.next() else {
                break;
            };
            mnl::cb_run(message, seq, portid).map_err(|source| NftError::Refused {
                table: table.clone(),
                source,
            })?;
        }
    }
    Ok(())
}
