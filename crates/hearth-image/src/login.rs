//! Checking credentials against a registry before `hearth login` saves them, the way
//! `docker login` does: `GET /v2/`, then answer its challenge (Basic, or a Bearer token from the
//! realm it names) with the credentials. oci-client has no registry-level login (its auth is
//! per repository and takes Basic credentials on trust), so this speaks the two requests itself.

use http_auth::ChallengeParser;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Response, StatusCode};

use crate::docker_config::Credentials;
use crate::refusal::registry_message;
use crate::registry::PullConfig;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("failed to reach registry `{registry}`")]
    Request {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry `{registry}` refused the credentials of `{username}`: {message}")]
    Denied {
        registry: String,
        username: String,
        message: String,
    },
    #[error("registry `{registry}` answered {status} at {url}: {message}")]
    Unexpected {
        registry: String,
        url: String,
        status: StatusCode,
        message: String,
    },
    #[error("registry `{registry}` asks for authentication hearth does not speak: `{challenge}`")]
    Challenge { registry: String, challenge: String },
    #[error("registry `{registry}` sends the credentials to `{realm}`, which is not HTTPS; refusing to send them in the clear")]
    InsecureRealm { registry: String, realm: String },
}

/// Succeeds when `registry` accepts `credentials` (or needs none).
pub async fn verify(
    registry: &str,
    credentials: &Credentials,
    config: &PullConfig,
) -> Result<(), LoginError> {
    let url = format!("{}/v2/", config.base_url(registry));
    let client = reqwest::Client::new();
    let request_err = |source| LoginError::Request {
        registry: registry.to_owned(),
        source,
    };
    let probe = client.get(&url).send().await.map_err(request_err)?;
    if probe.status().is_success() {
        return Ok(());
    }
    if probe.status() != StatusCode::UNAUTHORIZED {
        return Err(unexpected(registry, probe).await);
    }
    let challenge = probe
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let reply = match bearer_realm(&challenge) {
        Some((realm, service)) => {
            check_realm(registry, &url, &realm)?;
            let mut query = Vec::new();
            if let Some(service) = &service {
                query.push(("service", service.as_str()));
            }
            client.get(&realm).query(&query)
        }
        None if challenge
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("basic") =>
        {
            client.get(&url)
        }
        None => {
            return Err(LoginError::Challenge {
                registry: registry.to_owned(),
                challenge,
            })
        }
    }
    .basic_auth(&credentials.username, Some(&credentials.password))
    .send()
    .await
    .map_err(request_err)?;
    match reply.status() {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(LoginError::Denied {
            registry: registry.to_owned(),
            username: credentials.username.clone(),
            message: registry_message(reply).await,
        }),
        _ => Err(unexpected(registry, reply).await),
    }
}

/// The realm is the registry's to name, but a TLS registry must not be able to have the user's
/// password sent somewhere in the clear.
fn check_realm(registry: &str, registry_url: &str, realm: &str) -> Result<(), LoginError> {
    if registry_url.starts_with("https://") && !realm.starts_with("https://") {
        return Err(LoginError::InsecureRealm {
            registry: registry.to_owned(),
            realm: realm.to_owned(),
        });
    }
    Ok(())
}

/// The realm and service of a Bearer challenge.
fn bearer_realm(challenge: &str) -> Option<(String, Option<String>)> {
    ChallengeParser::new(challenge)
        .flatten()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|c| {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            Some((param("realm")?, param("service")))
        })
}

async fn unexpected(registry: &str, response: Response) -> LoginError {
    let (url, status) = (response.url().to_string(), response.status());
    LoginError::Unexpected {
        registry: registry.to_owned(),
        url,
        status,
        message: registry_message(response).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tls_registry_cannot_send_the_password_to_a_plain_http_realm() {
        let tls = "https://registry.example/v2/";
        assert!(check_realm("r", tls, "https://auth.example/token").is_ok());
        assert!(matches!(
            check_realm("r", tls, "http://auth.example/token"),
            Err(LoginError::InsecureRealm { .. })
        ));
        // A registry spoken to over plain HTTP (loopback, --insecure-registry) may name one.
        assert!(check_realm("r", "http://127.0.0.1:5000/v2/", "http://127.0.0.1:6000/t").is_ok());
    }

    #[test]
    fn test_bearer_realm_reads_realm_and_service() {
        let challenge =
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="x""#;
        assert_eq!(
            bearer_realm(challenge),
            Some((
                "https://auth.example/token".into(),
                Some("registry.example".into())
            ))
        );
        assert_eq!(bearer_realm(r#"Basic realm="r""#), None);
    }
}
