//! Registry credentials in docker's `config.json`, so `docker login` and `hearth login` share
//! them: `auths` entries (base64 `auth` or `username`/`password`), and the credential helpers
//! named by `credsStore`/`credHelpers` (`docker-credential-<name> get|store|erase`).

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Value};

/// The key docker files Docker Hub credentials under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// What a credential helper prints when it has nothing for a registry (docker's
/// `credentials.NewErrCredentialsNotFound` text, which every helper reuses).
const HELPER_NOT_FOUND: &str = "credentials not found";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    // Keeps passwords out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("neither $DOCKER_CONFIG nor $HOME is set: cannot find docker's config.json")]
    NoConfigDir,
    #[error("failed to read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` is not valid docker config JSON", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the `auth` entry for `{registry}` in `{}` is not base64 of `user:password`", path.display())]
    BadAuth { path: PathBuf, registry: String },
    #[error("failed to write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to run credential helper `docker-credential-{helper}` for `{registry}`")]
    HelperSpawn {
        helper: String,
        registry: String,
        #[source]
        source: io::Error,
    },
    #[error("credential helper `docker-credential-{helper} {action}` failed for `{registry}`: {message}")]
    HelperFailed {
        helper: String,
        action: &'static str,
        registry: String,
        message: String,
    },
    #[error("credential helper `docker-credential-{helper}` printed something that is not credentials JSON")]
    HelperOutput {
        helper: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the credentials for `{registry}` are an identity token, which hearth does not support; run `hearth login {registry}` with a password or access token")]
    IdentityToken { registry: String },
}

