//! The peer (STAMP link) endpoints: `GET /api/v1/peers` and
//! `GET /api/v1/peers/{name}`, served from [`ReadModel::peers`](crate::ReadModel::peers).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ApiError;
use crate::query;
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
