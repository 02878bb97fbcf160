//! The service's live views and stored events in the web crate's terms.

use std::net::IpAddr;

use hopwatch_web::dto::{
    AlertDto, AsInfoDto, BranchDto, BranchFindingDto, BranchHopDto, DestinationDto, EventDto,
    FieldValueDto, FindingDto, HopLabelsDto, HopRow, Latency, MiddleboxDto, MplsLabelDto,
    MultipathDto, PathHopDto, ResponderDto, StatsDto, TargetDetail, TargetState, TargetSummary,
};

use crate::analysis::{DegradationKind, HopLabels, MiddleboxFact, PathEvent, StatsSnapshot};
use crate::enrich::{special_purpose, Enricher};
use crate::monitor::{
    ComponentMode, ComponentStatus, LiveMemory, TargetEvent, TargetStatus, TargetView,
};
use crate::probe::quote::FieldValue;
use crate::probe::TimestampSource;
use crate::store::StoredEvent;
use crate::sys::HeapUsage;

pub fn stats(s: &StatsSnapshot) -> StatsDto {
    StatsDto {
        sent: s.sent,
        received: s.received,
        loss_pct: s.loss_pct,
        last_ns: s.last_ns,
        avg_ns: s.avg_ns,
        best_ns: s.best_ns,
        worst_ns: s.worst_ns,
        stddev_ns: s.stddev_ns,
        p50_ns: s.p50_ns,
        p95_ns: s.p95_ns,
        p99_ns: s.p99_ns,
        jitter_ns: s.jitter_mean_ns,
        jitter_max_ns: s.jitter_max_ns,
    }
}

pub fn state(status: &TargetStatus) -> (TargetState, Option<String>, Option<IpAddr>) {
    match status {
        TargetStatus::Paused => (TargetState::Paused, None, None),
        TargetStatus::Resolving => (TargetState::Resolving, None, None),
        TargetStatus::Running { address } => (TargetState::Running, None, Some(*address)),
        TargetStatus::Failed { error } => (TargetState::Failed, Some(error.clone()), None),
    }
}

/// One row of the overview.
pub fn summary(
    view: &TargetView,
    alerts: Vec<AlertDto>,
    source: Option<TimestampSource>,
) -> TargetSummary {
    let a = &view.analysis;
    let d = &a.destination.window;
    let (state, error, address) = state(&view.status);
    TargetSummary {
        id: view.id.to_string(),
        name: view.name.clone(),
        label: view.label.clone(),
        description: view.description.clone(),
        tags: view.tags.clone(),
        host: view.host.clone(),
        address: address.or(a.destination.address),
        protocol: view.protocol.to_string(),
        port: view.port,
        interval_ms: view.interval_ms,
        packet_size: view.packet_size,
        final_hop_only: view.final_hop_only,
        state,
        error,
        paused: view.paused,
        // A final-hop-only target's one row says nothing of the hop count.
        hop_count: a.path.hop_count.filter(|_| !view.final_hop_only),
        rounds: a.rounds,
        last_round_at_ms: a.last_round_at_ms,
        loss_pct: a.destination.path_loss_pct,
        latency: Latency {
            last_ns: d.last_ns,
            avg_ns: d.avg_ns,
            best_ns: d.best_ns,
            worst_ns: d.worst_ns,
            p50_ns: d.p50_ns,
            p95_ns: d.p95_ns,
        },
        jitter_ns: d.jitter_mean_ns,
        mos: a.destination.mos.map(|m| m.mos),
        alerts,
        timestamp_source: source.map(|s| s.to_string()),
        // The path's own finding first; else a branch's loss.
        finding: a
            .localisations
            .first()
            .map(|l| l.summary.clone())
            .or_else(|| {
                let b = a.branches.as_ref()?;
                b.findings.first().map(|f| f.localisation.summary.clone())
            }),
    }
}