/// docker's `config.json`, kept whole so saving it changes only the entries hearth touched.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    doc: Map<String, Value>,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`, as docker looks.
    pub fn default_path() -> Result<PathBuf, CredentialsError> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir).join("config.json"));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(CredentialsError::NoConfigDir)?;
        Ok(PathBuf::from(home).join(".docker").join("config.json"))
    }

    /// The config at [`DockerConfig::default_path`].
    pub fn load_default() -> Result<Self, CredentialsError> {
        Self::load(&Self::default_path()?)
    }

    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let doc = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| CredentialsError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
            Err(source) => {
                return Err(CredentialsError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(DockerConfig {
            path: path.to_owned(),
            doc,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub), from its
    /// credential helper when one is configured, else from `auths`.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
        let key = registry_key(registry);
        if let Some(helper) = self.helper(&key) {
            return helper_get(helper, &key, registry);
        }
        let Some(entry) = self.auth_entry(&key) else {
            return Ok(None);
        };
        if entry.get("identitytoken").is_some_and(|t| t != "") {
            return Err(CredentialsError::IdentityToken {
                registry: registry.to_owned(),
            });
        }
        let field = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or("");
        if !field("auth").is_empty() {
            let bad = || CredentialsError::BadAuth {
                path: self.path.clone(),
                registry: registry.to_owned(),
            };
            let decoded = BASE64.decode(field("auth").trim()).map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
            }));
        }
        if field("username").is_empty() {
            return Ok(None);
        }
        Ok(Some(Credentials {
            username: field("username").to_owned(),
            password: field("password").to_owned(),
        }))
    }

    /// Records `credentials` for `registry`: in its credential helper when one is configured,
    /// else in `auths` (call [`DockerConfig::save`] after).
    pub fn set_credentials(
        &mut self,
        registry: &str,
        credentials: &Credentials,
    ) -> Result<(), CredentialsError> {
        let key = registry_key(registry);
        if let Some(helper) = self.helper(&key) {
            let input = serde_json::json!({
                "ServerURL": key,
                "Username": credentials.username,
                "Secret": credentials.password,
            });
            return helper_call(helper, "store", &key, &input.to_string()).map(drop);
        }
        let auth = BASE64.encode(format!("{}:{}", credentials.username, credentials.password));
        let mut auths = match self.doc.remove("auths") {
            Some(Value::Object(auths)) => auths,
            _ => Map::new(),
        };
        auths.retain(|k, _| !same_registry(k, &key));
        auths.insert(key, serde_json::json!({ "auth": auth }));
        self.doc.insert("auths".to_owned(), Value::Object(auths));
        Ok(())
    }

    /// Forgets the credentials for `registry`; false when there were none in `auths` (a
    /// credential helper is asked to erase either way).
    pub fn remove_credentials(&mut self, registry: &str) -> Result<bool, CredentialsError> {
        let key = registry_key(registry);
        if let Some(helper) = self.helper(&key) {
            return match helper_call(helper, "erase", &key, &key) {
                Ok(_) => Ok(true),
                Err(CredentialsError::HelperFailed { message, .. })
                    if message.contains(HELPER_NOT_FOUND) =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            };
        }
        Ok(self.remove_auth_entries(&key))
    }

    /// Writes the config back with mode 0600 (it holds passwords), replacing the file at once so
    /// a crash never leaves half a config.
    pub fn save(&self) -> Result<(), CredentialsError> {
        let write_err = |source| CredentialsError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write_err)?;
        // NamedTempFile is created 0600, which is the mode the config keeps.
        let mut temp = tempfile::Builder::new()
            .prefix(".config.json-")
            .tempfile_in(dir)
            .map_err(write_err)?;
        let json = serde_json::to_vec_pretty(&self.doc).map_err(|e| write_err(e.into()))?;
        temp.write_all(&json).map_err(write_err)?;
        temp.write_all(b"\n").map_err(write_err)?;
        temp.as_file().sync_all().map_err(write_err)?;
        temp.persist(&self.path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// The helper for `key`: its `credHelpers` entry, else `credsStore`.
    fn helper(&self, key: &str) -> Option<&str> {
        let by_registry = self
            .doc
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|helpers| {
                helpers
                    .iter()
                    .find(|(k, _)| same_registry(k, key))
                    .and_then(|(_, v)| v.as_str())
            });
        by_registry
            .or_else(|| self.doc.get("credsStore").and_then(Value::as_str))
            .filter(|name| !name.is_empty())
    }

    fn auth_entry(&self, key: &str) -> Option<&Map<String, Value>> {
        let auths = self.doc.get("auths")?.as_object()?;
        // The exact key first, then any spelling of the same host (`https://host/v1/`).
        auths
            .get(key)
            .or_else(|| {
                auths
                    .iter()
                    .find(|(k, _)| same_registry(k, key))
                    .map(|(_, v)| v)
            })?
            .as_object()
    }

    /// Removes every `auths` spelling of `key`; true if there was one.
    fn remove_auth_entries(&mut self, key: &str) -> bool {
        let Some(auths) = self.doc.get_mut("auths").and_then(Value::as_object_mut) else {
            return false;
        };
        let before = auths.len();
        auths.retain(|k, _| !same_registry(k, key));
        auths.len() != before
    }
}

/// docker's key for a registry: Docker Hub under its historical v1 URL, others by `host[:port]`.
pub fn registry_key(registry: &str) -> String {
    let host = hostname(registry);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_owned(),
        _ => host.to_owned(),
    }
}

