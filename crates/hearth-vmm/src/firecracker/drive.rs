//! `PUT /drives/{drive_id}`: a virtio-block device, pre-boot.

use std::borrow::Cow;
use std::path::PathBuf;

use http::Method;
use serde::Serialize;

use super::client::Request;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    /// Also the request's path segment: letters, digits and `_` only.
    pub drive_id: String,
    pub path_on_host: PathBuf,
    /// Never set: hearth's guests boot from their initramfs and mount the base themselves.
    pub is_root_device: bool,
    pub is_read_only: bool,
}

impl Drive {
    /// The `index`th disk, which the guest sees as `/dev/vd{a+index}` (Firecracker attaches
    /// drives in the order they were configured).
    pub fn new(index: usize, path_on_host: PathBuf, is_read_only: bool) -> Self {
        Drive {
            drive_id: format!("disk{index}"),
            path_on_host,
            is_root_device: false,
            is_read_only,
        }
    }
}

impl Request for Drive {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        format!("/drives/{}", self.drive_id).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_read_only_base_is_not_the_root_device() {
        let drive = Drive::new(0, "/state/images/base.erofs".into(), true);
        assert_eq!(drive.path(), "/drives/disk0");
        assert_eq!(
            serde_json::to_value(&drive).unwrap(),
            serde_json::json!({
                "drive_id": "disk0",
                "path_on_host": "/state/images/base.erofs",
                "is_root_device": false,
                "is_read_only": true,
            })
        );
    }
}
