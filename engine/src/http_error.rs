//! The one error type of the HTTP edge and its JSON bodies.
//!
//! Owns: status codes and bodies for every refusal. 4xx bodies say precisely what was wrong;
//! the 500 body is generic and carries the request id so a report can be matched to the log.
//! Must not log: the gateway logs with context it has and this type lacks.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Denied;

/// A request the engine refuses or could not handle.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No endpoint at this path.
    #[error("no endpoint at {0}")]
    NotFound(String),
    /// The endpoint does not take this method.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// Methods it takes.
        allow: &'static str,
    },
    /// A retired endpoint.
    #[error("service deprecated")]
    Deprecated {
        /// What callers are told.
        message: String,
        /// Where to go instead.
        migration: String,
    },
    /// Body over the limit.
    #[error("body over {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Authentication failed.
    #[error("{0}")]
    Forbidden(Denied),
    /// The GET handshake token did not match.
    #[error("verification failed")]
    VerificationFailed,
    /// Not `application/json`.
    #[error("unsupported content type")]
    UnsupportedContentType(String),
    /// The body is not valid JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is not the expected shape.
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// A forwarded SMS no pattern reads; it is kept for review.
    #[error("unparsed SMS {sms_id}")]
    UnparsedSms {
        /// Where it is kept.
        sms_id: i64,
    },
    /// Over the rate limit.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a request fits.
        retry_after: u64,
    },
    /// The client did not send in time (`what`: its headers or its body).
    #[error("{what} not received in time")]
    Timeout {
        /// `headers` or `body`.
        what: &'static str,
    },
    /// The request line and headers are over the limit.
    #[error("headers over {limit} bytes")]
    HeadersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not HTTP/1.1 the server can read.
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    /// Too many connections or too much body memory in use: try again shortly.
    #[error("overloaded")]
    Overloaded {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Postgres cannot be reached: nothing could be recorded, so nothing is acknowledged.
    #[error("database unavailable")]
    DatabaseUnavailable {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Anything else.
    #[error("internal error: {message}")]
    Internal {
        /// For the log only.
        message: String,
        /// Echoed to the caller.
        request_id: String,
    },
}

impl ApiError {
    /// The `error` code of the body: a bounded set, also the reason refusals are counted by.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Deprecated { .. } => "service_deprecated",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Forbidden(denied) => denied.code(),
            ApiError::VerificationFailed => "verification_failed",
            ApiError::UnsupportedContentType(_) => "unsupported_content_type",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidPayload(_) => "invalid_payload",
            ApiError::UnparsedSms { .. } => "unparsed_sms",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Timeout { .. } => "request_timeout",
            ApiError::HeadersTooLarge { .. } => "headers_too_large",
            ApiError::MalformedRequest(_) => "malformed_request",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::DatabaseUnavailable { .. } => "database_unavailable",
            ApiError::Internal { .. } => "internal_error",
        }
    }
}

impl ApiError {
    /// The status and JSON body of the answer.
    pub fn status_and_body(&self) -> (StatusCode, serde_json::Value) {
        match self {
            ApiError::NotFound(path) => (
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "message": format!("no endpoint at {path}")}),
            ),
            ApiError::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed", "message": format!("this endpoint accepts {allow}")}),
            ),
            ApiError::Deprecated { message, migration } => (
                StatusCode::GONE,
                json!({"error": "service_deprecated", "message": message, "migration": migration}),
            ),
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "payload_too_large", "message": format!("the body is larger than {limit} bytes")}),
            ),
            ApiError::Forbidden(denied) => (
                StatusCode::FORBIDDEN,
                json!({"error": denied.code(), "message": denied.to_string()}),
            ),
            ApiError::VerificationFailed => (
                StatusCode::FORBIDDEN,
                json!({"error": "verification_failed", "message": "hub.mode or hub.verify_token is wrong"}),
            ),
            ApiError::UnsupportedContentType(got) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "unsupported_content_type", "message": format!("expected application/json, got {got}")}),
            ),
            ApiError::MalformedJson(detail) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "malformed_json", "message": detail}),
            ),
            ApiError::InvalidPayload(detail) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_payload", "message": detail}),
            ),
            ApiError::UnparsedSms { sms_id } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "unparsed_sms", "message": "no SMS pattern reads this text; it is kept for review", "smsId": sms_id}),
            ),
            ApiError::RateLimited { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "rate_limited", "message": format!("too many requests; retry in {retry_after} s"), "retryAfter": retry_after}),
            ),
            ApiError::Timeout { what } => (
                StatusCode::REQUEST_TIMEOUT,
                json!({"error": "request_timeout", "message": format!("the request's {what} did not arrive in time")}),
            ),
            ApiError::HeadersTooLarge { limit } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                json!({"error": "headers_too_large", "message": format!("the request line and headers are larger than {limit} bytes")}),
            ),
            ApiError::MalformedRequest(detail) => (
                StatusCode::BAD_REQUEST,
                json!({"error": "malformed_request", "message": detail}),
            ),
            ApiError::Overloaded { retry_after } => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "overloaded", "message": format!("the server is at capacity; retry in {retry_after} s"), "retryAfter": retry_after}),
            ),
            ApiError::DatabaseUnavailable { retry_after } => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "database_unavailable", "message": format!("the database is unreachable and nothing was recorded; retry in {retry_after} s"), "retryAfter": retry_after}),
            ),
            ApiError::Internal { request_id, .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal_error", "message": "Something went wrong on our side.", "requestId": request_id}),
            ),
        }
    }

    /// The whole answer as HTTP/1.1 bytes, closing the connection: for refusals made before
    /// there is a request for the router to answer (see [`crate::connections`]).
    pub fn to_http1_close(&self) -> Vec<u8> {
        let (status, body) = self.status_and_body();
        let body = body.to_string();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
            uuid::Uuid::new_v4(),
        );
        if let ApiError::Overloaded { retry_after }
        | ApiError::DatabaseUnavailable { retry_after } = self
        {
            head.push_str(&format!("retry-after: {retry_after}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            ApiError::MethodNotAllowed { allow } => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RateLimited { retry_after }
            | ApiError::Overloaded { retry_after }
            | ApiError::DatabaseUnavailable { retry_after } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        response
    }
}
