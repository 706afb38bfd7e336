//! `POST /internal/v1/head`: what another replica of the cluster asks this one for — head data
//! of a tenant and window it cannot read from the shared bucket (see `crate::cluster`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::SharedState;
use super::connect::ConnectError;
use crate::block;
use crate::cluster::{self, HeadRequest};
use crate::model::{LABEL_PROFILE_TYPE, ProfileType, Selector};

pub async fn head(
    State(state): State<SharedState>,
    axum::Json(request): axum::Json<HeadRequest>,
) -> Result<Response, ConnectError> {
    let tenant = cluster::request_tenant(&request).map_err(ConnectError::invalid_argument)?;
    let selectors = request
        .selectors
        .iter()
        .map(|text| Selector::parse(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| ConnectError::invalid_argument(err.to_string()))?;
    let profile_type = request
        .profile_type
        .as_deref()
        .map(ProfileType::parse)
        .transpose()
        .map_err(|err| ConnectError::invalid_argument(err.to_string()))?
        .map(|profile_type| profile_type.id());
    let (from_ms, until_ms) = (request.from_ms, request.until_ms);
    let mut blocks = Vec::new();
    state
        .ingester
        .head()
        .snapshot_for_peer(&tenant, from_ms, until_ms, &request.listed(), |partition| {
            let wanted: Vec<&block::Series> = partition
                .series
                .iter()
                .filter(|series| {
                    crate::model::TimeWindow::new(from_ms, until_ms).overlaps(series.min_time_ms, series.max_time_ms)
                        && profile_type
                            .as_deref()
                            .is_none_or(|id| series.labels.get(LABEL_PROFILE_TYPE) == Some(id))
                        && (selectors.is_empty() || selectors.iter().any(|s| s.matches(&series.labels)))
                })
                .collect();
            if !wanted.is_empty() {
                blocks.push(block::encode_parts(&partition.symbols, wanted.into_iter()).data);
            }
        });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        cluster::encode_heads(blocks),
    )
        .into_response())
}
