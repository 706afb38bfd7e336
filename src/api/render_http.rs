//! `GET /api/v1/render?query=&type=&from=&until=&format=svg|json|pprof|folded`: a whole window
//! exported in one response, for browsers, curl and `pyrite export --url`; and
//! `GET /api/v1/render-diff?…&baseline_from=&baseline_until=&format=svg|folded`: the window
//! against a baseline window, as a differential flame graph.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::SharedState;
use super::connect::ConnectError;
use super::legacy::{max_nodes_param, parse_render_query, time_window};
use super::querier::{max_nodes, parse_profile_type, parse_selector, query_error};
use super::tenant::tenant_from_headers;
use crate::query::SelectParams;
use crate::render::{self, ExportFormat, ExportWindowError};

/// Profile type of a render request that names none.
pub const DEFAULT_PROFILE_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// The profile type, selector and window a render request names.
struct Window {
    query: String,
    profile_type: crate::model::ProfileType,
    selector: crate::model::Selector,
    from_ms: i64,
    until_ms: i64,
}

/// Reads `query`, `type` and the window from `from_name`/`until_name` (default: the last hour).
fn window(
    params: &HashMap<String, String>,
    from_name: &str,
    until_name: &str,
    now: i64,
) -> Result<Window, ConnectError> {
    let get = |name: &str| params.get(name).map(String::as_str).filter(|value| !value.is_empty());
    let query = get("query").unwrap_or("{}");
    // `query` may carry the profile type in front of the selector, as `/pyroscope/render` does.
    let (profile_type, selector) = if query.trim_start().starts_with('{') {
        (
            parse_profile_type(get("type").unwrap_or(DEFAULT_PROFILE_TYPE))?,
            parse_selector(query)?,
        )
    } else {
        parse_render_query(query)?
    };
    let (from_ms, until_ms) = time_window(params, from_name, until_name, now)?;
    Ok(Window {
        query: query.to_string(),
        profile_type,
        selector,
        from_ms,
        until_ms,
    })
}

pub async fn render(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let tenant = tenant_from_headers(&headers, state.config.require_tenant_header)?;
    let get = |name: &str| params.get(name).map(String::as_str).filter(|value| !value.is_empty());
    let Window {
        query,
        profile_type,
        selector,
        from_ms,
        until_ms,
    } = window(&params, "from", "until", crate::now_ms())?;
    let format: ExportFormat = get("format")
        .unwrap_or("json")
        .parse()
        .map_err(ConnectError::invalid_argument)?;
    let max_nodes = max_nodes(&state, max_nodes_param(&params)?)?;
    let params = SelectParams {
        tenant,
        profile_type,
        selector,
        from_ms,
        until_ms,
    };
    let body = render::export_window(&state.querier, params, query, format, Some(max_nodes))
        .await
        .map_err(|err| match err {
            ExportWindowError::Query(err) => query_error(err),
            ExportWindowError::Render(err) => ConnectError::internal(err.to_string()),
        })?;
    Ok(([(header::CONTENT_TYPE, format.media_type())], body).into_response())
}

pub async fn render_diff(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let tenant = tenant_from_headers(&headers, state.config.require_tenant_header)?;
    let now = crate::now_ms();
    let after = window(&params, "from", "until", now)?;
    let before = window(&params, "baseline_from", "baseline_until", now)?;
    if !params.contains_key("baseline_from") || !params.contains_key("baseline_until") {
        return Err(ConnectError::invalid_argument(
            "baseline_from and baseline_until name the window to compare against",
        ));
    }
    let select = |window: &Window| SelectParams {
        tenant: tenant.clone(),
        profile_type: window.profile_type.clone(),
        selector: window.selector.clone(),
        from_ms: window.from_ms,
        until_ms: window.until_ms,
    };
    let before_tree = state
        .querier
        .select_merge(&select(&before))
        .await
        .map_err(query_error)?;
    let after_tree = state.querier.select_merge(&select(&after)).await.map_err(query_error)?;
    match params.get("format").map(String::as_str).unwrap_or("svg") {
        "folded" | "collapsed" => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            render::folded_diff(&before_tree, &after_tree),
        )
            .into_response()),
        "svg" => {
            let options = render::SvgOptions {
                title: format!("{} {} against its baseline", after.profile_type.id(), after.query),
                subtitle: Some("red: grew since the baseline, blue: shrank".into()),
                profile_type: after.profile_type.clone(),
                max_nodes: Some(max_nodes(&state, max_nodes_param(&params)?)?),
            };
            let body = render::svg_diff(&before_tree, &after_tree, &options)
                .map_err(|err| ConnectError::internal(err.to_string()))?;
            Ok(([(header::CONTENT_TYPE, "image/svg+xml")], body).into_response())
        }
        other => Err(ConnectError::invalid_argument(format!(
            "unknown format {other:?} for a diff: expected svg or folded"
        ))),
    }
}
