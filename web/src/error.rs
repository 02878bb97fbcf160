//! [`ApiError`]: the one error type of every endpoint. Clients get a JSON body
//! `{"error": "<message>"}` with the matching status; server-side failures
//! (5xx) are logged with their cause and shown to clients only as a generic
//! message, so paths and internals never leak. Refusals under load (503,
//! 429) carry a `Retry-After` header saying when to try again.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::dto::EntryError;
use crate::model::{ConfigReadError, ControlError, ReadError, Source};

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
    /// Entries of a list of targets are invalid; the body lists each one
    /// (`errors`), and nothing was added.
    #[error("{}", entries_message(errors))]
    InvalidEntries { errors: Vec<EntryError> },
    #[error("{reason}")]
    NoConfig { reason: String },
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
    /// `branch=N` names a branch the target does not have; the message
    /// names the parameter and lists the branches it has.
    #[error("invalid query parameter `branch`: {reason}")]
    UnknownBranch { reason: String },
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
    #[error(
        "the request took longer than {}; try again shortly or ask for a shorter range",
        humantime::format_duration(*after)
    )]
    Timeout { after: std::time::Duration },
    #[error("the server is busy with other history reads; try again shortly")]
    Busy,
    #[error("too many live streams are open (at most {limit}); close one or try again later")]
    TooManyStreams { limit: usize },
    #[error(
        "this server does not answer to the host {host:?}: to open it by that name, \
         add the name to [web] allowed_hosts in the config"
    )]
    MisdirectedHost { host: String },
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
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [EntryError]>,
}

/// "2 of the targets are invalid; nothing was added: entry 0, `interval`: ...; entry 3, ..."
fn entries_message(errors: &[EntryError]) -> String {
    let each: Vec<String> = errors
        .iter()
        .map(|e| match &e.field {
            Some(field) => format!("entry {}, `{field}`: {}", e.index, e.reason),
            None => format!("entry {}: {}", e.index, e.reason),
        })
        .collect();
    format!(
        "{} of the targets {} invalid; nothing was added: {}",
        errors.len(),
        if errors.len() == 1 { "is" } else { "are" },
        each.join("; ")
    )
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
            | ApiError::InvalidField { .. }
            | ApiError::InvalidEntries { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidBody { status, .. } => *status,
            ApiError::MissingToken | ApiError::BadToken => StatusCode::UNAUTHORIZED,
            ApiError::WritesDisabled => StatusCode::FORBIDDEN,
            ApiError::UnknownTarget { .. }
            | ApiError::UnknownPeer { .. }
            | ApiError::UnknownBranch { .. }
            | ApiError::NoRoute { .. }
            | ApiError::NoConfig { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::ShuttingDown | ApiError::Timeout { .. } | ApiError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::TooManyStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MisdirectedHost { .. } => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Internal { status, .. } => *status,
        }
    }
}

impl ApiError {
    /// Seconds a client should wait before trying again, for refusals that
    /// are about load rather than the request.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            // A busy slot frees within a read's time; a timed-out read may
            // still be running, so give the store a little longer.
            ApiError::Busy => Some(1),
            ApiError::Timeout { .. } => Some(5),
            // Streams close when their pages do, which is rarely soon.
            ApiError::TooManyStreams { .. } => Some(10),
            _ => None,
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
        let errors = match &self {
            ApiError::InvalidEntries { errors } => Some(errors.as_slice()),
            _ => None,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: &message,
                errors,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
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
            err @ ReadError::NotMultipath { .. } => ApiError::param("branch", err.to_string()),
            err @ ReadError::UnknownBranch { .. } => ApiError::UnknownBranch {
                reason: err.to_string(),
            },
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
            ControlError::Entries { errors } => ApiError::InvalidEntries { errors },
            ControlError::ShuttingDown => ApiError::ShuttingDown,
            err @ ControlError::Persist { .. } => {
                ApiError::internal("saving a change to the config", err)
            }
        }
    }
}

impl From<ConfigReadError> for ApiError {
    fn from(err: ConfigReadError) -> ApiError {
        match err {
            err @ ConfigReadError::Unavailable => ApiError::NoConfig {
                reason: err.to_string(),
            },
            ConfigReadError::Conflict { reason } => ApiError::Conflict { reason },
            ConfigReadError::Failed { source } => ApiError::Internal {
                what: "reading the configuration",
                source,
                status: StatusCode::INTERNAL_SERVER_ERROR,
            },
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
