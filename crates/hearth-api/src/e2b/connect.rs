//! The Connect protocol as envd's clients speak it: JSON, no compression. Unary calls are a
//! JSON body both ways; server streams are envelopes (`flags: u8`, `len: u32` big-endian, JSON)
//! ending with an end-of-stream envelope that carries the error, if any. Written here because
//! the Rust Connect crates generate code from `.proto` files and speak protobuf binary, while
//! envd's SDKs send JSON and only four small message shapes matter.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::ApiError;

/// An envelope that carries a message.
const MESSAGE: u8 = 0x00;
/// The envelope flag of a compressed message, which these clients never send.
const COMPRESSED: u8 = 0x01;
/// The last envelope of a stream.
const END_STREAM: u8 = 0x02;
/// Largest message a client may send: requests are paths, commands and stdin chunks.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// A Connect error: its code names it on the wire, and the HTTP status of a unary answer.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    ResourceExhausted,
    Unimplemented,
    Internal,
    Unavailable,
    DeadlineExceeded,
}

impl Code {
    fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::Unauthenticated => "unauthenticated",
            Code::FailedPrecondition => "failed_precondition",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// The HTTP status Connect gives a unary error of this code.
    fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        RpcError::new(Code::InvalidArgument, message)
    }

    fn into_body(self) -> Value {
        json!({ "code": self.code.name(), "message": self.message })
    }
}

/// An engine or API failure in Connect's terms, by the status hearth's own API gives it.
impl From<ApiError> for RpcError {
    fn from(error: ApiError) -> Self {
        let code = match error.status() {
            StatusCode::BAD_REQUEST => Code::InvalidArgument,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::PAYLOAD_TOO_LARGE => Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => Code::Unavailable,
            _ => Code::Internal,
        };
        RpcError::new(code, error.detail().message.clone())
    }
}

impl From<hearth_engine::EngineError> for RpcError {
    fn from(error: hearth_engine::EngineError) -> Self {
        ApiError::from(error).into()
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        (self.code.status(), axum::Json(self.into_body())).into_response()
    }
}

/// Whether a request is a streaming call (`application/connect+json`) rather than unary.
pub fn is_streaming(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/connect+"))
}

/// The request message of a unary or server-streaming call: a plain JSON body, or for a
/// stream its one enveloped message.
pub fn request<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, RpcError> {
    let json = if is_streaming(headers) {
        let (flags, message, rest) = split_envelope(body)?
            .ok_or_else(|| RpcError::invalid("the stream holds no request message"))?;
        if flags & END_STREAM != 0 || !rest.is_empty() {
            return Err(RpcError::invalid("expected exactly one request message"));
        }
        message
    } else {
        body
    };
    parse(json)
}

pub fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, RpcError> {
    let json = if json.is_empty() { b"{}" } else { json };
    serde_json::from_slice(json).map_err(|e| RpcError::invalid(format!("bad request message: {e}")))
}

/// An envelope's flags, its message, and the bytes after it.
pub type Split<'a> = (u8, &'a [u8], &'a [u8]);

/// Splits the first envelope off `data`: its flags, its message and the bytes after it.
/// `None` when `data` does not hold a whole envelope yet.
pub fn split_envelope(data: &[u8]) -> Result<Option<Split<'_>>, RpcError> {
    let Some(header) = data.get(..5) else {
        return Ok(None);
    };
    let flags = header[0];
    if flags & COMPRESSED != 0 {
        return Err(RpcError::invalid("compressed messages are not accepted"));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(RpcError::new(
            Code::ResourceExhausted,
            format!("a message of {len} bytes is over the limit of {MAX_MESSAGE}"),
        ));
    }
    Ok(data
        .get(5..5 + len)
        .map(|message| (flags, message, &data[5 + len..])))
}

/// A unary answer.
pub fn unary(message: &impl Serialize) -> Response {
    axum::Json(message).into_response()
}

