//! One sandbox's network: namespace, veth pair to the host, tap for the guest, the policy
//! table in the namespace and the NAT table on the host. Created whole or not at all; removed
//! by the names recorded at creation.

use std::error::Error;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use nix::fcntl::{Flock, FlockArg};

use crate::dns::{self, DnsError, DnsForwarder};
use crate::link::{self, LinkError};
use crate::names::{InvalidSandboxId, NetNames};
use crate::netns::{self, NetnsError};
use crate::nft::{self, IfaceIndexes, NftError};
use crate::policy::{host_rules, namespace_rules, BlockedDestinations, EgressPolicy, NamespaceEnd};
use crate::pool::{
    self, LinkSlot, LinkSlot6, PoolError, GATEWAY_ADDR, GATEWAY_ADDR6, GUEST_ADDR, GUEST_ADDR6,
    GUEST_PREFIX_LEN, GUEST_PREFIX_LEN6, TAP_MAC,
};
use crate::publish::{PortSpec, PublishError, PublishedPorts};

/// Serializes address allocation between concurrent hearth processes.
const POOL_LOCK: &str = "/run/hearth-net.lock";

/// What to build for one sandbox.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub policy: EgressPolicy,
    /// Pool the host↔namespace `/30` links are taken from.
    pub pool: Ipv4Network,
    /// Pool the host↔namespace IPv6 `/126` links are taken from.
    #[serde(default = "pool::default_pool6")]
    pub pool6: Ipv6Network,
    /// Host ports forwarded to the guest.
    pub publish: Vec<PortSpec>,
    /// The DNS server the sandbox's forwarder asks; `None`: the host's first nameserver.
    #[serde(default)]
    pub dns_upstream: Option<SocketAddr>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            policy: EgressPolicy::default(),
            pool: pool::default_pool(),
            pool6: pool::default_pool6(),
            publish: Vec::new(),
            dns_upstream: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    InvalidId(#[from] InvalidSandboxId),
    #[error("failed to take the address pool lock `{POOL_LOCK}`")]
    Lock(#[source] std::io::Error),
    #[error("failed to pick host-side addresses")]
    Pool(#[from] PoolError),
    #[error("failed to create network namespace `{name}`")]
    Netns {
        name: String,
        #[source]
        source: NetnsError,
    },
    #[error("failed to set up the links of network namespace `{netns}`")]
    Links {
        netns: String,
        #[source]
        source: LinkError,
    },
    #[error("failed to create tap `{tap}` in network namespace `{netns}`")]
    Tap {
        tap: String,
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write nftables table `{table}`")]
    Nft {
        table: String,
        #[source]
        source: NftError,
    },
    #[error("failed to enable IP forwarding (`{}`)", path.display())]
    Forwarding {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("failed to set up the DNS forwarder of network namespace `{netns}`")]
    Dns {
        netns: String,
        #[source]
        source: DnsError,
    },
    #[error("the allowlist names domains, but there is no DNS server to resolve them")]
    NoUpstream(#[source] DnsError),
    #[error("failed to remove the network of sandbox `{id}`")]
    Teardown {
        id: String,
        #[source]
        source: TeardownError,
    },
}

/// A step of removing a sandbox's network that failed.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("failed to delete host nftables table `{table}`")]
    Table {
        table: String,
        #[source]
        source: NftError,
    },
    #[error("failed to delete host link `{link}`")]
    Link {
        link: String,
        #[source]
        source: LinkError,
    },
    #[error("failed to remove network namespace `{netns}`")]
    Netns {
        netns: String,
        #[source]
        source: NetnsError,
    },
}

impl NetworkError {
    /// Whether the host refused an operation for lack of privilege (EPERM or EACCES anywhere in
    /// the chain): making a sandbox network needs CAP_NET_ADMIN and CAP_SYS_ADMIN.
    pub fn is_permission_denied(&self) -> bool {
        let mut cause: Option<&(dyn Error + 'static)> = Some(self);
        while let Some(error) = cause {
            if errno_of(error).is_some_and(|errno| errno == libc::EPERM || errno == libc::EACCES) {
                return true;
            }
            cause = error.source();
        }
        false
    }
}

/// The errno an error carries, for the error types the network code meets.
fn errno_of(error: &(dyn Error + 'static)) -> Option<i32> {
    let netlink_errno = |error: &rtnetlink::Error| match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    };
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        io.raw_os_error()
    } else if let Some(errno) = error.downcast_ref::<nix::Error>() {
        Some(*errno as i32)
    } else if let Some(netlink) = error.downcast_ref::<rtnetlink::Error>() {
        netlink_errno(netlink)
    } else {
        error
            .downcast_ref::<Box<rtnetlink::Error>>()
            .and_then(|netlink| netlink_errno(netlink))
    }
}

/// Addresses the guest is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddressing {
    pub addr: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: std::net::Ipv4Addr,
    /// hearth's DNS forwarder, for the guest's `/etc/resolv.conf`.
    pub nameserver: std::net::Ipv4Addr,
    /// The guest's IPv6 address and gateway; `None` when the host has no IPv6.
    pub v6: Option<GuestAddressing6>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddressing6 {
    pub addr: std::net::Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: std::net::Ipv6Addr,
}

/// A sandbox's network. Dropping it removes everything (best effort, logged).
#[derive(Debug)]
pub struct SandboxNetwork {
    id: String,
    names: NetNames,
    netns_path: PathBuf,
    slot: LinkSlot,
    /// `None` when the host has no IPv6 stack: the guest then gets IPv4 only.
    slot6: Option<LinkSlot6>,
    ports: PublishedPorts,
    /// Set once the namespace is configured; stops answering on drop.
    dns: Option<DnsForwarder>,
    removed: bool,
}

/// The first half of a sandbox's network: its namespace with the guest's tap in it (still
/// down) and its published ports bound, which is all a VMM needs to start. [`finish`] adds the
/// rest and may run while the VMM starts: no frame from the guest gets anywhere before the
/// policy table is in place, because the tap comes up only after it. Dropping it removes what
/// was made.
///
/// [`finish`]: PendingNetwork::finish
#[derive(Debug)]
pub struct PendingNetwork {
    id: String,
    names: NetNames,
    netns_path: PathBuf,
    ports: Option<PublishedPorts>,
    upstream: Option<SocketAddr>,
    /// Whether the guest gets IPv6: decided here, so the command line made before
    /// [`PendingNetwork::finish`] agrees with what it builds.
    v6: bool,
    armed: bool,
}

impl PendingNetwork {
    /// Makes the namespace and the tap of sandbox `id`. On failure nothing is left behind.
    pub fn begin(id: &str, config: &NetworkConfig) -> Result<Self, NetworkError> {
        let names = NetNames::for_sandbox(id)?;
        let upstream = dns_upstream(config)?;
        // First, so a port in use fails before anything is created.
        let ports = PublishedPorts::bind(&config.publish)?;
        let netns_path = netns::create(&names.netns).map_err(|source| NetworkError::Netns {
            name: names.netns.clone(),
            source,
        })?;
        let pending = PendingNetwork {
            id: id.to_owned(),
            names,
            netns_path,
            ports: Some(ports),
            upstream,
            v6: ipv6_available(),
            armed: true,
        };
        // From here on, a failure drops `pending`, which removes what was made.
        let names = &pending.names;
        netns::run_in(&pending.netns_path, || sys_tap(names)).map_err(|source| {
            NetworkError::Netns {
                name: names.netns.clone(),
                source,
            }
        })??;
        Ok(pending)
    }

    pub fn names(&self) -> &NetNames {
        &self.names
    }

    /// Path of the namespace (`/run/netns/<name>`), for running the VMM inside it.
    pub fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    /// The addresses the guest is to be configured with.
    pub fn guest(&self) -> GuestAddressing {
        guest_addressing(self.v6)
    }

    /// Builds the rest: the host-side link and its addresses, the policy table in the namespace,
    /// the host's NAT table, then the links up with their addresses and routes, and the DNS
    /// forwarder. On failure nothing of the network is left behind.
    pub fn finish(mut self, config: &NetworkConfig) -> Result<SandboxNetwork, NetworkError> {
        let lock = lock_pool()?;
        let host_addrs =
            link::run(None, |l| async move { l.addresses().await }).map_err(|source| {
                NetworkError::Links {
                    netns: "host".to_owned(),
                    source,
                }
            })?;
        let slot = pool::allocate(config.pool, &host_addrs)?;
        let slot6 = match self.v6 {
            true => Some(pool::allocate6(config.pool6, &host_addrs)?),
            false => None,
        };
        let mut network = SandboxNetwork {
            id: self.id.clone(),
            names: self.names.clone(),
            netns_path: self.netns_path.clone(),
            slot,
            slot6,
            ports: self.ports.take().unwrap_or_default(),
            dns: None,
            removed: false,
        };
        // `network` removes everything on failure from here on.
        self.armed = false;
        network.create_veth()?;
        drop(lock);
        let blocked = BlockedDestinations {
            host_addrs,
            pool: IpNetwork::V4(config.pool),
            pool6: IpNetwork::V6(config.pool6),
        };
        network.write_policy(&config.policy, &blocked)?;
        network.configure_host()?;
        network.bring_up()?;
        network.dns = Some(
            DnsForwarder::bind(
                &network.netns_path,
                network.names.table_cstring(),
                config.policy.clone(),
                self.upstream,
            )
            .map_err(|source| NetworkError::Dns {
                netns: network.names.netns.clone(),
                source,
            })?,
        );
        tracing::info!(sandbox = %network.id, netns = %network.names.netns, host = %slot.host, "network created");
        Ok(network)
    }
}

impl Drop for PendingNetwork {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = remove_by_names(&self.id, &self.names) {
            tracing::warn!(sandbox = %self.id, error = &e as &dyn Error, "network teardown failed");
        }
    }
}

fn guest_addressing(v6: bool) -> GuestAddressing {
    GuestAddressing {
        addr: GUEST_ADDR,
        prefix_len: GUEST_PREFIX_LEN,
        gateway: GATEWAY_ADDR,
        nameserver: GATEWAY_ADDR,
        v6: v6.then_some(GuestAddressing6 {
            addr: GUEST_ADDR6,
            prefix_len: GUEST_PREFIX_LEN6,
            gateway: GATEWAY_ADDR6,
        }),
    }
}

impl SandboxNetwork {
    /// Builds the network of sandbox `id` whole ([`PendingNetwork::begin`] then
    /// [`PendingNetwork::finish`]). On failure nothing of it is left behind.
    pub fn create(id: &str, config: &NetworkConfig) -> Result<Self, NetworkError> {
        PendingNetwork::begin(id, config)?.finish(config)
    }

    /// Starts the DNS forwarder and forwarding the published ports to the guest. Call inside a
    /// tokio runtime, once the VM is starting.
    pub fn start_services(&mut self) -> Result<(), NetworkError> {
        if let Some(dns) = self.dns.as_mut() {
            dns.start().map_err(|source| NetworkError::Dns {
                netns: self.names.netns.clone(),
                source,
            })?;
        }
        Ok(self.ports.start(&self.netns_path)?)
    }

    pub fn names(&self) -> &NetNames {
        &self.names
    }

    /// Path of the namespace (`/run/netns/<name>`), for running the VMM inside it.
    pub fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    /// The host↔namespace link addresses.
    pub fn link(&self) -> LinkSlot {
        self.slot
    }

    pub fn guest(&self) -> GuestAddressing {
        guest_addressing(self.slot6.is_some())
    }

    /// The host↔namespace IPv6 link addresses, when the host has IPv6.
    pub fn link6(&self) -> Option<LinkSlot6> {
        self.slot6
    }

    fn links_err(&self) -> impl FnOnce(LinkError) -> NetworkError + '_ {
        |source| NetworkError::Links {
            netns: self.names.netns.clone(),
            source,
        }
    }

    fn create_veth(&self) -> Result<(), NetworkError> {
        let names = &self.names;
        let (netns_path, slot, slot6) = (&self.netns_path, self.slot, self.slot6);
        link::run(None, |l| async move {
            l.add_veth(&names.veth_host, &names.veth_ns).await?;
            l.move_to(&names.veth_ns, netns_path).await?;
            l.add_address(&names.veth_host, IpAddr::V4(slot.host), GUEST_PREFIX_LEN)
                .await?;
            if let Some(slot6) = slot6 {
                l.add_address(&names.veth_host, IpAddr::V6(slot6.host), GUEST_PREFIX_LEN6)
                    .await?;
            }
            l.set_up(&names.veth_host).await?;
            Ok(())
        })
        .map_err(self.links_err())
    }

    /// Writes the namespace's policy table while every link in it is still down.
    fn write_policy(
        &self,
        policy: &EgressPolicy,
        blocked: &BlockedDestinations,
    ) -> Result<(), NetworkError> {
        let names = &self.names;
        let ifaces = link::run(Some(&self.netns_path), |l| async move {
            Ok(IfaceIndexes::Namespace {
                tap: l.index(&names.tap).await?,
                uplink: l.index(&names.veth_ns).await?,
                loopback: l.index("lo").await?,
            })
        })
        .map_err(self.links_err())?;
        let rules = namespace_rules(policy, blocked);
        let table = names.table_cstring();
        let v6 = self.slot6.is_some();
        netns::run_in(&self.netns_path, || {
            enable_forwarding(v6)?;
            nft::write_namespace_table(&table, &rules, ifaces).map_err(|source| NetworkError::Nft {
                table: names.table.clone(),
                source,
            })
        })
        .map_err(|source| NetworkError::Netns {
            name: names.netns.clone(),
            source,
        })?
    }

    /// Addresses, links up and default routes in the namespace; only once its policy is in
    /// place, since the guest may already be sending.
    fn bring_up(&self) -> Result<(), NetworkError> {
        let names = &self.names;
        let (slot, slot6) = (self.slot, self.slot6);
        link::run(Some(&self.netns_path), |l| async move {
            l.set_up("lo").await?;
            l.add_address(&names.veth_ns, IpAddr::V4(slot.ns), GUEST_PREFIX_LEN)
                .await?;
            l.set_up(&names.veth_ns).await?;
            l.set_mac(&names.tap, TAP_MAC).await?;
            l.add_address(&names.tap, IpAddr::V4(GATEWAY_ADDR), GUEST_PREFIX_LEN)
                .await?;
            if let Some(slot6) = slot6 {
                l.add_address(&names.veth_ns, IpAddr::V6(slot6.ns), GUEST_PREFIX_LEN6)
                    .await?;
                l.add_address(&names.tap, IpAddr::V6(GATEWAY_ADDR6), GUEST_PREFIX_LEN6)
                    .await?;
            }
            l.set_up(&names.tap).await?;
            l.add_default_route(IpAddr::V4(slot.host)).await?;
            if let Some(slot6) = slot6 {
                l.add_default_route(IpAddr::V6(slot6.host)).await?;
            }
            Ok(())
        })
        .map_err(self.links_err())
    }

    fn configure_host(&self) -> Result<(), NetworkError> {
        let names = &self.names;
        let index = link::run(None, |l| async move { l.index(&names.veth_host).await })
            .map_err(self.links_err())?;
        if self.slot6.is_some() {
            keep_router_advertisements()?;
        }
        enable_forwarding(self.slot6.is_some())?;
        let rules = host_rules(NamespaceEnd {
            v4: self.slot.ns,
            v6: self.slot6.map(|slot6| slot6.ns),
        });
        nft::write_host_table(
            &names.table_cstring(),
            &rules,
            self.slot.net,
            self.slot6.map(|slot6| slot6.net),
            index,
        )
        .map_err(|source| NetworkError::Nft {
            table: names.table.clone(),
            source,
        })
    }

    /// Removes the host NAT table, the veth pair (and with it the namespace end) and the
    /// namespace (and with it the tap and the policy table). Tries every step even when one
    /// fails, then reports all failures.
    pub fn remove(mut self) -> Result<(), NetworkError> {
        self.removed = true;
        remove_by_names(&self.id, &self.names)
    }
}

/// Removes every object named for sandbox `id`, whether or not it exists. Tries every step;
/// the first failure is returned, any later ones are logged.
pub fn remove_by_names(id: &str, names: &NetNames) -> Result<(), NetworkError> {
    let mut failures = Vec::new();
    // hearth before IPv6 made the host table in family `ip`; a sandbox it made still has that.
    for family in [nft::HOST_FAMILY, nft::LEGACY_HOST_FAMILY] {
        if let Err(source) = nft::delete_table(&names.table_cstring(), family) {
            failures.push(TeardownError::Table {
                table: names.table.clone(),
                source,
            });
        }
    }
    let veth = &names.veth_host;
    if let Err(source) = link::run(None, |l| async move { l.delete(veth).await }) {
        failures.push(TeardownError::Link {
            link: veth.clone(),
            source,
        });
    }
    if let Err(source) = netns::remove(&names.netns) {
        failures.push(TeardownError::Netns {
            netns: names.netns.clone(),
            source,
        });
    }
    let mut failures = failures.into_iter();
    let Some(first) = failures.next() else {
        tracing::info!(sandbox = %id, "network removed");
        return Ok(());
    };
    for later in failures {
        tracing::warn!(sandbox = %id, error = &later as &dyn Error, "network teardown: another step failed too");
    }
    Err(NetworkError::Teardown {
        id: id.to_owned(),
        source: first,
    })
}

/// What of sandbox `names` exists on the host: its namespace, its host veth, its host table.
/// Empty when all is gone. Used by tests and, later, garbage collection.
pub fn leftovers(names: &NetNames) -> Vec<String> {
    let mut found = Vec::new();
    if netns::path_of(&names.netns).exists() {
        found.push(format!("network namespace {}", names.netns));
    }
    if Path::new("/sys/class/net").join(&names.veth_host).exists() {
        found.push(format!("link {}", names.veth_host));
    }
    match nft::table_names() {
        Ok(tables) if tables.contains(&names.table_cstring()) => {
            found.push(format!("nftables table {}", names.table));
        }
        Ok(_) => {}
        Err(e) => {
            // Unknown is reported as left over, so a cleanup still tries to delete it.
            tracing::warn!(
                error = &e as &dyn Error,
                "cannot list the host's nftables tables"
            );
            found.push(format!(
                "nftables table {} (tables unreadable)",
                names.table
            ));
        }
    }
    found
}

impl Drop for SandboxNetwork {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Err(e) = remove_by_names(&self.id, &self.names) {
            tracing::warn!(sandbox = %self.id, error = &e as &dyn Error, "network teardown failed");
        }
    }
}

