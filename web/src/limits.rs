//! The web layer's defences against abuse and accident: the deadline every
//! request gets (live streams exempt), the bound on history reads running at
//! once, the cap on open live streams, and the Host-header check that keeps a
//! web page in the operator's browser from reading the API through DNS
//! rebinding.
//!
//! The read bound and the stream cap are semaphores in [`crate::AppState`];
//! this module has the middleware and the policy types they are built from.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Which `Host` headers the server answers.
///
/// A DNS-rebinding page makes the browser send its own name (`evil.example`)
/// to our address, so a server that answers only to names it knows cannot be
/// read that way. IP literals are always accepted: a browser sends one only
/// when the page's own origin is that address, which rebinding cannot fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    enforce: bool,
    /// Lowercase, without a trailing dot.
    allowed: Vec<String>,
}

impl Default for HostCheck {
    /// Enforced with no extra names: right for the default loopback listener.
    fn default() -> Self {
        HostCheck {
            enforce: true,
            allowed: Vec::new(),
        }
    }
}

impl HostCheck {
    /// The check for a server listening on `listen`: always enforced on
    /// loopback (where rebinding is the threat), elsewhere only when names
    /// are configured, since a server on the network may be reached by names
    /// the daemon cannot know about.
    pub fn for_listen(listen: SocketAddr, allowed: &[String]) -> HostCheck {
        HostCheck {
            enforce: listen.ip().is_loopback() || !allowed.is_empty(),
            allowed: allowed.iter().map(|name| normalise(name)).collect(),
        }
    }

    /// Every `Host` accepted.
    pub fn off() -> HostCheck {
        HostCheck {
            enforce: false,
            allowed: Vec::new(),
        }
    }

    pub fn enforced(&self) -> bool {
        self.enforce
    }

    /// Whether a request with this `Host` header value (port optional) is served.
    pub fn allows(&self, host: &str) -> bool {
        if !self.enforce {
            return true;
        }
        let name = normalise(strip_port(host));
        name == "localhost" || is_ip_literal(&name) || self.allowed.contains(&name)
    }
}

fn normalise(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// `example:9470` → `example`, `[::1]:9470` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.split(':').next().unwrap_or(host)
    }
}

fn is_ip_literal(name: &str) -> bool {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    name.parse::<Ipv4Addr>().is_ok()
}

/// Refuses requests addressed to a name this server does not answer to
/// (421). A request without any host (HTTP/1.0) is served: browsers always
/// send one, so it cannot come from a rebinding page.
pub(crate) async fn check_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let hosts = &state.settings().hosts;
    if hosts.enforced() {
        let given = match request.headers().get(header::HOST) {
            Some(value) => Some(value.to_str().unwrap_or("(not text)")),
            None => request.uri().authority().map(|a| a.as_str()),
        };
        if let Some(host) = given {
            if !hosts.allows(host) {
                return ApiError::MisdirectedHost {
                    host: host.chars().take(100).collect(),
                }
                .into_response();
            }
        }
    }
    next.run(request).await
}

/// Live streams stay open for as long as the client watches; they have their
/// own cap instead of a deadline.
pub(crate) fn is_live(path: &str) -> bool {
    path == "/api/v1/live" || (path.starts_with("/api/v1/targets/") && path.ends_with("/live"))
}

/// Answers 503 when a request is not answered within `request_timeout`, so a
/// slow store cannot pile up connections. The read itself may still finish
/// on the blocking pool; it keeps its read slot until then, so the bound on
/// concurrent reads stays true.
pub(crate) async fn deadline(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if is_live(request.uri().path()) {
        return next.run(request).await;
    }
    let after = state.settings().request_timeout;
    let path: String = request.uri().path().chars().take(200).collect();
    match tokio::time::timeout(after, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(path, ?after, "request timed out");
            ApiError::Timeout { after }.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_answers_only_to_local_names_ip_literals_and_the_allow_list() {
        let check = HostCheck::for_listen(
            "127.0.0.1:9470".parse().unwrap(),
            &["Hopwatch.Lab.Example.".to_owned()],
        );
        for ok in [
            "localhost",
            "localhost:9470",
            "LOCALHOST.",
            "127.0.0.1:9470",
            "[::1]:9470",
            "[::1]",
            "192.0.2.7",
            "hopwatch.lab.example:80",
        ] {
            assert!(check.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:9470",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1",
            "",
        ] {
            assert!(!check.allows(refused), "{refused}");
        }
    }

    #[test]
    fn other_listeners_check_only_with_an_allow_list() {
        let any: SocketAddr = "0.0.0.0:9470".parse().unwrap();
        assert!(HostCheck::for_listen(any, &[]).allows("whatever.example"));
        let listed = HostCheck::for_listen(any, &["mon.example".to_owned()]);
        assert!(listed.allows("mon.example:9470"));
        assert!(!listed.allows("whatever.example"));
        assert!(HostCheck::for_listen("[::1]:1".parse().unwrap(), &[]).enforced());
    }

    #[test]
    fn only_the_live_streams_are_exempt_from_the_deadline() {
        assert!(is_live("/api/v1/live"));
        assert!(is_live("/api/v1/targets/alpha/live"));
        assert!(!is_live("/api/v1/targets/alpha/series"));
        assert!(!is_live("/api/v1/livex"));
    }
}
