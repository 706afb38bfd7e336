//! `querier.v1.QuerierService`: the connect RPCs Grafana's Pyroscope data source and the
//! Pyroscope UI call.
//!
//! Windows: querier.v1 sends `[start, end]` in ms and Pyroscope treats both ends as included,
//! so a query here reads `[start, end + 1)`.

use std::collections::HashSet;
use std::future::Future;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::SharedState;
use super::connect::{self, Code, ConnectError};
use crate::model::LABEL_PROFILE_TYPE;
use crate::model::{ProfileType, Tenant};
use crate::params::{self, NodeLimits};
use crate::proto::querier::v1 as querier;
use crate::proto::types::v1 as types;
use crate::query::{Aggregation, FlameTree, HeatmapKind, RowFilter};
use crate::render;

/// Window used when a metadata request names none (start = end = 0).
const DEFAULT_METADATA_WINDOW_MS: i64 = 24 * 3600 * 1000;

pub async fn dispatch(
    State(state): State<SharedState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let (tenant, body) = super::connect_request(&state, &headers, body).await?;
    let started = Instant::now();
    let s = &state;
    let response = match method.as_str() {
        "ProfileTypes" => {
            call(&headers, &body, s, |r: querier::ProfileTypesRequest| {
                profile_types(s, tenant, r)
            })
            .await
        }
        "LabelNames" => {
            call(&headers, &body, s, |r: types::LabelNamesRequest| {
                label_names(s, tenant, r)
            })
            .await
        }
        "LabelValues" => {
            call(&headers, &body, s, |r: types::LabelValuesRequest| {
                label_values(s, tenant, r)
            })
            .await
        }
        "Series" => call(&headers, &body, s, |r: querier::SeriesRequest| series(s, tenant, r)).await,
        "SelectMergeStacktraces" => {
            call(&headers, &body, s, |r: querier::SelectMergeStacktracesRequest| {
                select_merge_stacktraces(s, tenant, r)
            })
            .await
        }
        "SelectMergeSpanProfile" => {
            call(&headers, &body, s, |r: querier::SelectMergeSpanProfileRequest| {
                select_merge_span_profile(s, tenant, r)
            })
            .await
        }
        "SelectMergeProfile" => {
            call(&headers, &body, s, |r: querier::SelectMergeProfileRequest| {
                select_merge_profile(s, tenant, r)
            })
            .await
        }
        "SelectSeries" => {
            call(&headers, &body, s, |r: querier::SelectSeriesRequest| {
                select_series(s, tenant, r)
            })
            .await
        }
        "SelectHeatmap" => {
            call(&headers, &body, s, |r: querier::SelectHeatmapRequest| {
                select_heatmap(s, tenant, r)
            })
            .await
        }
        "Diff" => call(&headers, &body, s, |r: querier::DiffRequest| diff(s, tenant, r)).await,
        "GetProfileStats" => {
            call(&headers, &body, s, |_: types::GetProfileStatsRequest| {
                profile_stats(s, tenant)
            })
            .await
        }
        // Profiles Drilldown's query-cost preview: an empty answer, as Pyroscope's v2
        // query frontend gives.
        "AnalyzeQuery" => {
            call(&headers, &body, s, |r: querier::AnalyzeQueryRequest| {
                analyze_query(s, tenant, r)
            })
            .await
        }
        other => Err(ConnectError::unimplemented(format!(
            "querier.v1.QuerierService/{other} is not implemented"
        ))),
    };
    state.metrics.observe_query(&method, started.elapsed().as_secs_f64());
    response
}

pub(super) async fn call<Req, Resp, F, Fut>(
    headers: &HeaderMap,
    body: &[u8],
    state: &SharedState,
    handler: F,
) -> Result<Response, ConnectError>
where
    Req: prost::Message + Default + DeserializeOwned,
    Resp: prost::Message + Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, ConnectError>>,
{
    let (request, codec) = connect::decode_request::<Req>(headers, body, state.config.max_body_bytes)?;
    let response = handler(request).await?;
    Ok(connect::encode_response(&response, codec))
}