/// The forwarder's upstream: the configured one, else the host's. A host without a resolver is
/// an error only when the allowlist names domains; otherwise the guest gets SERVFAIL.
fn dns_upstream(config: &NetworkConfig) -> Result<Option<SocketAddr>, NetworkError> {
    if let Some(upstream) = config.dns_upstream {
        return Ok(Some(upstream));
    }
    match dns::host_upstream() {
        Ok(upstream) => Ok(Some(upstream)),
        Err(e) if !config.policy.domains().is_empty() => Err(NetworkError::NoUpstream(e)),
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn Error,
                "no DNS upstream; the guest's DNS queries will fail"
            );
            Ok(None)
        }
    }
}

fn sys_tap(names: &NetNames) -> Result<(), NetworkError> {
    crate::sys::create_persistent_tap(&names.tap).map_err(|source| NetworkError::Tap {
        tap: names.tap.clone(),
        netns: names.netns.clone(),
        source,
    })
}

fn lock_pool() -> Result<Flock<std::fs::File>, NetworkError> {
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(POOL_LOCK)
        .map_err(NetworkError::Lock)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| NetworkError::Lock(e.into()))
}

/// Whether the host has an IPv6 stack to give guests addresses on (a kernel without it, or
/// booted with `ipv6.disable=1`, has no `/proc/sys/net/ipv6`).
fn ipv6_available() -> bool {
    Path::new("/proc/sys/net/ipv6/conf/all/forwarding").exists()
}

