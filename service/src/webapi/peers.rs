//! Peers (STAMP links) for the web layer: the monitor's [`PeerView`]s turned
//! into the web crate's DTOs and /metrics values (with the peer's firing
//! alerts, which the caller looks up by `peer:NAME`), and a peer's stored
//! history.

use hopwatch_web::dto::{
    AlertDto, DelayDto, PeerDirectionDto, PeerDto, PeerHistoryDto, PeerSeriesDto,
    PeerState as PeerStateDto, PeerTotalsDto, PeerWindowDto,
};
use hopwatch_web::metrics::PeerMetrics;
use hopwatch_web::{ReadError, TimeRange};

use crate::model::TargetId;
use crate::store::{PeerSeries, Resolution, Store};
use crate::webapi::history::{point, read_error};

use crate::analysis::DelayWindow;
use crate::monitor::{PeerState, PeerView};
use crate::peer::{Direction, OwdValidity, Transport};

fn delay(d: &DelayWindow) -> DelayDto {
    DelayDto {
        min_ns: d.min_ns,
        mean_ns: d.mean_ns,
        max_ns: d.max_ns,
    }
}

fn state(state: &PeerState) -> (PeerStateDto, Option<String>) {
    match state {
        PeerState::Paused => (PeerStateDto::Paused, None),
        PeerState::Starting => (PeerStateDto::Starting, None),
        PeerState::Running => (PeerStateDto::Running, None),
        PeerState::Failed { error } => (PeerStateDto::Failed, Some(error.clone())),
    }
}

fn mode(mode: Transport) -> &'static str {
    match mode {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

/// `synchronized`, `shared_clock` or `unreliable`, the doubt, and the error bound.
fn verdict(owd: OwdValidity) -> (&'static str, Option<String>, Option<u64>) {
    match owd {
        OwdValidity::Synchronized { error_bound_ns } => {
            ("synchronized", None, Some(error_bound_ns))
        }
        OwdValidity::SharedClock => ("shared_clock", None, None),
        OwdValidity::Unreliable { reason } => {
            let doubt = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            ("unreliable", doubt, None)
        }
    }
}

/// `view` in the web crate's terms, with the peer's firing `alerts`.
pub fn dto(view: &PeerView, window_probes: u32, alerts: Vec<AlertDto>) -> PeerDto {
    let c = &view.config;
    let w = &view.window;
    let (state, error) = state(&view.state);
    let pct = |ratio: Option<f64>| ratio.map(|r| r * 100.0);
    let (owd_verdict, owd_doubt, owd_error_bound_ns) = match w.owd.map(verdict) {
        Some((v, doubt, bound)) => (Some(v.to_owned()), doubt, bound),
        None => (None, None, None),
    };
    PeerDto {
        name: c.name.to_string(),
        label: c.label.clone(),
        description: c.description.clone(),
        tags: c.tags.clone(),
        address: c.address,
        port: c.port,
        mode: mode(c.mode).to_owned(),
        interval_ms: c.interval.as_secs_f64() * 1e3,
        packet_size: c.packet_size,
        state,
        error,
        local: view.local.map(|a| a.to_string()),
        window_probes,
        window: PeerWindowDto {
            probes: w.probes,
            received: w.received,
            lost: w.lost,
            loss_pct: pct(w.loss_ratio()),
            lost_unknown_direction: w.lost_unknown,
            reordered: w.reordered,
            rtt: w.rtt.as_ref().map(delay),
            rtt_jitter_ns: w.jitter_rtt_ns,
            forward: PeerDirectionDto {
                owd: w.forward.as_ref().map(delay),
                lost: w.lost_forward,
                loss_pct: pct(w.direction_loss_ratio(Direction::Forward)),
                jitter_ns: w.jitter_forward_ns,
                duplicates: w.duplicates_forward,
            },
            backward: PeerDirectionDto {
                owd: w.backward.as_ref().map(delay),
                lost: w.lost_backward,
                loss_pct: pct(w.direction_loss_ratio(Direction::Backward)),
                jitter_ns: w.jitter_backward_ns,
                duplicates: w.duplicates_backward,
            },
            owd_reliable: w.owd.is_some_and(OwdValidity::is_reliable),
            owd_verdict,
            owd_doubt,
            owd_error_bound_ns,
            timestamp_source: w.source.map(|s| s.as_str().to_owned()),
        },
        totals: view.totals.as_ref().map(|t| PeerTotalsDto {
            sent: t.sent,
            received: t.received,
            lost: t.loss.lost,
            lost_forward: t.loss.forward,
            lost_backward: t.loss.backward,
            duplicates_forward: t.duplicates.forward,
            duplicates_backward: t.duplicates.backward,
            reordered_forward: t.reordered.forward,
            reordered_backward: t.reordered.backward,
        }),
        alerts,
    }
}

/// `view`'s values for /metrics, with the names of its firing `alerts`.
pub fn metrics(view: &PeerView, alerts: Vec<AlertDto>) -> PeerMetrics {
    let w = &view.window;
    let secs = |d: &Option<DelayWindow>| d.as_ref().map(|d| d.mean_ns / 1e9);
    let totals = view.totals.as_ref();
    PeerMetrics {
        peer: view.config.name.to_string(),
        state: state(&view.state).0.as_str(),
        rtt_seconds: secs(&w.rtt),
        forward_owd_seconds: secs(&w.forward),
        backward_owd_seconds: secs(&w.backward),
        owd_reliable: w.owd.is_some_and(OwdValidity::is_reliable),
        loss_ratio: w.loss_ratio(),
        forward_loss_ratio: w.direction_loss_ratio(Direction::Forward),
        backward_loss_ratio: w.direction_loss_ratio(Direction::Backward),
        jitter_seconds: w.jitter_rtt_ns.map(|ns| ns / 1e9),
        probes_sent: totals.map_or(0, |t| t.sent),
        probes_received: totals.map_or(0, |t| t.received),
        reordered_forward: totals.map_or(0, |t| t.reordered.forward),
        reordered_backward: totals.map_or(0, |t| t.reordered.backward),
        duplicates_forward: totals.map_or(0, |t| t.duplicates.forward),
        duplicates_backward: totals.map_or(0, |t| t.duplicates.backward),
        alerts_firing: alerts.into_iter().map(|a| a.name).collect(),
    }
}

/// The peer's stored history over `range`, at the store's automatic
/// resolution for the span.
pub fn history(
    store: &Store,
    peer: &TargetId,
    range: TimeRange,
) -> Result<PeerHistoryDto, ReadError> {
    let h = store
        .peer_history(peer, range.from_ms, range.to_ms, Resolution::Auto)
        .map_err(|e| read_error("peer history", e))?;
    Ok(PeerHistoryDto {
        peer: peer.to_string(),
        resolution: h.resolution.as_str().to_owned(),
        interval_ms: h.interval_ms,
        series: h
            .series
            .iter()
            .map(|s| PeerSeriesDto {
                series: match s.series {
                    PeerSeries::Rtt => "rtt",
                    PeerSeries::Forward => "forward",
                    PeerSeries::Backward => "backward",
                }
                .to_owned(),
                points: s.points.iter().map(point).collect(),
                total: point(&s.total),
            })
            .collect(),
    })
}
