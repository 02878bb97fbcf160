//! What is pushed: the /metrics exposition of a snapshot (so a pushed series
//! has exactly the name, labels and value a scrape would see), parsed back
//! into series, cut to the configured budget ([`SeriesSet`]), with `vantage`
//! and the extra labels added to every one.

use std::collections::BTreeMap;

use hopwatch_web::metrics::MetricsSnapshot;

use super::proto::Label;
use crate::config::SeriesSet;

/// A series' identity: its labels sorted by name, `__name__` among them.
pub type SeriesKey = Vec<Label>;

/// One value of every series at one moment.
pub type Values = BTreeMap<SeriesKey, f64>;

/// Families pushed by default. Per target: state, counters, the window's
/// gauges and the destination's RTT sum and count (15 series); per hop only
/// the loss ratio; per ECMP branch of a multipath target its loss ratio. Responder addresses stay on the box (its API and UI).
const DEFAULT_FAMILIES: [&str; 18] = [
    "hopwatch_build_info",
    "hopwatch_timestamp_source_info",
    "hopwatch_probes_sent_total",
    "hopwatch_store_healthy",
    "hopwatch_target_state",
    "hopwatch_target_rounds_total",
    "hopwatch_target_probes_sent_total",
    "hopwatch_target_probes_received_total",
    "hopwatch_target_loss_ratio",
    "hopwatch_target_jitter_seconds",
    "hopwatch_target_mos",
    "hopwatch_target_hop_count",
    "hopwatch_target_rtt_seconds_sum",
    "hopwatch_target_rtt_seconds_count",
    "hopwatch_target_route_changes_total",
    "hopwatch_target_alerts_firing",
    "hopwatch_hop_loss_ratio",
    // A multipath target's branches: one series per branch (at most 8).
    "hopwatch_branch_loss_ratio",
];

/// Families of the daemon's own remote-write state and of `[[peer]]` links,
/// pushed in both sets (bounded by the config, not by paths).
const ALWAYS_PREFIXES: [&str; 2] = ["hopwatch_remote_write_", "hopwatch_peer_"];

fn wanted(name: &str, set: SeriesSet) -> bool {
    set == SeriesSet::Full
        || DEFAULT_FAMILIES.contains(&name)
        || ALWAYS_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The labels every pushed series carries: `vantage`, then the extra ones.
pub fn common_labels(vantage: &str, extra: &[(String, String)]) -> Vec<Label> {
    std::iter::once(("vantage".to_owned(), vantage.to_owned()))
        .chain(extra.iter().cloned())
        .map(|(name, value)| Label { name, value })
        .collect()
}

/// The snapshot's series in `set`, each with the `common` labels.
pub fn from_snapshot(snapshot: MetricsSnapshot, set: SeriesSet, common: &[Label]) -> Values {
    let text = hopwatch_web::metrics::encode(snapshot).unwrap_or_default();
    from_exposition(&text, set, common)
}

/// Parses OpenMetrics text as `hopwatch_web::metrics::encode` writes it:
/// `name{label="value",...} value` lines; comments and `# EOF` skipped.
pub fn from_exposition(text: &str, set: SeriesSet, common: &[Label]) -> Values {
    let mut values = Values::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = parse_line(line, common) else {
            tracing::debug!(line, "remote write: an exposition line that does not parse");
            continue;
        };
        let name = &key
            .iter()
            .find(|l| l.name == "__name__")
            .expect("parse_line names every series")
            .value;
        if wanted(name, set) {
            values.insert(key, value);
        }
    }
    values
}

