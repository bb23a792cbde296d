//! `PUT /machine-config`: vCPUs and memory, pre-boot.

use std::borrow::Cow;

use http::Method;
use serde::Serialize;

use super::client::Request;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u32,
    /// Always off: sibling hyperthreads of a guest would share a core's caches with each other
    /// (and with whatever else runs there), and Firecracker's own production advice is off.
    pub smt: bool,
}

impl MachineConfig {
    pub fn new(vcpu_count: u8, mem_size_mib: u32) -> Self {
        MachineConfig {
            vcpu_count,
            mem_size_mib,
            smt: false,
        }
    }
}

impl Request for MachineConfig {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        "/machine-config".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_uses_the_swagger_field_names() {
        let body = serde_json::to_value(MachineConfig::new(2, 512)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"vcpu_count": 2, "mem_size_mib": 512, "smt": false})
        );
    }
}
