//! `GET /` and `GET /version`: what the instance is and which Firecracker runs it.

use serde::Deserialize;

/// `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    /// `Not started`, `Running` or `Paused`.
    pub state: String,
    pub vmm_version: String,
    pub app_name: String,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_instance_info_decodes_what_firecracker_sends() {
        // As Firecracker 1.16.1 answered it.
        let info: InstanceInfo = serde_json::from_str(
            r#"{"id":"t1","state":"Not started","vmm_version":"1.16.1","app_name":"Firecracker"}"#,
        )
        .unwrap();
        assert_eq!(info.state, "Not started");
        assert_eq!(info.vmm_version, "1.16.1");
        let version: FirecrackerVersion =
            serde_json::from_str(r#"{"firecracker_version":"1.16.1"}"#).unwrap();
        assert_eq!(version.firecracker_version, "1.16.1");
    }
}
