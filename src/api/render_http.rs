//! `GET /api/v1/render?query=&type=&from=&until=&format=svg|json|pprof|folded`: a whole window
//! exported in one response, for browsers, curl and `pyrite export --url`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::SharedState;
use super::connect::ConnectError;
use super::legacy::{max_nodes_param, parse_render_query};
use super::querier::{max_nodes, parse_profile_type, parse_selector, query_error};
use super::tenant::tenant_from_headers;
use crate::model::parse_time_ms;
use crate::query::SelectParams;
use crate::render::{self, ExportFormat, ExportWindowError};

/// Profile type of a render request that names none.
pub const DEFAULT_PROFILE_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

pub async fn render(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let tenant = tenant_from_headers(&headers, state.config.require_tenant_header)?;
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
    let now = crate::now_ms();
    let time = |name: &str, default: i64| match get(name) {
        None => Ok(default),
        Some(text) => parse_time_ms(text, now).map_err(|err| ConnectError::invalid_argument(format!("{name}: {err}"))),
    };
    let from_ms = time("from", now - 3_600_000)?;
    let until_ms = time("until", now)?;
    if from_ms >= until_ms {
        return Err(ConnectError::invalid_argument(format!(
            "from ({from_ms}) must be before until ({until_ms})"
        )));
    }
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
    let body = render::export_window(&state.querier, params, query.to_string(), format, Some(max_nodes))
        .await
        .map_err(|err| match err {
            ExportWindowError::Query(err) => query_error(err),
            ExportWindowError::Render(err) => ConnectError::internal(err.to_string()),
        })?;
    Ok(([(header::CONTENT_TYPE, format.media_type())], body).into_response())
}
