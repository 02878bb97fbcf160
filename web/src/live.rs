//! Live updates as server-sent events. Each stream runs in its own task that
//! looks for changes every `live_interval` and forwards events as they
//! happen; it ends when the client goes away or the server stops.
//!
//! `/api/v1/live` (overview): `targets` (the rows that changed, all of them
//! first), `removed` (names of targets gone), `event` (a route change, alert
//! ...). `/api/v1/targets/{id}/live`: `target` (the whole detail, whenever a
//! round or the state changed), `event` (this target's events), and `removed`
//! when the target is deleted, after which the stream ends.
//!
//! Each stream holds one of `max_live_streams` slots until its task ends;
//! a stream asked for when none is free is refused with 429.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::dto::EventDto;
use crate::error::ApiError;
use crate::state::{join_array, AppState};

type EventStream = Sse<KeepAliveStream<ReceiverStream<Result<Event, Infallible>>>>;

/// Comment lines keep proxies and browsers from timing the stream out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn stream(rx: mpsc::Receiver<Result<Event, Infallible>>) -> EventStream {
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Sends one event; false when the client has gone.
async fn send(tx: &mpsc::Sender<Result<Event, Infallible>>, name: &str, data: String) -> bool {
    tx.send(Ok(Event::default().event(name).data(data)))
        .await
        .is_ok()
}

/// The next event from the read model; `None` when its sender is gone.
/// A lagging receiver skips what it missed: live views catch up on the next tick.
async fn next_event(events: &mut broadcast::Receiver<EventDto>) -> Option<EventDto> {
    loop {
        match events.recv().await {
            Ok(event) => return Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Waits forever once the event source is gone, so `select!` keeps ticking.
async fn event_or_pending(events: &mut Option<broadcast::Receiver<EventDto>>) -> EventDto {
    if let Some(rx) = events.as_mut() {
        if let Some(event) = next_event(rx).await {
            return event;
        }
    }
    *events = None;
    std::future::pending().await
}

pub(crate) fn overview(state: AppState) -> Result<EventStream, ApiError> {
    let slot = state.live_slot()?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        overview_feed(state, tx).await;
        drop(slot);
    });
    Ok(stream(rx))
}

async fn overview_feed(state: AppState, tx: mpsc::Sender<Result<Event, Infallible>>) {
    let mut stop = state.stopping();
    let mut events = Some(state.inner.read.subscribe());
    let mut tick = tokio::time::interval(state.settings().live_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: HashMap<String, u64> = HashMap::new();
    loop {
        if state.is_stopping() {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {
                let overview = match state.overview().await {
                    Ok(overview) => overview,
                    Err(err) => {
                        tracing::warn!(error = %err, "live overview: building the overview failed");
                        continue;
                    }
                };
                let changed: Vec<&str> = overview
                    .rows
                    .iter()
                    .filter(|row| sent.get(&row.id) != Some(&row.hash))
                    .map(|row| row.json.as_str())
                    .collect();
                let removed: Vec<String> = sent
                    .keys()
                    .filter(|id| !overview.rows.iter().any(|row| &row.id == *id))
                    .cloned()
                    .collect();
                if !changed.is_empty() && !send(&tx, "targets", join_array(changed.into_iter())).await {
                    return;
                }
                if !removed.is_empty() {
                    for id in &removed {
                        sent.remove(id);
                    }
                    let json = serde_json::to_string(&removed).unwrap_or_else(|_| "[]".into());
                    if !send(&tx, "removed", json).await {
                        return;
                    }
                }
                for row in &overview.rows {
                    sent.insert(row.id.clone(), row.hash);
                }
            }
            event = event_or_pending(&mut events) => {
                let Ok(json) = serde_json::to_string(&event) else { continue };
                if !send(&tx, "event", json).await {
                    return;
                }
            }
            _ = stop.changed() => return,
            _ = tx.closed() => return,
        }
    }
}

pub(crate) fn target(state: AppState, id: String) -> Result<EventStream, ApiError> {
    let slot = state.live_slot()?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        target_feed(state, id, tx).await;
        drop(slot);
    });
    Ok(stream(rx))
}

async fn target_feed(state: AppState, id: String, tx: mpsc::Sender<Result<Event, Infallible>>) {
    let mut stop = state.stopping();
    let mut events = Some(state.inner.read.subscribe());
    let mut tick = tokio::time::interval(state.settings().live_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_hash = None;
    loop {
        if state.is_stopping() {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {
                let lookup = id.clone();
                let detail = match state.read(move |read| read.target(&lookup)).await {
                    Ok(detail) => detail,
                    Err(err) => {
                        tracing::warn!(error = %err, target = %id, "live target: reading failed");
                        continue;
                    }
                };
                let Some(detail) = detail else {
                    let _ = send(&tx, "removed", serde_json::to_string(&[&id]).unwrap_or_default()).await;
                    return;
                };
                let Ok(json) = serde_json::to_string(&detail) else { continue };
                let mut hasher = DefaultHasher::new();
                json.hash(&mut hasher);
                let hash = hasher.finish();
                if last_hash != Some(hash) {
                    last_hash = Some(hash);
                    if !send(&tx, "target", json).await {
                        return;
                    }
                }
            }
            event = event_or_pending(&mut events) => {
                if event.target != id {
                    continue;
                }
                let Ok(json) = serde_json::to_string(&event) else { continue };
                if !send(&tx, "event", json).await {
                    return;
                }
            }
            _ = stop.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
