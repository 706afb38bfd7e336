//! The Connect unary protocol on axum: request decoding, response encoding and errors.
//!
//! Pyroscope's clients (Grafana, profilecli, the SDKs' push path) speak
//! [Connect](https://connectrpc.com/docs/protocol) unary RPCs, as implemented by connect-go:
//!
//! - `POST /<pkg>.<Service>/<Method>` with `Content-Type: application/proto` (binary protobuf)
//!   or `application/json` (proto3 JSON, optionally `; charset=utf-8`). Any other content
//!   type is answered with HTTP 415 (and a Connect error body, which connect-go leaves empty).
//! - An optional `Content-Encoding: gzip` compresses the whole body (`identity` means none).
//!   Decompression is bounded by [`ConnectLimits::max_body_bytes`]; going over is
//!   `invalid_argument` (HTTP 400: the same body will never fit, so a client such as Alloy,
//!   which retries 429s, must not send it again). Any other encoding is `unimplemented`.
//! - Success is HTTP 200 with the request's codec as `Content-Type` and the serialized response
//!   as the body (an empty proto message is 0 bytes, an empty JSON message is `{}`).
//! - Failure is a non-200 status chosen by [`Code::http_status`] (or set explicitly with
//!   [`ConnectError::with_status`], e.g. 415), with `Content-Type: application/json` and a body
//!   `{"code":"invalid_argument","message":"..."}`.
//! - Handlers that read the body themselves use [`read_body`], which bounds it the same way, so
//!   an oversized request is a JSON `invalid_argument`, never axum's plain-text 413.
//!
//! Handlers take a [`Connect<T>`] extractor, which yields the decoded request and the
//! [`Codec`] to answer in, and return [`encode_response`] or a [`ConnectError`]:
//!
//! ```ignore
//! async fn select(Connect(req, codec): Connect<SelectMergeStacktracesRequest>)
//!     -> Result<Response, ConnectError> {
//!     let resp = run_query(req).await?;
//!     Ok(encode_response(&resp, codec))
//! }
//! ```
//!
//! The extractor's body limit is [`DEFAULT_MAX_BODY_BYTES`] unless the router puts a
//! [`ConnectLimits`] into the request extensions (e.g. `.layer(Extension(limits))`).
//! Not implemented: the Connect GET protocol, response compression, `Connect-Timeout-Ms`,
//! and streaming RPCs.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Default bound on a request body, both as received and after decompression: 256 MiB,
/// Pyroscope's default `ingestion_body_limit`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// `Content-Type` of binary protobuf requests and responses.
pub const CONTENT_TYPE_PROTO: &str = "application/proto";
/// `Content-Type` of proto3 JSON requests and responses, and of every error body.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// `Accept-Post` (RFC 7694), sent with 415 answers as connect-go does.
const ACCEPT_POST: HeaderName = HeaderName::from_static("accept-post");

/// Size limits of the Connect layer. Put one into the request extensions
/// (`Extension(ConnectLimits { .. })`) to override the default for the [`Connect`] extractor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectLimits {
    /// Largest request body accepted, both on the wire and after decompression.
    pub max_body_bytes: usize,
}

