//! `--network`, `--egress`, `--allow`, `--allow-udp`, `--allow-icmp`, `--publish` and
//! `--dns-upstream` to a network config.

use hearth_engine::{EgressPolicy, NetworkConfig};

use crate::cli::args::NetworkArgs;

impl NetworkArgs {
    /// The sandbox's network config, or `None` for `--network none`.
    pub fn config(&self) -> anyhow::Result<Option<NetworkConfig>> {
        if self.mode == "none" {
            if self.egress.is_some()
                || !self.allow.is_empty()
                || self.allow_udp
                || self.allow_icmp
                || !self.publish.is_empty()
            {
                anyhow::bail!(
                    "--network none gives no network: drop --egress, --allow, --allow-udp, \
                     --allow-icmp and --publish"
                );
            }
            return Ok(None);
        }
        let policy = EgressPolicy::from_flags(
            self.egress,
            self.allow.clone(),
            self.allow_udp,
            self.allow_icmp,
        )?;
        Ok(Some(NetworkConfig {
            policy,
            publish: self.publish.clone(),
            dns_upstream: self.dns_upstream,
            ..NetworkConfig::default()
        }))
    }
}
