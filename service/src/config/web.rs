//! The validated `[web]` section: where the status pages, JSON API and
//! /metrics listen, the bearer tokens that guard them, the request-body
//! limit, and the limits that keep the API up under abuse (request deadline,
//! concurrent history reads and live streams, the names it answers to). Built by the config resolver; read by `hopwatch run` when it starts
//! the web server (see [`crate::webapi`]).

use std::net::SocketAddr;
use std::time::Duration;

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
    /// Requests not answered within this get 503 (live streams exempt).
    pub request_timeout: Duration,
    /// History reads running at once; more wait briefly, then get 503.
    pub max_concurrent_reads: u32,
    /// Live streams open at once; more get 429.
    pub max_live_streams: u32,
    /// Host names answered besides localhost and IP literals: always
    /// checked on loopback, elsewhere only when this is not empty.
    /// Lowercase, without port or trailing dot.
    pub allowed_hosts: Vec<String>,
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
            request_timeout: defaults::WEB_REQUEST_TIMEOUT,
            max_concurrent_reads: defaults::WEB_MAX_CONCURRENT_READS,
            max_live_streams: defaults::WEB_MAX_LIVE_STREAMS,
            allowed_hosts: Vec::new(),
        }
    }
}
