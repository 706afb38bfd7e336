//! OTLP profiles ingest: `opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export`
//! over gRPC (h2c on the main port: the server's auto builder hands prior-knowledge HTTP/2 to
//! this router, where the `opentelemetry-proto` crate's tonic service is mounted) and OTLP/HTTP
//! `POST /v1development/profiles` (protobuf or OTLP JSON, optionally gzip).
//!
//! Owns the transports and their error forms: gRPC statuses (`InvalidArgument` for what never
//! succeeds, `ResourceExhausted` with a `google.rpc.RetryInfo` for a tenant limit — the
//! collector's exporter retries that code only with one — and `Unavailable`), and OTLP/HTTP's
//! `google.rpc.Status` bodies with 400/429/503 (`Retry-After` on the last two). Conversion is
//! `ingest::otlp`'s; each converted profile is stored exactly as a push.v1 profile (same byte,
//! sample and series limits; its pprof bytes are the WAL record, so a replay decodes what the
//! edge decoded).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;

use super::SharedState;
use super::connect::{Code, ConnectError};
use super::push::Decoded;
use crate::ingest::IngestError;
use crate::ingest::otlp::{self as convert, OtlpError};
use crate::model::Tenant;
use crate::proto::opentelemetry::proto::collector::profiles::v1development as json;

/// The OTLP/HTTP path of the profiles signal.
pub const HTTP_PATH: &str = "/v1development/profiles";
/// The gRPC path of `ProfilesService/Export`.
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";
/// `Retry-After` (and RetryInfo's delay) of a 429/503: long enough for a token bucket to refill
/// part of its burst, short enough that an exporter's queue does not fill.
pub const RETRY_AFTER_SECONDS: u64 = 10;

/// `google.rpc.Status`: the body of an OTLP/HTTP error and the details of a gRPC one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The gRPC number of a code (`Code::ALL` is in gRPC order from 1).
fn grpc_code(code: Code) -> i32 {
    Code::ALL
        .iter()
        .position(|&c| c == code)
        .map_or(2, |index| index as i32 + 1)
}

/// Whether an exporter should retry: a tenant limit or the server being unable for now.
fn retryable(code: Code) -> bool {
    matches!(code, Code::ResourceExhausted | Code::Unavailable)
}

fn rpc_status(err: &ConnectError) -> RpcStatus {
    let mut details = Vec::new();
    if retryable(err.code) {
        let info = RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: RETRY_AFTER_SECONDS as i64,
                nanos: 0,
            }),
        };
        details.push(prost_types::Any {
            type_url: RETRY_INFO_TYPE.to_string(),
            value: info.encode_to_vec(),
        });
    }
    RpcStatus {
        code: grpc_code(err.code),
        message: err.message.clone(),
        details,
    }
}

/// The tonic service mounted at [`GRPC_PATH`]: gzip accepted, messages (after decompression,
/// which tonic bounds while inflating) within `api.max_body_bytes`.
pub fn grpc_service(state: SharedState) -> ProfilesServiceServer<Grpc> {
    let limit = state.config.max_body_bytes;
    ProfilesServiceServer::new(Grpc { state })
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(limit)
}

/// The gRPC route: [`grpc_service`], with tonic's `OutOfRange` for a message over the size
/// limit answered as `InvalidArgument` — the collector's exporter retries `OutOfRange`, and a
/// message that is too large is no smaller when sent again.
pub fn grpc_routes(state: SharedState) -> axum::Router<SharedState> {
    axum::Router::new()
        .route_service(GRPC_PATH, grpc_service(state))
        .layer(axum::middleware::map_response(too_large_is_permanent))
}

async fn too_large_is_permanent(mut response: Response) -> Response {
    const OUT_OF_RANGE: &str = "11";
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|status| status == OUT_OF_RANGE) {
        let invalid_argument = grpc_code(Code::InvalidArgument).to_string();
        headers.insert(
            "grpc-status",
            HeaderValue::from_str(&invalid_argument).expect("a number is a header value"),
        );
    }
    response
}

/// `ProfilesService` over the shared state.
pub struct Grpc {
    state: SharedState,
}