/// What is known about a responder; `enricher` may fill in its name.
pub fn responder(
    address: IpAddr,
    enricher: Option<&Enricher>,
    share_pct: Option<f64>,
    avg_ns: Option<f64>,
    last_seen_ms: Option<u64>,
) -> ResponderDto {
    let info = enricher
        .map(|e| e.responder_info(address))
        .unwrap_or_default();
    ResponderDto {
        address,
        hostname: info.hostname,
        asn: info.asn,
        as_org: info.as_org,
        latitude: info.latitude,
        longitude: info.longitude,
        city: info.city,
        country: info.country,
        special_purpose: special_purpose(address).map(str::to_owned),
        share_pct,
        avg_ns,
        last_seen_ms,
    }
}

/// The target page's live data.
pub fn detail(
    view: &TargetView,
    alerts: Vec<AlertDto>,
    source: Option<TimestampSource>,
    enricher: Option<&Enricher>,
) -> TargetDetail {
    let a = &view.analysis;
    let hops = a
        .hops
        .iter()
        .map(|h| {
            let mut responders: Vec<ResponderDto> = h
                .responders
                .iter()
                .map(|r| {
                    responder(
                        r.address,
                        enricher,
                        r.window_share_pct,
                        r.avg_ns,
                        Some(r.last_seen_ms),
                    )
                })
                .collect();
            // A TTL whose responders are not tracked yet still shows who answers.
            if responders.is_empty() {
                if let Some(address) = h.responder {
                    responders.push(responder(address, enricher, None, None, None));
                }
            }
            HopRow {
                ttl: h.ttl,
                responders,
                other_responders: h.other_responders.as_ref().map_or(0, |o| o.received),
                window: stats(&h.window),
                since_start: stats(&h.since_start),
                jitter_rfc3550_ns: h.jitter_rfc3550_ns,
                rate_limited: h.rate_limited,
                slow_responder: h.slow_responder,
                is_destination: h.is_destination,
                mpls: a
                    .facts
                    .mpls
                    .iter()
                    .filter(|l| l.ttl == h.ttl)
                    .map(hop_labels)
                    .collect(),
                middleboxes: a
                    .facts
                    .middleboxes
                    .iter()
                    .filter(|m| m.ttl == h.ttl)
                    .map(middlebox)
                    .collect(),
            }
        })
        .collect();
    TargetDetail {
        summary: summary(view, alerts, source),
        window_probes: a.window_probes as u32,
        hops,
        path: a
            .path
            .hops
            .iter()
            .map(|p| PathHopDto {
                ttl: p.ttl,
                responder: p.responder,
                responders: p.responders.clone(),
            })
            .collect(),
        pending_change_rounds: a.path.pending_change_rounds,
        destination: DestinationDto {
            ttl: a.destination.ttl,
            address: a.destination.address,
            window: stats(&a.destination.window),
            since_start: stats(&a.destination.since_start),
            jitter_rfc3550_ns: a.destination.jitter_rfc3550_ns,
            mos: a.destination.mos.map(|m| m.mos),
            r_factor: a.destination.mos.map(|m| m.r_factor),
        },
        findings: a
            .localisations
            .iter()
            .map(|l| FindingDto {
                kind: match l.kind {
                    DegradationKind::Loss => "loss",
                    DegradationKind::Latency => "latency",
                }
                .to_owned(),
                ttl: l.ttl,
                responder: l.responder,
                confidence: l.confidence,
                rounds: l.rounds,
                summary: l.summary.clone(),
            })
            .collect(),
        recent_events: view.recent_events.iter().map(live_event).collect(),
        middleboxes: a.facts.middleboxes.iter().map(middlebox).collect(),
        multipath: a.branches.as_ref().map(|b| MultipathDto {
            discovered_at_ms: b.discovered_at_ms,
            probes_sent: b.probes_sent,
            discovery_ms: b.discovery_ms,
            found: b.found,
            stop: b.stop.clone(),
        }),
        branches: a
            .branches
            .iter()
            .flat_map(|b| &b.branches)
            .map(|b| BranchDto {
                index: b.index.get(),
                flow_id: b.flow_id,
                split_ttl: b.split_ttl,
                join_ttl: b.join_ttl,
                discovered: b.discovered.clone(),
                rounds: b.rounds,
                hops: b
                    .hops
                    .iter()
                    .map(|h| BranchHopDto {
                        ttl: h.ttl,
                        responder: h.responder,
                        window: stats(&h.window),
                    })
                    .collect(),
                end_to_end: stats(&b.destination),
            })
            .collect(),
        branch_findings: a
            .branches
            .iter()
            .flat_map(|b| &b.findings)
            .map(|f| BranchFindingDto {
                kind: match f.kind {
                    DegradationKind::Loss => "loss",
                    DegradationKind::Latency => "latency",
                }
                .to_owned(),
                branch: f.branch.get(),
                through_ttl: f.through_ttl,
                through: f.through,
                loss_pct: f.loss_pct,
                latency_ms: f.latency.map(|l| l.p50_ns as f64 / 1e6),
                sibling: f.latency.map(|l| l.sibling.get()),
                sibling_latency_ms: f.latency.map(|l| l.sibling_p50_ns as f64 / 1e6),
                ttl: f.localisation.ttl,
                confidence: f.localisation.confidence,
                summary: f.localisation.summary.clone(),
            })
            .collect(),
    }
}

