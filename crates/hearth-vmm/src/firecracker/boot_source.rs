//! `PUT /boot-source`: kernel, initramfs and command line, pre-boot.

use std::borrow::Cow;
use std::path::PathBuf;

use http::Method;
use serde::Serialize;

use super::client::Request;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    /// An uncompressed ELF kernel (`vmlinux`): Firecracker on x86_64 loads no bzImage.
    pub kernel_image_path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    pub boot_args: String,
}

impl Request for BootSource {
    const METHOD: Method = Method::PUT;

    fn path(&self) -> Cow<'static, str> {
        "/boot-source".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_body_uses_the_swagger_field_names_and_omits_a_missing_initrd() {
        let mut boot = BootSource {
            kernel_image_path: "/boot/vmlinux".into(),
            initrd_path: Some("/boot/initramfs".into()),
            boot_args: "console=ttyS0".to_owned(),
        };
        assert_eq!(
            serde_json::to_value(&boot).unwrap(),
            serde_json::json!({
                "kernel_image_path": "/boot/vmlinux",
                "initrd_path": "/boot/initramfs",
                "boot_args": "console=ttyS0",
            })
        );
        boot.initrd_path = None;
        assert!(serde_json::to_value(&boot)
            .unwrap()
            .get("initrd_path")
            .is_none());
    }
}
