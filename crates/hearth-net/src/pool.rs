//! Addresses: the fixed guest-side addresses every sandbox shares, and the host-side pool of
//! `/30` links between the host and each namespace.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// The guest's address inside every namespace. Always the same, so a snapshot restores into
/// any namespace without re-addressing.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(172, 30, 255, 2);
/// The tap's address in the namespace: the guest's gateway (and later its DNS server).
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(172, 30, 255, 1);
pub const GUEST_PREFIX_LEN: u8 = 30;

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

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("address pool {pool} is exhausted: all {slots} /30 links are in use")]
    Exhausted { pool: Ipv4Network, slots: u32 },
    #[error("address pool {pool} is smaller than one /30 link")]
    TooSmall { pool: Ipv4Network },
    #[error("address pool {pool} overlaps the guest network {GATEWAY_ADDR}/{GUEST_PREFIX_LEN}")]
    OverlapsGuest { pool: Ipv4Network },
}

/// Picks the first `/30` of `pool` that holds none of the addresses in `used`.
pub fn allocate(pool: Ipv4Network, used: &[Ipv4Addr]) -> Result<LinkSlot, PoolError> {
    if pool.prefix() > GUEST_PREFIX_LEN {
        return Err(PoolError::TooSmall { pool });
    }
    if pool.contains(GATEWAY_ADDR) || pool.contains(GUEST_ADDR) {
        return Err(PoolError::OverlapsGuest { pool });
    }
    let slots = 1u32 << (GUEST_PREFIX_LEN - pool.prefix());
    let base = u32::from(pool.network());
    for i in 0..slots {
        let start = base + i * 4;
        let net = Ipv4Network::new(Ipv4Addr::from(start), GUEST_PREFIX_LEN)
            .map_err(|_| PoolError::TooSmall { pool })?;
        if used.iter().any(|addr| net.contains(*addr)) {
            continue;
        }
        return Ok(LinkSlot {
            net,
            host: Ipv4Addr::from(start + 1),
            ns: Ipv4Addr::from(start + 2),
        });
    }
    Err(PoolError::Exhausted { pool, slots })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn test_allocate_skips_used_slots() {
        let used = [Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 6)];
        let slot = allocate(pool("10.9.0.0/24"), &used).unwrap();
        assert_eq!(slot.net, pool("10.9.0.8/30"));
        assert_eq!(slot.host, Ipv4Addr::new(10, 9, 0, 9));
        assert_eq!(slot.ns, Ipv4Addr::new(10, 9, 0, 10));
    }

    #[test]
    fn test_allocate_full_pool_is_exhausted() {
        // A /29 holds exactly two /30 links.
        let used = [Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 5)];
        let err = allocate(pool("10.9.0.0/29"), &used).unwrap_err();
        assert!(
            matches!(err, PoolError::Exhausted { slots: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn test_allocate_refuses_pool_over_guest_network() {
        let err = allocate(pool("172.30.0.0/16"), &[]).unwrap_err();
        assert!(matches!(err, PoolError::OverlapsGuest { .. }));
    }
}
