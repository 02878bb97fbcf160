//! The handlers of the versioned JSON API (`/api/v1/...`), the health
//! endpoints and /metrics. Authorization is checked by the router's layer
//! before any of these run (see [`crate::router`]).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::downsample;
use crate::dto::{ComponentHealthDto, EntryError, HealthDto, NewTarget, ServiceInfo};
use crate::error::ApiError;
use crate::export::{self, Format};
use crate::live;
use crate::metrics;
use crate::model::{FlowSelection, HopSelection};
use crate::query::{self, now_ms, RangeParams, TimeRange};
use crate::state::AppState;

/// Longest label, description, host and tag accepted from clients.
const MAX_LABEL: usize = 128;
const MAX_DESCRIPTION: usize = 1024;
const MAX_HOST: usize = 253;
const MAX_TAGS: usize = 32;
const MAX_TAG: usize = 64;
const MAX_DURATION_TEXT: usize = 32;
/// Most targets one list may add.
pub const MAX_TARGETS_AT_ONCE: usize = 1_000;

fn json_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path?;
    query::target_id(&id)?;
    Ok(id)
}

/// The service and what this server allows.
#[derive(Serialize)]
pub struct ServiceResponse {
    #[serde(flatten)]
    pub info: ServiceInfo,
    pub api_version: &'static str,
    pub writes_enabled: bool,
    pub read_token_required: bool,
    pub ranges: Vec<&'static str>,
}

fn service_response(state: &AppState, info: ServiceInfo) -> ServiceResponse {
    let tokens = &state.settings().tokens;
    ServiceResponse {
        info,
        api_version: "v1",
        writes_enabled: tokens.writes_enabled(),
        read_token_required: tokens.read_required(),
        ranges: query::PRESETS.iter().map(|(name, _)| *name).collect(),
    }
}

pub async fn index() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "api_version": "v1",
        "endpoints": [
            "GET /api/v1/service",
            "GET /api/v1/targets",
            "POST /api/v1/targets (one target, or a list: all or nothing)",
            "GET /api/v1/config?format=json|toml",
            "GET /api/v1/targets/{id}",
            "DELETE /api/v1/targets/{id}",
            "POST /api/v1/targets/{id}/pause",
            "POST /api/v1/targets/{id}/resume",
            "GET /api/v1/targets/{id}/series?hop=destination|all|<ttl>&range=|from=&to=&max_points=",
            "GET /api/v1/targets/{id}/heatmap?range=|from=&to=&columns=",
            "GET /api/v1/targets/{id}/events?range=|from=&to=",
            "GET /api/v1/incidents?range=|from=&to=&target=",
            "GET /api/v1/targets/{id}/export?format=csv|json&range=|from=&to=&asn=true|false",
            "GET /api/v1/targets/{id}/live (server-sent events)",
            "GET /api/v1/sparklines",
            "GET /api/v1/live (server-sent events)",
            "GET /api/v1/webhooks",
            "GET /api/v1/alerts",
            "GET /api/v1/peers",
            "GET /api/v1/peers/{name}",
            "GET /api/v1/peers/{name}/history?range=|from=&to=&max_points=",
            "GET /healthz",
            "GET /readyz",
            "GET /metrics",
        ],
        "docs": "docs/api.md",
    }))
}

pub async fn service(State(state): State<AppState>) -> Result<Json<ServiceResponse>, ApiError> {
    let info = state.read(|read| read.service()).await?;
    Ok(Json(service_response(&state, info)))
}

pub async fn targets(State(state): State<AppState>) -> Result<Response, ApiError> {
    let overview = state.overview().await?;
    let info = state.read(|read| read.service()).await?;
    let service = serde_json::to_string(&service_response(&state, info))
        .map_err(|err| ApiError::internal("serialising the service", err))?;
    Ok(json_response(format!(
        "{{\"service\":{service},\"targets\":{}}}",
        overview.array
    )))
}

pub async fn target(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let lookup = id.clone();
    let detail = state
        .read(move |read| read.target(&lookup))
        .await?
        .ok_or(ApiError::UnknownTarget { id })?;
    Ok(Json(detail).into_response())
}

pub async fn webhooks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let webhooks = state.read(|read| read.webhooks()).await?;
    Ok(Json(serde_json::json!({ "webhooks": webhooks })).into_response())
}

