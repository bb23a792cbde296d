//! `PUT /snapshot/create` and `PUT /snapshot/load`.
//!
//! A Firecracker snapshot is two files: the microVM state (devices, vCPUs; small) and guest
//! memory (the size of the guest's RAM). Paths inside the state — the drives' files and the
//! vsock socket — are reopened as written when the snapshot loads, which is why hearth gives
//! Firecracker run-dir-relative paths wherever it may (see `backend.rs`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use serde::Serialize;

use super::client::Request;
use super::network::IFACE_ID;

/// Writing or mapping guest memory takes time with the memory's size; a few GiB written to a
/// slow disk must not look like a hung Firecracker.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// `PUT /snapshot/create` of a paused microVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotCreate {
    pub snapshot_type: SnapshotType,
    pub snapshot_path: PathBuf,
    pub mem_file_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SnapshotType {
    /// All of guest memory: a diff needs dirty page tracking and a full snapshot to apply to.
    Full,
}

impl SnapshotCreate {
    pub fn full(snapshot_path: PathBuf, mem_file_path: PathBuf) -> Self {
        SnapshotCreate {
            snapshot_type: SnapshotType::Full,
            snapshot_path,
            mem_file_path,
        }
    }
}

impl Request for SnapshotCreate {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        "/snapshot/create".into()
    }

    fn timeout(&self) -> Duration {
        SNAPSHOT_TIMEOUT
    }
}

/// Where a snapshot whose state is at `state` keeps its memory, when nothing says otherwise:
/// beside it, so the pair moves together.
pub fn memory_path(state: &Path) -> PathBuf {
    let mut path = state.as_os_str().to_owned();
    path.push(".mem");
    PathBuf::from(path)
}

/// The memory a restore of `config` reads: the file it names, else the one beside `state`.
pub(crate) fn restored_memory(config: &crate::VmConfig, state: &Path) -> PathBuf {
    match &config.memory_file {
        Some(file) => file.path.clone(),
        None => memory_path(state),
    }
}

/// `PUT /snapshot/load` into a fresh Firecracker (only the logger and metrics configured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotLoad {
    pub snapshot_path: PathBuf,
    pub mem_backend: MemoryBackend,
    pub resume_vm: bool,
    /// Firecracker 1.12 and later; absent when the VM has no network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network_overrides: Vec<NetworkOverride>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryBackend {
    pub backend_type: BackendType,
    /// The memory file (`File`), or the Unix socket of a page-fault handler (`Uffd`).
    pub backend_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BackendType {
    /// Firecracker maps the file `MAP_PRIVATE`: clones of one snapshot share its pages in the
    /// page cache, copy-on-write.
    File,
    /// Firecracker registers guest memory with userfaultfd and sends the descriptor to the
    /// handler listening at `backend_path`, which then serves every page fault.
    Uffd,
}

/// Gives the restored interface another tap (the snapshot names the one it was saved with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

impl NetworkOverride {
    pub fn to_tap(tap: &str) -> Self {
        NetworkOverride {
            iface_id: IFACE_ID.to_owned(),
            host_dev_name: tap.to_owned(),
        }
    }
}

impl Request for SnapshotLoad {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        "/snapshot/load".into()
    }

    fn timeout(&self) -> Duration {
        SNAPSHOT_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_create_body_uses_the_swagger_field_names() {
        let create = SnapshotCreate::full("/s/state".into(), memory_path(Path::new("/s/state")));
        assert_eq!(
            serde_json::to_value(create).unwrap(),
            serde_json::json!({
                "snapshot_type": "Full",
                "snapshot_path": "/s/state",
                "mem_file_path": "/s/state.mem",
            })
        );
    }

    #[test]
    fn test_load_body_names_the_backend_and_overrides_only_when_given() {
        let mut load = SnapshotLoad {
            snapshot_path: "/s/state".into(),
            mem_backend: MemoryBackend {
                backend_type: BackendType::Uffd,
                backend_path: "/run/uffd.sock".into(),
            },
            resume_vm: true,
            network_overrides: Vec::new(),
        };
        assert_eq!(
            serde_json::to_value(&load).unwrap(),
            serde_json::json!({
                "snapshot_path": "/s/state",
                "mem_backend": {"backend_type": "Uffd", "backend_path": "/run/uffd.sock"},
                "resume_vm": true,
            })
        );
        load.mem_backend.backend_type = BackendType::File;
        load.network_overrides = vec![NetworkOverride::to_tap("tap1")];
        let body = serde_json::to_value(&load).unwrap();
        assert_eq!(body["mem_backend"]["backend_type"], "File");
        assert_eq!(
            body["network_overrides"],
            serde_json::json!([{"iface_id": "eth0", "host_dev_name": "tap1"}])
        );
    }
}
