//! How hearth reaches a registry: which scheme, which host, which credentials. Pulls, logins and
//! the refusal probe all start from here.

use std::time::Duration;

use crate::docker_config::Credentials;
use crate::reference::is_loopback_host;

/// Time limits on registry I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryTimeouts {
    /// To open a connection.
    pub connect: Duration,
    /// Longest silence while waiting for a reply or inside a body: a registry that stops
    /// sending mid-blob fails after this.
    pub read: Duration,
    /// How long transient failures (refused, reset, timeout, 5xx, 429) are retried, with
    /// exponential backoff and jitter, before the pull fails.
    pub retry_window: Duration,
}

impl Default for RegistryTimeouts {
    fn default() -> Self {
        RegistryTimeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            retry_window: Duration::from_secs(60),
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullConfig {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Loopback registries always are.
    pub insecure_registries: Vec<String>,
    /// Credentials for the image's registry, sent as Basic auth or traded for a Bearer token as
    /// the registry asks; anonymous when `None`.
    pub credentials: Option<Credentials>,
    pub timeouts: RegistryTimeouts,
}

impl PullConfig {
    /// `http://host` or `https://host`: where `registry`'s API lives.
    pub(crate) fn base_url(&self, registry: &str) -> String {
        let scheme = if self.plain_http(registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", registry_host(registry))
    }

    /// True when `registry` is spoken to over plain HTTP: loopback, or listed as insecure.
    pub fn plain_http(&self, registry: &str) -> bool {
        is_loopback_host(registry) || self.insecure_registries.iter().any(|r| r == registry)
    }
}

/// The host that serves a registry's API: Docker Hub's is not `docker.io` itself.
fn registry_host(registry: &str) -> &str {
    match registry {
        "docker.io" => "index.docker.io",
        other => other,
    }
}
