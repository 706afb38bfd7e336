//! HTTP API on axum: Pyroscope's connect services (push.v1, querier.v1, settings.v1 with its
//! RecordingRulesService, adhocprofiles.v1, capabilities.v1, status.v1, version.v1), OTLP
//! profiles ingest (gRPC and OTLP/HTTP, `otlp`), the legacy
//! `/ingest` and `/pyroscope/*` routes, `/api/v1/render` exports, `/ready`, `/metrics`, and the
//! web UI's embedded files (`ui`).
//! Handlers translate; the work happens in `ingest`, `query` and `render`.

mod adhoc;
mod auth;
pub mod connect;
pub mod debug_pprof;
pub mod error;
mod legacy;
mod metrics;
pub mod otlp;
mod peer;
pub mod pool;
mod push;
mod querier;
mod recording_rules;
mod render_http;
mod settings;
mod status;
mod tenant;
pub mod ui;

pub use metrics::Metrics;
pub use tenant::tenant_from_headers;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::config::ApiConfig;
use crate::ingest::Ingester;
use crate::query::Querier;

/// What every handler can reach.
pub struct AppState {
    /// Shared with the scraper, which ingests through the same path as pushes.
    pub ingester: Arc<Ingester>,
    pub querier: Querier,
    pub config: ApiConfig,
    pub metrics: Metrics,
    pub settings: crate::settings::SettingsStore,
    /// Uploaded ad-hoc profiles (`adhocprofiles.v1`).
    pub adhoc: crate::adhoc::AdhocStore,
    /// settings.v1.RecordingRulesService's rules (also evaluated by the ingester).
    pub recording_rules: Arc<crate::rules::Recorder>,
    /// The blocking pool reads and decodes run on.
    pub pool: pool::Pool,
    /// The cluster secret and API tokens (`api::auth` checks them on every request).
    pub auth: crate::auth::ApiAuth,
}

pub type SharedState = Arc<AppState>;

/// The tenant and body of a connect request, in the order every connect route checks them:
/// the tenant, the content type (refused before reading what may be a large body), then the
/// body within `api.max_body_bytes`.
async fn connect_request(
    state: &SharedState,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<(crate::model::Tenant, bytes::Bytes), connect::ConnectError> {
    let tenant = tenant_from_headers(headers, state.config.require_tenant_header)?;
    connect::Codec::from_headers(headers)?;
    let body = connect::read_body(body, state.config.max_body_bytes).await?;
    Ok((tenant, body))
}

/// All routes of `pyrite serve`.
pub fn router(state: SharedState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let reads = Router::new()
        .route("/querier.v1.QuerierService/{method}", post(querier::dispatch))
        .route("/pyroscope/render", get(legacy::render))
        .route("/pyroscope/render-diff", get(legacy::render_diff))
        .route("/pyroscope/label-values", get(legacy::label_values))
        .route("/pyroscope/labels", get(legacy::labels))
        .route("/api/v1/render", get(render_http::render))
        .route("/api/v1/render-diff", get(render_http::render_diff))
        .route(crate::cluster::HEAD_ROUTE, post(peer::head))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), pool::heavy_read));
    Router::new()
        .merge(reads)
        .route("/ingest", post(legacy::ingest))
        .route("/pyroscope/ingest", post(legacy::ingest))
        .route("/push.v1.PusherService/Push", post(push::push))
        .route(otlp::HTTP_PATH, post(otlp::http_export))
        // gRPC over h2c: tonic's service, on the same port as everything else (as Pyroscope).
        .merge(otlp::grpc_routes(state.clone()))
        .route("/settings.v1.SettingsService/{method}", post(settings::dispatch))
        .route("/adhocprofiles.v1.AdHocProfileService/{method}", post(adhoc::dispatch))
        .route(
            "/capabilities.v1.FeatureFlagsService/{method}",
            post(status::feature_flags_dispatch),
        )
        .route("/version.v1.Version/{method}", post(status::version_dispatch))
        .route("/status.v1.StatusService/{method}", post(status::status_dispatch))
        .route("/api/v1/status/buildinfo", get(status::buildinfo))
        .route(
            "/settings.v1.RecordingRulesService/{method}",
            post(recording_rules::dispatch),
        )
        .route("/", get(ui::index))
        .route("/index.html", get(ui::index))
        .route("/assets/{*path}", get(ui::bundle))
        .route("/public/{*path}", get(ui::public))
        .route("/ready", get(|| async { "ready\n" }))
        .route("/metrics", get(metrics::serve))
        .route("/debug/pprof/profile", get(debug_pprof::profile))
        // Bounds the legacy routes' bodies. The connect routes read theirs with
        // `connect::read_body` under the same limit, so going over is a JSON
        // `invalid_argument` a connect client understands, not a plain-text 413.
        .layer(DefaultBodyLimit::max(body_limit))
        // Outermost: nothing is read before the credentials are checked.
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state)
}

/// A response sent before the request body was read to its end, marked `Connection: close`:
/// the connection cannot carry another request after the unread rest, and a client that reused
/// it would see its next request fail with an unexpected EOF (Go's transport does, for a POST it
/// may not retry). HTTP/2 drops the header; its streams end on their own.
pub(crate) fn closing_connection(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}
