//! How hearth reaches a registry: which scheme, which host, which credentials. Pulls, logins and
//! the refusal probe all start from here.

use crate::docker_config::Credentials;
use crate::reference::is_loopback_host;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullConfig {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Loopback registries always are.
    pub insecure_registries: Vec<String>,
    /// Credentials for the image's registry, sent as Basic auth or traded for a Bearer token as
    /// the registry asks; anonymous when `None`.
    pub credentials: Option<Credentials>,
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
