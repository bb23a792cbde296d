//! A small HTTP/1.1 client for Firecracker's API socket: one typed request per call, each on a
//! connection of its own (a Unix socket connect costs nothing, and no request ever inherits a
//! half-read answer from an earlier one that timed out), under a deadline, with its answer
//! bounded.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

/// Largest answer read from Firecracker: its bodies are small JSON documents (the largest,
/// `GET /vm/config`, is a few KiB); anything bigger is not Firecracker talking.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Deadline of a configuration request: Firecracker answers them from memory.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest part of an unexpected body quoted in an error.
const QUOTED_BODY: usize = 512;

/// One request of Firecracker's API, as its swagger document (`firecracker.yaml`) defines it.
pub trait Request: Serialize {
    const METHOD: Method;

    /// The request's path, such as `/drives/base`.
    fn path(&self) -> Cow<'static, str>;

    /// How long Firecracker may take to answer.
    fn timeout(&self) -> Duration {
        REQUEST_TIMEOUT
    }
}

/// Why a request to Firecracker failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("failed to connect to Firecracker's API socket `{}`", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{request}` to Firecracker failed")]
    Http {
        request: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("Firecracker closed its API connection before answering `{request}`")]
    Closed { request: String },
    #[error("Firecracker did not answer `{request}` within {timeout:?}")]
    Timeout { request: String, timeout: Duration },
    /// Firecracker's own error body, `{"fault_message": "..."}`.
    #[error("Firecracker refused `{request}` ({status}): {message}")]
    Fault {
        request: String,
        status: StatusCode,
        message: String,
    },
    #[error("Firecracker answered `{request}` with {status} and a body that is not its error document: {body:?}")]
    Unexpected {
        request: String,
        status: StatusCode,
        body: String,
    },
    #[error("Firecracker's answer to `{request}` is larger than {MAX_RESPONSE_BODY} bytes")]
    TooLarge { request: String },
    #[error("Firecracker's answer to `{request}` is not the JSON document expected")]
    Decode {
        request: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to encode `{request}` as JSON (a path that is not UTF-8?)")]
    Encode {
        request: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ApiError {
    /// Firecracker's fault message, when it answered with one.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            ApiError::Fault { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// The error body of every failed request.
#[derive(Debug, Deserialize)]
struct Fault {
    fault_message: String,
}

/// A client of one Firecracker's API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ApiClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request`; Firecracker answers a successful one with 204 and no body.
    pub async fn send<R: Request>(&self, request: &R) -> Result<(), ApiError> {
        let path = request.path();
        let name = format!("{} {path}", R::METHOD);
        let body = serde_json::to_vec(request).map_err(|source| ApiError::Encode {
            request: name.clone(),
            source,
        })?;
        self.exchange(R::METHOD, &path, Some(body), request.timeout())
            .await
            .map(drop)
    }

    /// `GET path`, decoding the answer as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let body = self
            .exchange(Method::GET, path, None, REQUEST_TIMEOUT)
            .await?;
        serde_json::from_slice(&body).map_err(|source| ApiError::Decode {
            request: format!("GET {path}"),
            source,
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Bytes, ApiError> {
        let request = format!("{method} {path}");
        let answer = tokio::time::timeout(timeout, self.round_trip(&request, method, path, body));
        let (status, body) = answer.await.map_err(|_| ApiError::Timeout {
            request: request.clone(),
            timeout,
        })??;
        if status.is_success() {
            return Ok(body);
        }
        Err(error_from(request, status, &body))
    }

    async fn round_trip(
        &self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let http = |source: Box<dyn std::error::Error + Send + Sync>| ApiError::Http {
            request: name.to_owned(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.into()))?;
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http(e.into()))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| http(e.into()))?;
            let status = response.status();
            match Limited::new(response.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await
            {
                Ok(collected) => Ok((status, collected.to_bytes())),
                Err(e) if e.is::<LengthLimitError>() => Err(ApiError::TooLarge {
                    request: name.to_owned(),
                }),
                Err(e) => Err(http(e)),
            }
        };
        // The connection future moves the bytes; it only ends first when Firecracker hangs up
        // (or breaks the protocol) before its answer is complete.
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            biased;
            answer = exchange => answer,
            ended = &mut connection => Err(match ended {
                Ok(()) => ApiError::Closed { request: name.to_owned() },
                Err(e) => http(e.into()),
            }),
        }
    }
}

/// Turns a failed answer into its error: Firecracker's fault message when the body is its
/// error document, the body itself (shortened) otherwise.
fn error_from(request: String, status: StatusCode, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<Fault>(body) {
        Ok(fault) => ApiError::Fault {
            request,
            status,
            message: fault.fault_message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let body = match text.char_indices().nth(QUOTED_BODY) {
                Some((end, _)) => format!("{}…", &text[..end]),
                None => text.into_owned(),
            };
            ApiError::Unexpected {
                request,
                status,
                body,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_fault_body_becomes_a_typed_error_with_its_message() {
        let body = br#"{"fault_message":"Machine config error: The number of vCPUs must be greater than 0"}"#;
        let error = error_from(
            "PUT /machine-config".to_owned(),
            StatusCode::BAD_REQUEST,
            body,
        );
        assert_eq!(
            error.fault_message(),
            Some("Machine config error: The number of vCPUs must be greater than 0")
        );
        assert_eq!(
            error.to_string(),
            "Firecracker refused `PUT /machine-config` (400 Bad Request): Machine config error: \
             The number of vCPUs must be greater than 0"
        );
    }

    #[test]
    fn test_a_body_that_is_not_a_fault_is_quoted_shortened() {
        let body = "x".repeat(QUOTED_BODY + 10);
        let error = error_from(
            "GET /".to_owned(),
            StatusCode::INTERNAL_SERVER_ERROR,
            body.as_bytes(),
        );
        let ApiError::Unexpected { status, body, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body.chars().count(), QUOTED_BODY + 1);
        assert!(error.fault_message().is_none());
    }
}
