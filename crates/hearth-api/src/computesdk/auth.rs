//! The two checks every request passes first, as extractors: [`Gateway`] (a hearth API key)
//! and [`Daemon`] (the sandbox's own token, and a sandbox that runs).

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use super::{ComputeState, Refused};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// A gateway request with an accepted `X-ComputeSDK-API-Key`.
#[derive(Debug)]
pub(super) struct Gateway {
    /// The `Host` the client reached this listener by; daemon URLs are built on it.
    pub host: String,
}

impl FromRequestParts<ComputeState> for Gateway {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &ComputeState) -> Result<Self, Refused> {
        if let Some(keys) = &state.keys {
            if !keys.accepts(header(&parts.headers, "x-computesdk-api-key")) {
                return Err(Refused(
                    StatusCode::UNAUTHORIZED,
                    "send a hearth API key as X-ComputeSDK-API-Key".to_owned(),
                ));
            }
        }
        Ok(Gateway {
            host: header(&parts.headers, "host").to_owned(),
        })
    }
}

/// A daemon request (`/sandboxes/{id}/…`) with that sandbox's token, for a sandbox that
/// runs; it holds the sandbox id.
#[derive(Debug)]
pub(super) struct Daemon(pub String);

impl FromRequestParts<ComputeState> for Daemon {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &ComputeState) -> Result<Self, Refused> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| Refused(StatusCode::BAD_REQUEST, e.body_text()))?;
        let Some(id) = params
            .iter()
            .find_map(|(name, value)| (name == "id").then(|| value.to_owned()))
        else {
            return Err(Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "a daemon route without a sandbox id".to_owned(),
            ));
        };
        // The client sends `Authorization: Bearer`, except on its WebSocket, which carries the
        // token as `?token=` (a browser WebSocket cannot set headers).
        let token = header(&parts.headers, "authorization")
            .strip_prefix("Bearer ")
            .map(str::to_owned)
            .or_else(|| query_token(parts.uri.query().unwrap_or_default()))
            .unwrap_or_default();
        if !state.tokens.accepts(&id, &token) {
            return Err(Refused(
                StatusCode::UNAUTHORIZED,
                format!("sandbox `{id}`: a valid bearer token is needed"),
            ));
        }
        running(state, &id)?;
        Ok(Daemon(id))
    }
}

fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// The sandbox `id` (exactly, not a name or prefix), if it runs. One that does not has what
/// this server kept for it dropped.
pub(super) fn running(
    state: &ComputeState,
    id: &str,
) -> Result<hearth_engine::SandboxRecord, Refused> {
    match state.app.engine.running(id) {
        Ok(record) if record.id == id => Ok(record),
        _ => {
            state.live.forget(id);
            Err(Refused(
                StatusCode::NOT_FOUND,
                format!("sandbox `{id}` not found"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_the_socket_token_comes_from_the_query() {
        assert_eq!(
            query_token("token=a%2Bb&protocol=binary").as_deref(),
            Some("a+b")
        );
        assert_eq!(query_token("protocol=binary"), None);
    }
}
