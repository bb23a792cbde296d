//! Image references with docker's rules: `alpine` is `docker.io/library/alpine:latest`,
//! `host:port/repo:tag`, `repo@sha256:…`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use oci_client::Reference;

#[derive(Debug, thiserror::Error)]
#[error("`{reference}` is not a valid image reference: {reason}")]
pub struct ReferenceError {
    reference: String,
    reason: String,
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }

    /// The registry host (and port) the image comes from.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// True when the registry is on a loopback address (`localhost`, `127.0.0.0/8`, `::1`):
    /// such registries are spoken to over plain HTTP, as docker does.
    pub fn is_loopback_registry(&self) -> bool {
        is_loopback_host(self.registry())
    }
}

/// `host` or `host:port`; true for `localhost` and loopback addresses.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        // `[::1]:5000` or `127.0.0.1:5000`; a bare `::1` has more than one colon.
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ReferenceError {
            reference: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(error("it is empty".to_owned()));
        }
        let inner: Reference = match value.parse::<Reference>() {
            Ok(inner) => inner,
            // Docker's hint: the bare "invalid reference format" does not say what is wrong.
            Err(_) if value.to_ascii_lowercase().parse::<Reference>().is_ok() => {
                return Err(error(
                    "invalid reference format: repository name must be lowercase".to_owned(),
                ))
            }
            Err(e) => return Err(error(format!("{e}"))),
        };
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(error(
                "invalid reference format: repository name must be lowercase".to_owned(),
            ));
        }
        if let Some(digest) = inner.digest() {
            digest
                .parse::<crate::Digest>()
                .map_err(|e| error(e.to_string()))?;
        }
        Ok(ImageRef { inner })
    }
}

impl fmt::Display for ImageRef {
    /// The full form: `docker.io/library/alpine:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner.whole())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(value: &str) -> String {
        value.parse::<ImageRef>().unwrap().to_string()
    }

    #[test]
    fn test_reference_short_name_gets_docker_hub_library_and_latest() {
        assert_eq!(full("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(full("node:22-alpine"), "docker.io/library/node:22-alpine");
        assert_eq!(full("user/app"), "docker.io/user/app:latest");
    }

    #[test]
    fn test_reference_keeps_registry_with_port_and_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(full("127.0.0.1:5000/test:1"), "127.0.0.1:5000/test:1");
        assert_eq!(
            full(&format!("ghcr.io/org/app@{digest}")),
            format!("ghcr.io/org/app@{digest}")
        );
    }

    #[test]
    fn test_reference_malformed_values_are_refused() {
        for bad in ["", "UPPER/case", "a b", "x:", "x@sha256:1234", "-lead"] {
            assert!(
                bad.parse::<ImageRef>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn test_reference_uppercase_repository_gets_docker_hint() {
        for upper in ["Not/Valid", "127.0.0.1:5000/MyApp:1", "Alpine"] {
            let err = upper.parse::<ImageRef>().unwrap_err();
            assert!(
                err.to_string()
                    .contains("repository name must be lowercase"),
                "{upper}: {err}"
            );
        }
        // Tags may be uppercase.
        assert_eq!(full("alpine:Latest"), "docker.io/library/alpine:Latest");
    }

    #[test]
    fn test_loopback_registries() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("registry.example:5000"));
        assert!(!is_loopback_host("docker.io"));
    }
}
