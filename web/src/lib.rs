//! hopwatch's web layer: the status pages (embedded UI), the versioned JSON API,
//! live updates as server-sent events, and Prometheus /metrics.
//!
//! The crate knows nothing about the probe engine or the store: it reads through
//! the [`ReadModel`] trait and writes through [`Control`], both defined here with
//! their own data types ([`dto`]), and the service implements them. So the router
//! is tested with fakes (`tests/`), and nothing here depends on the service.
//!
//! ```no_run
//! # async fn demo(read: std::sync::Arc<dyn hopwatch_web::ReadModel>) -> Result<(), hopwatch_web::ServeError> {
//! use hopwatch_web::{AppState, NoControl, WebServer, WebSettings};
//! let state = AppState::new(read, std::sync::Arc::new(NoControl), WebSettings::default());
//! let server = WebServer::bind("127.0.0.1:9470".parse().unwrap(), state).await?;
//! // ... later, on SIGTERM:
//! server.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

pub mod api;
pub mod assets;
pub mod auth;
pub mod downsample;
pub mod dto;
pub mod error;
pub mod export;
pub mod limits;
mod live;
pub mod metrics;
pub mod model;
pub mod peers;
pub mod query;
pub mod state;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use auth::{Token, Tokens};
pub use error::ApiError;
pub use limits::HostCheck;
pub use model::{
    BranchRef, ConfigReadError, Control, ControlError, FlowSelection, HopSelection, NoControl,
    ReadError, ReadModel,
};
pub use query::TimeRange;
pub use state::{AppState, WebSettings};

/// Which token a request needs.
enum Access {
    Open,
    Read,
    Write,
}

fn access(method: &Method, path: &str) -> Access {
    let api = path == "/api/v1" || path.starts_with("/api/");
    if api || path == "/metrics" {
        if method == Method::GET || method == Method::HEAD {
            Access::Read
        } else {
            Access::Write
        }
    } else {
        // The UI's files carry no data; health endpoints are for probes
        // that cannot send tokens.
        Access::Open
    }
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tokens = &state.settings().tokens;
    let checked = match access(request.method(), request.uri().path()) {
        Access::Open => Ok(()),
        Access::Read => tokens.check_read(request.headers()),
        Access::Write => tokens.check_write(request.headers()),
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

/// Headers every response carries.
async fn harden(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CSP),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().chars().take(200).collect(),
    }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().chars().take(200).collect(),
    }
}

/// The whole web surface: UI, API, live streams, health and metrics.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings().max_body_bytes;
    Router::new()
        .route("/", get(assets::index))
        .route("/targets/{id}", get(assets::index))
        .route("/peers/{name}", get(assets::index))
        .route("/assets/{name}", get(assets::file))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1", get(api::index))
        .route("/api/v1/service", get(api::service))
        .route("/api/v1/config", get(api::config))
        .route("/api/v1/live", get(api::overview_live))
        .route("/api/v1/sparklines", get(api::sparklines))
        .route("/api/v1/webhooks", get(api::webhooks))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/incidents", get(api::incidents))
        .route("/api/v1/peers", get(peers::peers))
        .route("/api/v1/peers/{name}", get(peers::peer))
        .route("/api/v1/peers/{name}/history", get(peers::history))
        .route("/api/v1/targets", get(api::targets).post(api::add_target))
        .route(
            "/api/v1/targets/{id}",
            get(api::target).delete(api::remove_target),
        )
        .route("/api/v1/targets/{id}/pause", post(api::pause))
        .route("/api/v1/targets/{id}/resume", post(api::resume))
        .route("/api/v1/targets/{id}/series", get(api::series))
        .route("/api/v1/targets/{id}/heatmap", get(api::heatmap))
        .route("/api/v1/targets/{id}/events", get(api::events))
        .route("/api/v1/targets/{id}/export", get(api::export))
        .route("/api/v1/targets/{id}/live", get(api::target_live))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::deadline,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        // Before the token check, so a rebinding page learns nothing, not
        // even whether a token is needed.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::check_host,
        ))
        .layer(middleware::from_fn(harden))
        .with_state(state)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running web server; [`WebServer::shutdown`] stops it gracefully.
pub struct WebServer {
    state: AppState,
    local_addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl WebServer {
    /// Listens on `addr` and serves [`router`] in a background task.
    pub async fn bind(addr: SocketAddr, state: AppState) -> Result<WebServer, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(WebServer::serve(listener, local_addr, state))
    }

    fn serve(listener: TcpListener, local_addr: SocketAddr, state: AppState) -> WebServer {
        let app = router(state.clone());
        let mut stopping = state.stopping();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(address = %local_addr, "web server listening");
        WebServer {
            state,
            local_addr,
            task,
        }
    }

    /// The address actually bound (the port, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Ends live streams, stops accepting connections and waits up to `grace`
    /// for requests in progress; then drops whatever is left.
    pub async fn shutdown(self, grace: Duration) {
        self.state.stop_live_streams();
        let abort = self.task.abort_handle();
        match tokio::time::timeout(grace, self.task).await {
            Ok(Ok(Ok(()))) => tracing::info!("web server stopped"),
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "web server stopped with an error"),
            Ok(Err(err)) => tracing::warn!(error = %err, "web server task failed"),
            Err(_) => {
                abort.abort();
                tracing::warn!(
                    ?grace,
                    "web server: requests still running after the grace period; dropped"
                );
            }
        }
    }
}