impl Default for ConnectLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// A Connect error code. Its wire form is [`Code::as_str`]; its HTTP status is
/// [`Code::http_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// Every code, in gRPC numeric order (1..=16).
    pub const ALL: [Code; 16] = [
        Code::Canceled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code as it appears in an error body, e.g. `invalid_argument`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The code named `s` (the wire form of [`Code::as_str`]), if any.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|code| code.as_str() == s)
    }

    /// The HTTP status Connect uses for this code.
    pub fn http_status(self) -> StatusCode {
        let status = match self {
            Code::Canceled => 499,
            Code::Unknown => 500,
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 400,
            Code::Aborted => 409,
            Code::OutOfRange => 400,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::DataLoss => 500,
            Code::Unauthenticated => 401,
        };
        StatusCode::from_u16(status).expect("Connect HTTP statuses are valid")
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Connect error: answered with [`Code::http_status`] (or an explicit override, see
/// [`ConnectError::with_status`]) and a JSON body `{"code":"...","message":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
    /// HTTP status to answer with instead of the code's own, e.g. 415 for a wrong content type.
    pub status: Option<StatusCode>,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
        }
    }

    /// The same error, answered with `status` instead of [`Code::http_status`].
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, message)
    }

    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(Code::ResourceExhausted, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// The request's `Content-Type` is neither Connect codec: code `unimplemented`, answered
    /// with HTTP 415 as connect-go does.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::unimplemented(format!(
            "unsupported content type {content_type:?}: use {CONTENT_TYPE_PROTO} or {CONTENT_TYPE_JSON}"
        ))
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
    }

    /// The HTTP status of this error: the explicit one if set, else [`Code::http_status`].
    pub fn http_status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.http_status())
    }

    /// The JSON error body, `{"code":"...","message":"..."}` (`message` omitted when empty,
    /// as connect-go does).
    pub fn to_json(&self) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("code".into(), self.code.as_str().into());
        if !self.message.is_empty() {
            body.insert("message".into(), self.message.clone().into());
        }
        serde_json::to_vec(&body).expect("a JSON map of strings serializes")
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let mut response = Response::new(Body::from(self.to_json()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_JSON));
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            headers.insert(
                ACCEPT_POST,
                HeaderValue::from_static("application/json, application/proto"),
            );
        }
        response
    }
}

/// The codec of a request, and so of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Binary protobuf, `application/proto`.
    Proto,
    /// proto3 JSON, `application/json`.
    Json,
}

impl Codec {
    /// The response `Content-Type` for this codec.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Proto => CONTENT_TYPE_PROTO,
            Codec::Json => CONTENT_TYPE_JSON,
        }
    }

    /// The codec named by a request's `Content-Type` header, or the 415 error.
    ///
    /// Like connect-go: `application/proto`, `application/json` and
    /// `application/json; charset=utf-8`, with media type and parameters compared
    /// case-insensitively. Anything else, including a missing header, is unsupported.
    pub fn from_headers(headers: &HeaderMap) -> Result<Codec, ConnectError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Err(ConnectError::unsupported_media_type(""));
        };
        let Ok(text) = value.to_str() else {
            return Err(ConnectError::unsupported_media_type(&String::from_utf8_lossy(
                value.as_bytes(),
            )));
        };
        let mut parts = text.split(';');
        let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let params: Vec<&str> = parts.map(str::trim).filter(|param| !param.is_empty()).collect();
        let codec = match media_type.as_str() {
            CONTENT_TYPE_PROTO if params.is_empty() => Some(Codec::Proto),
            CONTENT_TYPE_JSON if params.iter().all(|param| is_utf8_charset(param)) => Some(Codec::Json),
            _ => None,
        };
        codec.ok_or_else(|| ConnectError::unsupported_media_type(text))
    }
}

/// Whether a media-type parameter is `charset=utf-8` (any case, optionally quoted).
fn is_utf8_charset(param: &str) -> bool {
    let Some((name, value)) = param.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("charset") && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
}

/// Whether a request is binary protobuf sent without a `Content-Encoding`: decoding it costs
/// about its length, with no decompression.
pub(super) fn is_uncompressed_proto(headers: &HeaderMap) -> bool {
    content_encoding(headers).is_ok_and(is_identity) && matches!(Codec::from_headers(headers), Ok(Codec::Proto))
}

/// The request's `Content-Encoding`, trimmed; empty when absent.
fn content_encoding(headers: &HeaderMap) -> Result<&str, ConnectError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(""),
        Some(value) => value
            .to_str()
            .map(str::trim)
            .map_err(|_| ConnectError::unimplemented("unknown compression: non-ASCII header")),
    }
}

/// Whether a `Content-Encoding` leaves the body as it is.
fn is_identity(encoding: &str) -> bool {
    encoding.is_empty() || encoding.eq_ignore_ascii_case("identity")
}