/// `[start, end]` in ms → `[from, until)`; both 0 means the recent default window.
fn metadata_window(start: i64, end: i64) -> Result<(i64, i64), ConnectError> {
    Ok(params::metadata_window(
        start,
        end,
        DEFAULT_METADATA_WINDOW_MS,
        crate::now_ms(),
    )?)
}

/// Largest step of a time series query: a year.
const MAX_STEP_SECONDS: f64 = 366.0 * 86_400.0;
/// Most points one series of a time series query may have, as Prometheus's query API limit.
const MAX_SERIES_POINTS: i64 = 11_000;

/// A time series step in seconds as milliseconds: finite, between 1 ms and a year, and giving
/// at most [`MAX_SERIES_POINTS`] points over the window.
fn series_step_ms(step: f64, from_ms: i64, until_ms: i64) -> Result<i64, ConnectError> {
    if !step.is_finite() || !(0.001..=MAX_STEP_SECONDS).contains(&step) {
        return Err(ConnectError::invalid_argument(format!(
            "step must be a number of seconds from 0.001 to {MAX_STEP_SECONDS}, got {step}"
        )));
    }
    let step_ms = ((step * 1000.0).round() as i64).max(1);
    let points = (until_ms - from_ms) / step_ms + 1;
    if points > MAX_SERIES_POINTS {
        return Err(ConnectError::invalid_argument(format!(
            "a step of {step} s gives {points} points over this window, more than {MAX_SERIES_POINTS}: \
             choose a larger step"
        )));
    }
    Ok(step_ms)
}

/// The node count a request asks for, within `api.default_max_nodes` / `api.max_nodes_limit`.
fn max_nodes(state: &SharedState, requested: Option<i64>) -> Result<usize, ConnectError> {
    Ok(NodeLimits::from_config(&state.config).check(requested)?)
}

async fn profile_types(
    state: &SharedState,
    tenant: Tenant,
    request: querier::ProfileTypesRequest,
) -> Result<querier::ProfileTypesResponse, ConnectError> {
    let (from, until) = metadata_window(request.start, request.end)?;
    let types = state.querier.profile_types(&tenant, from, until).await?;
    Ok(querier::ProfileTypesResponse {
        profile_types: types.iter().map(ProfileType::to_proto).collect(),
    })
}

async fn label_names(
    state: &SharedState,
    tenant: Tenant,
    request: types::LabelNamesRequest,
) -> Result<types::LabelNamesResponse, ConnectError> {
    let (from, until) = metadata_window(request.start, request.end)?;
    let selectors = params::selectors(&request.matchers)?;
    let names = state.querier.label_names(&tenant, &selectors, from, until).await?;
    Ok(types::LabelNamesResponse { names })
}

async fn label_values(
    state: &SharedState,
    tenant: Tenant,
    request: types::LabelValuesRequest,
) -> Result<types::LabelValuesResponse, ConnectError> {
    let (from, until) = metadata_window(request.start, request.end)?;
    let selectors = params::selectors(&request.matchers)?;
    let names = state
        .querier
        .label_values(&tenant, &request.name, &selectors, from, until)
        .await?;
    Ok(types::LabelValuesResponse { names })
}

async fn series(
    state: &SharedState,
    tenant: Tenant,
    request: querier::SeriesRequest,
) -> Result<querier::SeriesResponse, ConnectError> {
    let (from, until) = metadata_window(request.start, request.end)?;
    let selectors = params::selectors(&request.matchers)?;
    let mut sets = state.querier.series_labels(&tenant, &selectors, from, until).await?;
    if !request.label_names.is_empty() {
        sets = sets.iter().map(|labels| labels.project(&request.label_names)).collect();
        sets.sort();
        sets.dedup();
    }
    Ok(querier::SeriesResponse {
        labels_set: sets
            .iter()
            .map(|labels| types::Labels {
                labels: labels.to_pairs(),
            })
            .collect(),
    })
}

