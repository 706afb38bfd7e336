//! `POST /push.v1.PusherService/Push`: what Grafana Alloy, the Pyroscope SDKs and `pyrite push`
//! call.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::SharedState;
use super::connect::{self, ConnectError};
use super::tenant::tenant_from_headers;
use crate::ingest::IngestError;
use crate::model::Labels;
use crate::proto::push::v1::{PushRequest, PushResponse};

pub async fn push(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Result<Response, ConnectError> {
    let tenant = tenant_from_headers(&headers, state.config.require_tenant_header)?;
    // A wrong content type is refused before reading what may be a large body.
    connect::Codec::from_headers(&headers)?;
    let body = connect::read_body(body, state.config.max_body_bytes).await?;
    let (request, codec) = connect::decode_request::<PushRequest>(&headers, &body, state.config.max_body_bytes)?;
    if request.series.iter().all(|series| series.samples.is_empty()) {
        return Err(ConnectError::invalid_argument("no profiles received"));
    }
    let mut client_errors = Vec::new();
    for (series_index, series) in request.series.into_iter().enumerate() {
        let labels = match Labels::from_pairs(&series.labels) {
            Ok(labels) => labels,
            Err(err) => {
                client_errors.push(format!("series {series_index}: invalid labels: {err}"));
                continue;
            }
        };
        for (sample_index, sample) in series.samples.into_iter().enumerate() {
            let size = sample.raw_profile.len();
            if size == 0 {
                client_errors.push(format!("series {series_index} sample {sample_index}: empty profile"));
                continue;
            }
            match state
                .ingester
                .push_series(&tenant, labels.clone(), sample.raw_profile)
                .await
            {
                Ok(ingested) => state
                    .metrics
                    .record_ingest(tenant.as_str(), "accepted", size, ingested.samples),
                // Over a limit: the whole request is to be retried later (Alloy retries 429s).
                Err(IngestError::Refused(refusal)) => {
                    state.metrics.record_ingest(tenant.as_str(), refusal.reason(), size, 0);
                    return Err(ConnectError::resource_exhausted(refusal.to_string()));
                }
                Err(err) if err.is_client_error() => {
                    state.metrics.record_ingest(tenant.as_str(), "invalid", size, 0);
                    client_errors.push(format!("series {series_index} sample {sample_index}: {err}"));
                }
                Err(err) => return Err(server_error(err)),
            }
        }
    }
    state.metrics.head_bytes.set(state.ingester.head().live_bytes() as i64);
    if !client_errors.is_empty() {
        return Err(ConnectError::invalid_argument(client_errors.join("; ")));
    }
    Ok(connect::encode_response(&PushResponse {}, codec))
}

pub fn server_error(err: IngestError) -> ConnectError {
    tracing::error!(error = %err, "ingest failed");
    ConnectError::internal(err.to_string())
}
