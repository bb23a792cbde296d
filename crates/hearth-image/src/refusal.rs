//! The registry's own words when it refuses a pull. oci-client reports a 401 as "Not
//! authorized" with the URL only and drops the body, where registries say why (`authentication
//! required`, `insufficient scope`); one more request for the manifest reads it.

use reqwest::Response;

use crate::reference::ImageRef;
use crate::registry::PullConfig;

/// What the registry answers when asked for `reference`'s manifest with `config`'s credentials.
pub(crate) async fn refusal_message(reference: &ImageRef, config: &PullConfig) -> String {
    let oci = reference.oci();
    let target = oci.digest().or(oci.tag()).unwrap_or("latest");
    let url = format!(
        "{}/v2/{}/manifests/{target}",
        config.base_url(reference.registry()),
        oci.repository()
    );
    let mut request = reqwest::Client::new().get(&url);
    if let Some(c) = &config.credentials {
        request = request.basic_auth(&c.username, Some(&c.password));
    }
    match request.send().await {
        Ok(response) => registry_message(response).await,
        Err(e) => format!("no reason given ({e})"),
    }
}

/// Most of an error body read for its message; the rest of a longer one is not read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The messages of a registry error body, else its text, else its status.
pub(crate) async fn registry_message(mut response: Response) -> String {
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    let text = String::from_utf8_lossy(&body);
    match message_of(&text) {
        Some(message) => message,
        None if text.trim().is_empty() => status.to_string(),
        None => text.trim().chars().take(200).collect(),
    }
}

/// `a; b` from a registry error body (`{"errors": [{"message": "a"}, {"message": "b"}]}`).
pub(crate) fn message_of(body: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    let messages: Vec<&str> = body
        .get("errors")?
        .as_array()?
        .iter()
        .filter_map(|e| e.get("message")?.as_str())
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_message_of_joins_registry_errors() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"},
                                 {"code":"DENIED","message":"no"}]}"#;
        assert_eq!(
            message_of(body).as_deref(),
            Some("authentication required; no")
        );
        assert_eq!(message_of("<html>"), None);
    }
}