/// Undoes the request's `Content-Encoding`, bounding the result to `max_body_bytes`.
pub(super) fn decompress<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    max_body_bytes: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, ConnectError> {
    let too_large = || too_large(max_body_bytes);
    if body.len() > max_body_bytes {
        return Err(too_large());
    }
    let encoding = content_encoding(headers)?;
    if is_identity(encoding) {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Err(ConnectError::unimplemented(format!(
            "unknown compression {encoding:?}: supported encodings are gzip, identity"
        )));
    }
    // Read one byte past the bound so that "exactly at the limit" and "over it" differ.
    let bound = u64::try_from(max_body_bytes).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(bound)
        .read_to_end(&mut out)
        .map_err(|err| ConnectError::invalid_argument(format!("decompress gzip body: {err}")))?;
    if out.len() > max_body_bytes {
        return Err(too_large());
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Short name of a generated message type for error messages, e.g. `SelectMergeStacktracesRequest`.
fn type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Decodes a Connect unary request body: picks the codec from `Content-Type`, undoes
/// `Content-Encoding` (bounded by `max_body_bytes`), then parses protobuf or proto3 JSON.
///
/// Errors: unsupported content type → 415; unknown encoding → `unimplemented`; body (or
/// decompressed body) over `max_body_bytes` → `invalid_argument`; corrupt gzip, bad protobuf,
/// bad JSON or wrongly typed fields → `invalid_argument` naming the problem.
pub fn decode_request<T>(headers: &HeaderMap, body: &[u8], max_body_bytes: usize) -> Result<(T, Codec), ConnectError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    let codec = Codec::from_headers(headers)?;
    let body = decompress(headers, body, max_body_bytes)?;
    let message = match codec {
        Codec::Proto => T::decode(body.as_ref()).map_err(|err| {
            ConnectError::invalid_argument(format!("unmarshal protobuf into {}: {err}", type_name::<T>()))
        })?,
        Codec::Json => {
            if body.is_empty() {
                return Err(ConnectError::invalid_argument(format!(
                    "unmarshal JSON into {}: zero-length payload is not a valid JSON object",
                    type_name::<T>()
                )));
            }
            serde_json::from_slice(&body).map_err(|err| {
                ConnectError::invalid_argument(format!("unmarshal JSON into {}: {err}", type_name::<T>()))
            })?
        }
    };
    Ok((message, codec))
}

/// [`decode_request`] of a body held as [`Bytes`]: the `bytes` fields of a protobuf message
/// share the body's memory instead of being copied out of it (a push's profiles go on to the
/// WAL as they arrived).
pub fn decode_request_shared<T>(
    headers: &HeaderMap,
    body: &Bytes,
    max_body_bytes: usize,
) -> Result<(T, Codec), ConnectError>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    let codec = Codec::from_headers(headers)?;
    if codec != Codec::Proto {
        return decode_request(headers, body, max_body_bytes);
    }
    let body = match decompress(headers, body, max_body_bytes)? {
        std::borrow::Cow::Borrowed(_) => body.clone(),
        std::borrow::Cow::Owned(inflated) => Bytes::from(inflated),
    };
    let message = T::decode(body).map_err(|err| {
        ConnectError::invalid_argument(format!("unmarshal protobuf into {}: {err}", type_name::<T>()))
    })?;
    Ok((message, codec))
}

