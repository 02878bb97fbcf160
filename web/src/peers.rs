//! The peer (STAMP link) endpoints: `GET /api/v1/peers`,
//! `GET /api/v1/peers/{name}` (from [`ReadModel::peers`](crate::ReadModel::peers))
//! and `GET /api/v1/peers/{name}/history` (from
//! [`ReadModel::peer_history`](crate::ReadModel::peer_history)).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::downsample;
use crate::error::ApiError;
use crate::query::{self, now_ms, RangeParams, TimeRange};
use crate::state::AppState;

pub async fn peers(State(state): State<AppState>) -> Result<Response, ApiError> {
    let peers = state.read(|read| read.peers()).await?;
    Ok(Json(serde_json::json!({ "peers": peers })).into_response())
}

pub async fn peer(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    // Peer names follow the target name rules.
    query::target_id(&name)?;
    let lookup = name.clone();
    let peer = state
        .read(move |read| read.peer(&lookup))
        .await?
        .ok_or(ApiError::UnknownPeer { name })?;
    Ok(Json(peer).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    max_points: Option<usize>,
}

impl HistoryParams {
    /// The range and the number of points per series asked for.
    pub fn check(&self, now_ms: u64) -> Result<(TimeRange, usize), ApiError> {
        let range = RangeParams::of(&self.range, &self.from, &self.to).resolve(now_ms)?;
        let max_points = query::count(
            "max_points",
            self.max_points,
            query::DEFAULT_POINTS,
            query::MAX_POINTS,
        )?;
        Ok((range, max_points))
    }
}

/// A peer's stored RTT and one-way delays over a range, each series fitted
/// to `max_points` like a target's.
pub async fn history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    query::target_id(&name)?;
    let Query(p) = params?;
    let (range, max_points) = p.check(now_ms())?;
    let lookup = name.clone();
    let history = state
        .history(move |read| read.peer_history(&lookup, range))
        .await??
        .ok_or(ApiError::UnknownPeer { name })?;
    let series: Vec<serde_json::Value> = history
        .series
        .into_iter()
        .map(|s| {
            let (points, bucket_ms) = downsample::fit_points(s.points, range, max_points);
            serde_json::json!({
                "series": s.series,
                "bucket_ms": bucket_ms,
                "points": points,
                "total": s.total,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "peer": history.peer,
        "resolution": history.resolution,
        "interval_ms": history.interval_ms,
        "from_ms": range.from_ms,
        "to_ms": range.to_ms,
        "series": series,
    }))
    .into_response())
}
