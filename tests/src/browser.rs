//! Headless Chromium in a lab namespace, driven through chromedriver
//! (WebDriver), as the web UI tests and the screenshot tool use it: finding
//! both programs, running chromedriver in a node (killed, by PID, when
//! dropped), a browser session on a current-thread runtime inside that node
//! (so the page's requests come from the namespace), clicking and typing,
//! waiting for the page to reach a state, reading the browser console, and
//! saving screenshots.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::{CmdError, NewSessionError};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};

use crate::netns::exec::NsChild;
use crate::programs::{self, ProgramMissing};
use crate::{Lab, LabError};

/// chromedriver's usual port.
pub const DRIVER_PORT: u16 = 9515;
/// How long chromedriver and Chromium get to open a session: chromedriver
/// listens a moment after it starts, and Chromium's first start is slow.
const SESSION_LIMIT: Duration = Duration::from_secs(20);
/// How long [`wait_js`] waits for the page (data arrives at the daemon's pace).
const SCRIPT_LIMIT: Duration = Duration::from_secs(30);

/// Failures of the browser or of a page under test.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error(transparent)]
    Missing(#[from] ProgramMissing),
    #[error("could not start chromedriver in node {node}: {source}")]
    Driver { node: String, source: Box<LabError> },
    #[error("could not run the browser session in node {node}: {source}")]
    Namespace { node: String, source: Box<LabError> },
    #[error("could not build the browser session's tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("no WebDriver session with headless Chromium at {driver} within {limit:?}: {source}")]
    Session {
        driver: String,
        limit: Duration,
        source: Box<NewSessionError>,
    },
    #[error("the script waiting for {what} failed: {source}")]
    Script { what: String, source: Box<CmdError> },
    #[error("timed out after {limit:?} waiting for {what} (last value {last})")]
    Timeout {
        what: String,
        limit: Duration,
        last: Value,
    },
    #[error("could not {action} the element {css:?}: {source}")]
    Element {
        action: &'static str,
        css: String,
        source: Box<CmdError>,
    },
    #[error("could not read the browser console: {source}")]
    Console { source: Box<CmdError> },
    #[error("could not take the screenshot for {path}: {source}")]
    Screenshot {
        path: PathBuf,
        source: Box<CmdError>,
    },
    #[error("could not write the screenshot {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The installed Chromium and chromedriver. Found before a test or tool does
/// anything slow, so a missing one fails at once.
#[derive(Debug, Clone)]
pub struct Chromium {
    browser: PathBuf,
    driver: PathBuf,
}

impl Chromium {
    pub fn find() -> Result<Chromium, ProgramMissing> {
        Ok(Chromium {
            browser: programs::find("chromium")?,
            driver: programs::find("chromedriver")?,
        })
    }

    /// Starts chromedriver in `node`, listening on `127.0.0.1:port` there.
    pub fn start_driver<'lab>(
        &self,
        lab: &'lab Lab,
        node: &str,
        port: u16,
    ) -> Result<Driver<'lab>, BrowserError> {
        let start_error = |source| BrowserError::Driver {
            node: node.to_owned(),
            source: Box::new(source),
        };
        let mut cmd = lab
            .command(node, &self.driver.to_string_lossy())
            .map_err(start_error)?;
        cmd.args([format!("--port={port}"), "--log-level=SEVERE".into()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = lab.spawn(node, cmd).map_err(start_error)?;
        Ok(Driver {
            lab,
            node: node.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            browser: self.browser.clone(),
            _child: child,
        })
    }
}

/// chromedriver running in a lab node; killed when dropped.
pub struct Driver<'lab> {
    lab: &'lab Lab,
    node: String,
    url: String,
    browser: PathBuf,
    _child: NsChild<'lab>,
}

impl Driver<'_> {
    /// Opens a headless Chromium session (profile in `profile`) from inside
    /// the driver's node, runs `browse` with it and closes the session
    /// whatever happened, a panic in `browse` included (it is resumed after
    /// the close, so Chromium never outlives the test).
    pub fn session<T, E>(
        &self,
        profile: &Path,
        browse: impl AsyncFnOnce(&Client) -> Result<T, E> + Send,
    ) -> Result<T, E>
    where
        T: Send,
        E: From<BrowserError> + Send,
    {
        let caps = capabilities(&self.browser, profile);
        let url = self.url.as_str();
        self.lab
            .run_in(&self.node, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(BrowserError::Runtime)?;
                runtime.block_on(async move {
                    let client = connect(url, caps).await?;
                    let outcome = AssertUnwindSafe(browse(&client)).catch_unwind().await;
                    let _ = client.close().await;
                    match outcome {
                        Ok(result) => result,
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                })
            })
            .map_err(|source| BrowserError::Namespace {
                node: self.node.clone(),
                source: Box::new(source),
            })?
    }
}

