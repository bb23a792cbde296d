//! Names of everything a sandbox network creates on the host. Each carries the `hearth`
//! prefix and the sandbox id, so ownership is provable and teardown removes by exact name.

use std::ffi::CString;

/// Linux interface names hold at most 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

/// The names of one sandbox's namespace, links and tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNames {
    /// Named network namespace, bind-mounted at `/run/netns/<netns>`.
    pub netns: String,
    /// Host end of the veth pair (stays in the host namespace).
    pub veth_host: String,
    /// Namespace end of the veth pair.
    pub veth_ns: String,
    /// The guest's tap, inside the namespace.
    pub tap: String,
    /// nftables table, both in the namespace (policy) and on the host (NAT).
    pub table: String,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "sandbox id `{id}` cannot name network objects: it must be 1 to 12 ASCII letters or digits"
)]
pub struct InvalidSandboxId {
    pub id: String,
}

impl NetNames {
    /// Names for sandbox `id` (1 to 12 ASCII alphanumerics, so `hth` + kind + id fits IFNAMSIZ).
    pub fn for_sandbox(id: &str) -> Result<Self, InvalidSandboxId> {
        if id.is_empty()
            || id.len() + 4 > IFNAMSIZ_MAX + 1
            || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(InvalidSandboxId { id: id.to_owned() });
        }
        Ok(NetNames {
            netns: format!("hearth-{id}"),
            veth_host: format!("hth{id}"),
            veth_ns: format!("htp{id}"),
            tap: format!("htt{id}"),
            table: format!("hearth-{id}"),
        })
    }

    pub(crate) fn table_cstring(&self) -> CString {
        // Checked alphanumeric in `for_sandbox`, so there is no interior NUL.
        CString::new(self.table.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_carry_prefix_and_id_and_fit_ifnamsiz() {
        let names = NetNames::for_sandbox("3f2a9c01d4e7").unwrap();
        assert_eq!(names.netns, "hearth-3f2a9c01d4e7");
        assert_eq!(names.veth_host, "hth3f2a9c01d4e7");
        assert_eq!(names.tap.len(), IFNAMSIZ_MAX);
    }

    #[test]
    fn test_names_refuse_long_or_odd_ids() {
        assert!(NetNames::for_sandbox("3f2a9c01d4e70").is_err());
        assert!(NetNames::for_sandbox("a/b").is_err());
        assert!(NetNames::for_sandbox("").is_err());
    }
}
