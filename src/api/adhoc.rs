//! `POST /adhocprofiles.v1.AdHocProfileService/{Upload,Get,List,Diff}`: profiles a person drops
//! into Grafana's Profiles Drilldown, over the connect protocol (proto or JSON). Storage and
//! decoding are `adhoc`'s; this translates and renders the trees as flamebearer JSON.
//!
//! Limits: an Upload body longer than `adhoc.max_profile_bytes` in base64 (plus 64 KiB for the
//! name and framing) is refused before it is read, and the decoded bytes are checked again
//! against `adhoc.max_profile_bytes` itself. Both are `invalid_argument` (400), as the connect
//! layer answers every body over its limit: the same file never fits, so a client must not
//! retry it (Pyroscope answers a profile over its size limit the same way). A tenant over its
//! count or byte cap is `resource_exhausted` (429): room comes back as uploads expire. An
//! unknown id, or a profile type the profile lacks, is `not_found`. Decoding and rendering run
//! on the blocking pool, one of `api.max_concurrent_decodes` turns.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;

use super::SharedState;
use super::connect::{self, ConnectError};
use crate::adhoc::{self, AdhocError, Decoded, UploadMeta};
use crate::params::NodeLimits;
use crate::proto::adhocprofiles::v1 as api;

/// Base64 as browsers' `FileReader.readAsDataURL` writes it (padded), also read unpadded.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

pub async fn dispatch(
    State(state): State<SharedState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let tenant = super::tenant_from_headers(&headers, state.config.require_tenant_header)?;
    connect::Codec::from_headers(&headers)?;
    let store = &state.adhoc;
    let limit = match method.as_str() {
        "Upload" => store.config().max_upload_body_bytes(),
        _ => state.config.max_query_body_bytes,
    };
    let max_profile_bytes = store.config().max_profile_bytes;
    let too_large = |limit: usize| {
        ConnectError::invalid_argument(format!(
            "request body is larger than {limit} bytes: ad-hoc profiles are limited to {max_profile_bytes} bytes \
             (adhoc.max_profile_bytes), base64-encoded in the request"
        ))
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let body = match read_within(body, limit, declared, too_large).await {
        Ok(body) => body,
        Err(refusal) => return Ok(refusal),
    };
    let nodes = NodeLimits::from_config(&state.config);
    match method.as_str() {
        "Upload" => {
            let (request, codec) = connect::decode_request::<api::AdHocProfilesUploadRequest>(&headers, &body, limit)?;
            let max_nodes = nodes.check(request.max_nodes)?;
            let profile = decode_base64(&request.profile, max_profile_bytes)?;
            // A tenant without room is told so before its profile costs a decode.
            store.check_room(&tenant, profile.len()).await?;
            let limits = state.ingester.limits().clone();
            let decoded = {
                let profile = profile.clone();
                state.pool.decode(move || adhoc::decode(&profile, &limits)).await?
            };
            let (meta, decoded) = store
                .upload(&tenant, &request.name, profile, decoded, crate::now_ms())
                .await?;
            let response = render(&state, meta, decoded, None, max_nodes).await?;
            Ok(connect::encode_response(&response, codec))
        }
        "Get" => {
            let (request, codec) = connect::decode_request::<api::AdHocProfilesGetRequest>(&headers, &body, limit)?;
            let max_nodes = nodes.check(request.max_nodes)?;
            let (meta, bytes) = store.get(&tenant, &request.id).await?;
            let decoded = decode_stored(&state, bytes).await?;
            let response = render(&state, meta, decoded, request.profile_type, max_nodes).await?;
            Ok(connect::encode_response(&response, codec))
        }
        "List" => {
            let (_, codec) = connect::decode_request::<api::AdHocProfilesListRequest>(&headers, &body, limit)?;
            let profiles = store
                .list(&tenant)
                .await?
                .into_iter()
                .map(|meta| api::AdHocProfilesProfileMetadata {
                    id: meta.id,
                    name: meta.name,
                    uploaded_at: meta.uploaded_at_ms,
                })
                .collect();
            Ok(connect::encode_response(
                &api::AdHocProfilesListResponse { profiles },
                codec,
            ))
        }
        "Diff" => {
            let (request, codec) = connect::decode_request::<api::AdHocProfilesDiffRequest>(&headers, &body, limit)?;
            let max_nodes = nodes.check(request.max_nodes)?;
            let (left_meta, left) = store.get(&tenant, &request.left_id).await?;
            let (right_meta, right) = store.get(&tenant, &request.right_id).await?;
            let left = decode_stored(&state, left).await?;
            let right = decode_stored(&state, right).await?;
            let wanted = request.profile_type;
            let response = state
                .pool
                .decode(move || {
                    let l = left.select(&left_meta.id, wanted.as_deref())?;
                    let name = &left.names[l];
                    let r = right.select(&right_meta.id, Some(name))?;
                    let graph = crate::render::flamebearer_diff(
                        &left.trees[l],
                        &right.trees[r],
                        &left.types[l],
                        Some(max_nodes),
                    );
                    let profile_types = left
                        .names
                        .iter()
                        .filter(|name| right.names.contains(name))
                        .cloned()
                        .collect();
                    Ok::<_, AdhocError>(api::AdHocProfilesDiffResponse {
                        profile_types,
                        flamebearer_profile: graph.to_string(),
                    })
                })
                .await?;
            Ok(connect::encode_response(&response, codec))
        }
        other => Err(ConnectError::unimplemented(format!(
            "adhocprofiles.v1.AdHocProfileService/{other} is not implemented"
        ))),
    }
}

/// The body, at most `limit` bytes kept (`connect::read_body_within`: an oversized rest is
/// drained so the client reads the refusal); a body declaring more than the drain bound is
/// refused before a byte of it is read, and the connection closed.
async fn read_within(
    body: Body,
    limit: usize,
    declared: Option<u64>,
    too_large: impl Fn(usize) -> ConnectError,
) -> Result<Bytes, Response> {
    if declared.is_some_and(|length| length > connect::drain_bound(limit)) {
        return Err(closing(too_large(limit)));
    }
    connect::read_body_within(body, limit, too_large).await.map_err(closing)
}

/// An error answered before the request body was read to its end (`super::closing_connection`).
fn closing(err: ConnectError) -> Response {
    use axum::response::IntoResponse;
    super::closing_connection(err.into_response())
}

/// The uploaded file's bytes; a text whose decoded size would pass `max_profile_bytes` is
/// refused before it is decoded.
fn decode_base64(text: &str, max_profile_bytes: usize) -> Result<Bytes, AdhocError> {
    // A data URL's prefix, if a client left it on (the Drilldown app strips it).
    let text = match text.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => text,
    };
    let text = text.trim();
    let estimated = text.len() / 4 * 3;
    if estimated > max_profile_bytes.saturating_add(2) {
        return Err(AdhocError::TooLarge {
            bytes: estimated,
            limit: max_profile_bytes,
        });
    }
    let bytes = BASE64.decode(text).map_err(|err| AdhocError::Base64(err.to_string()))?;
    if bytes.len() > max_profile_bytes {
        return Err(AdhocError::TooLarge {
            bytes: bytes.len(),
            limit: max_profile_bytes,
        });
    }
    if bytes.is_empty() {
        return Err(AdhocError::Empty);
    }
    Ok(Bytes::from(bytes))
}