#[tonic::async_trait]
impl ProfilesService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportProfilesServiceRequest>,
    ) -> Result<tonic::Response<ExportProfilesServiceResponse>, tonic::Status> {
        // gRPC metadata is the h2 headers: `x-scope-orgid` is read as on every other route.
        let headers = request.metadata().clone().into_headers();
        let state = self.state.clone();
        let result = async {
            let tenant = super::tenant_from_headers(&headers, state.config.require_tenant_header)?;
            export(&state, tenant, request.into_inner()).await
        }
        .await;
        result.map(tonic::Response::new).map_err(|err| {
            let status = rpc_status(&err);
            let code = tonic::Code::from_i32(status.code);
            tonic::Status::with_details(code, err.message, Bytes::from(status.encode_to_vec()))
        })
    }
}

/// Request and response encoding of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Proto,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Proto => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `POST /v1development/profiles`.
pub async fn http_export(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let encoding = match media_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Proto,
        "application/json" => Encoding::Json,
        _ => {
            let err = ConnectError::unimplemented(format!(
                "unsupported content type {content_type:?}: OTLP/HTTP takes application/x-protobuf or application/json"
            ))
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
            return error_response(&err, Encoding::Proto);
        }
    };
    match http_export_inner(&state, &headers, body, encoding).await {
        Ok(response) => {
            let body = match encoding {
                Encoding::Proto => response.encode_to_vec(),
                Encoding::Json => {
                    let response = json::ExportProfilesServiceResponse {
                        partial_success: response
                            .partial_success
                            .map(|partial| json::ExportProfilesPartialSuccess {
                                rejected_profiles: partial.rejected_profiles,
                                error_message: partial.error_message,
                            }),
                    };
                    serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec())
                }
            };
            ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(err) => error_response(&err, encoding),
    }
}

