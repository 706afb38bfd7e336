//! `POST /push.v1.PusherService/Push`: what Grafana Alloy, the Pyroscope SDKs and `pyrite push`
//! call.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::SharedState;
use super::connect::{self, ConnectError};
use super::pool::INLINE_DECODE_BYTES;
use crate::ingest::{Admission, IngestError};
use crate::model::Labels;
use crate::proto::google::v1::Profile;
use crate::proto::push::v1::{PushRequest, PushResponse};

pub async fn push(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Result<Response, ConnectError> {
    let (tenant, body) = super::connect_request(&state, &headers, body).await?;
    let inline = body.len() <= INLINE_DECODE_BYTES && connect::is_uncompressed_proto(&headers);
    let opened = if inline {
        open(&state, &tenant, &headers, &body)?
    } else {
        let (work_state, work_tenant) = (state.clone(), tenant.clone());
        state
            .pool
            .decode(move || open(&work_state, &work_tenant, &headers, &body))
            .await?
    };
    let decoded = match inline.then(|| decode_profiles(&state, &tenant, &opened, Some(INLINE_DECODE_BYTES))) {
        Some(Some(decoded)) => decoded,
        // Decoding is CPU work: on the blocking pool, not the async threads.
        _ => {
            let (work_state, work_tenant) = (state.clone(), tenant.clone());
            state
                .pool
                .decode(move || decode_profiles(&work_state, &work_tenant, &opened, None))
                .await
                .expect("an uncapped decode always completes")
        }
    };
    let (decoded, mut client_errors, codec, bytes) = decoded?;
    client_errors.extend(store(&state, &tenant, &decoded, bytes).await?);
    if !client_errors.is_empty() {
        return Err(ConnectError::invalid_argument(client_errors.join("; ")));
    }
    Ok(connect::encode_response(&PushResponse {}, codec))
}

/// Stores a request's decoded profiles (push.v1's and OTLP's): takes their samples from the
/// tenant's rate at once, then appends each. `bytes` is what [`decode`] took from the byte rate
/// for them. Returns the profiles refused as the client's fault (the others are stored); a
/// tenant limit (429) or a server fault stops the request there, the bytes of what was not
/// stored given back.
pub(super) async fn store(
    state: &SharedState,
    tenant: &crate::model::Tenant,
    decoded: &[Decoded],
    bytes: usize,
) -> Result<Vec<String>, ConnectError> {
    let mut client_errors = Vec::new();
    let samples = decoded
        .iter()
        .map(|(_, _, _, profile)| crate::pprof::sample_weight(profile))
        .sum();
    if let Err(err) = state.ingester.admit_request(tenant, samples) {
        state.ingester.refund_bytes(tenant, bytes);
        return Err(refused(state, tenant.as_str(), decoded, err));
    }
    for (index, (at, labels, raw, profile)) in decoded.iter().enumerate() {
        let size = raw.len();
        match state
            .ingester
            .push_series_decoded(tenant, labels.clone(), raw.clone(), profile, Admission::Granted)
            .await
        {
            Ok(ingested) => state
                .metrics
                .record_ingest(tenant.as_str(), "accepted", size, ingested.samples),
            // Over the series limit: the rest of the request is to be retried later (Alloy
            // retries 429s); its bytes are given back.
            Err(err @ IngestError::Refused(_)) => {
                state.ingester.refund_bytes(tenant, not_stored_bytes(&decoded[index..]));
                return Err(refused(state, tenant.as_str(), &decoded[index..], err));
            }
            Err(err) if err.is_client_error() => {
                state.metrics.record_ingest(tenant.as_str(), err.outcome(), size, 0);
                client_errors.push(format!("{at}: {err}"));
            }
            Err(err) => {
                state.metrics.record_ingest(tenant.as_str(), err.outcome(), size, 0);
                if err.is_temporary_refusal() {
                    state.ingester.refund_bytes(tenant, not_stored_bytes(&decoded[index..]));
                }
                return Err(server_error(err));
            }
        }
    }
    Ok(client_errors)
}

/// A decoded profile of a push: where it was in the request, its labels, its bytes.
pub(super) type Decoded = (String, Labels, bytes::Bytes, Profile);

fn not_stored_bytes(not_stored: &[Decoded]) -> usize {
    not_stored.iter().map(|(_, _, raw, _)| raw.len()).sum()
}

/// A push.v1 request whose profile bytes are taken from the tenant's byte rate, not decoded
/// yet: the request, its codec, the bytes taken.
struct Opened {
    request: PushRequest,
    codec: connect::Codec,
    bytes: usize,
}

/// Decodes the request (its profiles stay slices of the body up to the WAL) and takes its
/// profile bytes from the tenant's byte rate before any is decoded: decoding is the costly
/// part, and the caller gives the bytes back if the request is then refused for now.
fn open(
    state: &SharedState,
    tenant: &crate::model::Tenant,
    headers: &HeaderMap,
    body: &bytes::Bytes,
) -> Result<Opened, ConnectError> {
    let (request, codec) = connect::decode_request_shared::<PushRequest>(headers, body, state.config.max_body_bytes)?;
    if request.series.iter().all(|series| series.samples.is_empty()) {
        return Err(ConnectError::invalid_argument("no profiles received"));
    }
    let profiles = request.series.iter().flat_map(|series| &series.samples);
    let (count, bytes) = profiles.fold((0, 0), |(count, bytes), sample| {
        (count + 1, bytes + sample.raw_profile.len())
    });
    if let Err(err) = state.ingester.admit_bytes(tenant, bytes) {
        for sample in request.series.iter().flat_map(|series| &series.samples) {
            state
                .metrics
                .record_ingest(tenant.as_str(), err.outcome(), sample.raw_profile.len(), 0);
        }
        tracing::debug!(tenant = %tenant, profiles = count, bytes, error = %err, "push refused");
        return Err(err.into());
    }
    Ok(Opened { request, codec, bytes })
}

/// A request's decoded profiles, those refused as the client's fault, its codec, the bytes
/// [`open`] took.
type DecodedRequest = (Vec<Decoded>, Vec<String>, connect::Codec, usize);

/// Decodes every profile of an opened request before any is stored, so the request's samples
/// are taken from the tenant's rate at once: a request is stored whole or refused whole, and
/// the retry of a refused one stores nothing twice. Their decoded size together is bounded by
/// `max_request_decoded_bytes`, checked while each decodes. Profiles that do not decode are
/// client errors, counted here.
///
/// With a `cap`, at most that many bytes are decompressed and decoded per profile and in all:
/// `None` past it, with nothing counted or given back, for the caller to decode the request
/// again without one.
fn decode_profiles(
    state: &SharedState,
    tenant: &crate::model::Tenant,
    opened: &Opened,
    cap: Option<usize>,
) -> Option<Result<DecodedRequest, ConnectError>> {
    let Opened { request, codec, bytes } = opened;
    let mut client_errors = Vec::new();
    // (outcome, profile bytes) of each refused profile, counted once the request is decoded.
    let mut refused = Vec::new();
    let count_refused = |refused: Vec<(&'static str, usize)>| {
        for (outcome, size) in refused {
            state.metrics.record_ingest(tenant.as_str(), outcome, size, 0);
        }
    };
    let mut decoded = Vec::new();
    let mut decoded_bytes = 0usize;
    for (series_index, series) in request.series.iter().enumerate() {
        let labels = match Labels::from_pairs(&series.labels) {
            Ok(labels) => labels,
            Err(err) => {
                client_errors.push(format!("series {series_index}: invalid labels: {err}"));
                continue;
            }
        };
        for (sample_index, sample) in series.samples.iter().enumerate() {
            let at = format!("series {series_index} sample {sample_index}");
            let size = sample.raw_profile.len();
            if size == 0 {
                client_errors.push(format!("{at}: empty profile"));
                continue;
            }
            let result = match cap {
                Some(cap) => match state.ingester.decode_in_request_capped(
                    &sample.raw_profile,
                    decoded_bytes,
                    cap.saturating_sub(decoded_bytes),
                ) {
                    Ok(Some(done)) => Ok(done),
                    Ok(None) => return None,
                    Err(err) => Err(err),
                },
                None => state.ingester.decode_in_request(&sample.raw_profile, decoded_bytes),
            };
            match result {
                Ok((profile, profile_bytes)) => {
                    decoded_bytes += profile_bytes;
                    decoded.push((at, labels.clone(), sample.raw_profile.clone(), profile));
                }
                Err(err @ IngestError::RequestTooLarge { .. }) => {
                    // Nothing of a request that can never fit is stored.
                    count_refused(refused);
                    state.metrics.record_ingest(tenant.as_str(), err.outcome(), size, 0);
                    state.ingester.refund_bytes(tenant, *bytes);
                    return Some(Err(ConnectError::invalid_argument(format!("{at}: {err}"))));
                }
                Err(err) => {
                    refused.push((err.outcome(), size));
                    client_errors.push(format!("{at}: {err}"));
                }
            }
        }
    }
    count_refused(refused);
    Some(Ok((decoded, client_errors, *codec, *bytes)))
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
/// the head is full of data it cannot flush or the WAL cannot be written (disk full, its
/// budget reached, an I/O error: nothing was stored, so a retry is safe), `internal` (500)
/// otherwise — the error's class says which.
fn server_error(err: IngestError) -> ConnectError {
    err.into()
}