async fn decode_stored(state: &SharedState, bytes: Bytes) -> Result<Decoded, AdhocError> {
    let limits = state.ingester.limits().clone();
    state.pool.decode(move || adhoc::decode(&bytes, &limits)).await
}

/// The Upload and Get answer: the selected type's flamebearer and every type's name.
async fn render(
    state: &SharedState,
    meta: UploadMeta,
    decoded: Decoded,
    wanted: Option<String>,
    max_nodes: usize,
) -> Result<api::AdHocProfilesGetResponse, AdhocError> {
    state
        .pool
        .decode(move || {
            let index = decoded.select(&meta.id, wanted.as_deref())?;
            let graph = crate::render::flamebearer(&decoded.trees[index], &decoded.types[index], Some(max_nodes), None);
            Ok(api::AdHocProfilesGetResponse {
                id: meta.id,
                name: meta.name,
                uploaded_at: meta.uploaded_at_ms,
                profile_type: decoded.names[index].clone(),
                profile_types: decoded.names,
                flamebearer_profile: graph.to_string(),
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_bounds_before_decoding() {
        let encoded = base64::engine::general_purpose::STANDARD.encode([7u8; 30]);
        assert_eq!(decode_base64(&encoded, 30).unwrap().len(), 30);
        assert_eq!(
            decode_base64(&format!("data:application/octet-stream;base64,{encoded}"), 30)
                .unwrap()
                .len(),
            30
        );
        assert_eq!(decode_base64(encoded.trim_end_matches('='), 30).unwrap().len(), 30);
        assert!(matches!(
            decode_base64(&encoded, 29),
            Err(AdhocError::TooLarge { limit: 29, .. })
        ));
        assert!(matches!(decode_base64("not base64!", 100), Err(AdhocError::Base64(_))));
        assert!(matches!(decode_base64("", 100), Err(AdhocError::Empty)));
    }
}
