//! [`ApiError`]: the one error type of every endpoint. Clients get a JSON body
//! `{"error": "<message>"}` with the matching status; server-side failures
//! (5xx) are logged with their cause and shown to clients only as a generic
//! message, so paths and internals never leak.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::model::{ControlError, ReadError, Source};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid query parameter `{name}`: {reason}")]
    InvalidParam { name: &'static str, reason: String },
    #[error("invalid target name {given:?}: use 1 to 64 characters of letters, digits, '.', '_' and '-'")]
    InvalidTargetName { given: String },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("invalid request body: {reason}")]
    InvalidBody { status: StatusCode, reason: String },
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("this endpoint needs a bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("the bearer token is not valid for this endpoint")]
    BadToken,
    #[error(
        "changes are disabled on this server: set [web] write_token in the config \
         to allow pausing, resuming, adding and removing targets"
    )]
    WritesDisabled,
    #[error("no target named {id:?}")]
    UnknownTarget { id: String },
    #[error("no peer named {name:?}")]
    UnknownPeer { name: String },
    #[error("no such endpoint: {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("{reason}")]
    Conflict { reason: String },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// A server-side failure; `what` and `source` go to the log only.
    #[error("{what} failed: {source}")]
    Internal {
        what: &'static str,
        source: Source,
        status: StatusCode,
    },
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    pub fn param(name: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError::InvalidParam {
            name,
            reason: reason.into(),
        }
    }

    pub fn internal(what: &'static str, source: impl Into<Source>) -> ApiError {
        ApiError::Internal {
            what,
            source: source.into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParam { .. }
            | ApiError::InvalidTargetName { .. }
            | ApiError::InvalidRequest { .. }
            | ApiError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidBody { status, .. } => *status,
            ApiError::MissingToken | ApiError::BadToken => StatusCode::UNAUTHORIZED,
            ApiError::WritesDisabled => StatusCode::FORBIDDEN,
            ApiError::UnknownTarget { .. }
            | ApiError::UnknownPeer { .. }
            | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { status, .. } => *status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal { what, source, .. } => {
                tracing::error!(what, error = %source, "request failed");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "temporarily unavailable; try again shortly".to_owned()
                } else {
                    "internal error; the daemon's log has the details".to_owned()
                }
            }
            other => {
                tracing::debug!(status = status.as_u16(), error = %other, "request refused");
                other.to_string()
            }
        };
        let mut response = (status, Json(ErrorBody { error: &message })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hopwatch\""),
            );
        }
        response
    }
}

impl From<ReadError> for ApiError {
    fn from(err: ReadError) -> ApiError {
        match err {
            ReadError::Unavailable { source } => ApiError::Internal {
                what: "reading history (store unavailable)",
                source,
                status: StatusCode::SERVICE_UNAVAILABLE,
            },
            ReadError::Failed { what, source } => ApiError::Internal {
                what,
                source,
                status: StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> ApiError {
        match err {
            ControlError::UnknownTarget { id } => ApiError::UnknownTarget { id },
            ControlError::TargetExists { id } => ApiError::Conflict {
                reason: format!("a target named {id:?} already exists"),
            },
            ControlError::Invalid { field, reason } => ApiError::InvalidField { field, reason },
            ControlError::Conflict { reason } => ApiError::Conflict { reason },
            ControlError::ShuttingDown => ApiError::ShuttingDown,
            err @ ControlError::Persist { .. } => {
                ApiError::internal("saving a change to the config", err)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError::InvalidBody {
            status: rejection.status(),
            reason: rejection.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::InvalidRequest {
            reason: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::InvalidRequest {
            reason: rejection.body_text(),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> ApiError {
        ApiError::internal("a background task", err)
    }
}
