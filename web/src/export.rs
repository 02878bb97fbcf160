//! The hop-summary export of a target over a time range, as CSV or JSON. The
//! header records how the data was measured (probe interval, protocol, packet
//! size, sample count, statistics window, timestamp source) and what range it
//! covers, so two exports can be compared.
//!
//! CSV: `# key: value` comment lines, one column-name line, then one line per
//! hop with RTTs in milliseconds to the microsecond; empty cells where a hop
//! had no answers. JSON: `{"meta": {...}, "hops": [...]}` with RTTs in
//! nanoseconds. The CSV cells are numbers, addresses and DNS names; a name
//! with anything but letters, digits, '.', '-' and '_' has those characters
//! replaced, so no cell ever needs quoting.
//!
//! With `asn=true` each hop also carries its responder's AS number and
//! organisation (from `[enrichment] asn_database`): CSV columns `asn` and
//! `as_org` after `hostname`, JSON fields `asn` and `as_org` on each hop.
//! An organisation name may hold spaces and commas, so that one cell is
//! always quoted (RFC 4180: `"` doubled); control characters become spaces.

use std::fmt::Write;
use std::str::FromStr;

use serde::Serialize;

use crate::dto::{HopSummaryDto, HopTotalDto};
use crate::model::BranchRef;
use crate::query::TimeRange;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "{other:?} is not an export format; use csv or json"
            )),
        }
    }
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// The header of an export.
#[derive(Debug, Serialize)]
pub struct ExportMeta<'a> {
    pub target: &'a str,
    /// The ECMP branch whose history this is (`branch=N`); absent for the
    /// target's own flow, so those exports read as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<u8>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub from: String,
    pub to: String,
    pub generated_at_ms: u64,
    pub resolution: &'a str,
    pub probe_interval_ms: u64,
    pub protocol: &'a str,
    pub port: u16,
    pub packet_size: u16,
    /// Probes sent to the destination in the range.
    pub sample_count: u64,
    pub window_probes: u32,
    pub window_ms: u64,
    pub timestamp_source: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonExport<'a, H: Serialize> {
    meta: ExportMeta<'a>,
    hops: &'a [H],
}

/// A hop of the JSON export with its AS columns.
#[derive(Serialize)]
struct HopWithAsn<'a> {
    #[serde(flatten)]
    hop: &'a HopTotalDto,
    asn: Option<u32>,
    as_org: Option<&'a str>,
}

/// Which optional columns an export has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns {
    /// The responder's AS number and organisation.
    pub asn: bool,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// A host name with every character a CSV reader could trip on replaced by '_'.
fn csv_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn cell_ms(ns: Option<u64>) -> String {
    ns.map(|v| format!("{:.3}", v as f64 / 1e6))
        .unwrap_or_default()
}

fn cell_ms_f(ns: Option<f64>) -> String {
    ns.map(|v| format!("{:.3}", v / 1e6)).unwrap_or_default()
}

/// An organisation name as one quoted CSV cell.
fn csv_quoted(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("\"{}\"", clean.replace('"', "\"\""))
}

/// Renders the export.
pub fn render(
    target: &str,
    branch: Option<BranchRef>,
    range: TimeRange,
    now_ms: u64,
    summary: &HopSummaryDto,
    format: Format,
    columns: Columns,
) -> Result<String, serde_json::Error> {
    let m = &summary.measurement;
    let sample_count = summary
        .hops
        .iter()
        .find(|h| h.hop == crate::dto::HopRef::Destination)
        .map_or(0, |h| h.total.sent);
    let meta = ExportMeta {
        target,
        branch: branch.map(BranchRef::get),
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        generated_at_ms: now_ms,
        resolution: &summary.resolution,
        probe_interval_ms: m.probe_interval_ms,
        protocol: &m.protocol,
        port: m.port,
        packet_size: m.packet_size,
        sample_count,
        window_probes: m.window_probes,
        window_ms: m.window_ms,
        timestamp_source: m.timestamp_source.as_deref(),
    };
    match format {
        Format::Json if columns.asn => {
            let hops: Vec<HopWithAsn<'_>> = summary
                .hops
                .iter()
                .map(|hop| HopWithAsn {
                    hop,
                    asn: hop.asn,
                    as_org: hop.as_org.as_deref(),
                })
                .collect();
            serde_json::to_string_pretty(&JsonExport { meta, hops: &hops })
        }
        Format::Json => serde_json::to_string_pretty(&JsonExport {
            meta,
            hops: &summary.hops,
        }),
        Format::Csv => Ok(csv(&meta, &summary.hops, columns)),
    }
}

fn csv(meta: &ExportMeta<'_>, hops: &[HopTotalDto], columns: Columns) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# hopwatch hop summary");
    let branch = meta.branch.map(|b| ("branch", b.to_string()));
    let lines: [(&str, String); 14] = [
        ("target", meta.target.to_owned()),
        ("from", meta.from.clone()),
        ("to", meta.to.clone()),
        ("from_ms", meta.from_ms.to_string()),
        ("to_ms", meta.to_ms.to_string()),
        ("resolution", meta.resolution.to_owned()),
        ("probe_interval_ms", meta.probe_interval_ms.to_string()),
        ("protocol", meta.protocol.to_owned()),
        ("port", meta.port.to_string()),
        ("packet_size", meta.packet_size.to_string()),
        ("sample_count", meta.sample_count.to_string()),
        ("window_probes", meta.window_probes.to_string()),
        ("window_ms", meta.window_ms.to_string()),
        (
            "timestamp_source",
            meta.timestamp_source.unwrap_or("unknown").to_owned(),
        ),
    ];
    let (first, rest) = lines.split_at(1);
    for (key, value) in first.iter().chain(&branch).chain(rest) {
        let _ = writeln!(out, "# {key}: {value}");
    }
    let _ = writeln!(
        out,
        "hop,responder,hostname,{}sent,lost,loss_pct,min_ms,avg_ms,max_ms,stddev_ms,p50_ms,p95_ms,p99_ms",
        if columns.asn { "asn,as_org," } else { "" }
    );
    for h in hops {
        let t = &h.total;
        let loss = if t.sent > 0 {
            format!("{:.2}", 100.0 * t.lost as f64 / t.sent as f64)
        } else {
            String::new()
        };
        let as_cells = if columns.asn {
            format!(
                "{},{},",
                h.asn.map(|a| a.to_string()).unwrap_or_default(),
                h.as_org.as_deref().map(csv_quoted).unwrap_or_default()
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{},{},{},{}{},{},{},{},{},{},{},{},{},{}",
            h.hop,
            h.responder.map(|a| a.to_string()).unwrap_or_default(),
            h.hostname.as_deref().map(csv_safe).unwrap_or_default(),
            as_cells,
            t.sent,
            t.lost,
            loss,
            cell_ms(t.min_ns),
            cell_ms_f(t.avg_ns),
            cell_ms(t.max_ns),
            cell_ms_f(t.stddev_ns),
            cell_ms(t.p50_ns),
            cell_ms(t.p95_ns),
            cell_ms(t.p99_ns),
        );
    }
    out
}
