//! Addresses: the fixed guest-side addresses every sandbox shares, and the host-side pools of
//! `/30` (IPv4) and `/126` (IPv6) links between the host and each namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// The guest's address inside every namespace. Always the same, so a snapshot restores into
/// any namespace without re-addressing.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(172, 30, 255, 2);
/// The tap's address in the namespace: the guest's gateway (and later its DNS server).
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(172, 30, 255, 1);
pub const GUEST_PREFIX_LEN: u8 = 30;
/// The tap's hardware address, the same in every namespace like the addresses: a guest
/// restored from a snapshot keeps its gateway's MAC in its neighbour cache (its timers were
/// frozen with it), so a tap with another would leave it unable to reach its gateway.
/// Locally administered unicast; "hearth" in the low bytes.
pub const TAP_MAC: [u8; 6] = [0x02, 0x68, 0x65, 0x61, 0x72, 0x74];

/// The guest's IPv6 address inside every namespace (ULA, `fd7a:6865:6172:7468` spells
/// "hearth"), with the tap's as its gateway: fixed like the IPv4 pair.
pub const GUEST_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x6865, 0x6172, 0x7468, 0, 0, 0, 2);
pub const GATEWAY_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x6865, 0x6172, 0x7468, 0, 0, 0, 1);
pub const GUEST_PREFIX_LEN6: u8 = 126;

/// Default IPv6 pool for the host↔namespace links: a ULA `/112`, 16384 links of one `/126`.
pub const DEFAULT_POOL6_ADDR: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x6865, 0x6172, 0x7400, 0, 0, 0, 0);
pub const DEFAULT_POOL6_PREFIX_LEN: u8 = 112;

/// [`DEFAULT_POOL6_ADDR`]/[`DEFAULT_POOL6_PREFIX_LEN`] as a network.
pub fn default_pool6() -> Ipv6Network {
    Ipv6Network::new(DEFAULT_POOL6_ADDR, DEFAULT_POOL6_PREFIX_LEN)
        .unwrap_or_else(|_| Ipv6Network::from(DEFAULT_POOL6_ADDR))
}

/// Default pool for the host↔namespace links: 16384 sandboxes of one `/30` each.
pub const DEFAULT_POOL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);
pub const DEFAULT_POOL_PREFIX_LEN: u8 = 16;

/// [`DEFAULT_POOL_ADDR`]/[`DEFAULT_POOL_PREFIX_LEN`] as a network.
pub fn default_pool() -> Ipv4Network {
    Ipv4Network::new(DEFAULT_POOL_ADDR, DEFAULT_POOL_PREFIX_LEN)
        .unwrap_or_else(|_| Ipv4Network::from(DEFAULT_POOL_ADDR))
}

/// One `/30` of the pool: the host end and the namespace end of a veth pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSlot {
    pub net: Ipv4Network,
    pub host: Ipv4Addr,
    pub ns: Ipv4Addr,
}

/// One `/126` of the IPv6 pool: the host end and the namespace end of the veth pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSlot6 {
    pub net: Ipv6Network,
    pub host: Ipv6Addr,
    pub ns: Ipv6Addr,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("address pool {pool} is exhausted: all {slots} /{link_prefix} links are in use")]
    Exhausted {
        pool: IpNetwork,
        slots: u128,
        link_prefix: u8,
    },
    #[error("address pool {pool} is smaller than one /{link_prefix} link")]
    TooSmall { pool: IpNetwork, link_prefix: u8 },
    #[error("address pool {pool} overlaps the guest network {guest}")]
    OverlapsGuest { pool: IpNetwork, guest: IpNetwork },
}

/// Picks the first `/30` of `pool` that holds none of the addresses in `used`.
pub fn allocate(pool: Ipv4Network, used: &[IpAddr]) -> Result<LinkSlot, PoolError> {
    let guest = Ipv4Network::new(GATEWAY_ADDR, GUEST_PREFIX_LEN)
        .unwrap_or_else(|_| Ipv4Network::from(GATEWAY_ADDR));
    let start = first_free_link(pool.into(), GUEST_PREFIX_LEN, guest.into(), used)?;
    // `first_free_link` returns an address inside the IPv4 `pool`, so it fits in 32 bits.
    let start = u32::try_from(start).unwrap_or(u32::MAX);
    Ok(LinkSlot {
        net: Ipv4Network::new(Ipv4Addr::from(start), GUEST_PREFIX_LEN)
            .unwrap_or_else(|_| Ipv4Network::from(Ipv4Addr::from(start))),
        host: Ipv4Addr::from(start + 1),
        ns: Ipv4Addr::from(start + 2),
    })
}

