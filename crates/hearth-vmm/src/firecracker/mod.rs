//! The Firecracker backend: Firecracker driven over its API socket by a small typed HTTP/1.1
//! client, with the agent stream over one hybrid vsock connection.
//!
//! One file per API resource, as Firecracker's own `vmm_config` does it; each holds the
//! request's body exactly as the API's swagger document (`src/firecracker/swagger/
//! firecracker.yaml`) names its fields. Versions: 1.10 and later run VMs and snapshots (File
//! memory backend); 1.12 and later also restore onto another tap (`network_overrides`).
//!
//! As root, Firecracker runs under its jailer ([`Jailer`], see `jailer.rs`). The guest agent
//! listens on vsock port [`AGENT_PORT`], told so by `hearth.channel=vsock` on the command line.

pub mod actions;
mod backend;
pub mod boot_source;
pub mod client;
pub mod drive;
pub mod instance;
mod jailer;
pub mod logger;
pub mod machine_config;
pub mod metrics;
pub mod network;
mod relay;
pub mod snapshot;
pub mod uffd;
mod uffd_sys;
pub mod version;
pub mod vm_state;
pub mod vsock;

pub use backend::{FirecrackerError, FirecrackerVm, FirecrackerVmm};
pub use client::{ApiClient, ApiError};
pub use jailer::{unmount_leftovers, ChrootError, Jailer};

/// The vsock port the guest agent serves its session stream on.
pub use hearth_agent_proto::AGENT_VSOCK_PORT as AGENT_PORT;
