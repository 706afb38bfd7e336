//! `POST /settings.v1.SettingsService/{Get,Set,Delete}`: per-tenant settings over the connect
//! protocol, as the Profiles Drilldown app calls them.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::SharedState;
use super::connect::ConnectError;
use super::querier::call;
use crate::proto::settings::v1 as settings;
use crate::settings::SettingsError;

pub async fn dispatch(
    State(state): State<SharedState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let (tenant, body) = super::connect_request(&state, &headers, body).await?;
    let store = &state.settings;
    match method.as_str() {
        "Get" => {
            call(&headers, &body, &state, |_: settings::GetSettingsRequest| async move {
                let settings = store.get(&tenant).await.map_err(settings_error)?;
                Ok(settings::GetSettingsResponse { settings })
            })
            .await
        }
        "Set" => {
            call(
                &headers,
                &body,
                &state,
                |request: settings::SetSettingsRequest| async move {
                    let setting = request
                        .setting
                        .ok_or_else(|| ConnectError::invalid_argument("no setting given"))?;
                    let setting = store.set(&tenant, setting).await.map_err(settings_error)?;
                    Ok(settings::SetSettingsResponse { setting: Some(setting) })
                },
            )
            .await
        }
        "Delete" => {
            call(
                &headers,
                &body,
                &state,
                |request: settings::DeleteSettingsRequest| async move {
                    store.delete(&tenant, &request.name).await.map_err(settings_error)?;
                    Ok(settings::DeleteSettingsResponse {})
                },
            )
            .await
        }
        other => Err(ConnectError::unimplemented(format!(
            "settings.v1.SettingsService/{other} is not implemented"
        ))),
    }
}

fn settings_error(err: SettingsError) -> ConnectError {
    err.into()
}
