//! `POST /push.v1.PusherService/Push`: what Grafana Alloy, the Pyroscope SDKs and `pyrite push`
//! call.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::SharedState;
use super::connect::{self, ConnectError};
use crate::head::HeadError;
use crate::ingest::{Admission, IngestError};
use crate::model::Labels;
use crate::proto::google::v1::Profile;
use crate::proto::push::v1::{PushRequest, PushResponse};

pub async fn push(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Result<Response, ConnectError> {
    let (tenant, body) = super::connect_request(&state, &headers, body).await?;
    // Decoding is CPU work: on the blocking pool, not the async threads.
    let (decoded, mut client_errors, codec) = {
        let (work_state, work_tenant) = (state.clone(), tenant.clone());
        state
            .pool
            .decode(move || decode(&work_state, &work_tenant, &headers, &body))
            .await?
    };
    let samples = decoded.iter().map(|(_, _, _, profile)| profile.sample.len()).sum();
    if let Err(err) = state.ingester.admit_request(&tenant, samples) {
        return Err(refused(&state, tenant.as_str(), &decoded, err));
    }
    for (index, (at, labels, raw, profile)) in decoded.iter().enumerate() {
        let size = raw.len();
        match state
            .ingester
            .push_series_decoded(&tenant, labels.clone(), raw.clone(), profile, Admission::Granted)
            .await
        {
            Ok(ingested) => state
                .metrics
                .record_ingest(tenant.as_str(), "accepted", size, ingested.samples),
            // Over the series limit: the rest of the request is to be retried later (Alloy
            // retries 429s).
            Err(err @ IngestError::Refused(_)) => return Err(refused(&state, tenant.as_str(), &decoded[index..], err)),
            Err(err) if err.is_client_error() => {
                state.metrics.record_ingest(tenant.as_str(), err.outcome(), size, 0);
                client_errors.push(format!("{at}: {err}"));
            }
            Err(err) => {
                state.metrics.record_ingest(tenant.as_str(), err.outcome(), size, 0);
                return Err(server_error(err));
            }
        }
    }
    if !client_errors.is_empty() {
        return Err(ConnectError::invalid_argument(client_errors.join("; ")));
    }
    Ok(connect::encode_response(&PushResponse {}, codec))
}

/// A decoded profile of a push: where it was in the request, its labels, its bytes.
type Decoded = (String, Labels, bytes::Bytes, Profile);

/// Decodes the request and every profile in it, before any is stored, so the request's
/// samples are taken from the tenant's rate at once: a request is stored whole or refused
/// whole, and the retry of a refused one stores nothing twice. Profiles that do not decode
/// are client errors, counted here.
#[allow(clippy::type_complexity)]
fn decode(
    state: &SharedState,
    tenant: &crate::model::Tenant,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<Decoded>, Vec<String>, connect::Codec), ConnectError> {
    let (request, codec) = connect::decode_request::<PushRequest>(headers, body, state.config.max_body_bytes)?;
    if request.series.iter().all(|series| series.samples.is_empty()) {
        return Err(ConnectError::invalid_argument("no profiles received"));
    }
    let mut client_errors = Vec::new();
    let mut decoded = Vec::new();
    for (series_index, series) in request.series.into_iter().enumerate() {
        let labels = match Labels::from_pairs(&series.labels) {
            Ok(labels) => labels,
            Err(err) => {
                client_errors.push(format!("series {series_index}: invalid labels: {err}"));
                continue;
            }
        };
        for (sample_index, sample) in series.samples.into_iter().enumerate() {
            let at = format!("series {series_index} sample {sample_index}");
            let size = sample.raw_profile.len();
            if size == 0 {
                client_errors.push(format!("{at}: empty profile"));
                continue;
            }
            match state.ingester.decode(&sample.raw_profile) {
                Ok(profile) => decoded.push((at, labels.clone(), sample.raw_profile, profile)),
                Err(err) => {
                    state.metrics.record_ingest(tenant.as_str(), err.outcome(), size, 0);
                    client_errors.push(format!("{at}: {err}"));
                }
            }
        }
    }
    Ok((decoded, client_errors, codec))
}

/// A 429 for the profiles of `not_stored`, counted as refused.
fn refused(state: &SharedState, tenant: &str, not_stored: &[Decoded], err: IngestError) -> ConnectError {
    let IngestError::Refused(refusal) = &err else {
        return server_error(err);
    };
    for (_, _, raw, _) in not_stored {
        state.metrics.record_ingest(tenant, refusal.reason(), raw.len(), 0);
    }
    ConnectError::resource_exhausted(refusal.to_string())
}

/// A 5xx for an ingest the server could not complete: `unavailable` (503, clients retry) while
/// the head is full of data it cannot flush, `internal` (500) otherwise.
pub fn server_error(err: IngestError) -> ConnectError {
    if let IngestError::Head(HeadError::Full { .. }) = &err {
        tracing::warn!(error = %err, "ingest refused: the head cannot flush");
        return ConnectError::new(connect::Code::Unavailable, err.to_string());
    }
    tracing::error!(error = %err, "ingest failed");
    ConnectError::internal(err.to_string())
}
