//! What Pyrite is and can do, as Pyroscope's clients ask it: `capabilities.v1.FeatureFlagsService
//! /GetFeatureFlags` (Profiles Drilldown asks before using an optional feature),
//! `version.v1.Version/Version` (the querier API version), and build information as
//! `status.v1.StatusService/GetBuildInfo` and `GET /api/v1/status/buildinfo` (Prometheus's
//! shape: `{"status":"success","data":{...}}`).
//!
//! None of these read tenant data, so they ask for no tenant; with API tokens on they still
//! need a valid token (`api::auth`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::SharedState;
use super::connect::{self, ConnectError};
use crate::proto::capabilities::v1 as capabilities;
use crate::proto::status::v1 as status;
use crate::proto::version::v1 as version;

/// The querier.v1 API version Pyrite speaks: Pyroscope's first (and so far only) one.
pub const QUERIER_API_VERSION: u64 = 1;

/// Pyrite's version and the git revision it was built from (`PYRITE_GIT_REVISION` at build
/// time, else `unknown`).
pub fn build_info() -> status::GetBuildInfoData {
    status::GetBuildInfoData {
        version: env!("CARGO_PKG_VERSION").to_string(),
        revision: option_env!("PYRITE_GIT_REVISION").unwrap_or("unknown").to_string(),
        branch: option_env!("PYRITE_GIT_BRANCH").unwrap_or("unknown").to_string(),
        build_user: String::new(),
        build_date: String::new(),
        // Pyroscope puts its Go version here; Pyrite is no Go program.
        go_version: String::new(),
    }
}

/// Pyroscope's feature flags, each set to what Pyrite does.
pub fn feature_flags() -> Vec<capabilities::FeatureFlag> {
    let flag = |name: &str, enabled: bool, description: &str| capabilities::FeatureFlag {
        name: name.to_string(),
        enabled,
        description: Some(description.to_string()),
        documentation_url: None,
    };
    vec![
        flag(
            "v2StorageLayer",
            false,
            "Pyroscope's v2 storage layer (Pyrite stores its own block format)",
        ),
        flag(
            "pyroscopeRuler",
            false,
            "Pyroscope's ruler exporting Prometheus metrics from profiles",
        ),
        flag(
            "pyroscopeRulerFunctions",
            false,
            "Per-function metrics of Pyroscope's ruler",
        ),
        flag(
            "utf8LabelNames",
            false,
            "Label names beyond [a-zA-Z_][a-zA-Z0-9_.]* (Pyrite refuses them)",
        ),
        flag(
            "functionProjections",
            false,
            "Server-side function projections in flame graphs",
        ),
    ]
}

async fn connect_body(state: &SharedState, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ConnectError> {
    connect::Codec::from_headers(headers)?;
    connect::read_body(body, state.config.max_query_body_bytes).await
}

/// Decodes the (empty) `Req` as bounded as a query's and answers `response` in its codec.
fn answer<Req>(
    state: &SharedState,
    headers: &HeaderMap,
    body: &[u8],
    response: &(impl prost::Message + serde::Serialize),
) -> Result<Response, ConnectError>
where
    Req: prost::Message + Default + serde::de::DeserializeOwned,
{
    let (_, codec) = connect::decode_request::<Req>(headers, body, state.config.max_query_body_bytes)?;
    Ok(connect::encode_response(response, codec))
}

pub async fn feature_flags_dispatch(
    State(state): State<SharedState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let body = connect_body(&state, &headers, body).await?;
    match method.as_str() {
        "GetFeatureFlags" => {
            let response = capabilities::GetFeatureFlagsResponse {
                feature_flags: feature_flags(),
            };
            answer::<capabilities::GetFeatureFlagsRequest>(&state, &headers, &body, &response)
        }
        other => Err(ConnectError::unimplemented(format!(
            "capabilities.v1.FeatureFlagsService/{other} is not implemented"
        ))),
    }
}

pub async fn version_dispatch(
    State(state): State<SharedState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let body = connect_body(&state, &headers, body).await?;
    match method.as_str() {
        "Version" => {
            let response = version::VersionResponse {
                querier_api: QUERIER_API_VERSION,
            };
            answer::<version::VersionRequest>(&state, &headers, &body, &response)
        }
        other => Err(ConnectError::unimplemented(format!(
            "version.v1.Version/{other} is not implemented"
        ))),
    }
}

pub async fn status_dispatch(
    State(state): State<SharedState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let body = connect_body(&state, &headers, body).await?;
    match method.as_str() {
        "GetBuildInfo" => answer::<status::GetBuildInfoRequest>(&state, &headers, &body, &build_info_response()),
        other => Err(ConnectError::unimplemented(format!(
            "status.v1.StatusService/{other} is not implemented (Pyrite serves GetBuildInfo only)"
        ))),
    }
}

fn build_info_response() -> status::GetBuildInfoResponse {
    status::GetBuildInfoResponse {
        status: "success".to_string(),
        data: Some(build_info()),
    }
}

/// `GET /api/v1/status/buildinfo`, as Pyroscope's HTTP gateway serves the RPC.
pub async fn buildinfo() -> Json<status::GetBuildInfoResponse> {
    Json(build_info_response())
}