/// Reads the merged tree of one select request, filtered by call site when asked and to the
/// profiles of `profile_ids` when there are any (heatmap exemplars' ids, see
/// [`crate::model::ProfileId`]; malformed ones are refused, unknown ones match nothing); with
/// `cut`, cut to that many nodes while it is merged (the flame graph of the same `max_nodes`
/// is drawn the same from it).
#[allow(clippy::too_many_arguments)]
async fn merged_tree(
    state: &SharedState,
    tenant: &Tenant,
    profile_type_id: &str,
    label_selector: &str,
    start: i64,
    end: i64,
    stack_trace_selector: Option<&types::StackTraceSelector>,
    profile_ids: &[String],
    cut: Option<usize>,
) -> Result<(FlameTree, ProfileType), ConnectError> {
    let select = params::querier_select(tenant.clone(), profile_type_id, label_selector, start, end)?;
    let filter = if profile_ids.is_empty() {
        None
    } else {
        Some(RowFilter::profiles(&params::profile_ids(profile_ids)?))
    };
    let call_site = stack_trace_selector.is_some_and(|selector| !selector.call_site.is_empty());
    // A call-site filter keeps a subtree, cut afterwards by the renderer.
    let cut = cut.filter(|_| !call_site);
    let tree = match (&filter, cut) {
        (Some(filter), cut) => state.querier.select_merge_filtered(&select, filter, cut).await?,
        (None, Some(max_nodes)) => state.querier.select_merge_truncated(&select, max_nodes).await?,
        (None, None) => state.querier.select_merge(&select).await?,
    };
    let tree = match stack_trace_selector {
        Some(selector) if !selector.call_site.is_empty() => {
            let call_site: Vec<&str> = selector
                .call_site
                .iter()
                .map(|location| location.name.as_str())
                .collect();
            tree.filter_call_site(&call_site)
        }
        _ => tree,
    };
    Ok((tree, select.profile_type))
}

async fn select_merge_stacktraces(
    state: &SharedState,
    tenant: Tenant,
    request: querier::SelectMergeStacktracesRequest,
) -> Result<querier::SelectMergeStacktracesResponse, ConnectError> {
    let max_nodes = max_nodes(state, request.max_nodes)?;
    let (tree, _) = merged_tree(
        state,
        &tenant,
        &request.profile_type_id,
        &request.label_selector,
        request.start,
        request.end,
        request.stack_trace_selector.as_ref(),
        &request.profile_id_selector,
        Some(max_nodes),
    )
    .await?;
    Ok(querier::SelectMergeStacktracesResponse {
        flamegraph: Some(render::flamegraph(&tree, Some(max_nodes))),
        tree: Bytes::new(),
    })
}

/// Profiles Drilldown's query-cost preview. `query` is a selector, optionally behind a
/// profile type (`process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="api"}`), as the
/// legacy render routes read it.
async fn analyze_query(
    state: &SharedState,
    tenant: Tenant,
    request: querier::AnalyzeQueryRequest,
) -> Result<querier::AnalyzeQueryResponse, ConnectError> {
    let query = request.query.trim();
    let (profile_type, selector) = match params::typed_query(query) {
        Ok((profile_type, selector)) => (Some(profile_type), selector),
        Err(_) => (None, params::selector(if query.is_empty() { "{}" } else { query })?),
    };
    let (from_ms, until_ms) = metadata_window(request.start, request.end)?;
    let analysis = state
        .querier
        .analyze(&tenant, profile_type.as_ref(), &selector, from_ms, until_ms)
        .await?;
    let (head, blocks) = (analysis.head, analysis.blocks);
    Ok(querier::AnalyzeQueryResponse {
        query_scopes: vec![
            querier::QueryScope {
                component_type: "Short term storage (head)".into(),
                component_count: 1 + analysis.peers as u64,
                series_count: head.series,
                sample_count: head.rows,
                ..Default::default()
            },
            querier::QueryScope {
                component_type: "Long term storage (blocks)".into(),
                component_count: 1,
                block_count: blocks.blocks,
                series_count: blocks.series,
                sample_count: blocks.rows,
                index_bytes: blocks.index_bytes,
                profile_bytes: blocks.row_bytes,
                symbol_bytes: blocks.symbol_bytes,
                ..Default::default()
            },
        ],
        query_impact: Some(querier::QueryImpact {
            total_bytes_in_time_range: blocks.index_bytes + blocks.row_bytes + blocks.symbol_bytes,
            total_queried_series: head.series + blocks.series,
            deduplication_needed: false,
        }),
    })
}