/// Every alert firing now, targets' and peers' (`subject`), oldest first.
pub async fn alerts(State(state): State<AppState>) -> Result<Response, ApiError> {
    let alerts = state.read(|read| read.alerts()).await?;
    Ok(Json(serde_json::json!({ "alerts": alerts })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentParams {
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    target: Option<String>,
}

impl IncidentParams {
    /// The range asked for: the last 30 days when none is given.
    pub fn check(&self, now_ms: u64) -> Result<TimeRange, ApiError> {
        let range = if self.range.is_none() && self.from.is_none() && self.to.is_none() {
            Some("30d".to_owned())
        } else {
            self.range.clone()
        };
        RangeParams::of(&range, &self.from, &self.to).resolve(now_ms)
    }
}

/// The incident history: alerts from raise to clear, newest first, over
/// `range` (or `from`/`to`; the last 30 days when neither is given), of one
/// `target` (a target's name or `peer:NAME`) when given.
pub async fn incidents(
    State(state): State<AppState>,
    params: Result<Query<IncidentParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let range = p.check(now_ms())?;
    let target = p.target.clone();
    let incidents = state
        .history(move |read| read.incidents(range, target.as_deref()))
        .await?;
    Ok(Json(serde_json::json!({
        "from_ms": range.from_ms,
        "to_ms": range.to_ms,
        "target": p.target,
        "incidents": incidents,
    }))
    .into_response())
}

/// The endpoints that take a query string, for [`check_query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryEndpoint {
    Incidents,
    Series,
    Heatmap,
    Events,
    Export,
    PeerHistory,
}

impl QueryEndpoint {
    pub const ALL: [QueryEndpoint; 6] = [
        QueryEndpoint::Incidents,
        QueryEndpoint::Series,
        QueryEndpoint::Heatmap,
        QueryEndpoint::Events,
        QueryEndpoint::Export,
        QueryEndpoint::PeerHistory,
    ];

    /// The query parameters the endpoint takes (it refuses any other).
    pub fn params(self) -> &'static [&'static str] {
        match self {
            QueryEndpoint::Incidents => &["range", "from", "to", "target"],
            QueryEndpoint::Series => &["hop", "branch", "range", "from", "to", "max_points"],
            QueryEndpoint::Heatmap => &["branch", "range", "from", "to", "columns"],
            QueryEndpoint::Events => &["range", "from", "to"],
            QueryEndpoint::Export => &["format", "branch", "range", "from", "to", "asn"],
            QueryEndpoint::PeerHistory => &["range", "from", "to", "max_points"],
        }
    }
}

/// What the handler of a [`QueryEndpoint`] goes on with once its query is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedQuery {
    /// Incidents and events.
    Range(TimeRange),
    Series(SeriesQuery),
    /// A heatmap's columns, a peer history's points per series.
    Sized(TimeRange, usize),
    Export(Format, TimeRange),
}

/// Decodes and checks the query string `raw_query` exactly as `endpoint`'s
/// handler does (axum's `Query` extractor, then the parameters' `check`), with no
/// server and no read model: what the fuzz target `api_query` (service/fuzz) and
/// the property test below drive. A query that is not valid in a URI is refused
/// as the HTTP layer would, before any handler.
pub fn check_query(
    endpoint: QueryEndpoint,
    raw_query: &str,
    now_ms: u64,
) -> Result<CheckedQuery, ApiError> {
    let uri: axum::http::Uri =
        format!("/?{raw_query}")
            .parse()
            .map_err(
                |err: axum::http::uri::InvalidUri| ApiError::InvalidRequest {
                    reason: err.to_string(),
                },
            )?;
    Ok(match endpoint {
        QueryEndpoint::Incidents => {
            CheckedQuery::Range(Query::<IncidentParams>::try_from_uri(&uri)?.check(now_ms)?)
        }
        QueryEndpoint::Series => {
            CheckedQuery::Series(Query::<SeriesParams>::try_from_uri(&uri)?.check(now_ms)?)
        }
        QueryEndpoint::Heatmap => {
            let (_, range, columns) = Query::<HeatmapParams>::try_from_uri(&uri)?.check(now_ms)?;
            CheckedQuery::Sized(range, columns)
        }
        QueryEndpoint::Events => {
            CheckedQuery::Range(Query::<RangeOnly>::try_from_uri(&uri)?.check(now_ms)?)
        }
        QueryEndpoint::Export => {
            let (format, _, range) = Query::<ExportParams>::try_from_uri(&uri)?.check(now_ms)?;
            CheckedQuery::Export(format, range)
        }
        QueryEndpoint::PeerHistory => {
            let query = Query::<crate::peers::HistoryParams>::try_from_uri(&uri)?;
            let (range, points) = query.check(now_ms)?;
            CheckedQuery::Sized(range, points)
        }
    })
}

