//! `POST /settings.v1.RecordingRulesService/{List,Get,Upsert,Delete}RecordingRule(s)`: a
//! tenant's recording rules over the connect protocol (proto or JSON), as Pyroscope's profilecli
//! and Grafana call them. The rules module checks, stores and evaluates them.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::SharedState;
use super::connect::ConnectError;
use super::querier::call;
use crate::proto::settings::v1 as proto;

pub async fn dispatch(
    State(state): State<SharedState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let (tenant, body) = super::connect_request(&state, &headers, body).await?;
    let rules = &state.recording_rules;
    match method.as_str() {
        "ListRecordingRules" => {
            call(
                &headers,
                &body,
                &state,
                |_: proto::ListRecordingRulesRequest| async move {
                    Ok(proto::ListRecordingRulesResponse {
                        rules: rules.list(&tenant).await?,
                    })
                },
            )
            .await
        }
        "GetRecordingRule" => {
            call(
                &headers,
                &body,
                &state,
                |request: proto::GetRecordingRuleRequest| async move {
                    let rule = rules.get(&tenant, request.id.trim()).await?;
                    Ok(proto::GetRecordingRuleResponse { rule: Some(rule) })
                },
            )
            .await
        }
        "UpsertRecordingRule" => {
            call(
                &headers,
                &body,
                &state,
                |request: proto::UpsertRecordingRuleRequest| async move {
                    let rule = rules.upsert(&tenant, request).await?;
                    Ok(proto::UpsertRecordingRuleResponse { rule: Some(rule) })
                },
            )
            .await
        }
        "DeleteRecordingRule" => {
            call(
                &headers,
                &body,
                &state,
                |request: proto::DeleteRecordingRuleRequest| async move {
                    rules.delete(&tenant, request.id.trim()).await?;
                    Ok(proto::DeleteRecordingRuleResponse {})
                },
            )
            .await
        }
        other => Err(ConnectError::unimplemented(format!(
            "settings.v1.RecordingRulesService/{other} is not implemented"
        ))),
    }
}
