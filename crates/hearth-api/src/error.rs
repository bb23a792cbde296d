//! The one error body every route answers with, `{"error":{"code","message"}}`, and the status
//! each failure gets: engine errors by their [`ErrorKind`], malformed requests by what axum
//! found wrong with them.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hearth_engine::{error_chain, EngineError, ErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

/// A failed request: its status and what the body says.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `conflict`, `invalid_input`, `permission_denied`,
    /// `unavailable`, `sandbox`, `internal`, `unauthorized`, `payload_too_large`,
    /// `unsupported_media_type`, `method_not_allowed`.
    pub code: String,
    /// The failure and its causes, for people.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// A typed error from a library the request's values are parsed with.
    pub fn invalid_value(error: &dyn std::error::Error) -> Self {
        ApiError::invalid_input(error_chain(error))
    }

    /// `value` of request field `field` when it lies in `range`.
    pub fn in_range<T: PartialOrd + std::fmt::Display>(
        field: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, Self> {
        if range.contains(&value) {
            return Ok(value);
        }
        Err(ApiError::invalid_input(format!(
            "{field} must be {} to {}, not {value}",
            range.start(),
            range.end()
        )))
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is needed: send `Authorization: Bearer KEY`",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &ErrorDetail {
        &self.detail
    }

    /// An error from a rejected request part, keeping axum's status (400, 413, 415, 422).
    fn rejected(status: StatusCode, message: String) -> Self {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_input",
        };
        // serde's complaints (unknown fields, wrong types) are the caller's mistake, whatever
        // status axum picked for them.
        let status = match status {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        ApiError::new(status, code, message)
    }
}

/// The status an engine failure gets.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // The guest failed, not the server: like a proxy whose upstream failed.
        ErrorKind::Sandbox => StatusCode::BAD_GATEWAY,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let kind = error.kind();
        if kind == ErrorKind::Internal {
            tracing::error!(error = %error_chain(&error), "request failed");
        }
        let code = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "internal".to_owned());
        ApiError::new(status_of(kind), &code, error_chain(&error))
    }
}

macro_rules! from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for ApiError {
            fn from(rejection: $rejection) -> Self {
                ApiError::rejected(rejection.status(), rejection.body_text())
            }
        }
    )*};
}

from_rejection!(JsonRejection, BytesRejection, PathRejection, QueryRejection);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.detail })).into_response()
    }
}