async fn http_export_inner(
    state: &SharedState,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<ExportProfilesServiceResponse, ConnectError> {
    let tenant = super::tenant_from_headers(headers, state.config.require_tenant_header)?;
    let body = super::connect::read_body(body, state.config.max_body_bytes).await?;
    let request = {
        let (work_state, headers) = (state.clone(), headers.clone());
        state
            .pool
            .decode(move || decode_http(&work_state, &headers, &body, encoding))
            .await?
    };
    export(state, tenant, request).await
}

/// Undoes `Content-Encoding` (bounded by `api.max_body_bytes`, as push.v1) and decodes.
fn decode_http(
    state: &SharedState,
    headers: &HeaderMap,
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportProfilesServiceRequest, ConnectError> {
    let body = super::connect::decompress(headers, body, state.config.max_body_bytes)?;
    let limits = state.ingester.limits();
    match encoding {
        Encoding::Proto => Ok(convert::decode_request(&body, limits)?),
        Encoding::Json => {
            let proto = json_to_proto(&body)?;
            Ok(convert::decode_request(&proto, limits)?)
        }
    }
}

/// OTLP JSON is proto3 JSON except that trace, span and profile ids are hex, not base64
/// (OTLP spec, "JSON Protobuf Encoding"): those are rewritten, then pbjson's proto3 JSON
/// reader (int64 as string or number, lowerCamelCase or original names, enums as numbers) reads
/// the request into the same schema, and it is re-encoded to protobuf.
fn json_to_proto(body: &[u8]) -> Result<Vec<u8>, ConnectError> {
    let invalid = |err: String| ConnectError::invalid_argument(format!("unmarshal OTLP JSON: {err}"));
    // Invalid UTF-8 in strings becomes U+FFFD, as the pprof decoder does with its string table
    // (pdata writes a profile's bytes into JSON strings as they are).
    let text = String::from_utf8_lossy(body);
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(|err| invalid(err.to_string()))?;
    hex_ids_to_base64(&mut value).map_err(invalid)?;
    let request: json::ExportProfilesServiceRequest =
        serde_json::from_value(value).map_err(|err| invalid(err.to_string()))?;
    Ok(request.encode_to_vec())
}

/// The OTLP id fields, whose JSON form is hex.
const HEX_ID_FIELDS: [&str; 6] = ["traceId", "trace_id", "spanId", "span_id", "profileId", "profile_id"];

fn hex_ids_to_base64(value: &mut serde_json::Value) -> Result<(), String> {
    use base64::Engine as _;
    match value {
        serde_json::Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if HEX_ID_FIELDS.contains(&key.as_str())
                    && let serde_json::Value::String(hex) = field
                {
                    let bytes = decode_hex(hex).ok_or_else(|| format!("{key}: {hex:?} is not a hex id"))?;
                    *hex = base64::engine::general_purpose::STANDARD.encode(bytes);
                } else {
                    hex_ids_to_base64(field)?;
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                hex_ids_to_base64(item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An OTLP/HTTP error: its status, a `google.rpc.Status` body in the request's encoding, and
/// `Retry-After` when the exporter should retry.
fn error_response(err: &ConnectError, encoding: Encoding) -> Response {
    let status = rpc_status(err);
    let body = match encoding {
        Encoding::Proto => status.encode_to_vec(),
        Encoding::Json => {
            let details: Vec<serde_json::Value> = status
                .details
                .iter()
                .map(|_| {
                    serde_json::json!({
                        "@type": RETRY_INFO_TYPE,
                        "retryDelay": format!("{RETRY_AFTER_SECONDS}s"),
                    })
                })
                .collect();
            let mut body = serde_json::json!({ "code": status.code, "message": status.message });
            if !details.is_empty() {
                body["details"] = serde_json::Value::Array(details);
            }
            body.to_string().into_bytes()
        }
    };
    let mut response = (err.http_status(), body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()));
    if retryable(err.code) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response
}

/// Converts, bounds and stores one request for `tenant`, for both transports. Malformed
/// requests (any profile that does not convert) are refused whole; profiles refused one by one
/// as the client's fault (say, outside the ingestion window) are counted in `partial_success`
/// while the others are stored.
async fn export(
    state: &SharedState,
    tenant: Tenant,
    request: ExportProfilesServiceRequest,
) -> Result<ExportProfilesServiceResponse, ConnectError> {
    let (decoded, mut rejected, bytes) = {
        let (work_state, work_tenant) = (state.clone(), tenant.clone());
        state
            .pool
            .decode(move || convert_and_decode(&work_state, &work_tenant, &request))
            .await?
    };
    rejected.extend(super::push::store(state, &tenant, &decoded, bytes).await?);
    if rejected.is_empty() {
        return Ok(ExportProfilesServiceResponse { partial_success: None });
    }
    tracing::debug!(tenant = %tenant, rejected = rejected.len(), "OTLP export partly refused");
    Ok(ExportProfilesServiceResponse {
        partial_success: Some(ExportProfilesPartialSuccess {
            rejected_profiles: rejected.len() as i64,
            error_message: rejected.join("; "),
        }),
    })
}

/// Converts the request to pprofs, takes their bytes from the tenant's byte rate, then decodes
/// each as a pushed profile is decoded (the same limits, and what the WAL replay will do with
/// the same bytes). Returns the decoded profiles, the ones refused, and the bytes taken.
fn convert_and_decode(
    state: &SharedState,
    tenant: &Tenant,
    request: &ExportProfilesServiceRequest,
) -> Result<(Vec<Decoded>, Vec<String>, usize), ConnectError> {
    let now_nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let converted =
        convert::convert_request(request, state.ingester.limits(), now_nanos).map_err(|err: OtlpError| {
            tracing::debug!(tenant = %tenant, error = %err, "OTLP export refused");
            ConnectError::from(err)
        })?;
    let encoded: Vec<(String, crate::model::Labels, Bytes)> = converted
        .into_iter()
        .map(|profile| (profile.at, profile.labels, Bytes::from(profile.profile.encode_to_vec())))
        .collect();
    let bytes = encoded.iter().map(|(_, _, raw)| raw.len()).sum();
    if let Err(err) = state.ingester.admit_bytes(tenant, bytes) {
        for (_, _, raw) in &encoded {
            state
                .metrics
                .record_ingest(tenant.as_str(), err.outcome(), raw.len(), 0);
        }
        return Err(err.into());
    }
    let mut rejected = Vec::new();
    let mut decoded = Vec::with_capacity(encoded.len());
    let mut decoded_bytes = 0usize;
    for (at, labels, raw) in encoded {
        match state.ingester.decode_in_request(&raw, decoded_bytes) {
            Ok((profile, size)) => {
                decoded_bytes += size;
                decoded.push((at, labels, raw, profile));
            }
            Err(err @ IngestError::RequestTooLarge { .. }) => {
                state
                    .metrics
                    .record_ingest(tenant.as_str(), err.outcome(), raw.len(), 0);
                state.ingester.refund_bytes(tenant, bytes);
                return Err(ConnectError::invalid_argument(format!("{at}: {err}")));
            }
            Err(err) => {
                state
                    .metrics
                    .record_ingest(tenant.as_str(), err.outcome(), raw.len(), 0);
                rejected.push(format!("{at}: {err}"));
            }
        }
    }
    Ok((decoded, rejected, bytes))
}
