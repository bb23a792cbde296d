//! What `hearth inspect` shows of a sandbox's network: its fixed guest addresses, the host
//! link as it exists right now (looked up by name, so an ended sandbox shows none), the egress
//! policy and the published ports. Field names are part of the `inspect` JSON contract.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::link::{self, LinkError};
use crate::names::{InvalidSandboxId, NetNames};
use crate::network::NetworkConfig;
use crate::policy::EgressPolicy;
use crate::pool::{
    GATEWAY_ADDR, GATEWAY_ADDR6, GUEST_ADDR, GUEST_ADDR6, GUEST_PREFIX_LEN, GUEST_PREFIX_LEN6,
};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkView {
    /// Named network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// The guest's address and prefix on `eth0`.
    pub guest: String,
    pub gateway: Ipv4Addr,
    /// The guest's IPv6 address and prefix on `eth0`, while its host link has IPv6 (`null`:
    /// no IPv6 on this host, or the sandbox's network is gone).
    pub guest6: Option<String>,
    pub gateway6: Option<Ipv6Addr>,
    /// hearth's DNS forwarder, as in the guest's `/etc/resolv.conf`.
    pub nameserver: Ipv4Addr,
    /// The veth pair to the host, while it exists.
    pub host_link: Option<HostLinkView>,
    pub policy: EgressPolicy,
    /// `HOST_IP:HOST_PORT->GUEST_PORT/tcp`.
    pub published: Vec<String>,
    /// The DNS server the forwarder asks; `null`: the host's resolver.
    pub dns_upstream: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostLinkView {
    /// The host end's interface name.
    pub name: String,
    /// The host end's address.
    pub host: Ipv4Addr,
    /// The namespace end's address (the guest's traffic leaves the namespace from it).
    pub namespace: Ipv4Addr,
    /// The host end's and namespace end's IPv6 addresses, when the host has IPv6.
    pub host6: Option<Ipv6Addr>,
    pub namespace6: Option<Ipv6Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    InvalidId(#[from] InvalidSandboxId),
    #[error("failed to read the host link `{name}`")]
    Link {
        name: String,
        #[source]
        source: LinkError,
    },
}

/// Describes the network of sandbox `id`, built from `config`.
pub fn describe(id: &str, config: &NetworkConfig) -> Result<NetworkView, ViewError> {
    let names = NetNames::for_sandbox(id)?;
    let veth = &names.veth_host;
    let addresses = match link::run(None, |l| async move { l.addresses_of(veth).await }) {
        Ok(addresses) => addresses,
        Err(LinkError::NotFound(_)) => Vec::new(),
        Err(source) => {
            return Err(ViewError::Link {
                name: veth.clone(),
                source,
            })
        }
    };
    // The pools hand out /30 and /126 links: host end `1`, namespace end `2` of each.
    let host6 = addresses.iter().find_map(|addr| match addr {
        IpAddr::V6(host) if !host.is_unicast_link_local() => Some(*host),
        _ => None,
    });
    let host_link = addresses.iter().find_map(|addr| match addr {
        IpAddr::V4(host) => Some(HostLinkView {
            name: veth.clone(),
            host: *host,
            namespace: Ipv4Addr::from(u32::from(*host).wrapping_add(1)),
            host6,
            namespace6: host6.map(|h| Ipv6Addr::from(u128::from(h).wrapping_add(1))),
        }),
        IpAddr::V6(_) => None,
    });
    Ok(NetworkView {
        netns: names.netns.clone(),
        guest: format!("{GUEST_ADDR}/{GUEST_PREFIX_LEN}"),
        gateway: GATEWAY_ADDR,
        guest6: host6.map(|_| format!("{GUEST_ADDR6}/{GUEST_PREFIX_LEN6}")),
        gateway6: host6.map(|_| GATEWAY_ADDR6),
        nameserver: GATEWAY_ADDR,
        host_link,
        policy: config.policy.clone(),
        published: config.publish.iter().map(ToString::to_string).collect(),
        dns_upstream: config.dns_upstream,
    })
}
