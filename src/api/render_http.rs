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
use super::tenant::tenant_from_headers;
use crate::export::ExportRequest;
use crate::params::{Args, NodeLimits, RenderWindow};
use crate::render::{self, ExportFormat};

pub async fn render(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let tenant = tenant_from_headers(&headers, state.config.require_tenant_header)?;
    let args = Args(&params);
    let window = RenderWindow::from_args(tenant, args, ("from", "until"), crate::now_ms())?;
    let format: ExportFormat = args
        .get(&["format"])
        .unwrap_or("json")
        .parse()
        .map_err(ConnectError::invalid_argument)?;
    let max_nodes = args.max_nodes(NodeLimits::from_config(&state.config))?;
    // The default node count draws graphs; a pprof is cut only when the request asks for it.
    let asked = args
        .get(&["max-nodes", "maxNodes", "max_nodes"])
        .is_some_and(|text| text != "0");
    let request = ExportRequest {
        window,
        format,
        max_nodes: (asked || !matches!(format, ExportFormat::Pprof)).then_some(max_nodes),
    };
    let body = crate::export::export_window(&state.querier, &request).await?;
    Ok(([(header::CONTENT_TYPE, format.media_type())], body).into_response())
}

pub async fn render_diff(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ConnectError> {
    let tenant = tenant_from_headers(&headers, state.config.require_tenant_header)?;
    let args = Args(&params);
    let now = crate::now_ms();
    let after = RenderWindow::from_args(tenant.clone(), args, ("from", "until"), now)?;
    let before = RenderWindow::from_args(tenant, args, ("baseline_from", "baseline_until"), now)?;
    if !args.has("baseline_from") || !args.has("baseline_until") {
        return Err(ConnectError::invalid_argument(
            "baseline_from and baseline_until name the window to compare against",
        ));
    }
    let format = params.get("format").map(String::as_str).unwrap_or("svg");
    let (before_tree, after_tree) = if format == "svg" {
        // Cut while merged to what the SVG draws, both sides keeping what either keeps.
        let max_nodes = args.max_nodes(NodeLimits::from_config(&state.config))?;
        state
            .querier
            .select_merge_pair_truncated(&before.select, &after.select, max_nodes)
            .await?
    } else {
        (
            state.querier.select_merge(&before.select).await?,
            state.querier.select_merge(&after.select).await?,
        )
    };
    match format {
        "folded" | "collapsed" => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            render::folded_diff(&before_tree, &after_tree),
        )
            .into_response()),
        "svg" => {
            let options = render::SvgOptions {
                title: format!(
                    "{} {} against its baseline",
                    after.select.profile_type.id(),
                    after.query
                ),
                subtitle: Some("red: grew since the baseline, blue: shrank".into()),
                profile_type: after.select.profile_type.clone(),
                max_nodes: Some(args.max_nodes(NodeLimits::from_config(&state.config))?),
            };
            let body = render::svg_diff(&before_tree, &after_tree, &options)?;
            Ok(([(header::CONTENT_TYPE, "image/svg+xml")], body).into_response())
        }
        other => Err(ConnectError::invalid_argument(format!(
            "unknown format {other:?} for a diff: expected svg or folded"
        ))),
    }
}
