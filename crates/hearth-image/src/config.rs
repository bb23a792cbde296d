//! The parts of an OCI image config that decide how a sandbox's process starts.

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, DigestError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the image config is not valid OCI JSON")]
    Json(#[source] oci_spec::OciSpecError),
    #[error("the image config's rootfs.diff_ids holds a malformed digest")]
    DiffId(#[source] DigestError),
}

/// Entrypoint, Cmd, Env, WorkingDir and User, plus the platform the image was built for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl ImageConfig {
    pub fn parse(json: &[u8]) -> Result<Self, ConfigError> {
        let parsed =
            oci_spec::image::ImageConfiguration::from_reader(json).map_err(ConfigError::Json)?;
        let config = parsed.config().clone().unwrap_or_default();
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Ok(ImageConfig {
            architecture: parsed.architecture().to_string(),
            os: parsed.os().to_string(),
            entrypoint: config.entrypoint().clone().unwrap_or_default(),
            cmd: config.cmd().clone().unwrap_or_default(),
            env: config.env().clone().unwrap_or_default(),
            working_dir: non_empty(config.working_dir()),
            user: non_empty(config.user()),
        })
    }

    /// `rootfs.diff_ids` of a config: the digest of each layer's uncompressed tar, in order.
    pub(crate) fn diff_ids(json: &[u8]) -> Result<Vec<Digest>, ConfigError> {
        let parsed =
            oci_spec::image::ImageConfiguration::from_reader(json).map_err(ConfigError::Json)?;
        parsed
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse().map_err(ConfigError::DiffId))
            .collect()
    }

    /// The process to run, as docker decides it: `--entrypoint` replaces the image's Entrypoint
    /// and drops its Cmd; trailing arguments replace the Cmd.
    pub fn argv(&self, entrypoint: Option<&str>, args: &[String]) -> Vec<String> {
        let (mut argv, default_cmd) = match entrypoint {
            Some(e) => (vec![e.to_owned()], &[][..]),
            None => (self.entrypoint.clone(), &self.cmd[..]),
        };
        argv.extend_from_slice(if args.is_empty() { default_cmd } else { args });
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/echo", "ep"], "Cmd": ["default"],
                   "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/srv", "User": "app"},
        "rootfs": {"type": "layers", "diff_ids": []}
    }"#;

    fn config() -> ImageConfig {
        ImageConfig::parse(CONFIG.as_bytes()).unwrap()
    }

    #[test]
    fn test_parse_keeps_process_fields() {
        let c = config();
        assert_eq!((c.architecture.as_str(), c.os.as_str()), ("amd64", "linux"));
        assert_eq!(c.env, ["PATH=/bin", "A=1"]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("app"));
    }

    #[test]
    fn test_argv_defaults_to_entrypoint_plus_cmd() {
        assert_eq!(config().argv(None, &[]), ["/bin/echo", "ep", "default"]);
    }

    #[test]
    fn test_argv_trailing_args_replace_cmd() {
        assert_eq!(config().argv(None, &["x".into()]), ["/bin/echo", "ep", "x"]);
    }

    #[test]
    fn test_argv_entrypoint_override_drops_image_cmd() {
        assert_eq!(config().argv(Some("/bin/sh"), &[]), ["/bin/sh"]);
        assert_eq!(
            config().argv(Some("/bin/sh"), &["-c".into(), "id".into()]),
            ["/bin/sh", "-c", "id"]
        );
    }

    #[test]
    fn test_parse_refuses_garbage() {
        assert!(ImageConfig::parse(b"{not json").is_err());
    }
}