/// Span ids of a `span_selector`: each exactly 16 hex digits, as Pyroscope's
/// `model.NewSpanSelector` demands (anything else is invalid_argument). The all-zero id is
/// "no span" in storage, so it selects nothing.
fn parse_span_selector(spans: &[String]) -> Result<HashSet<u64>, ConnectError> {
    let mut ids = spans
        .iter()
        .map(|span| {
            if span.len() != 16 {
                return Err(ConnectError::invalid_argument(format!(
                    "invalid span id length: {span:?}"
                )));
            }
            if !span.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConnectError::invalid_argument(format!("invalid span id: {span:?}")));
            }
            u64::from_str_radix(span, 16)
                .map_err(|_| ConnectError::invalid_argument(format!("invalid span id: {span:?}")))
        })
        .collect::<Result<HashSet<u64>, _>>()?;
    ids.remove(&0);
    Ok(ids)
}

/// The flame graph of the samples whose `span_id` label is one of `span_selector` (what
/// Grafana's traces-to-profiles link calls). Samples without a span id never match.
async fn select_merge_span_profile(
    state: &SharedState,
    tenant: Tenant,
    request: querier::SelectMergeSpanProfileRequest,
) -> Result<querier::SelectMergeSpanProfileResponse, ConnectError> {
    let max_nodes = max_nodes(state, request.max_nodes)?;
    let select = params::querier_select(
        tenant,
        &request.profile_type_id,
        &request.label_selector,
        request.start,
        request.end,
    )?;
    let span_ids = parse_span_selector(&request.span_selector)?;
    let tree = state.querier.select_merge_spans(&select, &span_ids).await?;
    Ok(querier::SelectMergeSpanProfileResponse {
        flamegraph: Some(render::flamegraph(&tree, Some(max_nodes))),
        tree: Bytes::new(),
    })
}

async fn select_merge_profile(
    state: &SharedState,
    tenant: Tenant,
    request: querier::SelectMergeProfileRequest,
) -> Result<crate::proto::google::v1::Profile, ConnectError> {
    // Whole unless the request names a node count: a pprof is for tools that want every stack.
    let cut = match request.max_nodes {
        None | Some(0) => None,
        requested => Some(max_nodes(state, requested)?),
    };
    let (tree, profile_type) = merged_tree(
        state,
        &tenant,
        &request.profile_type_id,
        &request.label_selector,
        request.start,
        request.end,
        request.stack_trace_selector.as_ref(),
        &request.profile_id_selector,
        cut,
    )
    .await?;
    let duration_nanos = (request.end - request.start).saturating_mul(1_000_000);
    Ok(render::pprof(
        &tree,
        &profile_type,
        request.start.saturating_mul(1_000_000),
        duration_nanos,
    ))
}