pub async fn sparklines(State(state): State<AppState>) -> Result<Response, ApiError> {
    let lines = state.read(|read| read.sparklines()).await?;
    Ok(Json(serde_json::json!({ "sparklines": lines })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    hop: Option<String>,
    branch: Option<String>,
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    max_points: Option<usize>,
}

/// A series request's query, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesQuery {
    pub flow: FlowSelection,
    pub hops: HopSelection,
    pub range: TimeRange,
    pub max_points: usize,
}

impl SeriesParams {
    pub fn check(&self, now_ms: u64) -> Result<SeriesQuery, ApiError> {
        Ok(SeriesQuery {
            flow: query::flow_selection(self.branch.as_deref())?,
            hops: query::hop_selection(self.hop.as_deref())?,
            range: RangeParams::of(&self.range, &self.from, &self.to).resolve(now_ms)?,
            max_points: query::count(
                "max_points",
                self.max_points,
                query::DEFAULT_POINTS,
                query::MAX_POINTS,
            )?,
        })
    }
}

pub async fn series(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let Query(p) = params?;
    let SeriesQuery {
        flow,
        hops,
        range,
        max_points,
    } = p.check(now_ms())?;
    let lookup = id.clone();
    let series = state
        .history(move |read| read.series(&lookup, flow, hops, range))
        .await??
        .ok_or(ApiError::UnknownTarget { id: id.clone() })?;
    let fitted: Vec<downsample::FittedSeries> = series
        .into_iter()
        .map(|s| downsample::fit(s, range, max_points))
        .collect();
    let mut body = serde_json::json!({ "target": id, "series": fitted });
    if let Some(branch) = flow.branch() {
        body["branch"] = branch.get().into();
    }
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeatmapParams {
    branch: Option<String>,
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    columns: Option<usize>,
}

impl HeatmapParams {
    /// The flow, the range and the number of columns asked for.
    pub fn check(&self, now_ms: u64) -> Result<(FlowSelection, TimeRange, usize), ApiError> {
        let flow = query::flow_selection(self.branch.as_deref())?;
        let range = RangeParams::of(&self.range, &self.from, &self.to).resolve(now_ms)?;
        let columns = query::count(
            "columns",
            self.columns,
            query::DEFAULT_COLUMNS,
            query::MAX_COLUMNS,
        )?;
        Ok((flow, range, columns))
    }
}

pub async fn heatmap(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<HeatmapParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let Query(p) = params?;
    let (flow, range, columns) = p.check(now_ms())?;
    let lookup = id.clone();
    let series = state
        .history(move |read| read.series(&lookup, flow, crate::model::HopSelection::All, range))
        .await??
        .ok_or(ApiError::UnknownTarget { id: id.clone() })?;
    let map = downsample::heatmap(series, range, columns);
    let mut body = serde_json::json!({ "target": id, "heatmap": map });
    if let Some(branch) = flow.branch() {
        body["branch"] = branch.get().into();
    }
    Ok(Json(body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeOnly {
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl RangeOnly {
    pub fn check(&self, now_ms: u64) -> Result<TimeRange, ApiError> {
        RangeParams::of(&self.range, &self.from, &self.to).resolve(now_ms)
    }
}

pub async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<RangeOnly>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let Query(p) = params?;
    let range = p.check(now_ms())?;
    let lookup = id.clone();
    let events = state
        .history(move |read| read.events(&lookup, range))
        .await??
        .ok_or(ApiError::UnknownTarget { id: id.clone() })?;
    Ok(Json(serde_json::json!({
        "target": id,
        "from_ms": range.from_ms,
        "to_ms": range.to_ms,
        "events": events,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    format: Option<String>,
    branch: Option<String>,
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
    asn: Option<String>,
}

impl ExportParams {
    /// The format (CSV by default), the flow and the range asked for; the
    /// optional columns are checked too (see [`ExportParams::columns`]).
    pub fn check(&self, now_ms: u64) -> Result<(Format, FlowSelection, TimeRange), ApiError> {
        let format: Format = self
            .format
            .as_deref()
            .unwrap_or("csv")
            .parse()
            .map_err(|reason| ApiError::param("format", reason))?;
        let flow = query::flow_selection(self.branch.as_deref())?;
        let range = RangeParams::of(&self.range, &self.from, &self.to).resolve(now_ms)?;
        self.columns()?;
        Ok((format, flow, range))
    }

    /// The optional columns asked for: `asn=true` adds each hop's AS number
    /// and organisation.
    pub fn columns(&self) -> Result<export::Columns, ApiError> {
        let asn = match self.asn.as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(ApiError::param(
                    "asn",
                    format!("{other:?} is not a yes or no; use true or false"),
                ))
            }
        };
        Ok(export::Columns { asn })
    }
}

pub async fn export(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let Query(p) = params?;
    let now = now_ms();
    let (format, flow, range) = p.check(now)?;
    let columns = p.columns()?;
    let lookup = id.clone();
    let summary = state
        .history(move |read| read.hop_summary(&lookup, flow, range))
        .await??
        .ok_or(ApiError::UnknownTarget { id: id.clone() })?;
    let body = export::render(&id, flow.branch(), range, now, &summary, format, columns)
        .map_err(|err| ApiError::internal("rendering an export", err))?;
    let branch = flow
        .branch()
        .map(|b| format!("-branch{b}"))
        .unwrap_or_default();
    let filename = format!(
        "attachment; filename=\"hopwatch-{id}{branch}-{}-{}.{}\"",
        range.from_ms,
        range.to_ms,
        format.extension()
    );
    let disposition = HeaderValue::from_str(&filename)
        .map_err(|err| ApiError::internal("naming an export", err))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

pub async fn overview_live(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(live::overview(state)?.into_response())
}

pub async fn target_live(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let lookup = id.clone();
    if state
        .read(move |read| read.target(&lookup))
        .await?
        .is_none()
    {
        return Err(ApiError::UnknownTarget { id });
    }
    Ok(live::target(state, id)?.into_response())
}

// ---- writes ----

/// A field's text: trimmed, non-empty, at most `max` characters, no control characters.
fn text_field(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let invalid = |reason: String| ApiError::InvalidField {
        field: field.to_owned(),
        reason,
    };
    if value.trim().is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if value.chars().count() > max {
        return Err(invalid(format!("longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("contains control characters".into()));
    }
    Ok(())
}

/// The shape checks of a new target; the service checks the meaning (ranges,
/// addresses) against the same rules as the config file.
fn validate_new_target(t: &NewTarget) -> Result<(), ApiError> {
    query::target_id(&t.name).map_err(|_| ApiError::InvalidField {
        field: "name".into(),
        reason: format!(
            "{:?} is not a valid name: use 1 to 64 characters of letters, digits, '.', '_' and '-'",
            t.name
        ),
    })?;
    text_field("host", &t.host, MAX_HOST)?;
    if !t
        .host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
    {
        return Err(ApiError::InvalidField {
            field: "host".into(),
            reason: format!("{:?} is neither an IP address nor a host name", t.host),
        });
    }
    if let Some(label) = &t.label {
        text_field("label", label, MAX_LABEL)?;
    }
    if let Some(description) = &t.description {
        text_field("description", description, MAX_DESCRIPTION)?;
    }
    if t.tags.len() > MAX_TAGS {
        return Err(ApiError::InvalidField {
            field: "tags".into(),
            reason: format!("at most {MAX_TAGS} tags"),
        });
    }
    for tag in &t.tags {
        text_field("tags", tag, MAX_TAG)?;
    }
    if let Some(protocol) = &t.protocol {
        if !matches!(protocol.as_str(), "icmp" | "udp" | "tcp") {
            return Err(ApiError::InvalidField {
                field: "protocol".into(),
                reason: format!("{protocol:?} is not a protocol; use icmp, udp or tcp"),
            });
        }
    }
    for (field, value) in [("interval", &t.interval), ("timeout", &t.timeout)] {
        if let Some(value) = value {
            text_field(field, value, MAX_DURATION_TEXT)?;
        }
    }
    Ok(())
}

/// One target (an object, answered with its outcome) or a list of them (an
/// array: all are added or none, answered with `{"added": [outcome, ...]}`).
pub async fn add_target(
    State(state): State<AppState>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let serde_json::Value::Array(entries) = body else {
        // One object: decoded exactly as before lists were accepted.
        let bytes = serde_json::to_vec(&body)
            .map_err(|err| ApiError::internal("re-reading a request body", err))?;
        let Json(new) = Json::<NewTarget>::from_bytes(&bytes)?;
        validate_new_target(&new)?;
        let outcome = state.control(move |c| c.add_target(&new)).await??;
        return Ok((StatusCode::CREATED, Json(outcome)).into_response());
    };
    let targets = check_target_list(entries)?;
    let outcomes = state.control(move |c| c.add_targets(&targets)).await??;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "added": outcomes })),
    )
        .into_response())
}

/// Decodes and shape-checks every entry of a list of targets; names every
/// bad entry (its index, the field and why), or returns them all.
pub fn check_target_list(entries: Vec<serde_json::Value>) -> Result<Vec<NewTarget>, ApiError> {
    if entries.is_empty() {
        return Err(ApiError::InvalidRequest {
            reason: "the list of targets is empty".to_owned(),
        });
    }
    if entries.len() > MAX_TARGETS_AT_ONCE {
        return Err(ApiError::InvalidRequest {
            reason: format!(
                "{} targets in one list; send at most {MAX_TARGETS_AT_ONCE} at once",
                entries.len()
            ),
        });
    }
    let mut errors = Vec::new();
    let mut targets = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        if !entry.is_object() {
            errors.push(EntryError {
                index,
                field: None,
                reason: "not an object; each entry is a target like {\"name\": ..., \"host\": ...}"
                    .to_owned(),
            });
            continue;
        }
        let new: NewTarget = match serde_path_to_error::deserialize(entry) {
            Ok(new) => new,
            Err(err) => {
                let reason = err.inner().to_string();
                let path = err.path().to_string();
                // A missing or unknown field is reported at the entry itself;
                // its name is in the message.
                let field = if path == "." {
                    reason.split('`').nth(1).map(str::to_owned)
                } else {
                    Some(path)
                };
                errors.push(EntryError {
                    index,
                    field,
                    reason,
                });
                continue;
            }
        };
        if let Err(err) = validate_new_target(&new) {
            let (field, reason) = match err {
                ApiError::InvalidField { field, reason } => (Some(field), reason),
                other => (None, other.to_string()),
            };
            errors.push(EntryError {
                index,
                field,
                reason,
            });
            continue;
        }
        if let Some(first) = targets
            .iter()
            .position(|(_, t): &(usize, NewTarget)| t.name == new.name)
        {
            errors.push(EntryError {
                index,
                field: Some("name".to_owned()),
                reason: format!(
                    "{:?} is also the name of entry {}",
                    new.name, targets[first].0
                ),
            });
            continue;
        }
        targets.push((index, new));
    }
    if errors.is_empty() {
        Ok(targets.into_iter().map(|(_, t)| t).collect())
    } else {
        Err(ApiError::InvalidEntries { errors })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigParams {
    format: Option<String>,
}

/// The running configuration, secrets redacted: JSON by default, or the
/// TOML file (`format=toml`, as an attachment).
pub async fn config(
    State(state): State<AppState>,
    params: Result<Query<ConfigParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let toml = match p.format.as_deref() {
        None | Some("json") => false,
        Some("toml") => true,
        Some(other) => {
            return Err(ApiError::param(
                "format",
                format!("{other:?} is not a config format; use json or toml"),
            ))
        }
    };
    let config = state.read(|read| read.config()).await??;
    if !toml {
        return Ok(Json(config).into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/toml; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"hopwatch-config.toml\""),
            ),
        ],
        config.toml,
    )
        .into_response())
}

pub async fn remove_target(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let outcome = state.control(move |c| c.remove_target(&id)).await??;
    Ok(Json(outcome).into_response())
}

async fn set_paused(
    state: AppState,
    path: Result<Path<String>, PathRejection>,
    paused: bool,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let outcome = state.control(move |c| c.set_paused(&id, paused)).await??;
    Ok(Json(outcome).into_response())
}

pub async fn pause(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    set_paused(state, path, true).await
}

pub async fn resume(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    set_paused(state, path, false).await
}

// ---- health and metrics ----

/// Liveness: always 200 while the process serves requests. A degraded
/// component (see [`crate::dto::ComponentHealthDto`]) turns `status` into
/// `degraded` and is listed, so a probe or a human sees it without the
/// daemon being restarted over it.
pub async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let (components, remote_write) = state
        .read(|read| (read.components(), read.remote_write()))
        .await
        .unwrap_or_default();
    let degraded: Vec<ComponentHealthDto> = components.into_iter().filter(|c| c.degraded).collect();
    let mut body = if degraded.is_empty() {
        serde_json::json!({ "status": "ok" })
    } else {
        serde_json::json!({ "status": "degraded", "degraded": degraded })
    };
    // A receiver that is down does not make hopwatch degraded (it backfills
    // when the receiver is back); its state is shown alongside.
    if !remote_write.is_empty() {
        body["remote_write"] = serde_json::json!(remote_write);
    }
    Json(body)
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
    /// Why not, when not ready.
    reason: Option<&'static str>,
    timestamp_source: String,
    #[serde(flatten)]
    health: HealthDto,
}

/// Ready when the probe engine runs and the daemon is not stopping. The store's
/// health is reported but does not make the daemon unready: probing and the
/// live view go on while the disk is full.
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let health = state.read(|read| read.health()).await?;
    let reason = if health.shutting_down || state.is_stopping() {
        Some("shutting down")
    } else if !health.engine.running {
        Some("the probe engine is not running")
    } else {
        None
    };
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Ready {
        ready: reason.is_none(),
        reason,
        timestamp_source: health.engine.timestamp_source.clone(),
        health,
    };
    Ok((status, Json(body)).into_response())
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    // The text is sent as it is encoded, a chunk at a time, so a large
    // scrape holds a few chunks in memory instead of the whole text
    // (metrics::encode_chunked).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let aborted = tx.clone();
    tokio::spawn(async move {
        let encoded = state
            .read(move |read| {
                let encoded = metrics::encode_chunked(read.metrics(), |chunk| {
                    tx.blocking_send(Ok(chunk)).is_ok()
                });
                read.scrape_done();
                encoded
            })
            .await;
        // A scraper that went away is not an error; anything else cuts the
        // body short, so the scrape fails instead of reading partial metrics.
        let failed = match encoded {
            Ok(Ok(())) => return,
            Ok(Err(_)) if aborted.is_closed() => return,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::warn!(error = %failed, "encoding /metrics failed; the scrape is cut short");
        let _ = aborted
            .send(Err(std::io::Error::other("encoding metrics failed")))
            .await;
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::HopRef;

    const NOW: u64 = 1_700_000_000_000;

    /// What any outcome of [`check_query`] must satisfy (the fuzz target
    /// `api_query` checks the same): a refusal is a 400 that names one of the
    /// endpoint's parameters when it is about one; what is accepted is a non-empty
    /// range of at most [`query::MAX_SPAN`] and counts within their limits.
    fn check(endpoint: QueryEndpoint, raw: &str) -> Result<CheckedQuery, ApiError> {
        let result = check_query(endpoint, raw, NOW);
        let range_ok = |r: &TimeRange| {
            assert!(r.from_ms < r.to_ms, "{raw:?}: {r:?}");
            assert!(r.span_ms() <= query::MAX_SPAN.as_millis() as u64, "{raw:?}");
        };
        match &result {
            Err(err) => {
                assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{raw:?}: {err}");
                if let ApiError::InvalidParam { name, .. } = err {
                    assert!(endpoint.params().contains(name), "{raw:?}: {err}");
                }
            }
            Ok(CheckedQuery::Range(r)) | Ok(CheckedQuery::Export(_, r)) => range_ok(r),
            Ok(CheckedQuery::Sized(r, n)) => {
                range_ok(r);
                let max = match endpoint {
                    QueryEndpoint::Heatmap => query::MAX_COLUMNS,
                    _ => query::MAX_POINTS,
                };
                assert!((1..=max).contains(n), "{raw:?}: {n}");
            }
            Ok(CheckedQuery::Series(q)) => {
                range_ok(&q.range);
                assert!((1..=query::MAX_POINTS).contains(&q.max_points));
                assert_ne!(q.hops, HopSelection::One(HopRef::Ttl(0)));
            }
        }
        result
    }

    #[test]
    fn queries_decode_as_the_handlers_do() {
        let series = check(
            QueryEndpoint::Series,
            "hop=3&from=1699990000000&to=2023-11-14T22:00:00Z&max_points=10",
        )
        .unwrap();
        assert_eq!(
            series,
            CheckedQuery::Series(SeriesQuery {
                flow: FlowSelection::Target,
                hops: HopSelection::One(HopRef::Ttl(3)),
                range: TimeRange {
                    from_ms: 1_699_990_000_000,
                    to_ms: 1_699_999_200_000
                },
                max_points: 10,
            })
        );
        assert_eq!(
            check(QueryEndpoint::Incidents, "").unwrap(),
            CheckedQuery::Range(TimeRange::last(
                std::time::Duration::from_secs(30 * 86_400),
                NOW
            ))
        );
        assert!(matches!(
            check(QueryEndpoint::Export, "format=json&range=1h").unwrap(),
            CheckedQuery::Export(Format::Json, _)
        ));
        for (endpoint, raw) in [
            (QueryEndpoint::Events, "columns=3"),
            (QueryEndpoint::Heatmap, "columns=-1"),
            (QueryEndpoint::Series, "max_points=0"),
            (QueryEndpoint::Series, "a b"),
        ] {
            assert!(check(endpoint, raw).is_err(), "{raw}");
        }
    }

    /// The fuzz target's property in the normal suite: random and mutated query
    /// strings never panic the decoding and satisfy [`check`].
    #[test]
    fn random_and_mutated_queries_are_refused_or_sane() {
        // xorshift64*: deterministic, and no dependency for one test.
        let mut state = 0x6170_695f_7175_6572_u64;
        let mut next = move |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
        };
        let keys = [
            "hop",
            "branch",
            "range",
            "from",
            "to",
            "max_points",
            "columns",
            "format",
            "target",
            "",
        ];
        let values = [
            "",
            "0",
            "1",
            "3",
            "255",
            "256",
            "-1",
            "all",
            "dest",
            "destination",
            "1h",
            "15m",
            "30d",
            "90d",
            "1y",
            "2h",
            "1000",
            "5000",
            "18446744073709551615",
            "18446744073709551616",
            "2023-11-14T22:00:00Z",
            "2023-11-14 22:00:00",
            "9999-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "csv",
            "json",
            "%00",
            "%ff",
            "%",
            "+",
            "%2B1",
            "é",
            "a=b",
        ];
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let endpoint = QueryEndpoint::ALL[next(QueryEndpoint::ALL.len())];
            let mut pairs: Vec<String> = (0..next(5))
                .map(|_| {
                    let params = endpoint.params();
                    let key = if next(8) == 0 {
                        keys[next(keys.len())]
                    } else {
                        params[next(params.len())]
                    };
                    format!("{key}={}", values[next(values.len())])
                })
                .collect();
            if next(4) == 0 && !pairs.is_empty() {
                // Byte-level damage: a character dropped, doubled or replaced.
                let at = next(pairs.len());
                let mut bytes = pairs[at].clone().into_bytes();
                if !bytes.is_empty() {
                    let i = next(bytes.len());
                    match next(3) {
                        0 => drop(bytes.remove(i)),
                        1 => bytes.insert(i, bytes[i]),
                        _ => bytes[i] = b"&=%#?+ "[next(8)],
                    }
                }
                pairs[at] = String::from_utf8_lossy(&bytes).into_owned();
            }
            match check(endpoint, &pairs.join("&")) {
                Ok(_) => ok += 1,
                Err(_) => refused += 1,
            }
        }
        assert!(
            ok > 2_000 && refused > 2_000,
            "{ok} accepted, {refused} refused"
        );
    }
}