/// Turns on IPv4 forwarding, and IPv6 forwarding with `v6`, in the calling thread's namespace
/// (the host needs it to route sandbox traffic out; each namespace needs it to route between
/// tap and veth).
fn enable_forwarding(v6: bool) -> Result<(), NetworkError> {
    write_sysctl(Path::new("/proc/sys/net/ipv4/ip_forward"), "1")?;
    if v6 {
        write_sysctl(Path::new(IPV6_FORWARDING), "1")?;
    }
    Ok(())
}

const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// On the host, turning IPv6 forwarding on makes every interface with `accept_ra=1` ignore
/// router advertisements, and a host whose IPv6 default route comes from them would lose it
/// when the route expires. Before hearth first turns forwarding on, such interfaces are moved
/// to `accept_ra=2` (accept them even when forwarding), so the host keeps behaving as before.
fn keep_router_advertisements() -> Result<(), NetworkError> {
    if std::fs::read_to_string(IPV6_FORWARDING).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    let Ok(interfaces) = std::fs::read_dir("/proc/sys/net/ipv6/conf") else {
        return Ok(());
    };
    for interface in interfaces.flatten() {
        let name = interface.file_name();
        if name == "all" || name == "lo" {
            continue;
        }
        let accept_ra = interface.path().join("accept_ra");
        if std::fs::read_to_string(&accept_ra).is_ok_and(|v| v.trim() == "1") {
            tracing::info!(interface = ?name, "accept_ra 1 -> 2 so router advertisements still count with IPv6 forwarding on");
            write_sysctl(&accept_ra, "2")?;
        }
    }
    Ok(())
}

/// Sets the sysctl at `path` to `value` unless it already is.
fn write_sysctl(path: &Path, value: &str) -> Result<(), NetworkError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| NetworkError::Forwarding {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a namespace of its own (sysctls under /proc/sys/net are per namespace), so the
    /// machine's own settings are not touched.
    #[test]
    fn test_router_advertisements_still_count_once_forwarding_is_on() {
        if !ipv6_available() {
            panic!("this test needs an IPv6 stack (/proc/sys/net/ipv6)");
        }
        let name = format!("hearth-test-ra-{}", std::process::id());
        let path = netns::create(&name).unwrap();
        let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().to_owned();
        let result = netns::run_in(&path, || {
            let default = "/proc/sys/net/ipv6/conf/default/accept_ra";
            write_sysctl(Path::new(default), "1").unwrap();
            write_sysctl(Path::new(IPV6_FORWARDING), "0").unwrap();
            keep_router_advertisements().unwrap();
            enable_forwarding(true).unwrap();
            (read(default), read(IPV6_FORWARDING))
        });
        netns::remove(&name).unwrap();
        assert_eq!(result.unwrap(), ("2".to_owned(), "1".to_owned()));
    }
}
