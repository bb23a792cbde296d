//! hearth-net: the network of each sandbox, made through netlink only.
//!
//! - [`SandboxNetwork`]: a namespace per sandbox with a veth pair to the host, a tap for the
//!   guest, NAT out, and one nftables table in the namespace enforcing the [`EgressPolicy`].
//! - [`policy`]: egress policies and the rules they become (pure, unit-tested).
//! - [`dns`]: the DNS forwarder each sandbox gets, which fills the policy's resolved-address
//!   sets under a domain allowlist.
//! - [`publish`]: host ports forwarded into the guest (`-p`).
//! - [`pool`]: the fixed guest addresses and the host-side `/30` pool.
//! - [`netns`]: named namespaces and running code inside one.
//! - [`NetNames`]: every host object's name, `hearth` prefix plus sandbox id.
//! - [`view`]: what `inspect` shows of a sandbox's network.

pub mod dns;
mod domain;
pub mod link;
mod names;
pub mod netns;
mod network;
mod nft;
pub mod policy;
pub mod pool;
pub mod publish;
mod sys;
pub mod view;

pub use link::LinkError;
pub use names::{InvalidSandboxId, NetNames};
pub use network::{
    leftovers, remove_by_names, GuestAddressing, NetworkConfig, NetworkError, PendingNetwork,
    SandboxNetwork, TeardownError,
};
pub use nft::NftError;
pub use policy::{AllowEntry, DomainPattern, EgressPolicy, PolicyError};
pub use publish::{PortSpec, PublishError};
pub use sys::attach_tap;
