//! Content digests (`sha256:<64 hex>`), the names of blobs and images.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
#[error("`{value}` is not a sha256 digest (sha256: followed by 64 lowercase hex digits)")]
pub struct DigestError {
    value: String,
}

/// A sha256 content digest. Only sha256 is accepted: it is what registries and OCI layouts use,
/// and a digest is also a file name here, so its form must be strict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(data))
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        let hex = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Digest { hex }
    }

    /// The first 12 hex digits, as docker shows image ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let hex = value.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError {
                value: value.to_owned(),
            });
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn test_digest_parse_refuses_paths_and_other_algorithms() {
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
        assert!(format!("sha512:{}", "a".repeat(64))
            .parse::<Digest>()
            .is_err());
        assert!(format!("sha256:{}", "A".repeat(64))
            .parse::<Digest>()
            .is_err());
        assert!(format!("sha256:{}", "a".repeat(64))
            .parse::<Digest>()
            .is_ok());
    }
}
