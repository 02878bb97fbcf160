//! A real Prometheus server in a lab node, for tests of what hopwatch exports:
//! started on a config the test writes, with its own TSDB directory, killed
//! (by PID) when dropped; instant queries, the rules and alerts APIs, and
//! `promtool` runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::netns::exec::NsChild;
use crate::programs::{self, ProgramMissing};
use crate::webclient::{self, WebError};
use crate::{Lab, LabError};

/// Failures of the Prometheus under test or of promtool.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error(transparent)]
    Missing(#[from] ProgramMissing),
    #[error("could not start prometheus in node {node}: {source}")]
    Start { node: String, source: Box<LabError> },
    #[error("could not run {command}: {source}")]
    Run {
        command: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Web(#[from] WebError),
    #[error("query {query:?} failed: {answer}")]
    Query { query: String, answer: Value },
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range-vector answer: its labels and its `(timestamp in
/// ms, value)` samples, oldest first.
pub type RawSeries = (BTreeMap<String, String>, Vec<(u64, f64)>);

/// `prometheus` running in a lab node, listening on `127.0.0.1:<port>` there.
pub struct Prometheus<'lab> {
    lab: &'lab Lab,
    node: String,
    base: String,
    _child: NsChild<'lab>,
}

impl<'lab> Prometheus<'lab> {
    /// Starts Prometheus in `node` on `config` (rule files in it are read
    /// relative to it), storing its TSDB under `data_dir`, and waits until it
    /// is ready.
    pub fn start(
        lab: &'lab Lab,
        node: &str,
        config: &Path,
        data_dir: &Path,
        port: u16,
    ) -> Result<Prometheus<'lab>, PrometheusError> {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        Prometheus::start_with(lab, node, config, data_dir, listen, &[])
    }

    /// [`Prometheus::start`] listening on `listen` (an address of `node`, so
    /// other lab nodes can reach it), with extra command-line flags such as
    /// `--web.enable-remote-write-receiver`.
    pub fn start_with(
        lab: &'lab Lab,
        node: &str,
        config: &Path,
        data_dir: &Path,
        listen: std::net::SocketAddr,
        flags: &[&str],
    ) -> Result<Prometheus<'lab>, PrometheusError> {
        let binary = programs::find("prometheus")?;
        let start_error = |source| PrometheusError::Start {
            node: node.to_owned(),
            source: Box::new(source),
        };
        let mut cmd = lab
            .command(node, &binary.to_string_lossy())
            .map_err(start_error)?;
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg(format!("--web.listen-address={listen}"))
            .args(flags)
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = lab.spawn(node, cmd).map_err(start_error)?;
        let prometheus = Prometheus {
            lab,
            node: node.to_owned(),
            base: format!("http://{listen}"),
            _child: child,
        };
        webclient::eventually(Duration::from_secs(60), "Prometheus to be ready", || {
            let r = webclient::get(
                lab,
                node,
                &format!("{}/-/ready", prometheus.base),
                &[],
                None,
            )
            .map_err(|e| e.to_string())?;
            (r.status == 200)
                .then_some(())
                .ok_or(format!("{}: {}", r.status, r.body))
        })?;
        Ok(prometheus)
    }

    /// `GET /api/v1/<path>`: the `data` of a successful answer.
    pub fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, PrometheusError> {
        let url = format!("{}/api/v1/{path}", self.base);
        let doc = webclient::get_json(self.lab, &self.node, &url, query, None)?;
        if doc["status"] != "success" {
            return Err(PrometheusError::Query {
                query: format!("{path} {query:?}"),
                answer: doc,
            });
        }
        Ok(doc["data"].clone())
    }

    /// An instant query. Only vectors have samples; a scalar or string answer
    /// is an error.
    pub fn query(&self, query: &str) -> Result<Vec<Sample>, PrometheusError> {
        let data = self.api("query", &[("query", query)])?;
        if data["resultType"] != "vector" {
            return Err(PrometheusError::Query {
                query: query.to_owned(),
                answer: data,
            });
        }
        Ok(vector(&data))
    }

    /// The raw samples of every series a range-vector selector (`up[5m]`)
    /// selects, evaluated at `at_seconds` (Unix time): each series' labels
    /// and its `(timestamp in ms, value)` pairs, oldest first.
    pub fn raw_samples(
        &self,
        selector: &str,
        at_seconds: f64,
    ) -> Result<Vec<RawSeries>, PrometheusError> {
        let at = format!("{at_seconds:.3}");
        let data = self.api("query", &[("query", selector), ("time", &at)])?;
        if data["resultType"] != "matrix" {
            return Err(PrometheusError::Query {
                query: selector.to_owned(),
                answer: data,
            });
        }
        Ok(data["result"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let values = r["values"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|v| {
                        let ms = (v[0].as_f64().unwrap_or(0.0) * 1000.0).round() as u64;
                        let value = v[1]
                            .as_str()
                            .and_then(|x| x.parse().ok())
                            .unwrap_or(f64::NAN);
                        (ms, value)
                    })
                    .collect();
                (labels, values)
            })
            .collect())
    }

    /// An instant query evaluated at `at_seconds` (Unix time).
    pub fn query_at(&self, query: &str, at_seconds: f64) -> Result<Vec<Sample>, PrometheusError> {
        let at = format!("{at_seconds:.3}");
        let data = self.api("query", &[("query", query), ("time", &at)])?;
        if data["resultType"] != "vector" {
            return Err(PrometheusError::Query {
                query: query.to_owned(),
                answer: data,
            });
        }
        Ok(vector(&data))
    }

    /// Every rule of every loaded group (`/api/v1/rules`), as Prometheus reports
    /// them: `name`, `query`, `health`, `lastError`, `type`, `state`, ...
    pub fn rules(&self) -> Result<Vec<Value>, PrometheusError> {
        let data = self.api("rules", &[])?;
        Ok(data["groups"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// Active alerts (`/api/v1/alerts`): `labels`, `annotations`, `state`, ...
    pub fn alerts(&self) -> Result<Vec<Value>, PrometheusError> {
        let data = self.api("alerts", &[])?;
        Ok(data["alerts"].as_array().cloned().unwrap_or_default())
    }
}

/// The samples of an instant vector answer's `data`.
fn vector(data: &Value) -> Vec<Sample> {
    data["result"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| Sample {
            labels: r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            value: r["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN),
        })
        .collect()
}

/// The result of a `promtool` run.
#[derive(Debug, Clone)]
pub struct PromtoolRun {
    pub success: bool,
    /// stdout and stderr together.
    pub output: String,
}

/// Runs `promtool ARGS` (on the host; it reads files only) in `dir`.
pub fn promtool(dir: &Path, args: &[&str]) -> Result<PromtoolRun, PrometheusError> {
    let binary: PathBuf = programs::find("promtool")?;
    let output = Command::new(&binary)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PrometheusError::Run {
            command: format!("{} {}", binary.display(), args.join(" ")),
            source,
        })?;
    Ok(PromtoolRun {
        success: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}
