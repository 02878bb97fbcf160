//! Exporting a stored series as CSV or JSON, with a header that records how
//! the data was measured (probe interval, protocol, packet size, sample
//! count, statistics window) when the caller knows it.
//!
//! CSV: `#`-comment header lines (`# key: value`, unknown values left out),
//! one column-name line, then one line per point with RTTs in milliseconds
//! (three decimals, i.e. microseconds); empty cells where a bucket had no
//! replies. JSON: `{"meta": {...}, "points": [...]}` with RTTs in nanoseconds
//! and `null` for what is unknown. The rows are plain numbers, so the CSV is
//! written directly rather than through a CSV library.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use serde::Serialize;

use crate::model::{BranchIndex, TargetId};
use crate::probe::Protocol;
use crate::store::query::{Hop, Point, Resolution, Series};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// An export format name that is neither csv nor json.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown export format {0:?}: use csv or json")]
pub struct InvalidExportFormat(pub String);

impl FromStr for ExportFormat {
    type Err = InvalidExportFormat;

    fn from_str(s: &str) -> Result<ExportFormat, InvalidExportFormat> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "json" => Ok(ExportFormat::Json),
            other => Err(InvalidExportFormat(other.to_string())),
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        })
    }
}

/// How the exported data was measured, as far as the caller knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportMeta {
    /// Time between rounds.
    pub probe_interval_ms: Option<u64>,
    pub protocol: Option<Protocol>,
    /// Probe packet size in bytes.
    pub packet_size: Option<u16>,
    /// Probes behind the export (for example the series' total sent).
    pub sample_count: Option<u64>,
    /// The sliding statistics window of the live view.
    pub window_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the {format} export of {target} ({hop}): {source}")]
    Write {
        format: ExportFormat,
        target: TargetId,
        hop: Hop,
        source: std::io::Error,
    },
}

#[derive(Serialize)]
struct JsonMeta<'a> {
    target: &'a TargetId,
    /// The ECMP branch of a branch's series; absent for a target's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<BranchIndex>,
    hop: Hop,
    resolution: Resolution,
    interval_ms: u64,
    from_ms: u64,
    to_ms: u64,
    #[serde(flatten)]
    measured: &'a ExportMeta,
}

#[derive(Serialize)]
struct JsonExport<'a> {
    meta: JsonMeta<'a>,
    points: &'a [Point],
}

fn ms(ns: Option<u64>) -> String {
    ns.map(|v| format!("{:.3}", v as f64 / 1e6))
        .unwrap_or_default()
}

fn ms_f(ns: Option<f64>) -> String {
    ns.map(|v| format!("{:.3}", v / 1e6)).unwrap_or_default()
}

/// The target a series belongs to, and its ECMP branch when it is a
/// branch's series (stored as `TargetId::branch_series`).
fn target_and_branch(series: &Series) -> (TargetId, Option<BranchIndex>) {
    match series.target.branch_of() {
        Some((target, branch)) => (target, Some(branch)),
        None => (series.target.clone(), None),
    }
}

fn write_csv(series: &Series, meta: &ExportMeta, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "# hopwatch series export")?;
    let (target, branch) = target_and_branch(series);
    writeln!(out, "# target: {target}")?;
    if let Some(branch) = branch {
        writeln!(out, "# branch: {branch}")?;
    }
    writeln!(out, "# hop: {}", series.hop)?;
    writeln!(out, "# resolution: {}", series.resolution)?;
    writeln!(out, "# interval_ms: {}", series.interval_ms)?;
    writeln!(out, "# from_ms: {}", series.from_ms)?;
    writeln!(out, "# to_ms: {}", series.to_ms)?;
    let known: [(&str, Option<String>); 5] = [
        (
            "probe_interval_ms",
            meta.probe_interval_ms.map(|v| v.to_string()),
        ),
        ("protocol", meta.protocol.map(|p| p.to_string())),
        ("packet_size", meta.packet_size.map(|v| v.to_string())),
        ("sample_count", meta.sample_count.map(|v| v.to_string())),
        ("window_ms", meta.window_ms.map(|v| v.to_string())),
    ];
    for (key, value) in known {
        if let Some(value) = value {
            writeln!(out, "# {key}: {value}")?;
        }
    }
    writeln!(
        out,
        "at_ms,sent,lost,loss_pct,min_ms,avg_ms,max_ms,stddev_ms,p50_ms,p95_ms,p99_ms"
    )?;
    for p in &series.points {
        let loss = p
            .loss_ratio()
            .map(|r| format!("{:.2}", r * 100.0))
            .unwrap_or_default();
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            p.at_ms,
            p.sent,
            p.lost,
            loss,
            ms(p.min_ns),
            ms_f(p.avg_ns),
            ms(p.max_ns),
            ms_f(p.stddev_ns),
            ms(p.p50_ns),
            ms(p.p95_ns),
            ms(p.p99_ns),
        )?;
    }
    out.flush()
}