fn parse_line(line: &str, common: &[Label]) -> Option<(SeriesKey, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels: Vec<Label> = common.to_vec();
    labels.push(Label {
        name: "__name__".to_owned(),
        value: name.to_owned(),
    });
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        // label="value" pairs separated by commas; values escape \ " and \n.
        let mut i = 0;
        loop {
            match inner[i..].chars().next()? {
                '}' => {
                    i += 1;
                    break;
                }
                ',' => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let eq = inner[i..].find("=\"")? + i;
            let key = inner[i..eq].to_owned();
            i = eq + 2;
            let mut value = String::new();
            loop {
                let c = inner[i..].chars().next()?;
                i += c.len_utf8();
                match c {
                    '\\' => {
                        let escaped = inner[i..].chars().next()?;
                        i += escaped.len_utf8();
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.push(Label { name: key, value });
        }
        rest = &inner[i..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    Some((labels, value))
}

/// The value of label `name` in a series key.
pub fn label<'a>(key: &'a SeriesKey, name: &str) -> Option<&'a str> {
    key.iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// Series per target in `values`, for the budget: by `target` label.
pub fn per_target(values: &Values) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for key in values.keys() {
        if let Some(target) = label(key, "target") {
            *counts.entry(target.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopwatch_web::metrics::{Histogram, HopMetrics, TargetMetrics};

    /// A running target of `hops` hops, every value known, hop histograms on:
    /// the most series /metrics can have for it.
    pub(crate) fn target(name: &str, hops: u8) -> TargetMetrics {
        let mut rtt = Histogram::default();
        rtt.observe(0.012);
        TargetMetrics {
            target: name.to_owned(),
            state: "running".to_owned(),
            hop_count: Some(hops),
            mos: Some(4.3),
            loss_ratio: Some(0.01),
            jitter_seconds: Some(0.0002),
            rounds: 100,
            route_changes: 1,
            hop_count_changes: 0,
            alerts_firing: Vec::new(),
            probes_sent: 100,
            probes_received: 99,
            rtt: rtt.clone(),
            hops: (1..=hops)
                .map(|ttl| HopMetrics {
                    ttl,
                    responder: Some(format!("198.18.0.{ttl}")),
                    probes_sent: 100,
                    probes_received: 100,
                    loss_ratio: Some(0.0),
                    jitter_seconds: Some(0.0001),
                    rate_limited: false,
                    slow_responder: false,
                    rtt: Some(rtt.clone()),
                })
                .collect(),
            branches: Vec::new(),
            discovery_probes: None,
        }
    }

    fn snapshot(targets: Vec<TargetMetrics>) -> MetricsSnapshot {
        MetricsSnapshot {
            version: "0.1.0".to_owned(),
            timestamp_source: "ebpf".to_owned(),
            targets,
            ..MetricsSnapshot::default()
        }
    }

    #[test]
    fn the_default_set_keeps_a_ten_hop_target_within_30_series() {
        let common = common_labels("paris", &[("site".to_owned(), "eu".to_owned())]);
        let default = from_snapshot(
            snapshot(vec![target("dst", 10), target("gw", 1)]),
            SeriesSet::Default,
            &common,
        );
        let counts = per_target(&default);
        // 4 states, 11 other target series, one loss ratio per hop.
        assert_eq!(counts["dst"], 25, "{counts:?}");
        assert!(counts["dst"] <= 30);
        assert_eq!(counts["gw"], 16);
        let full = from_snapshot(snapshot(vec![target("dst", 10)]), SeriesSet::Full, &common);
        // docs/metrics.md: 32 + 25 h series per target with hop histograms
        // (7 per hop, 18 of a histogram).
        assert_eq!(per_target(&full)["dst"], 32 + 25 * 10);
        for key in default.keys().chain(full.keys()) {
            assert_eq!(label(key, "vantage"), Some("paris"));
            assert_eq!(label(key, "site"), Some("eu"));
            assert!(key.windows(2).all(|w| w[0].name < w[1].name), "{key:?}");
        }
        // Responder addresses never leave the box in the default set.
        assert!(default.keys().all(|k| label(k, "responder").is_none()));
    }

    #[test]
    fn the_default_set_keeps_one_loss_ratio_per_ecmp_branch() {
        use hopwatch_web::metrics::BranchMetrics;
        let mut edge = target("edge", 4);
        edge.discovery_probes = Some(50);
        edge.branches = (1..=2)
            .map(|branch| BranchMetrics {
                branch,
                rounds: 10,
                loss_ratio: Some(0.1),
                rtt_avg_seconds: Some(0.001),
                jitter_seconds: Some(0.0001),
                split_ttl: Some(1),
                join_ttl: Some(4),
                hop_loss: vec![(2, 0.1)],
            })
            .collect();
        let default = from_snapshot(snapshot(vec![edge]), SeriesSet::Default, &[]);
        let branch: Vec<&str> = default
            .keys()
            .filter(|k| label(k, "__name__").is_some_and(|n| n.starts_with("hopwatch_branch_")))
            .map(|k| label(k, "branch").unwrap())
            .collect();
        assert_eq!(branch, ["1", "2"]);
        // A 4-hop target's 19 series, plus the two branches.
        assert_eq!(per_target(&default)["edge"], 15 + 4 + 2);
    }

    /// docs/benchmarks.md, "Remote write": the compressed bytes one push
    /// costs per 10-hop target, from the marginal size of 100 more targets
    /// (names, values and RTTs varied like a real box's).
    #[test]
    fn bytes_per_target_per_push() {
        use crate::remote::proto::{encode, Sample, TimeSeries, WriteRequest};
        let common = common_labels("paris-1", &[]);
        let targets = |n: usize| -> Vec<TargetMetrics> {
            (0..n)
                .map(|i| {
                    let mut t = target(&format!("customer-{i:04}.example"), 10);
                    t.probes_sent = 86_400 + i as u64 * 17;
                    t.probes_received = t.probes_sent - (i as u64 % 7);
                    t.loss_ratio = Some((i % 5) as f64 / 100.0);
                    t.jitter_seconds = Some(0.000_173 + i as f64 * 1e-7);
                    t.rtt.sum_seconds = 1_234.567_8 + i as f64;
                    for (k, h) in t.hops.iter_mut().enumerate() {
                        h.loss_ratio = Some(((i + k) % 3) as f64 / 100.0);
                    }
                    t
                })
                .collect()
        };
        let size = |n: usize, set: SeriesSet| -> (usize, usize) {
            let values = from_snapshot(snapshot(targets(n)), set, &common);
            let request = WriteRequest {
                timeseries: values
                    .iter()
                    .map(|(labels, value)| TimeSeries {
                        labels: labels.clone(),
                        samples: vec![Sample {
                            value: *value,
                            timestamp: 1_796_527_389_238,
                        }],
                    })
                    .collect(),
            };
            (encode(&request).unwrap().len(), values.len())
        };
        for (set, bar) in [(SeriesSet::Default, 1_500), (SeriesSet::Full, 12_000)] {
            let (small, _) = size(10, set);
            let (big, series) = size(110, set);
            let per_target = (big - small) as f64 / 100.0;
            eprintln!(
                "{set:?}: {series} series for 110 targets; {per_target:.0} bytes per 10-hop target \
                 per push, {:.0} kB per target per hour at 15 s",
                per_target * 240.0 / 1000.0
            );
            assert!(
                per_target > 100.0 && per_target < f64::from(bar),
                "{per_target}"
            );
        }
    }

    #[test]
    fn exposition_lines_parse_with_escapes_and_special_values() {
        let text = "# HELP x y\nhopwatch_hop_loss_ratio{target=\"a\\\"b\",ttl=\"2\"} 0.25\n\
                    hopwatch_probes_sent_total 7\nhopwatch_target_rtt_seconds_bucket{target=\"a\",le=\"+Inf\"} 3\n# EOF\n";
        let values = from_exposition(text, SeriesSet::Full, &common_labels("v", &[]));
        assert_eq!(values.len(), 3);
        let hop = values
            .iter()
            .find(|(k, _)| label(k, "ttl") == Some("2"))
            .unwrap();
        assert_eq!(label(hop.0, "target"), Some("a\"b"));
        assert_eq!(*hop.1, 0.25);
        let bucket = values.keys().find(|k| label(k, "le").is_some()).unwrap();
        assert_eq!(label(bucket, "le"), Some("+Inf"));
        let default = from_exposition(text, SeriesSet::Default, &common_labels("v", &[]));
        assert_eq!(default.len(), 2, "no target histogram buckets by default");
    }
}