/// The `host[:port]` of a config key, which may be a URL (`https://host/v1/`), as docker's
/// `ConvertToHostname` reads it.
fn hostname(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

fn same_registry(config_key: &str, key: &str) -> bool {
    registry_key(config_key) == key
}

fn helper_get(
    helper: &str,
    key: &str,
    registry: &str,
) -> Result<Option<Credentials>, CredentialsError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperReply {
        username: String,
        secret: String,
    }
    let stdout = match helper_call(helper, "get", key, key) {
        Ok(stdout) => stdout,
        Err(CredentialsError::HelperFailed { message, .. })
            if message.contains(HELPER_NOT_FOUND) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let reply: HelperReply =
        serde_json::from_slice(&stdout).map_err(|source| CredentialsError::HelperOutput {
            helper: helper.to_owned(),
            source,
        })?;
    // docker's marker for an identity (refresh) token in place of a user name.
    if reply.username == "<token>" {
        return Err(CredentialsError::IdentityToken {
            registry: registry.to_owned(),
        });
    }
    Ok(Some(Credentials {
        username: reply.username,
        password: reply.secret,
    }))
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin; its stdout on success.
fn helper_call(
    helper: &str,
    action: &'static str,
    key: &str,
    input: &str,
) -> Result<Vec<u8>, CredentialsError> {
    let spawn_err = |source| CredentialsError::HelperSpawn {
        helper: helper.to_owned(),
        registry: key.to_owned(),
        source,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let output = child.wait_with_output().map_err(spawn_err)?;
    if !output.status.success() {
        // Helpers print their error on stdout (docker's protocol), some on stderr.
        let mut message = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if message.is_empty() {
            message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        }
        return Err(CredentialsError::HelperFailed {
            helper: helper.to_owned(),
            action,
            registry: key.to_owned(),
            message,
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        DockerConfig {
            path: PathBuf::from("/nonexistent/config.json"),
            doc: serde_json::from_str(json).unwrap(),
        }
    }

    fn creds(user: &str, password: &str) -> Option<Credentials> {
        Some(Credentials {
            username: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn test_registry_key_docker_hub_is_the_v1_url() {
        assert_eq!(registry_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("index.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(registry_key(DOCKER_HUB_KEY), DOCKER_HUB_KEY);
        assert_eq!(registry_key("ghcr.io"), "ghcr.io");
        assert_eq!(registry_key("https://reg:5000/v2/"), "reg:5000");
    }

    #[test]
    fn test_credentials_from_base64_auth_and_url_keys() {
        // "al:pa:ss" — the password may itself hold colons.
        let c = config(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "YWw6cGE6c3M="},
                          "http://reg:5000/v1/": {"auth": "Ym86eA=="}}}"#,
        );
        assert_eq!(c.credentials("docker.io").unwrap(), creds("al", "pa:ss"));
        assert_eq!(c.credentials("reg:5000").unwrap(), creds("bo", "x"));
        assert_eq!(c.credentials("other:5000").unwrap(), None);
    }

    #[test]
    fn test_credentials_from_username_and_password_fields() {
        let c = config(r#"{"auths": {"reg": {"username": "u", "password": "p"}}}"#);
        assert_eq!(c.credentials("reg").unwrap(), creds("u", "p"));
    }

    #[test]
    fn test_credentials_bad_base64_is_an_error() {
        let c = config(r#"{"auths": {"reg": {"auth": "not base64!"}}}"#);
        assert!(matches!(
            c.credentials("reg"),
            Err(CredentialsError::BadAuth { .. })
        ));
    }

    #[test]
    fn test_credentials_identity_token_is_refused() {
        let c = config(r#"{"auths": {"reg": {"auth": "dTpw", "identitytoken": "t"}}}"#);
        assert!(matches!(
            c.credentials("reg"),
            Err(CredentialsError::IdentityToken { .. })
        ));
    }

    #[test]
    fn test_missing_helper_is_named_in_the_error() {
        let c = config(r#"{"credHelpers": {"reg": "hearth-test-absent"}, "auths": {}}"#);
        let err = c.credentials("reg").unwrap_err();
        assert!(
            err.to_string()
                .contains("docker-credential-hearth-test-absent"),
            "{err}"
        );
    }

    #[test]
    fn test_set_then_remove_keeps_other_keys() {
        let mut c = config(
            r#"{"auths": {"http://reg/v1/": {"auth": "b2xkOm9sZA=="}, "other": {"auth": "eDp5"}},
                "psFormat": "table"}"#,
        );
        c.set_credentials(
            "reg",
            &Credentials {
                username: "u".into(),
                password: "p".into(),
            },
        )
        .unwrap();
        assert_eq!(c.credentials("reg").unwrap(), creds("u", "p"));
        assert_eq!(
            c.doc["auths"].as_object().unwrap().len(),
            2,
            "old spelling replaced"
        );
        assert!(c.remove_credentials("reg").unwrap());
        assert!(!c.remove_credentials("reg").unwrap());
        assert_eq!(c.credentials("other").unwrap(), creds("x", "y"));
        assert_eq!(c.doc["psFormat"], "table");
    }
}