/// Writes `series` to `out` in `format`.
pub fn write_series<W: Write>(
    series: &Series,
    meta: &ExportMeta,
    format: ExportFormat,
    mut out: W,
) -> Result<(), ExportError> {
    let wrap = |source| ExportError::Write {
        format,
        target: series.target.clone(),
        hop: series.hop,
        source,
    };
    match format {
        ExportFormat::Csv => write_csv(series, meta, &mut out).map_err(wrap),
        ExportFormat::Json => {
            let (target, branch) = target_and_branch(series);
            let doc = JsonExport {
                meta: JsonMeta {
                    target: &target,
                    branch,
                    hop: series.hop,
                    resolution: series.resolution,
                    interval_ms: series.interval_ms,
                    from_ms: series.from_ms,
                    to_ms: series.to_ms,
                    measured: meta,
                },
                points: &series.points,
            };
            serde_json::to_writer(&mut out, &doc).map_err(|e| wrap(e.into()))?;
            out.write_all(b"\n")
                .and_then(|()| out.flush())
                .map_err(wrap)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Series {
        let mut lost = Point::no_replies(60_000, 60, 60);
        lost.at_ms = 60_000;
        Series {
            target: TargetId::new("edge-1").unwrap(),
            hop: Hop::Ttl(3),
            resolution: Resolution::Minute,
            interval_ms: 60_000,
            from_ms: 0,
            to_ms: 120_000,
            points: vec![
                Point {
                    at_ms: 0,
                    sent: 60,
                    lost: 3,
                    min_ns: Some(1_000_000),
                    avg_ns: Some(1_500_400.0),
                    max_ns: Some(2_000_000),
                    stddev_ns: Some(250_000.0),
                    p50_ns: Some(1_500_000),
                    p95_ns: Some(1_900_000),
                    p99_ns: Some(1_990_000),
                },
                lost,
            ],
            total: Point::no_replies(0, 120, 63),
        }
    }

    fn meta() -> ExportMeta {
        ExportMeta {
            probe_interval_ms: Some(1_000),
            protocol: Some(Protocol::Udp),
            packet_size: Some(64),
            sample_count: Some(120),
            window_ms: None,
        }
    }

    #[test]
    fn csv_has_the_measurement_header_and_one_row_per_point() {
        let mut out = Vec::new();
        write_series(&series(), &meta(), ExportFormat::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "# target: edge-1",
            "# hop: ttl 3",
            "# resolution: 1m",
            "# interval_ms: 60000",
            "# probe_interval_ms: 1000",
            "# protocol: udp",
            "# packet_size: 64",
            "# sample_count: 120",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("window_ms"), "unknown values are left out");
        let header = lines.iter().position(|l| l.starts_with("at_ms,")).unwrap();
        assert_eq!(
            &lines[header + 1..],
            &[
                "0,60,3,5.00,1.000,1.500,2.000,0.250,1.500,1.900,1.990",
                "60000,60,60,100.00,,,,,,,",
            ]
        );
        let columns = lines[header].split(',').count();
        assert!(lines[header + 1..]
            .iter()
            .all(|l| l.split(',').count() == columns));
    }

    #[test]
    fn json_carries_meta_and_points() {
        let mut out = Vec::new();
        write_series(&series(), &meta(), ExportFormat::Json, &mut out).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["meta"]["target"], "edge-1");
        assert_eq!(doc["meta"]["hop"], serde_json::json!({"ttl": 3}));
        assert_eq!(doc["meta"]["resolution"], "1m");
        assert_eq!(doc["meta"]["protocol"], "udp");
        assert_eq!(doc["meta"]["packet_size"], 64);
        assert_eq!(doc["meta"]["window_ms"], serde_json::Value::Null);
        assert_eq!(doc["points"].as_array().unwrap().len(), 2);
        assert_eq!(doc["points"][0]["p99_ns"], 1_990_000);
        assert_eq!(doc["points"][1]["min_ns"], serde_json::Value::Null);
    }

    #[test]
    fn a_branch_series_is_exported_under_its_target_with_the_branch() {
        let mut branch = series();
        branch.target = branch.target.branch_series(BranchIndex::new(2).unwrap());
        let mut out = Vec::new();
        write_series(&branch, &meta(), ExportFormat::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("# target: edge-1\n# branch: 2\n# hop: ttl 3\n"),
            "{text}"
        );
        let mut out = Vec::new();
        write_series(&branch, &meta(), ExportFormat::Json, &mut out).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (&doc["meta"]["target"], &doc["meta"]["branch"]),
            (&"edge-1".into(), &2.into())
        );
        // A target's own series has no branch at all.
        let mut out = Vec::new();
        write_series(&series(), &meta(), ExportFormat::Json, &mut out).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(doc["meta"].get("branch").is_none(), "{doc}");
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("csv".parse::<ExportFormat>().unwrap(), ExportFormat::Csv);
        assert_eq!("json".parse::<ExportFormat>().unwrap(), ExportFormat::Json);
        let err = "xml".parse::<ExportFormat>().unwrap_err();
        assert!(err.to_string().contains("xml"));
    }
}