/// Picks the first `/126` of `pool` that holds none of the addresses in `used`.
pub fn allocate6(pool: Ipv6Network, used: &[IpAddr]) -> Result<LinkSlot6, PoolError> {
    let guest = Ipv6Network::new(GATEWAY_ADDR6, GUEST_PREFIX_LEN6)
        .unwrap_or_else(|_| Ipv6Network::from(GATEWAY_ADDR6));
    let start = first_free_link(pool.into(), GUEST_PREFIX_LEN6, guest.into(), used)?;
    Ok(LinkSlot6 {
        net: Ipv6Network::new(Ipv6Addr::from(start), GUEST_PREFIX_LEN6)
            .unwrap_or_else(|_| Ipv6Network::from(Ipv6Addr::from(start))),
        host: Ipv6Addr::from(start + 1),
        ns: Ipv6Addr::from(start + 2),
    })
}

/// The first address (as a number) of the first `/link_prefix` of `pool` that holds none of
/// `used` (addresses of the other family are ignored), for either family.
fn first_free_link(
    pool: IpNetwork,
    link_prefix: u8,
    guest: IpNetwork,
    used: &[IpAddr],
) -> Result<u128, PoolError> {
    if pool.prefix() > link_prefix {
        return Err(PoolError::TooSmall { pool, link_prefix });
    }
    if pool.contains(guest.network()) || guest.contains(pool.network()) {
        return Err(PoolError::OverlapsGuest { pool, guest });
    }
    let link_size = 1u128 << (address_bits(pool) - link_prefix);
    let slots = 1u128 << (link_prefix - pool.prefix());
    let base = as_number(pool.network());
    let used: Vec<u128> = used
        .iter()
        .filter(|addr| addr.is_ipv4() == pool.is_ipv4())
        .map(|addr| as_number(*addr))
        .collect();
    (0..slots)
        .map(|i| base + i * link_size)
        .find(|start| {
            !used
                .iter()
                .any(|u| (*start..*start + link_size).contains(u))
        })
        .ok_or(PoolError::Exhausted {
            pool,
            slots,
            link_prefix,
        })
}

fn address_bits(net: IpNetwork) -> u8 {
    if net.is_ipv4() {
        32
    } else {
        128
    }
}

fn as_number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn test_allocate_skips_used_slots() {
        let used = [
            Ipv4Addr::new(10, 9, 0, 1).into(),
            Ipv4Addr::new(10, 9, 0, 6).into(),
        ];
        let slot = allocate(pool("10.9.0.0/24"), &used).unwrap();
        assert_eq!(slot.net, pool("10.9.0.8/30"));
        assert_eq!(slot.host, Ipv4Addr::new(10, 9, 0, 9));
        assert_eq!(slot.ns, Ipv4Addr::new(10, 9, 0, 10));
    }

    #[test]
    fn test_allocate_full_pool_is_exhausted() {
        // A /29 holds exactly two /30 links.
        let used = [
            Ipv4Addr::new(10, 9, 0, 2).into(),
            Ipv4Addr::new(10, 9, 0, 5).into(),
        ];
        let err = allocate(pool("10.9.0.0/29"), &used).unwrap_err();
        assert!(
            matches!(err, PoolError::Exhausted { slots: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn test_allocate6_skips_used_slots_and_refuses_the_guest_network() {
        let pool6: Ipv6Network = "fd00:1::/120".parse().unwrap();
        let used: [IpAddr; 2] = ["fd00:1::1".parse().unwrap(), "10.9.0.6".parse().unwrap()];
        let slot = allocate6(pool6, &used).unwrap();
        assert_eq!(slot.net, "fd00:1::4/126".parse::<Ipv6Network>().unwrap());
        assert_eq!(slot.host, "fd00:1::5".parse::<Ipv6Addr>().unwrap());
        assert_eq!(slot.ns, "fd00:1::6".parse::<Ipv6Addr>().unwrap());
        let over_guest = allocate6("fd7a:6865:6172:7468::/64".parse().unwrap(), &[]);
        assert!(matches!(over_guest, Err(PoolError::OverlapsGuest { .. })));
        let full = allocate6("fd00:1::/126".parse().unwrap(), &used);
        assert!(matches!(full, Err(PoolError::Exhausted { slots: 1, .. })));
    }

    #[test]
    fn test_allocate_refuses_pool_over_guest_network() {
        let err = allocate(pool("172.30.0.0/16"), &[]).unwrap_err();
        assert!(matches!(err, PoolError::OverlapsGuest { .. }));
    }
}
