//! Pyroscope's pre-connect HTTP API: `POST /ingest` (older SDKs, pyroscope-go,
//! @pyroscope/nodejs, curl) and `GET /pyroscope/{render,render-diff,label-values,labels}`.

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::SharedState;
use super::connect::ConnectError;
use super::tenant::tenant_from_headers;
use crate::error::{Classify, ErrorClass};
use crate::ingest::{IngestError, parse_folded, parse_ingest_name};
use crate::model::{Labels, ProfileType, Selector};
use crate::params::{self, Args, NodeLimits, RenderWindow};
use crate::render::{self, Timeline};

/// Default `/ingest` sample rate (Hz), as Pyroscope's agents assume.
const DEFAULT_SAMPLE_RATE: i64 = 100;
/// Smallest timeline step of `/pyroscope/render`, as Pyroscope's `CalcPointInterval`.
const MIN_TIMELINE_STEP_S: i64 = 15;

fn param<'a>(params: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    Args(params).get(names)
}

fn time_param(params: &HashMap<String, String>, name: &str, default_ms: i64) -> Result<i64, ConnectError> {
    Ok(params::time(param(params, &[name]), name, default_ms, crate::now_ms())?)
}

/// An `/ingest` error with Pyroscope's status rules on top of its class: a client error is 400
/// (422 for invalid pprof on the pprof path, 413 for more bytes than the burst).
fn ingest_status(err: IngestError, status_for_invalid: StatusCode) -> Response {
    if err.class() != ErrorClass::Client {
        return ConnectError::from(err).into_response();
    }
    let status = match err {
        IngestError::OverBurst { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => status_for_invalid,
    };
    ConnectError::from(err).with_status(status).into_response()
}

/// Takes an upload's bytes from the tenant's byte rate before it is decoded (see
/// [`crate::ingest::Ingester::admit_bytes`]); the refusal to answer otherwise.
fn admit_bytes(state: &SharedState, tenant: &crate::model::Tenant, size: usize) -> Option<Response> {
    let err = state.ingester.admit_bytes(tenant, size).err()?;
    state.metrics.record_ingest(tenant.as_str(), err.outcome(), size, 0);
    Some(ingest_status(err, StatusCode::BAD_REQUEST))
}

/// Counts a failed ingest and answers it; bytes of a push refused for now are given back.
fn ingest_failed(
    state: &SharedState,
    tenant: &crate::model::Tenant,
    size: usize,
    err: IngestError,
    status_for_invalid: StatusCode,
) -> Response {
    state.metrics.record_ingest(tenant.as_str(), err.outcome(), size, 0);
    if err.is_temporary_refusal() {
        state.ingester.refund_bytes(tenant, size);
    }
    ingest_status(err, status_for_invalid)
}

pub async fn ingest(
    State(state): State<SharedState>,
    Query(params): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, StatusError> {
    let tenant = tenant_from_headers(request.headers(), state.config.require_tenant_header)?;
    let name = parse_ingest_name(param(&params, &["name"]).unwrap_or(""))
        .map_err(|err| ConnectError::invalid_argument(format!("name: {err}")))?;
    let now = crate::now_ms();
    let from_ms = time_param(&params, "from", now)?;
    let until_ms = time_param(&params, "until", from_ms)?;
    let mut labels = name
        .labels(false)
        .map_err(|err| ConnectError::invalid_argument(err.to_string()))?;
    if let Some(spy) = param(&params, &["spyName"]) {
        labels.set("pyroscope_spy", spy);
    }
    let sample_rate =
        match param(&params, &["sampleRate"]) {
            None => DEFAULT_SAMPLE_RATE,
            Some(text) => text.parse::<i64>().ok().filter(|&rate| rate > 0).ok_or_else(|| {
                ConnectError::invalid_argument(format!("sampleRate {text:?} is not a positive integer"))
            })?,
        };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let format = param(&params, &["format"]).map(str::to_ascii_lowercase);
    let limit = state.config.max_body_bytes;
    match format.as_deref() {
        Some("pprof") => {
            let body = read_body(request, limit).await?;
            let labels_without_suffix = labels;
            Ok(ingest_pprof(&state, &tenant, labels_without_suffix, body, from_ms).await?)
        }
        Some(other @ ("jfr" | "speedscope" | "trie" | "tree")) => Err(unsupported_format(other)),
        None if content_type.starts_with("multipart/form-data") => {
            let mut multipart = Multipart::from_request(request, &state)
                .await
                .map_err(|err| ConnectError::invalid_argument(format!("multipart body: {err}")))?;
            let multipart_error = |what: &str, err: axum::extract::multipart::MultipartError| {
                if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large(limit)
                } else {
                    ConnectError::invalid_argument(format!("{what}: {err}")).into()
                }
            };
            let mut profile = None;
            while let Some(field) = multipart
                .next_field()
                .await
                .map_err(|err| multipart_error("multipart body", err))?
            {
                match field.name() {
                    Some("profile") => {
                        profile = Some(
                            field
                                .bytes()
                                .await
                                .map_err(|err| multipart_error("multipart part profile", err))?,
                        )
                    }
                    Some("prev_profile") => {
                        return Err(ConnectError::invalid_argument(
                            "unsupported client version: prev_profile parts are not accepted",
                        )
                        .into());
                    }
                    // sample_type_config only renames sample types for display; the types are kept as sent.
                    _ => {}
                }
            }
            let profile =
                profile.ok_or_else(|| ConnectError::invalid_argument("multipart body has no `profile` part"))?;
            Ok(ingest_pprof(&state, &tenant, labels, profile, from_ms).await?)
        }
        None | Some("folded" | "lines" | "groups" | "collapsed") => {
            let lines_mode = format.as_deref() == Some("lines");
            let body = read_body(request, limit).await?;
            Ok(ingest_folded(
                &state,
                &tenant,
                &name.suffix,
                labels,
                body,
                sample_rate,
                from_ms,
                until_ms,
                lines_mode,
            )
            .await?)
        }
        Some(other) => Err(unsupported_format(other)),
    }
}

/// A connect-style JSON error answered with a status of Pyroscope's legacy API.
pub struct StatusError(StatusCode, ConnectError);

impl From<ConnectError> for StatusError {
    fn from(error: ConnectError) -> Self {
        let status = error.http_status();
        Self(status, error)
    }
}

impl IntoResponse for StatusError {
    fn into_response(self) -> Response {
        let mut response = self.1.into_response();
        *response.status_mut() = self.0;
        response
    }
}

fn unsupported_format(format: &str) -> StatusError {
    StatusError(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ConnectError::unimplemented(format!(
            "format={format} is not supported; send pprof (format=pprof or multipart) or folded text"
        )),
    )
}

/// The body, at most `limit` bytes: a longer one is 413 (a client must not send it again as
/// is; its rest is drained so the client reads that), one that cannot be read 400.
async fn read_body(request: Request, limit: usize) -> Result<Bytes, StatusError> {
    let mut over_limit = false;
    let read = super::connect::read_body_within(request.into_body(), limit, |limit| {
        over_limit = true;
        too_large(limit).1
    })
    .await;
    read.map_err(|err| match over_limit {
        true => StatusError(StatusCode::PAYLOAD_TOO_LARGE, err),
        false => err.into(),
    })
}

fn too_large(limit: usize) -> StatusError {
    StatusError(
        StatusCode::PAYLOAD_TOO_LARGE,
        ConnectError::invalid_argument(format!(
            "request body is larger than api.max_body_bytes ({limit} bytes)"
        )),
    )
}

async fn ingest_pprof(
    state: &SharedState,
    tenant: &crate::model::Tenant,
    labels: Labels,
    body: Bytes,
    from_ms: i64,
) -> Result<Response, ConnectError> {
    let size = body.len();
    if let Some(refused) = admit_bytes(state, tenant, size) {
        return Ok(refused);
    }
    let decoded = state.pool.decode_pprof(body.clone(), state.ingester.limits()).await;
    let profile = match decoded {
        Ok(profile) => profile,
        Err(err) => {
            state.metrics.record_ingest(tenant.as_str(), "invalid", size, 0);
            return Ok(ingest_status(IngestError::from(err), StatusCode::UNPROCESSABLE_ENTITY));
        }
    };
    // Pyroscope replaces a missing or 1970 profile time with `from`.
    let time_ms = if profile.time_nanos < 365 * 24 * 3600 * 1_000_000_000 {
        Some(from_ms)
    } else {
        None
    };
    match state
        .ingester
        .push_decoded(tenant, labels, body, &profile, time_ms)
        .await
    {
        Ok(ingested) => {
            state
                .metrics
                .record_ingest(tenant.as_str(), "accepted", size, ingested.samples);
            Ok(StatusCode::OK.into_response())
        }
        Err(err) => Ok(ingest_failed(
            state,
            tenant,
            size,
            err,
            StatusCode::UNPROCESSABLE_ENTITY,
        )),
    }
}

/// Profile type of a folded upload, from the app name's suffix (Pyroscope's `convertMetadata`).
struct FoldedType {
    name: &'static str,
    sample_type: String,
    sample_unit: &'static str,
    /// CPU-like counts are samples at `sampleRate` and become nanoseconds.
    timed: bool,
}

fn folded_type(suffix: Option<&str>) -> Option<FoldedType> {
    let plain = |name, sample_type: &str, sample_unit| {
        Some(FoldedType {
            name,
            sample_type: sample_type.to_string(),
            sample_unit,
            timed: false,
        })
    };
    match suffix.unwrap_or("cpu") {
        "cpu" => Some(FoldedType {
            name: "process_cpu",
            sample_type: "cpu".into(),
            sample_unit: "nanoseconds",
            timed: true,
        }),
        "wall" => Some(FoldedType {
            name: "wall",
            sample_type: "wall".into(),
            sample_unit: "nanoseconds",
            timed: true,
        }),
        "itimer" => plain("process_cpu", "samples", "count"),
        s @ ("inuse_objects" | "alloc_objects") => plain("memory", s, "count"),
        s @ ("inuse_space" | "alloc_space") => plain("memory", s, "bytes"),
        "goroutines" => plain("goroutine", "goroutines", "count"),
        "mutex_count" => plain("mutex", "contentions", "count"),
        "mutex_duration" => plain("mutex", "delay", "nanoseconds"),
        "block_count" | "lock_count" => plain("block", "contentions", "count"),
        "block_duration" | "lock_duration" => plain("block", "delay", "nanoseconds"),
        s @ ("alloc_in_new_tlab_objects" | "alloc_outside_tlab_objects") => plain("memory", s, "count"),
        s @ ("alloc_in_new_tlab_bytes" | "alloc_outside_tlab_bytes") => plain("memory", s, "bytes"),
        "live" => plain("memory", "live", "count"),
        "exceptions" => plain("exceptions", "samples", "count"),
        "seconds" | "nanoseconds" | "microseconds" | "milliseconds" => plain("wall", "samples", "count"),
        "bytes" => plain("memory", "samples", "bytes"),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn ingest_folded(
    state: &SharedState,
    tenant: &crate::model::Tenant,
    suffix: &Option<String>,
    mut labels: Labels,
    body: Bytes,
    sample_rate: i64,
    from_ms: i64,
    _until_ms: i64,
    lines_mode: bool,
) -> Result<Response, ConnectError> {
    let kind = folded_type(suffix.as_deref())
        .ok_or_else(|| ConnectError::invalid_argument(format!("unknown profile type suffix {suffix:?} in name")))?;
    let size = body.len();
    if let Some(refused) = admit_bytes(state, tenant, size) {
        return Ok(refused);
    }
    let name = kind.name;
    let limits = state.ingester.limits().clone();
    // Parsing and encoding are CPU work: on the blocking pool.
    let (folded, raw) = state
        .pool
        .decode(move || {
            let owned_lines;
            let body: &[u8] = if lines_mode {
                // `lines`: one stack per line, each worth 1.
                let text = String::from_utf8_lossy(&body);
                owned_lines = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("{} 1\n", l.trim()))
                    .collect::<String>();
                owned_lines.as_bytes()
            } else {
                &body
            };
            let (period, scale) = if kind.timed {
                (
                    Some((kind.sample_type.as_str(), "nanoseconds")),
                    1_000_000_000 / sample_rate,
                )
            } else {
                (None, 1)
            };
            let folded = parse_folded(body, (&kind.sample_type, kind.sample_unit), period, scale, &limits)
                .map_err(|err| ConnectError::invalid_argument(err.to_string()))?;
            let raw = folded.encode();
            Ok::<_, ConnectError>((folded, raw))
        })
        .await?;
    labels.set(crate::model::LABEL_NAME, name);
    match state
        .ingester
        .push_decoded(tenant, labels, raw, &folded.profile, Some(from_ms))
        .await
    {
        Ok(ingested) => {
            state
                .metrics
                .record_ingest(tenant.as_str(), "accepted", size, ingested.samples);
            Ok(StatusCode::OK.into_response())
        }
        Err(err) => Ok(ingest_failed(state, tenant, size, err, StatusCode::BAD_REQUEST)),
    }
}

fn timeline_step_s(from_ms: i64, until_ms: i64) -> i64 {
    let raw = (until_ms - from_ms) / 1000 / 1500;
    let nice = [15, 30, 60, 300, 600, 1800, 3600, 21600, 86400];
    nice.iter()
        .copied()
        .find(|&step| step >= raw.max(MIN_TIMELINE_STEP_S))
        .unwrap_or(86400)
}

fn render_window(
    headers: &HeaderMap,
    state: &SharedState,
    params: &HashMap<String, String>,
    query_key: &str,
    from_key: &str,
    until_key: &str,
) -> Result<RenderWindow, ConnectError> {
    let tenant = tenant_from_headers(headers, state.config.require_tenant_header)?;
    Ok(RenderWindow::parse_legacy(
        tenant,
        Args(params),
        query_key,
        (from_key, until_key),
        crate::now_ms(),
    )?)
}

fn max_nodes(state: &SharedState, params: &HashMap<String, String>) -> Result<usize, ConnectError> {
    Ok(Args(params).max_nodes(NodeLimits::from_config(&state.config))?)
}

pub async fn render(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let window = render_window(&headers, &state, &params, "query", "from", "until")?;
    let max_nodes = max_nodes(&state, &params)?;
    // Cut while merged: the flamebearer of `max_nodes` is drawn the same from the cut tree.
    let tree = state.querier.select_merge_truncated(&window.select, max_nodes).await?;
    let step_s = timeline_step_s(window.select.from_ms, window.select.until_ms);
    // `aggregation=avg` averages the profiles of a step; `groupBy` adds one timeline per value.
    let aggregation = match param(&params, &["aggregation"]) {
        None | Some("sum") => crate::query::Aggregation::Sum,
        Some("avg" | "average") => crate::query::Aggregation::Average,
        Some(other) => {
            return Err(ConnectError::invalid_argument(format!(
                "aggregation {other:?}: use sum or avg"
            )));
        }
    };
    let group_by: Vec<String> = param(&params, &["groupBy", "group_by"])
        .map(|names| {
            names
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let series = state
        .querier
        .select_series(&window.select, step_s * 1000, &group_by, aggregation)
        .await?;
    let start_s = window.select.from_ms.div_euclid(1000 * step_s) * step_s;
    let end_s = (window.select.until_ms - 1).div_euclid(1000 * step_s) * step_s;
    let slots = ((end_s - start_s) / step_s + 1) as usize;
    let mut samples = vec![0u64; slots];
    let mut groups: std::collections::BTreeMap<String, Vec<u64>> = std::collections::BTreeMap::new();
    for series in &series {
        let key = if group_by.is_empty() {
            "*".to_string()
        } else {
            let values: Vec<&str> = group_by.iter().filter_map(|name| series.labels.get(name)).collect();
            if values.is_empty() {
                "*".to_string()
            } else {
                values.join(",")
            }
        };
        let group = groups.entry(key).or_insert_with(|| vec![0u64; slots]);
        for &(time_ms, value) in &series.points {
            let slot = ((time_ms / 1000 - start_s) / step_s) as usize;
            if let (Some(sample), Some(grouped)) = (samples.get_mut(slot), group.get_mut(slot)) {
                *sample += value.max(0.0) as u64;
                *grouped += value.max(0.0) as u64;
            }
        }
    }
    let timeline = Timeline {
        start_time_s: start_s,
        step_s,
        samples,
    };
    let mut body = render::flamebearer(&tree, &window.select.profile_type, Some(max_nodes), Some(timeline));
    if !group_by.is_empty() {
        body["groups"] = groups
            .into_iter()
            .map(|(key, samples)| {
                let timeline = serde_json::json!({
                    "startTime": start_s,
                    "samples": samples,
                    "durationDelta": step_s,
                    "watermarks": null,
                });
                (key, timeline)
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    Ok(axum::Json(body).into_response())
}

pub async fn render_diff(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let left = render_window(&headers, &state, &params, "leftQuery", "leftFrom", "leftUntil")?;
    let right = render_window(&headers, &state, &params, "rightQuery", "rightFrom", "rightUntil")?;
    if left.select.profile_type != right.select.profile_type {
        return Err(ConnectError::invalid_argument(
            "leftQuery and rightQuery must name the same profile type",
        ));
    }
    let max_nodes = max_nodes(&state, &params)?;
    let (left_tree, right_tree) = state
        .querier
        .select_merge_pair_truncated(&left.select, &right.select, max_nodes)
        .await?;
    let body = render::flamebearer_diff(&left_tree, &right_tree, &left.select.profile_type, Some(max_nodes));
    Ok(axum::Json(body).into_response())
}

/// The optional `query` selector of the metadata routes.
fn query_selectors(params: &HashMap<String, String>) -> Result<Vec<Selector>, ConnectError> {
    Ok(param(params, &["query"])
        .map(params::selector)
        .transpose()?
        .into_iter()
        .collect())
}

fn metadata_range(params: &HashMap<String, String>) -> Result<(i64, i64), ConnectError> {
    let now = crate::now_ms();
    let from_ms = time_param(params, "from", now - 24 * 3_600_000)?;
    let until_ms = time_param(params, "until", now)?.saturating_add(1);
    Ok((from_ms, until_ms))
}

pub async fn label_values(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let tenant = tenant_from_headers(&headers, state.config.require_tenant_header)?;
    let label = param(&params, &["label"]).ok_or_else(|| ConnectError::invalid_argument("label is required"))?;
    let (from_ms, until_ms) = metadata_range(&params)?;
    let values = if label == "__name__" {
        let types = state.querier.profile_types(&tenant, from_ms, until_ms).await?;
        types.iter().map(ProfileType::id).collect()
    } else {
        let selectors = query_selectors(&params)?;
        state
            .querier
            .label_values(&tenant, label, &selectors, from_ms, until_ms)
            .await?
    };
    Ok(axum::Json(values).into_response())
}

pub async fn labels(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let tenant = tenant_from_headers(&headers, state.config.require_tenant_header)?;
    let (from_ms, until_ms) = metadata_range(&params)?;
    let selectors = query_selectors(&params)?;
    let names = state
        .querier
        .label_names(&tenant, &selectors, from_ms, until_ms)
        .await?;
    Ok(axum::Json(names).into_response())
}
