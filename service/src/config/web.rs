//! The validated `[web]` section: where the status pages, JSON API and
//! /metrics listen, the bearer tokens that guard them, and the request-body
//! limit. Built by the config resolver; read by `hopwatch run` when it starts
//! the web server (see [`crate::webapi`]).

use std::net::SocketAddr;

use hopwatch_web::Token;

use super::defaults;

/// `[web]`
#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    /// Serve the web UI, API and metrics at all.
    pub enabled: bool,
    /// Loopback by default: exposing the API is a decision, not an accident.
    pub listen: SocketAddr,
    /// When set, reads (API, live streams, /metrics) need this bearer token
    /// (or the write token).
    pub read_token: Option<Token>,
    /// Writes (pause, resume, add, remove) need this bearer token; without
    /// one, writes are refused.
    pub write_token: Option<Token>,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: u64,
    /// Export a latency histogram per hop (per target is always exported).
    pub hop_histograms: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: defaults::WEB_LISTEN,
            read_token: None,
            write_token: None,
            max_body_bytes: defaults::WEB_MAX_BODY_BYTES,
            hop_histograms: true,
        }
    }
}
