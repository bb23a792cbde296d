//! Bearer API keys. The server keeps only SHA-256 hashes of them: from `--api-key-file`, or
//! from a key it generated at its first start (shown once) whose hash it stored in the state
//! dir.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What generated keys start with, so a leaked one is easy to recognise.
const KEY_PREFIX: &str = "hearth_";

/// The keys a server accepts, as hashes.
#[derive(Clone)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.hashes.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("failed to read the API key file `{}`", path.display())]
    ReadKeys {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API key file `{}` holds no key", .0.display())]
    NoKeys(PathBuf),
    #[error("failed to store the API key hash in `{}`", path.display())]
    StoreHash {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a stored API key hash (64 hex digits); remove it to get a new key", .0.display())]
    BadHash(PathBuf),
}

/// Where the hash of the generated key lives under the state dir.
pub fn hash_path(state_root: &Path) -> PathBuf {
    state_root.join("api").join("key.sha256")
}

impl ApiKeys {
    /// The keys in `path`, one a line (blank lines ignored).
    pub fn from_key_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadKeys {
            path: path.to_owned(),
            source,
        })?;
        let hashes: Vec<_> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(hash)
            .collect();
        if hashes.is_empty() {
            return Err(AuthError::NoKeys(path.to_owned()));
        }
        Ok(ApiKeys { hashes })
    }

    /// The key whose hash is stored under `state_root`; at the first start, a new key whose
    /// hash is stored (0600) and which is returned, the only time anyone sees it.
    pub fn load_or_generate(state_root: &Path) -> Result<(Self, Option<String>), AuthError> {
        let path = hash_path(state_root);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let hash = parse_hex(text.trim()).ok_or(AuthError::BadHash(path))?;
                Ok((ApiKeys { hashes: vec![hash] }, None))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = generate();
                store_hash(&path, &hash(&key))?;
                Ok((
                    ApiKeys {
                        hashes: vec![hash(&key)],
                    },
                    Some(key),
                ))
            }
            Err(source) => Err(AuthError::ReadKeys { path, source }),
        }
    }

    /// Whether `key` is one of ours. Hashes are compared in full, so timing tells nothing.
    pub fn accepts(&self, key: &str) -> bool {
        let candidate = hash(key);
        self.hashes.iter().fold(false, |found, known| {
            let differs = known
                .iter()
                .zip(candidate.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | (differs == 0)
        })
    }
}

/// Middleware: the request goes on only with `Authorization: Bearer KEY` for a known key.
pub async fn require_key(
    State(keys): State<std::sync::Arc<ApiKeys>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match key {
        Some(key) if keys.accepts(key) => Ok(next.run(request).await),
        _ => Err(ApiError::unauthorized()),
    }
}

fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn store_hash(path: &Path, hash: &[u8; 32]) -> Result<(), AuthError> {
    let store_error = |source| AuthError::StoreHash {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(store_error)?;
    }
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(store_error)?;
    writeln!(file, "{hex}").map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_generated_key_is_shown_once_and_accepted_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, key) = ApiKeys::load_or_generate(dir.path()).unwrap();
        let key = key.expect("a new key at the first start");
        assert!(key.starts_with(KEY_PREFIX));
        assert!(keys.accepts(&key));
        assert!(!keys.accepts("hearth_wrong"));

        let (again, shown) = ApiKeys::load_or_generate(dir.path()).unwrap();
        assert_eq!(shown, None, "the key is shown only when it is made");
        assert!(again.accepts(&key));
        let stored = std::fs::read_to_string(hash_path(dir.path())).unwrap();
        assert!(!stored.contains(&key), "only the hash is stored");
        let mode = std::fs::metadata(hash_path(dir.path()))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn test_key_file_holds_one_key_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "one\n\n  two  \n").unwrap();
        let keys = ApiKeys::from_key_file(&path).unwrap();
        assert!(keys.accepts("one") && keys.accepts("two"));
        assert!(!keys.accepts(""));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            ApiKeys::from_key_file(&path),
            Err(AuthError::NoKeys(_))
        ));
    }
}