/// Encodes a successful unary response: HTTP 200, `Content-Type` of `codec`, body the
/// serialized message. A serialization failure becomes an `internal` error response.
pub fn encode_response<T>(message: &T, codec: Codec) -> Response
where
    T: prost::Message + serde::Serialize,
{
    let body = match codec {
        Codec::Proto => message.encode_to_vec(),
        Codec::Json => match serde_json::to_vec(message) {
            Ok(body) => body,
            Err(err) => {
                return ConnectError::internal(format!("marshal {} to JSON: {err}", type_name::<T>())).into_response();
            }
        },
    };
    let mut response = Response::new(Body::from(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(codec.content_type()));
    response
}

/// A body over `max_body_bytes`: `invalid_argument`, since it is no smaller when retried.
fn too_large(max_body_bytes: usize) -> ConnectError {
    ConnectError::invalid_argument(format!(
        "request body is larger than the configured maximum of {max_body_bytes} bytes (api.max_body_bytes)"
    ))
}

/// Reads a request body of at most `max_body_bytes`; a longer one is `invalid_argument`
/// (HTTP 400 with a JSON body, which connect clients read, and do not retry), never axum's
/// plain-text 413.
pub async fn read_body(body: Body, max_body_bytes: usize) -> Result<Bytes, ConnectError> {
    read_body_within(body, max_body_bytes, too_large).await
}

/// Most bytes of an oversized body read (and dropped, never kept) so that its client hears
/// the refusal: a server that stops reading while a client still sends makes the client fail
/// with a broken pipe instead of reading the 400 (Go's transport does). Past this, or past four
/// times the route's limit, reading stops and the connection is not reused.
pub const MAX_DRAIN_BYTES: u64 = 256 << 20;

/// The most of an oversized body of a route with limit `limit` that is read and dropped.
pub fn drain_bound(limit: usize) -> u64 {
    (limit as u64).saturating_mul(4).min(MAX_DRAIN_BYTES).max(limit as u64)
}

/// [`read_body`] for a route with a limit of its own: a body over `max_body_bytes` is answered
/// with `too_large(max_body_bytes)` (which names that limit); its rest is read and dropped up
/// to [`drain_bound`], so the client reads the answer instead of a broken pipe.
pub async fn read_body_within(
    mut body: Body,
    max_body_bytes: usize,
    too_large: impl FnOnce(usize) -> ConnectError,
) -> Result<Bytes, ConnectError> {
    use http_body_util::BodyExt;
    let drain_bound = drain_bound(max_body_bytes);
    // The frames are kept as received and joined once at the end: growing one buffer would
    // double its capacity as it goes, so a body cut at the deadline could have reserved
    // nearly twice what it sent.
    let mut kept: Vec<Bytes> = Vec::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            if crate::server::BodyTimeout::is_cause_of(&err) {
                ConnectError {
                    status: Some(StatusCode::REQUEST_TIMEOUT),
                    ..ConnectError::new(Code::DeadlineExceeded, err.to_string())
                }
            } else {
                ConnectError::invalid_argument(format!("read request body: {err}"))
            }
        })?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len() as u64);
        if seen > drain_bound {
            break;
        }
        if seen <= max_body_bytes as u64 {
            kept.push(data);
        } else {
            kept.clear();
        }
    }
    if seen > max_body_bytes as u64 {
        return Err(too_large(max_body_bytes));
    }
    Ok(match kept.len() {
        0 => Bytes::new(),
        1 => kept.pop().unwrap_or_default(),
        _ => {
            let mut joined = bytes::BytesMut::with_capacity(seen as usize);
            for chunk in &kept {
                joined.extend_from_slice(chunk);
            }
            joined.freeze()
        }
    })
}

/// Axum extractor for a Connect unary request: the decoded message and the codec to answer in.
/// Its rejection is a [`ConnectError`]. The body limit is [`DEFAULT_MAX_BODY_BYTES`], or the
/// [`ConnectLimits`] found in the request extensions.
#[derive(Debug, Clone)]
pub struct Connect<T>(pub T, pub Codec);

