//! Per-sandbox access tokens (`envdAccessToken`): HMAC-SHA256 of the sandbox id under a secret
//! the server keeps in the state dir, so a token survives a server restart without being
//! stored, and one sandbox's token opens no other.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const SECRET_LEN: usize = 32;

/// The secret tokens are derived from.
#[derive(Clone)]
pub struct TokenKey {
    secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("failed to {action} the E2B token secret `{}`", path.display())]
pub struct TokenKeyError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl TokenKey {
    /// Reads the secret under `state_root`, making it (0600) at the first start.
    pub fn load_or_generate(state_root: &Path) -> Result<Self, TokenKeyError> {
        let path = state_root.join("api").join("e2b-token.secret");
        let fail = |action, source| TokenKeyError {
            action,
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == SECRET_LEN => {
                let mut secret = [0u8; SECRET_LEN];
                secret.copy_from_slice(&bytes);
                return Ok(TokenKey { secret });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("read", e)),
        }
        let mut secret = [0u8; SECRET_LEN];
        rand::thread_rng().fill_bytes(&mut secret);
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail("create the directory of", e))?;
        }
        // Written aside and renamed, so two servers starting at once agree on one secret.
        let staging = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staging)
            .map_err(|e| fail("write", e))?;
        file.write_all(&secret).map_err(|e| fail("write", e))?;
        std::fs::rename(&staging, &path).map_err(|e| fail("store", e))?;
        Ok(TokenKey { secret })
    }

    /// The access token of sandbox `id`.
    pub fn token(&self, id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(id.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `token` is sandbox `id`'s, compared in constant time.
    pub fn accepts(&self, id: &str, token: &str) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(id.as_bytes());
        match unhex(token) {
            Some(bytes) => mac.verify_slice(&bytes).is_ok(),
            None => false,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tokens_survive_a_restart_and_open_only_their_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let key = TokenKey::load_or_generate(dir.path()).unwrap();
        let token = key.token("abc");
        assert!(key.accepts("abc", &token));
        assert!(!key.accepts("abd", &token));
        assert!(!key.accepts("abc", "zz"));
        assert!(!key.accepts("abc", ""));
        let again = TokenKey::load_or_generate(dir.path()).unwrap();
        assert!(again.accepts("abc", &token));
        let other = TokenKey::load_or_generate(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(!other.accepts("abc", &token));
    }
}