async fn select_series(
    state: &SharedState,
    tenant: Tenant,
    request: querier::SelectSeriesRequest,
) -> Result<querier::SelectSeriesResponse, ConnectError> {
    // Checks start/end; the rows read are `[start − step, end]` (Pyroscope's rule, see
    // `Querier::select_series_range`).
    let select = params::querier_select(
        tenant,
        &request.profile_type_id,
        &request.label_selector,
        request.start,
        request.end,
    )?;
    let step_ms = series_step_ms(request.step, select.from_ms, select.until_ms)?;
    let aggregation = match request.aggregation {
        Some(1) => Aggregation::Average,
        _ => Aggregation::Sum,
    };
    // Pyroscope 2's rule: INDIVIDUAL gives each point its heaviest profile; SPAN is not
    // implemented there either.
    let with_exemplars = match types::ExemplarType::try_from(request.exemplar_type) {
        Ok(types::ExemplarType::Unspecified | types::ExemplarType::None) => false,
        Ok(types::ExemplarType::Individual) => true,
        Ok(types::ExemplarType::Span) => {
            return Err(ConnectError::new(
                Code::Unimplemented,
                "SelectSeries exemplar type span is not implemented (use SelectHeatmap with query_type SPAN)",
            ));
        }
        Err(_) => {
            return Err(ConnectError::invalid_argument(format!(
                "unknown exemplar_type {}",
                request.exemplar_type
            )));
        }
    };
    let call_site: Vec<String> = request
        .stack_trace_selector
        .iter()
        .flat_map(|selector| selector.call_site.iter().map(|location| location.name.clone()))
        .collect();
    let mut series = state
        .querier
        .select_series_range(
            &select,
            request.start,
            request.end,
            step_ms,
            &request.group_by,
            aggregation,
            &call_site,
        )
        .await?;
    if let Some(limit) = request.limit.filter(|&limit| limit > 0) {
        let total = |s: &crate::query::TimeSeries| s.points.iter().map(|(_, v)| v).sum::<f64>();
        series.sort_by(|a, b| total(b).total_cmp(&total(a)));
        series.truncate(limit as usize);
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    let group_by = &request.group_by;
    Ok(querier::SelectSeriesResponse {
        series: series
            .into_iter()
            .map(|s| types::Series {
                labels: s.labels.to_pairs(),
                points: s
                    .points
                    .into_iter()
                    .zip(s.exemplars)
                    .map(|((timestamp, value), heaviest)| types::Point {
                        value,
                        timestamp,
                        exemplars: if with_exemplars {
                            vec![exemplar(&heaviest, group_by)]
                        } else {
                            Vec::new()
                        },
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect(),
    })
}

/// A profile (or span) as a `types.v1.Exemplar`: its id opens it through
/// `profile_id_selector`; its labels are the stored series' own, less what the answer's series
/// already says (`group_by`) and the profile type.
fn exemplar(point: &crate::query::HeatmapPoint, group_by: &[String]) -> types::Exemplar {
    types::Exemplar {
        timestamp: point.profile.time_ms,
        profile_id: point.profile.to_string(),
        span_id: if point.span_id == 0 {
            String::new()
        } else {
            format!("{:016x}", point.span_id)
        },
        value: point.value,
        labels: point
            .labels
            .iter()
            .filter(|(name, _)| *name != LABEL_PROFILE_TYPE && !group_by.iter().any(|g| g == name))
            .map(|(name, value)| types::LabelPair {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect(),
        trace_id: String::new(),
    }
}

/// `SelectHeatmap`: profiles (or spans) per time slot and value range, see
/// [`crate::query::Querier::select_heatmap`]. Exemplars (one per non-empty cell, the heaviest
/// point) come with any exemplar type but NONE / UNSPECIFIED; their `profile_id` opens the
/// profile through `profile_id_selector`, their `span_id` through `SelectMergeSpanProfile`.
async fn select_heatmap(
    state: &SharedState,
    tenant: Tenant,
    request: querier::SelectHeatmapRequest,
) -> Result<querier::SelectHeatmapResponse, ConnectError> {
    let select = params::querier_select(
        tenant,
        &request.profile_type_id,
        &request.label_selector,
        request.start,
        request.end,
    )?;
    let step_ms = series_step_ms(request.step, select.from_ms, select.until_ms)?;
    let kind = match querier::HeatmapQueryType::try_from(request.query_type) {
        Ok(querier::HeatmapQueryType::Unspecified | querier::HeatmapQueryType::Individual) => HeatmapKind::Individual,
        Ok(querier::HeatmapQueryType::Span) => HeatmapKind::Span,
        Err(_) => {
            return Err(ConnectError::invalid_argument(format!(
                "unknown heatmap query_type {}",
                request.query_type
            )));
        }
    };
    let exemplars = match types::ExemplarType::try_from(request.exemplar_type) {
        Ok(types::ExemplarType::Unspecified | types::ExemplarType::None) => false,
        Ok(types::ExemplarType::Individual | types::ExemplarType::Span) => true,
        Err(_) => {
            return Err(ConnectError::invalid_argument(format!(
                "unknown exemplar_type {}",
                request.exemplar_type
            )));
        }
    };
    let limit = request
        .limit
        .filter(|&limit| limit > 0)
        .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX));
    let heatmap = state
        .querier
        .select_heatmap(
            &select,
            request.start,
            request.end,
            step_ms,
            &request.group_by,
            kind,
            limit,
        )
        .await?;
    let y_min: Vec<f64> = heatmap.y_min.iter().map(|&bound| bound as f64).collect();
    let group_by = &request.group_by;
    Ok(querier::SelectHeatmapResponse {
        series: heatmap
            .series
            .iter()
            .map(|series| types::HeatmapSeries {
                labels: series.labels.to_pairs(),
                slots: series
                    .slots
                    .iter()
                    .map(|slot| types::HeatmapSlot {
                        timestamp: slot.timestamp_ms,
                        y_min: y_min.clone(),
                        counts: slot
                            .cells
                            .iter()
                            .map(|cell| i32::try_from(cell.count).unwrap_or(i32::MAX))
                            .collect(),
                        exemplars: if exemplars {
                            slot.cells
                                .iter()
                                .filter_map(|cell| cell.exemplar.as_ref())
                                .map(|point| exemplar(point, group_by))
                                .collect()
                        } else {
                            Vec::new()
                        },
                    })
                    .collect(),
            })
            .collect(),
    })
}

async fn diff(
    state: &SharedState,
    tenant: Tenant,
    request: querier::DiffRequest,
) -> Result<querier::DiffResponse, ConnectError> {
    let (Some(left), Some(right)) = (request.left, request.right) else {
        return Err(ConnectError::invalid_argument("diff needs both left and right"));
    };
    if left.profile_type_id != right.profile_type_id {
        return Err(ConnectError::invalid_argument(
            "left and right must query the same profile type",
        ));
    }
    let max_nodes = max_nodes(state, left.max_nodes.or(right.max_nodes))?;
    // A call-site filter keeps a subtree and a profile filter picks rows: both merge whole.
    let filtered = |request: &querier::SelectMergeStacktracesRequest| {
        !request.profile_id_selector.is_empty()
            || request
                .stack_trace_selector
                .as_ref()
                .is_some_and(|selector| !selector.call_site.is_empty())
    };
    let (left_tree, right_tree) = if !filtered(&left) && !filtered(&right) {
        // Both sides cut while merged, each keeping what the other keeps (the union cut).
        let left_select = params::querier_select(
            tenant.clone(),
            &left.profile_type_id,
            &left.label_selector,
            left.start,
            left.end,
        )?;
        let right_select = params::querier_select(
            tenant.clone(),
            &right.profile_type_id,
            &right.label_selector,
            right.start,
            right.end,
        )?;
        state
            .querier
            .select_merge_pair_truncated(&left_select, &right_select, max_nodes)
            .await?
    } else {
        let (left_tree, _) = merged_tree(
            state,
            &tenant,
            &left.profile_type_id,
            &left.label_selector,
            left.start,
            left.end,
            left.stack_trace_selector.as_ref(),
            &left.profile_id_selector,
            None,
        )
        .await?;
        let (right_tree, _) = merged_tree(
            state,
            &tenant,
            &right.profile_type_id,
            &right.label_selector,
            right.start,
            right.end,
            right.stack_trace_selector.as_ref(),
            &right.profile_id_selector,
            None,
        )
        .await?;
        (left_tree, right_tree)
    };
    Ok(querier::DiffResponse {
        flamegraph: Some(render::flamegraph_diff(&left_tree, &right_tree, Some(max_nodes))),
    })
}

async fn profile_stats(state: &SharedState, tenant: Tenant) -> Result<types::GetProfileStatsResponse, ConnectError> {
    let range = state.querier.time_range(&tenant).await?;
    Ok(match range {
        Some((oldest, newest)) => types::GetProfileStatsResponse {
            data_ingested: true,
            oldest_profile_time: oldest,
            newest_profile_time: newest,
        },
        None => types::GetProfileStatsResponse {
            data_ingested: false,
            oldest_profile_time: 0,
            newest_profile_time: 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_selectors_are_16_hex_digits() {
        let ids = parse_span_selector(&["00000000000000ef".into(), "FFFFFFFFFFFFFFFF".into()]).unwrap();
        assert_eq!(ids, HashSet::from([0xef, u64::MAX]));
        // The all-zero id means "no span" in storage: it selects nothing.
        assert!(parse_span_selector(&["0000000000000000".into()]).unwrap().is_empty());
        for bad in ["239", "+00000000000000e", "000000000000000g", "00000000000000ef0"] {
            let err = parse_span_selector(&[bad.into()]).unwrap_err();
            assert_eq!(err.code, connect::Code::InvalidArgument, "{bad}");
        }
    }
}