fn field_value(value: FieldValue) -> FieldValueDto {
    match value {
        FieldValue::Number(n) => FieldValueDto::Number(n),
        FieldValue::Address(a) => FieldValueDto::Address(a),
    }
}

pub fn middlebox(fact: &MiddleboxFact) -> MiddleboxDto {
    MiddleboxDto {
        ttl: fact.ttl,
        responder: fact.responder,
        field: fact.rewrite.field.as_str().to_owned(),
        from: field_value(fact.rewrite.from),
        to: field_value(fact.rewrite.to),
        summary: fact.to_string(),
    }
}

pub fn hop_labels(hop: &HopLabels) -> HopLabelsDto {
    HopLabelsDto {
        responder: hop.responder,
        labels: hop
            .labels
            .iter()
            .map(|l| MplsLabelDto {
                label: l.label,
                traffic_class: l.traffic_class,
                bottom_of_stack: l.bottom_of_stack,
                ttl: l.ttl,
            })
            .collect(),
        text: hop
            .labels
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn addr(a: &Option<IpAddr>) -> String {
    a.map_or_else(|| "*".to_owned(), |a| a.to_string())
}

/// One line for people about a path event.
pub fn path_summary(event: &PathEvent) -> String {
    match event {
        PathEvent::RouteChanged {
            before,
            after,
            first_changed_ttl,
            branch,
            ..
        } => {
            let i = usize::from(*first_changed_ttl).saturating_sub(1);
            let which = branch.map_or_else(String::new, |b| format!(" of branch {b}"));
            format!(
                "route{which} changed at hop {first_changed_ttl}: {} → {} ({} → {} hops)",
                before.get(i).map_or_else(|| "-".to_owned(), addr),
                after.get(i).map_or_else(|| "-".to_owned(), addr),
                before.len(),
                after.len()
            )
        }
        PathEvent::HopCountChanged { before, after, .. } => {
            format!("hop count changed from {before} to {after}")
        }
        PathEvent::ReturnPathChanged {
            before,
            after,
            first_changed_ttl,
            ..
        } => {
            let i = usize::from(*first_changed_ttl).saturating_sub(1);
            let len = |v: &[Option<u8>]| v.get(i).copied().flatten();
            match (len(before), len(after)) {
                (Some(b), Some(a)) => format!(
                    "return path changed from hop {first_changed_ttl} on, forward path unchanged: \
                     replies cross {a} routers on the way back (were {b})"
                ),
                _ => format!(
                    "return path changed from hop {first_changed_ttl} on, forward path unchanged"
                ),
            }
        }
        PathEvent::MiddleboxChanged { before, after, .. } => {
            let list = |facts: &[MiddleboxFact]| {
                facts
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match (before.is_empty(), after.is_empty()) {
                (_, false) => format!(
                    "middlebox: the quoted probe header shows {}{}",
                    list(after),
                    if before.is_empty() {
                        String::new()
                    } else {
                        format!(" (was {})", list(before))
                    }
                ),
                (false, true) => format!(
                    "middlebox gone: the quoted probe header no longer shows {}",
                    list(before)
                ),
                (true, true) => "middlebox facts changed".to_owned(),
            }
        }
        PathEvent::MplsChanged { before, after, .. } => {
            let list = |hops: &[HopLabels]| {
                hops.iter()
                    .map(|h| {
                        let labels: Vec<String> =
                            h.labels.iter().map(|l| l.label.to_string()).collect();
                        format!(
                            "hop {} ({}) labels {}",
                            h.ttl,
                            h.responder,
                            labels.join("/")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match (before.is_empty(), after.is_empty()) {
                (true, _) => format!("MPLS labels seen: {}", list(after)),
                (false, true) => format!("MPLS labels no longer seen (were {})", list(before)),
                (false, false) => format!(
                    "MPLS labels changed: {} (were {})",
                    list(after),
                    list(before)
                ),
            }
        }
    }
}

pub fn live_event(event: &TargetEvent) -> EventDto {
    EventDto {
        target: event.target.to_string(),
        at_ms: event.event.at_ms(),
        kind: event.event.kind().to_owned(),
        summary: path_summary(&event.event),
        detail: serde_json::to_value(&event.event).unwrap_or(serde_json::Value::Null),
        as_info: Vec::new(),
    }
}

/// A stored event: path events get their summary back; other kinds (alerts)
/// use the payload's `summary` field when it has one.
pub fn stored_event(event: &StoredEvent) -> EventDto {
    let summary = serde_json::from_value::<PathEvent>(event.payload.clone())
        .map(|e| path_summary(&e))
        .ok()
        .or_else(|| {
            event
                .payload
                .get("summary")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| event.kind.replace('_', " "));
    EventDto {
        target: event.target.to_string(),
        at_ms: event.at_ms,
        kind: event.kind.clone(),
        summary,
        detail: event.payload.clone(),
        as_info: Vec::new(),
    }
}

/// The AS number and organisation of every address in an event's `before`
/// and `after` paths that the ASN database knows, each address once, in
/// the order they first appear.
pub fn as_info(detail: &serde_json::Value, enricher: Option<&Enricher>) -> Vec<AsInfoDto> {
    let Some(enricher) = enricher else {
        return Vec::new();
    };
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for key in ["before", "after"] {
        let Some(path) = detail.get(key).and_then(|p| p.as_array()) else {
            continue;
        };
        for address in path
            .iter()
            .filter_map(|v| v.as_str())
            .filter_map(|text| text.parse::<IpAddr>().ok())
        {
            if seen.contains(&address) {
                continue;
            }
            seen.push(address);
            let info = enricher.responder_info(address);
            if info.asn.is_some() || info.as_org.is_some() {
                out.push(AsInfoDto {
                    address,
                    asn: info.asn,
                    as_org: info.as_org,
                });
            }
        }
    }
    out
}

/// A component's state for /healthz and /readyz: quarantined copies by file
/// name only (they are in the state directory), and no error text (the
/// endpoints are open; the error is in the log).
pub fn component_health(status: &ComponentStatus) -> hopwatch_web::dto::ComponentHealthDto {
    hopwatch_web::dto::ComponentHealthDto {
        component: status.component.to_owned(),
        state: match status.mode {
            ComponentMode::Ok => "ok",
            ComponentMode::Fresh => "fresh",
            ComponentMode::Disabled => "disabled",
            ComponentMode::Retrying => "retrying",
            ComponentMode::Lossy => "lossy",
        }
        .to_owned(),
        degraded: status.degraded(),
        quarantined: status
            .quarantined
            .iter()
            .map(|p| {
                p.file_name().map_or_else(
                    || p.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            })
            .collect(),
    }
}

/// The heap and the live state's parts for /metrics.
pub fn memory_metrics(
    heap: Option<HeapUsage>,
    live: LiveMemory,
) -> hopwatch_web::metrics::MemoryMetrics {
    hopwatch_web::metrics::MemoryMetrics {
        heap_in_use_bytes: heap.map(|h| h.in_use),
        heap_mapped_bytes: heap.map(|h| h.mapped),
        heap_free_bytes: heap.map(|h| h.free),
        analysis_bytes: live.analysis_bytes,
        recent_events_bytes: live.recent_events_bytes,
    }
}

/// A component's state for /metrics.
pub fn component_metrics(status: &ComponentStatus) -> hopwatch_web::metrics::ComponentMetrics {
    hopwatch_web::metrics::ComponentMetrics {
        component: status.component.to_owned(),
        degraded: status.degraded(),
        quarantined_files: status.quarantined.len() as u64,
    }
}

/// A remote-write receiver's state for /metrics.
pub fn remote_write_metrics(
    r: &crate::remote::ReceiverStatus,
    now_ms: u64,
) -> hopwatch_web::metrics::RemoteWriteMetrics {
    hopwatch_web::metrics::RemoteWriteMetrics {
        name: r.name.clone(),
        last_success_seconds: r.last_success_at_ms.map(|ms| ms as f64 / 1000.0),
        backlog_seconds: r.backlog_seconds(now_ms),
        samples_sent: r.samples_sent,
        samples_backfilled: r.samples_backfilled,
        samples_dropped: r.samples_dropped,
        requests_failed: r.requests_failed,
        bytes_sent: r.bytes_sent,
        series: r.series,
    }
}

/// A remote-write receiver's state for /healthz, /readyz and the UI.
pub fn remote_write_dto(
    r: &crate::remote::ReceiverStatus,
    now_ms: u64,
) -> hopwatch_web::dto::RemoteWriteDto {
    hopwatch_web::dto::RemoteWriteDto {
        name: r.name.clone(),
        ok: r.failing_since_ms.is_none(),
        last_success_at_ms: r.last_success_at_ms,
        last_error_at_ms: r.last_error_at_ms,
        backlog_seconds: r.backlog_seconds(now_ms),
        backlog_intervals: r.backlog_ticks,
        samples_sent: r.samples_sent,
        samples_backfilled: r.samples_backfilled,
        samples_dropped: r.samples_dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TargetId;
    use std::net::Ipv4Addr;

    #[test]
    fn path_events_read_as_one_line() {
        let a = |n| Some(IpAddr::V4(Ipv4Addr::new(198, 18, n, 2)));
        let event = TargetEvent {
            target: TargetId::new("t").unwrap(),
            event: PathEvent::RouteChanged {
                at_ms: 7,
                before: vec![a(0), a(1), a(2)],
                after: vec![a(0), a(11), None, a(2)],
                first_changed_ttl: 2,
                branch: None,
            },
        };
        let dto = live_event(&event);
        assert_eq!(dto.kind, "route_changed");
        assert_eq!(
            dto.summary,
            "route changed at hop 2: 198.18.1.2 → 198.18.11.2 (3 → 4 hops)"
        );
        assert_eq!(dto.detail["first_changed_ttl"], 2);
        assert!(dto.detail.get("branch").is_none(), "{:#}", dto.detail);
        let of_branch = TargetEvent {
            target: TargetId::new("t").unwrap(),
            event: PathEvent::RouteChanged {
                at_ms: 7,
                before: vec![a(0), a(1), a(2)],
                after: vec![a(0), a(11), a(2)],
                first_changed_ttl: 2,
                branch: crate::model::BranchIndex::new(2),
            },
        };
        let branch_dto = live_event(&of_branch);
        assert_eq!(
            branch_dto.summary,
            "route of branch 2 changed at hop 2: 198.18.1.2 → 198.18.11.2 (3 → 3 hops)"
        );
        assert_eq!(branch_dto.detail["branch"], 2);
        let stored = crate::monitor::pipeline::stored(&of_branch);
        assert_eq!(stored_event(&stored).summary, branch_dto.summary);
        let stored = crate::monitor::pipeline::stored(&event);
        assert_eq!(stored_event(&stored).summary, dto.summary);
        let alert = StoredEvent {
            target: TargetId::new("t").unwrap(),
            at_ms: 1,
            kind: "alert_raised".into(),
            payload: serde_json::json!({"summary": "loss 30% ≥ 5%"}),
        };
        assert_eq!(stored_event(&alert).summary, "loss 30% ≥ 5%");
    }
}