/// Headless Chromium that stays inside the lab (no background traffic, no
/// QUIC), draws one pixel per CSS pixel (screenshots are the window's size),
/// and keeps the console log for ChromeDriver's log endpoint.
fn capabilities(browser: &Path, profile: &Path) -> serde_json::Map<String, Value> {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": browser,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                "--force-device-scale-factor=1",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    caps
}

/// A WebDriver session, retried until chromedriver listens and Chromium starts.
async fn connect(
    driver: &str,
    caps: serde_json::Map<String, Value>,
) -> Result<Client, BrowserError> {
    let started = Instant::now();
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(driver)
            .await
        {
            Ok(client) => return Ok(client),
            Err(source) if started.elapsed() >= SESSION_LIMIT => {
                return Err(BrowserError::Session {
                    driver: driver.to_owned(),
                    limit: SESSION_LIMIT,
                    source: Box::new(source),
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Runs `script` every 250 ms until it returns something truthy (not
/// null/false/0/""), which it returns; fails after 30 s with the last value.
/// `what` names the awaited state in the error.
///
/// A `TypeError` thrown by the script counts as "not yet": after a reload or
/// a navigation the page builds its elements from the API's answers, so for
/// a moment `querySelector` finds nothing and reading a property of it
/// throws. The error is kept as the last value, so a wait that times out
/// still names it; any other error fails at once.
pub async fn wait_js(client: &Client, what: &str, script: &str) -> Result<Value, BrowserError> {
    let guarded = format!(
        "try {{ return {{ value: (() => {{ {script} }})() }}; }} \
         catch (e) {{ if (e instanceof TypeError) return {{ pending: String(e) }}; throw e; }}"
    );
    let start = Instant::now();
    loop {
        let answer =
            client
                .execute(&guarded, vec![])
                .await
                .map_err(|source| BrowserError::Script {
                    what: what.to_owned(),
                    source: Box::new(source),
                })?;
        // `{value}` once the script ran (no key when it returned
        // undefined), `{pending}` while the page is still being built.
        let (value, pending) = match answer {
            Value::Object(mut answer) => match answer.remove("pending") {
                Some(error) => (error, true),
                None => (answer.remove("value").unwrap_or(Value::Null), false),
            },
            other => (other, false),
        };
        let truthy = !pending
            && match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
        if truthy {
            return Ok(value);
        }
        if start.elapsed() > SCRIPT_LIMIT {
            return Err(BrowserError::Timeout {
                what: what.to_owned(),
                limit: SCRIPT_LIMIT,
                last: value,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The first element `css` selects, once the page has built it (pages build
/// their controls from the API's answers, a moment after they load).
async fn find(client: &Client, action: &'static str, css: &str) -> Result<Element, BrowserError> {
    client
        .wait()
        .at_most(SCRIPT_LIMIT)
        .for_element(Locator::Css(css))
        .await
        .map_err(|source| element_error(action, css, source))
}

fn element_error(action: &'static str, css: &str, source: CmdError) -> BrowserError {
    BrowserError::Element {
        action,
        css: css.to_owned(),
        source: Box::new(source),
    }
}

/// Opens `url`; an error names the page.
pub async fn open(client: &Client, url: &str) -> Result<(), BrowserError> {
    client
        .goto(url)
        .await
        .map_err(|source| BrowserError::Script {
            what: format!("opening {url}"),
            source: Box::new(source),
        })
}

/// Clicks the first element `css` selects.
pub async fn click(client: &Client, css: &str) -> Result<(), BrowserError> {
    find(client, "click", css)
        .await?
        .click()
        .await
        .map_err(|source| element_error("click", css, source))
}

/// Types `text` into the first element `css` selects.
pub async fn type_into(client: &Client, css: &str, text: &str) -> Result<(), BrowserError> {
    find(client, "type into", css)
        .await?
        .send_keys(text)
        .await
        .map_err(|source| element_error("type into", css, source))
}

/// Saves what the window shows as a PNG at `path`.
pub async fn save_screenshot(client: &Client, path: &Path) -> Result<(), BrowserError> {
    let png = client
        .screenshot()
        .await
        .map_err(|source| BrowserError::Screenshot {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    std::fs::write(path, png).map_err(|source| BrowserError::Write {
        path: path.to_owned(),
        source,
    })
}

/// ChromeDriver's log endpoint: the browser console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// The browser console's entries since the last call (each with `level`,
/// `message` and `timestamp`; `level` is `SEVERE` for errors).
pub async fn console(client: &Client) -> Result<Vec<Value>, BrowserError> {
    let log = client
        .issue_cmd(BrowserLog)
        .await
        .map_err(|source| BrowserError::Console {
            source: Box::new(source),
        })?;
    Ok(log.as_array().cloned().unwrap_or_default())
}
