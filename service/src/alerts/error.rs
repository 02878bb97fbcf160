//! Errors of the alert subsystem at its boundary.

use std::path::PathBuf;

/// Why the alert outbox or the webhook client could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("opening the alert outbox at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("alert outbox at {}: {op} failed: {source}", path.display())]
    Sled {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("alert outbox at {}: event {seq} is not valid JSON: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding alert event {seq}: {source}")]
    Encode {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("creating the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why one delivery attempt failed. Never carries the webhook URL (it may hold
/// a token): reqwest errors are stripped of it.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the receiver answered HTTP {status}")]
    Status { status: u16 },
    #[error("timed out")]
    Timeout,
    #[error("request failed: {0}")]
    Request(#[source] reqwest::Error),
    #[error("event {seq} is no longer in the outbox")]
    Missing { seq: u64 },
    #[error(transparent)]
    Outbox(#[from] AlertsError),
    #[error("rendering event {seq}: {source}")]
    Render {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
}

impl DeliveryError {
    /// The error and its causes on one line (what the status API shows).
    pub fn chain(&self) -> String {
        crate::sys::error_chain(self)
    }
}