impl<T, S> FromRequest<S> for Connect<T>
where
    T: prost::Message + Default + serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ConnectError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // Reject a wrong content type before reading what may be a large body.
        Codec::from_headers(req.headers())?;
        let max_body_bytes = req
            .extensions()
            .get::<ConnectLimits>()
            .copied()
            .unwrap_or_default()
            .max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = read_body(body, max_body_bytes).await?;
        let (message, codec) = decode_request(&parts.headers, &bytes, max_body_bytes)?;
        Ok(Connect(message, codec))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::proto::querier::v1::{FlameGraph, SelectMergeStacktracesRequest, SelectMergeStacktracesResponse};

    type Req = SelectMergeStacktracesRequest;

    fn headers(content_type: &str, encoding: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        if let Some(encoding) = encoding {
            headers.insert(header::CONTENT_ENCODING, encoding.parse().unwrap());
        }
        headers
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn sample_request() -> Req {
        Req {
            profile_type_id: "process_cpu:cpu:nanoseconds:cpu:nanoseconds".into(),
            label_selector: r#"{service_name="api"}"#.into(),
            start: 1_700_000_000_000,
            end: 1_700_000_360_000,
            max_nodes: Some(1024),
            ..Default::default()
        }
    }

    async fn body_of(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    /// Asserts a Connect error response and returns its parsed JSON body.
    async fn assert_error(response: Response, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let body: serde_json::Value = serde_json::from_slice(&body_of(response).await).unwrap();
        assert_eq!(body["code"], code, "body: {body}");
        body
    }

    async fn extract(request: Request) -> Result<Connect<Req>, ConnectError> {
        Connect::<Req>::from_request(request, &()).await
    }

    #[test]
    fn proto_round_trip() {
        let want = sample_request();
        let body = prost::Message::encode_to_vec(&want);
        let (got, codec) = decode_request::<Req>(&headers("application/proto", None), &body, 1 << 20).unwrap();
        assert_eq!(codec, Codec::Proto);
        assert_eq!(got, want);
    }

    #[test]
    fn proto_empty_body_is_default_message() {
        let (got, codec) = decode_request::<Req>(&headers("application/proto", None), b"", 1 << 20).unwrap();
        assert_eq!(codec, Codec::Proto);
        assert_eq!(got, Req::default());
    }

    #[test]
    fn json_accepts_original_and_camel_names_and_string_int64() {
        for body in [
            r#"{"profile_typeID":"a:b:c:d:e","start":"1","end":2}"#,
            r#"{"profileTypeID":"a:b:c:d:e","start":"1","end":2,"someUnknownField":true}"#,
        ] {
            for content_type in ["application/json", "application/json; charset=utf-8"] {
                let (got, codec) =
                    decode_request::<Req>(&headers(content_type, None), body.as_bytes(), 1 << 20).unwrap();
                assert_eq!(codec, Codec::Json);
                assert_eq!(got.profile_type_id, "a:b:c:d:e");
                assert_eq!((got.start, got.end), (1, 2));
            }
        }
    }

    #[test]
    fn json_round_trip() {
        let want = sample_request();
        let body = serde_json::to_vec(&want).unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains(r#""profileTypeID""#), "{text}");
        let (got, _) = decode_request::<Req>(&headers("application/json", None), &body, 1 << 20).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn gzip_body_is_decompressed() {
        let want = sample_request();
        for (content_type, plain) in [
            ("application/proto", prost::Message::encode_to_vec(&want)),
            ("application/json", serde_json::to_vec(&want).unwrap()),
        ] {
            let (got, _) = decode_request::<Req>(&headers(content_type, Some("gzip")), &gzip(&plain), 1 << 20).unwrap();
            assert_eq!(got, want);
        }
        // `identity` means no compression.
        let plain = prost::Message::encode_to_vec(&want);
        let (got, _) = decode_request::<Req>(&headers("application/proto", Some("identity")), &plain, 1 << 20).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn gzip_bomb_over_limit_is_invalid_argument() {
        let limit = 1 << 20;
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert!(bomb.len() < limit);
        let err = decode_request::<Req>(&headers("application/proto", Some("gzip")), &bomb, limit).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert_eq!(err.http_status(), StatusCode::BAD_REQUEST);

        // Exactly at the limit is fine (zeros are not valid protobuf, so use an empty JSON
        // object padded with whitespace).
        let mut exact = b"{}".to_vec();
        exact.resize(limit, b' ');
        decode_request::<Req>(&headers("application/json", Some("gzip")), &gzip(&exact), limit).unwrap();
    }

    #[test]
    fn raw_body_over_limit_is_invalid_argument() {
        let err = decode_request::<Req>(&headers("application/json", None), &[b' '; 11], 10).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
    }

    #[test]
    fn corrupt_gzip_is_invalid_argument() {
        let err = decode_request::<Req>(&headers("application/proto", Some("gzip")), b"nope", 1 << 20).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(err.message.contains("gzip"), "{}", err.message);
    }

    #[test]
    fn unknown_encoding_is_unimplemented() {
        let err = decode_request::<Req>(&headers("application/proto", Some("br")), b"", 1 << 20).unwrap_err();
        assert_eq!(err.code, Code::Unimplemented);
        assert_eq!(err.http_status(), StatusCode::NOT_IMPLEMENTED);
        assert!(err.message.contains("br"), "{}", err.message);
    }

    #[test]
    fn bad_json_and_wrong_types_are_invalid_argument() {
        for body in [
            &b"{not json"[..],
            br#"{"start":"soon"}"#,
            br#"{"profileTypeID":7}"#,
            br#"[]"#,
            b"",
        ] {
            let err = decode_request::<Req>(&headers("application/json", None), body, 1 << 20).unwrap_err();
            assert_eq!(err.code, Code::InvalidArgument, "{body:?}");
            assert!(err.message.contains("SelectMergeStacktracesRequest"), "{}", err.message);
        }
    }

    #[test]
    fn bad_protobuf_is_invalid_argument() {
        // Field 1 (string) with a length running past the end of the buffer.
        let err = decode_request::<Req>(&headers("application/proto", None), &[0x0a, 0x7f], 1 << 20).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(err.message.contains("protobuf"), "{}", err.message);
    }

    #[test]
    fn content_types() {
        for (content_type, want) in [
            ("application/proto", Some(Codec::Proto)),
            ("Application/Proto", Some(Codec::Proto)),
            ("application/json", Some(Codec::Json)),
            ("application/json; charset=utf-8", Some(Codec::Json)),
            ("application/json;charset=\"UTF-8\"", Some(Codec::Json)),
            ("application/json; charset=latin1", None),
            ("application/grpc", None),
            ("application/connect+proto", None),
            ("application/x-protobuf", None),
            ("text/plain", None),
        ] {
            let got = Codec::from_headers(&headers(content_type, None)).ok();
            assert_eq!(got, want, "{content_type}");
        }
        let err = Codec::from_headers(&HeaderMap::new()).unwrap_err();
        assert_eq!(err.http_status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn wrong_content_type_is_415_with_json_body() {
        let err = decode_request::<Req>(&headers("text/plain", None), b"{}", 1 << 20).unwrap_err();
        let body = assert_error(err.into_response(), 415, "unimplemented").await;
        assert!(body["message"].as_str().unwrap().contains("text/plain"), "{body}");
    }

    #[tokio::test]
    async fn explicit_status_overrides_the_code_mapping() {
        // The status is explicit, never derived from the message text.
        let err = ConnectError::unimplemented("unsupported content type, says the message");
        assert_eq!(err.http_status(), StatusCode::NOT_IMPLEMENTED);
        let err = ConnectError::unsupported_media_type("text/plain");
        assert_eq!(
            (err.code, err.status),
            (Code::Unimplemented, Some(StatusCode::UNSUPPORTED_MEDIA_TYPE))
        );
        let err = ConnectError::invalid_argument("x").with_status(StatusCode::UNPROCESSABLE_ENTITY);
        assert_error(err.into_response(), 422, "invalid_argument").await;
    }

    #[tokio::test]
    async fn read_body_over_the_limit_is_invalid_argument() {
        let err = read_body(Body::from(vec![b' '; 100]), 10).await.unwrap_err();
        assert_error(err.into_response(), 400, "invalid_argument").await;
        assert_eq!(read_body(Body::from(vec![b' '; 10]), 10).await.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn bad_json_is_400_invalid_argument() {
        let err = decode_request::<Req>(&headers("application/json", None), b"{", 1 << 20).unwrap_err();
        assert_error(err.into_response(), 400, "invalid_argument").await;
    }

    #[tokio::test]
    async fn error_status_mapping_and_body() {
        let want = [
            (Code::Canceled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        assert_eq!(want.len(), Code::ALL.len());
        for (code, status) in want {
            assert_eq!(code.http_status().as_u16(), status, "{code}");
            assert_eq!(Code::parse(code.as_str()), Some(code));
            let response = ConnectError::new(code, "boom").into_response();
            let body = assert_error(response, status, code.as_str()).await;
            assert_eq!(body["message"], "boom");
        }
        assert_eq!(Code::parse("ok"), None);

        let constructors = [
            (ConnectError::invalid_argument("m"), Code::InvalidArgument),
            (ConnectError::internal("m"), Code::Internal),
            (ConnectError::unimplemented("m"), Code::Unimplemented),
            (ConnectError::resource_exhausted("m"), Code::ResourceExhausted),
            (ConnectError::unauthenticated("m"), Code::Unauthenticated),
            (ConnectError::not_found("m"), Code::NotFound),
        ];
        for (err, code) in constructors {
            assert_eq!(err.code, code);
            assert_eq!(err.to_string(), format!("{}: m", code.as_str()));
        }

        // An empty message is omitted, as connect-go does.
        let body = body_of(ConnectError::new(Code::Internal, "").into_response()).await;
        assert_eq!(body, br#"{"code":"internal"}"#);
    }

    #[tokio::test]
    async fn encode_response_both_codecs() {
        let response = SelectMergeStacktracesResponse {
            flamegraph: Some(FlameGraph {
                names: vec!["total".into(), "main".into()],
                total: 10,
                max_self: 10,
                ..Default::default()
            }),
            ..Default::default()
        };

        let proto = encode_response(&response, Codec::Proto);
        assert_eq!(proto.status(), StatusCode::OK);
        assert_eq!(proto.headers().get(header::CONTENT_TYPE).unwrap(), "application/proto");
        let decoded: SelectMergeStacktracesResponse = prost::Message::decode(&body_of(proto).await[..]).unwrap();
        assert_eq!(decoded, response);

        let json = encode_response(&response, Codec::Json);
        assert_eq!(json.status(), StatusCode::OK);
        assert_eq!(json.headers().get(header::CONTENT_TYPE).unwrap(), "application/json");
        let decoded: SelectMergeStacktracesResponse = serde_json::from_slice(&body_of(json).await).unwrap();
        assert_eq!(decoded, response);

        // Empty messages: 0 bytes in protobuf, `{}` in JSON.
        let empty = SelectMergeStacktracesResponse::default();
        assert!(body_of(encode_response(&empty, Codec::Proto)).await.is_empty());
        assert_eq!(body_of(encode_response(&empty, Codec::Json)).await, b"{}");
    }

    fn request(content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Request {
        let mut builder = Request::builder()
            .method("POST")
            .uri("/querier.v1.QuerierService/SelectMergeStacktraces")
            .header(header::CONTENT_TYPE, content_type);
        if let Some(encoding) = encoding {
            builder = builder.header(header::CONTENT_ENCODING, encoding);
        }
        builder.body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn extractor_decodes_proto_json_and_gzip() {
        let want = sample_request();
        let proto = prost::Message::encode_to_vec(&want);

        let Connect(got, codec) = extract(request("application/proto", None, proto.clone()))
            .await
            .unwrap();
        assert_eq!((got, codec), (want.clone(), Codec::Proto));

        let Connect(got, codec) = extract(request("application/proto", Some("gzip"), gzip(&proto)))
            .await
            .unwrap();
        assert_eq!((got, codec), (want.clone(), Codec::Proto));

        let json = br#"{"profile_typeID":"a:b:c:d:e","start":"1","end":2}"#.to_vec();
        let Connect(got, codec) = extract(request("application/json", None, json)).await.unwrap();
        assert_eq!(codec, Codec::Json);
        assert_eq!(got.profile_type_id, "a:b:c:d:e");
    }

    #[tokio::test]
    async fn extractor_rejections() {
        let err = extract(request("text/plain", None, b"{}".to_vec())).await.unwrap_err();
        let response = err.into_response();
        assert!(response.headers().contains_key(ACCEPT_POST));
        assert_error(response, 415, "unimplemented").await;

        let err = extract(request("application/json", None, b"{".to_vec()))
            .await
            .unwrap_err();
        assert_error(err.into_response(), 400, "invalid_argument").await;

        // Limits from the request extensions: a raw body and a gzip bomb over them.
        let limits = ConnectLimits { max_body_bytes: 4096 };
        let mut over = request("application/json", None, vec![b' '; 8192]);
        over.extensions_mut().insert(limits);
        let err = extract(over).await.unwrap_err();
        assert_error(err.into_response(), 400, "invalid_argument").await;

        let compressed = gzip(&[b' '; 64 << 10]);
        assert!(compressed.len() < limits.max_body_bytes);
        let mut bomb = request("application/json", Some("gzip"), compressed);
        bomb.extensions_mut().insert(limits);
        let err = extract(bomb).await.unwrap_err();
        assert_error(err.into_response(), 400, "invalid_argument").await;
    }
}
