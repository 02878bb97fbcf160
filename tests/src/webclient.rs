//! Plain HTTP from inside a lab namespace: what a user's browser, curl or a
//! Prometheus on the box would send to hopwatch's web server (or to the
//! Prometheus the test runs there). Blocking (ureq) on a thread in the
//! namespace, so loopback addresses are the namespace's own.

use std::time::{Duration, Instant};

use crate::{Lab, LabError};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("could not run the request to {url} in node {node}: {source}")]
    Namespace {
        node: String,
        url: String,
        source: Box<LabError>,
    },
    #[error("GET {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("GET {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("GET {url} did not answer JSON ({source}): {body}")]
    NotJson {
        url: String,
        body: String,
        source: serde_json::Error,
    },
    #[error("timed out after {limit:?} waiting for {what}; last: {last}")]
    Timeout {
        what: String,
        limit: Duration,
        last: String,
    },
}

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET url?query` from node `node`, with `Authorization: Bearer <token>` when
/// a token is given. Any status is a response; only transport failures are errors.
pub fn get(
    lab: &Lab,
    node: &str,
    url: &str,
    query: &[(&str, &str)],
    token: Option<&str>,
) -> Result<Response, WebError> {
    let owned_url = url.to_owned();
    let query: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = lab
        .run_in(node, move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .into();
            let mut req = agent.get(&owned_url);
            for (k, v) in &query {
                req = req.query(k, v);
            }
            if let Some(auth) = &auth {
                req = req.header("Authorization", auth);
            }
            let mut response = req.call().map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .map_err(|e| format!("reading the body: {e}"))?;
            Ok::<_, String>(Response { status, body })
        })
        .map_err(|source| WebError::Namespace {
            node: node.to_owned(),
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    result.map_err(|message| WebError::Transport {
        url: url.to_owned(),
        message,
    })
}

/// `GET` that must answer 200 with a JSON body.
pub fn get_json(
    lab: &Lab,
    node: &str,
    url: &str,
    query: &[(&str, &str)],
    token: Option<&str>,
) -> Result<serde_json::Value, WebError> {
    let response = get(lab, node, url, query, token)?;
    if response.status != 200 {
        return Err(WebError::Status {
            url: url.to_owned(),
            status: response.status,
            body: response.body,
        });
    }
    serde_json::from_str(&response.body).map_err(|source| WebError::NotJson {
        url: url.to_owned(),
        body: response.body,
        source,
    })
}

/// Polls `check` every 250 ms until it returns `Ok(value)`; after `limit`,
/// fails with the last `Err` it gave (what was seen instead).
pub fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, WebError> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(last) if start.elapsed() >= limit => {
                return Err(WebError::Timeout {
                    what: what.to_owned(),
                    limit,
                    last,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
