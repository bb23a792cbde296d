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
    #[error("nftables: failed to build the element {addr} for table `{table}`")]
    Element {
        table: String,
        addr: IpAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Interface indexes the rules refer to, inside the namespace.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfaceIndexes {
    pub tap: u32,
    pub uplink: u32,
    pub loopback: u32,
}

impl IfaceIndexes {
    fn of(&self, iface: Iface) -> u32 {
        match iface {
            Iface::Tap => self.tap,
            Iface::Uplink => self.uplink,
            Iface::Loopback => self.loopback,
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
    let forward = filter_chain(&table, FORWARD, Hook::Forward);
    let input = filter_chain(&table, INPUT, Hook::In);
    let post = nat_postrouting_chain(&table);
    for chain in [&forward, &input, &post] {
        batch.add(chain, MsgType::Add);
    }
    let resolved4 = resolved_set::<Ipv4Addr>(&table, RESOLVED4, RESOLVED4_ID);
    let resolved6 = resolved_set::<Ipv6Addr>(&table, RESOLVED6, RESOLVED6_ID);
    batch.add(&resolved4, MsgType::Add);
    batch.add(&resolved6, MsgType::Add);
    let lookups = Lookups {
        v4: Lookup::new(&resolved4),
        v6: Lookup::new(&resolved6),
    };
    for spec in rules {
        let chain = match spec.chain {
            ChainKind::Forward => &forward,
            ChainKind::Input => &input,
            ChainKind::Postrouting => &post,
        };
        let mut rule = Rule::new(chain);
        for m in &spec.matches {
            add_match(&mut rule, m, ifaces, &lookups);
        }
        match spec.verdict {
            Verdict::Accept => rule.add_expr(&nft_expr!(verdict accept)),
            Verdict::Drop => rule.add_expr(&nft_expr!(verdict drop)),
            Verdict::Masquerade => rule.add_expr(&Masquerade),
        }
        batch.add(&rule, MsgType::Add);
    }
    send(&batch.finalize(), name)
}

/// Writes the host's NAT table (family `inet`): traffic from the sandbox's links (IPv4, and
/// IPv6 when it has one) that leaves by another interface is masqueraded to that interface's
/// address (NAT66 for IPv6, so the guest's ULA never shows outside).
pub(crate) fn write_host_nat_table(
    name: &CStr,
    link_net: Ipv4Network,
    link_net6: Option<Ipv6Network>,
    veth_host_index: u32,
) -> Result<(), NftError> {
    let table = Table::new(name, HOST_FAMILY);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    let post = nat_postrouting_chain(&table);
    batch.add(&post, MsgType::Add);
    let links = std::iter::once(IpNetwork::V4(link_net)).chain(link_net6.map(IpNetwork::V6));
    for net in links {
        let mut rule = Rule::new(&post);
        add_addr_match(&mut rule, net, Field::Source);
        rule.add_expr(&nft_expr!(meta oif));
        rule.add_expr(&Cmp::new(CmpOp::Neq, veth_host_index));
        rule.add_expr(&Masquerade);
        batch.add(&rule, MsgType::Add);
    }
    send(&batch.finalize(), name)
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

/// A filter chain that drops what no rule accepts.
fn filter_chain<'a>(table: &'a Table, name: &CStr, hook: Hook) -> Chain<'a> {
    let mut chain = Chain::new(name, table);
    chain.set_hook(hook, 0);
    chain.set_type(ChainType::Filter);
    chain.set_policy(Policy::Drop);
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

fn add_match(rule: &mut Rule<'_>, m: &Match, ifaces: IfaceIndexes, lookups: &Lookups) {
    match m {
        Match::Iif(iface) => {
            rule.add_expr(&nft_expr!(meta iif));
            rule.add_expr(&Cmp::new(CmpOp::Eq, ifaces.of(*iface)));
        }
        Match::Oif(iface) => {
            rule.add_expr(&nft_expr!(meta oif));
            rule.add_expr(&Cmp::new(CmpOp::Eq, ifaces.of(*iface)));
        }
        Match::Saddr(net) => add_addr_match(rule, *net, Field::Source),
        Match::Daddr(net) => add_addr_match(rule, *net, Field::Destination),
        Match::L4Proto(proto) => {
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, *proto));
        }
        Match::DPort(port) => {
            // TCP and UDP both keep the destination port at bytes 2..4 of their header, so the
            // TCP field reads either.
            rule.add_expr(&nft_expr!(payload tcp dport));
            rule.add_expr(&Cmp::new(CmpOp::Eq, port.to_be()));
        }
        Match::DaddrIn(ResolvedSet::V4) => {
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::NFPROTO_IPV4 as u8));
            rule.add_expr(&nft_expr!(payload ipv4 daddr));
            rule.add_expr(&lookups.v4);
        }
        Match::DaddrIn(ResolvedSet::V6) => {
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
            let states = (States::ESTABLISHED | States::RELATED).bits();
            rule.add_expr(&Conntrack::State);
            rule.add_expr(&Bitwise::new(states, 0u32));
            rule.add_expr(&Cmp::new(CmpOp::Neq, 0u32));
        }
    }
}

/// Which address of the IP header a match reads.
#[derive(Clone, Copy)]
enum Field {
    Source,
    Destination,
}

/// Matches packets of `net`'s family whose `field` address is in `net`.
fn add_addr_match(rule: &mut Rule<'_>, net: IpNetwork, field: Field) {
    match net {
        IpNetwork::V4(net) => {
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::NFPROTO_IPV4 as u8));
            match field {
                Field::Source => rule.add_expr(&nft_expr!(payload ipv4 saddr)),
                Field::Destination => rule.add_expr(&nft_expr!(payload ipv4 daddr)),
            }
            rule.add_expr(&Bitwise::new(net.mask(), Ipv4Addr::UNSPECIFIED));
            rule.add_expr(&Cmp::new(CmpOp::Eq, net.network()));
        }
        IpNetwork::V6(net) => {
            rule.add_expr(&nft_expr!(meta nfproto));
            rule.add_expr(&Cmp::new(CmpOp::Eq, libc::NFPROTO_IPV6 as u8));
            match field {
                Field::Source => rule.add_expr(&nft_expr!(payload ipv6 saddr)),
                Field::Destination => rule.add_expr(&nft_expr!(payload ipv6 daddr)),
            }
            rule.add_expr(&Bitwise::new(net.mask(), Ipv6Addr::UNSPECIFIED));
            rule.add_expr(&Cmp::new(CmpOp::Eq, net.network()));
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
