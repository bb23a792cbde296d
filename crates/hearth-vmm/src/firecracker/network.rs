//! `PUT /network-interfaces/{iface_id}`: a virtio-net device on a tap, pre-boot.

use std::borrow::Cow;

use http::Method;
use serde::Serialize;

use super::client::Request;

/// The one interface hearth gives a guest. A snapshot names it, so restores override its tap
/// by this id.
pub const IFACE_ID: &str = "eth0";

/// The MAC every guest gets: a snapshot restores into another sandbox's namespace, and the
/// guest's neighbour cache stays valid only if the address never changes (locally
/// administered, unicast).
pub const GUEST_MAC: &str = "02:68:74:68:00:02";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// The tap's name, opened in Firecracker's network namespace.
    pub host_dev_name: String,
    pub guest_mac: String,
}

impl NetworkInterface {
    pub fn on_tap(tap: &str) -> Self {
        NetworkInterface {
            iface_id: IFACE_ID.to_owned(),
            host_dev_name: tap.to_owned(),
            guest_mac: GUEST_MAC.to_owned(),
        }
    }
}

impl Request for NetworkInterface {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        format!("/network-interfaces/{}", self.iface_id).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_uses_the_swagger_field_names() {
        let iface = NetworkInterface::on_tap("tap0");
        assert_eq!(iface.path(), "/network-interfaces/eth0");
        assert_eq!(
            serde_json::to_value(&iface).unwrap(),
            serde_json::json!({
                "iface_id": "eth0",
                "host_dev_name": "tap0",
                "guest_mac": GUEST_MAC,
            })
        );
    }
}
