//! `POST /internal/v1/head`: what another replica of the cluster asks this one for — head data
//! of a tenant and window it cannot read from the shared bucket (see `crate::cluster`, which
//! reads the request and encodes the answer).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::SharedState;
use super::connect::ConnectError;
use crate::cluster::{self, HeadRequest};

pub async fn head(
    State(state): State<SharedState>,
    axum::Json(request): axum::Json<HeadRequest>,
) -> Result<Response, ConnectError> {
    let answer = cluster::answer_head_request(state.ingester.head(), &request)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response())
}