fn envelope(flags: u8, json: &Value) -> Bytes {
    let payload = serde_json::to_vec(json).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

/// The sending half of a server stream.
#[derive(Debug, Clone)]
pub struct StreamSender {
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl StreamSender {
    /// Sends one message; false once the client has gone.
    pub async fn send(&self, message: &Value) -> bool {
        self.tx.send(envelope(MESSAGE, message)).await.is_ok()
    }

    /// Ends the stream, with an error or without.
    pub async fn end(self, error: Option<RpcError>) {
        let trailer = match error {
            Some(error) => json!({ "error": error.into_body() }),
            None => json!({}),
        };
        let _ = self.tx.send(envelope(END_STREAM, &trailer)).await;
    }

    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// A server stream: the response to return now, and the sender to fill it from a task.
pub fn server_stream() -> (Response, StreamSender) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let response = (
        [(CONTENT_TYPE, "application/connect+json")],
        Body::from_stream(body),
    )
        .into_response();
    (response, StreamSender { tx })
}

/// A stream that ends at once with `error`: Connect carries a streaming call's errors in its
/// last envelope, with status 200.
pub fn stream_error(error: RpcError) -> Response {
    let trailer = json!({ "error": error.into_body() });
    (
        [(CONTENT_TYPE, "application/connect+json")],
        envelope(END_STREAM, &trailer),
    )
        .into_response()
}

/// The caller's deadline (`Connect-Timeout-Ms`), if it set one.
pub fn deadline(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

/// How often the caller asked for keepalive events (`Keepalive-Ping-Interval`, seconds).
pub fn keepalive_interval(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&secs| secs > 0)
        .map(Duration::from_secs)
}

/// Reads a client stream's messages as they arrive, each parsed as `T`; ends at the
/// end-of-stream envelope or the end of the body.
pub fn client_stream<T: DeserializeOwned + Send + 'static>(
    body: Body,
) -> tokio::sync::mpsc::Receiver<Result<T, RpcError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            loop {
                let parsed = match split_envelope(&buffer) {
                    Ok(Some((flags, message, rest))) => {
                        let consumed = buffer.len() - rest.len();
                        let item = (flags & END_STREAM == 0).then(|| parse::<T>(message));
                        Some((consumed, item))
                    }
                    Ok(None) => None,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                match parsed {
                    None => break,
                    Some((_, None)) => return,
                    Some((consumed, Some(item))) => {
                        buffer.drain(..consumed);
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                }
            }
            match data.next().await {
                Some(Ok(chunk)) => {
                    if buffer.len() + chunk.len() > MAX_MESSAGE + 5 {
                        let _ = tx
                            .send(Err(RpcError::new(
                                Code::ResourceExhausted,
                                "a client stream message is over the limit",
                            )))
                            .await;
                        return;
                    }
                    buffer.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(Err(RpcError::invalid(format!("reading the stream: {e}"))))
                        .await;
                    return;
                }
                None => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_envelopes_split_at_their_length_and_wait_for_the_rest() {
        let whole = envelope(MESSAGE, &json!({"a": 1}));
        let mut data = whole.to_vec();
        data.extend_from_slice(&envelope(END_STREAM, &json!({})));
        let (flags, message, rest) = split_envelope(&data).unwrap().unwrap();
        assert_eq!((flags, message), (MESSAGE, &br#"{"a":1}"#[..]));
        assert_eq!(rest[0], END_STREAM);
        assert!(split_envelope(&whole[..whole.len() - 1]).unwrap().is_none());
        assert!(split_envelope(&whole[..3]).unwrap().is_none());
    }

    #[test]
    fn test_oversized_and_compressed_envelopes_are_refused() {
        let mut huge = vec![MESSAGE];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            split_envelope(&huge).unwrap_err().code,
            Code::ResourceExhausted
        );
        let compressed = envelope(COMPRESSED, &json!({}));
        assert_eq!(
            split_envelope(&compressed).unwrap_err().code,
            Code::InvalidArgument
        );
    }

    #[test]
    fn test_a_streaming_request_is_its_one_enveloped_message() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "application/connect+json".parse().unwrap());
        let body = envelope(MESSAGE, &json!({"path": "/x"}));
        let value: Value = request(&headers, &body).unwrap();
        assert_eq!(value["path"], "/x");
        let unary_headers = HeaderMap::new();
        let value: Value = request(&unary_headers, br#"{"path":"/y"}"#).unwrap();
        assert_eq!(value["path"], "/y");
    }
}
