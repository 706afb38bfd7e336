//! OTLP profiles ingest in process: `server::build`'s router called with tower's `oneshot` for
//! OTLP/HTTP (protobuf, OTLP JSON, gzip), and a real tonic gRPC client over h2c against
//! `server::serve` on a loopback socket. Asserts the conversion (Pyroscope's names and labels,
//! the `samples` → `cpu` rule, a `service.name` per sample, unsymbolized frames), what is
//! refused and how (a `google.rpc.Status` body, gRPC codes, `Retry-After`), and that nothing of
//! a refused request is stored. The collector's own Go client runs in tests/otlp.rs.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse, profiles_service_client::ProfilesServiceClient,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use pyrite::config::Config;
use pyrite::server::Built;
use serde_json::{Value, json};
use tower::ServiceExt;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const PERIOD: i64 = 10_000_000;

/// `google.rpc.Status`, decoded from error bodies.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

async fn server(yaml: &str) -> (Built, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse(yaml).unwrap();
    config.data_dir = dir.path().to_path_buf();
    (pyrite::server::build(&config).await.unwrap(), dir)
}

fn string(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    })
}

fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: string(value),
        ..Default::default()
    }
}

/// One CPU profile (`samples/count`, period `cpu/nanoseconds` 10 ms) of service `svc-a`:
/// main;work ×2, main ×1, main;<libc.so.6 0x1234> ×4, and main;work ×5 whose sample says
/// `service.name=svc-b`.
fn request() -> ExportProfilesServiceRequest {
    let strings = [
        "",
        "samples",
        "count",
        "cpu",
        "nanoseconds",
        "main",
        "work",
        "libc.so.6",
        "service.name",
        "svc-b",
        "main.go",
        "thread",
        "worker-1",
    ];
    let s = |value: &str| strings.iter().position(|&x| x == value).unwrap() as i32;
    let dictionary = otlp::ProfilesDictionary {
        string_table: strings.iter().map(|x| x.to_string()).collect(),
        mapping_table: vec![
            otlp::Mapping::default(),
            otlp::Mapping {
                memory_start: 0x1000,
                memory_limit: 0x9000,
                filename_strindex: s("libc.so.6"),
                ..Default::default()
            },
        ],
        function_table: vec![
            otlp::Function::default(),
            otlp::Function {
                name_strindex: s("main"),
                filename_strindex: s("main.go"),
                ..Default::default()
            },
            otlp::Function {
                name_strindex: s("work"),
                filename_strindex: s("main.go"),
                ..Default::default()
            },
        ],
        location_table: vec![
            otlp::Location::default(),
            otlp::Location {
                lines: vec![otlp::Line {
                    function_index: 1,
                    line: 10,
                    column: 0,
                }],
                ..Default::default()
            },
            otlp::Location {
                lines: vec![otlp::Line {
                    function_index: 2,
                    line: 20,
                    column: 0,
                }],
                ..Default::default()
            },
            // Unsymbolized: a mapping and an address, no lines.
            otlp::Location {
                mapping_index: 1,
                address: 0x1234,
                ..Default::default()
            },
        ],
        stack_table: vec![
            otlp::Stack::default(),
            otlp::Stack {
                location_indices: vec![2, 1],
            },
            otlp::Stack {
                location_indices: vec![1],
            },
            otlp::Stack {
                location_indices: vec![3, 1],
            },
        ],
        attribute_table: vec![
            otlp::KeyValueAndUnit::default(),
            otlp::KeyValueAndUnit {
                key_strindex: s("service.name"),
                value: string("svc-b"),
                unit_strindex: 0,
            },
            otlp::KeyValueAndUnit {
                key_strindex: s("thread"),
                value: string("worker-1"),
                unit_strindex: 0,
            },
        ],
        link_table: vec![otlp::Link::default()],
    };
    let sample = |stack_index: i32, value: i64, attribute_indices: Vec<i32>| otlp::Sample {
        stack_index,
        values: vec![value],
        attribute_indices,
        ..Default::default()
    };
    let profile = otlp::Profile {
        sample_type: Some(otlp::ValueType {
            type_strindex: s("samples"),
            unit_strindex: s("count"),
        }),
        period_type: Some(otlp::ValueType {
            type_strindex: s("cpu"),
            unit_strindex: s("nanoseconds"),
        }),
        period: PERIOD,
        time_unix_nano: (pyrite::now_ms() as u64 - 60_000) * 1_000_000,
        duration_nano: 10_000_000_000,
        samples: vec![
            sample(1, 2, vec![2]),
            sample(2, 1, vec![]),
            sample(3, 4, vec![]),
            sample(1, 5, vec![1]),
        ],
        ..Default::default()
    };
    ExportProfilesServiceRequest {
        resource_profiles: vec![otlp::ResourceProfiles {
            resource: Some(Resource {
                attributes: vec![
                    key_value("service.name", "svc-a"),
                    key_value("k8s.pod-name", "pod-1"),
                    KeyValue {
                        key: "process.pid".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::IntValue(7)),
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            scope_profiles: vec![otlp::ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    attributes: vec![key_value("scope.attr", "s1")],
                    ..Default::default()
                }),
                profiles: vec![profile],
                ..Default::default()
            }],
            ..Default::default()
        }],
        dictionary: Some(dictionary),
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn status_body(&self) -> RpcStatus {
        assert_eq!(
            self.content_type,
            "application/x-protobuf",
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        RpcStatus::decode(self.body.as_slice()).unwrap()
    }
}

async fn post(router: &Router, tenant: &str, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Answer {
    let mut request = Request::post("/v1development/profiles")
        .header("content-type", content_type)
        .header("x-scope-orgid", tenant);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_string())
    };
    let (content_type, retry_after) = (header("content-type").unwrap_or_default(), header("retry-after"));
    Answer {
        status: response.status(),
        content_type,
        retry_after,
        body: response.into_body().collect().await.unwrap().to_bytes().to_vec(),
    }
}

async fn querier(router: &Router, tenant: &str, method: &str, body: Value) -> Value {
    let request = Request::post(format!("/querier.v1.QuerierService/{method}"))
        .header("content-type", "application/json")
        .header("x-scope-orgid", tenant)
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

fn window() -> (i64, i64) {
    (pyrite::now_ms() - 3_600_000, pyrite::now_ms() + 3_600_000)
}

/// The merged flame graph of one service: its total and its frame names.
async fn flame(router: &Router, tenant: &str, service: &str) -> (i64, Vec<String>) {
    let (start, end) = window();
    let body = querier(
        router,
        tenant,
        "SelectMergeStacktraces",
        json!({"profileTypeID": CPU, "labelSelector": format!("{{service_name=\"{service}\"}}"), "start": start, "end": end}),
    )
    .await;
    let total = body["flamegraph"]["total"].as_str().unwrap_or("0").parse().unwrap();
    let names = body["flamegraph"]["names"]
        .as_array()
        .map(|names| names.iter().map(|name| name.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (total, names)
}

async fn series(router: &Router, tenant: &str) -> Vec<serde_json::Map<String, Value>> {
    let (start, end) = window();
    let body = querier(
        router,
        tenant,
        "Series",
        json!({"matchers": ["{}"], "start": start, "end": end}),
    )
    .await;
    body["labelsSet"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|set| {
            set["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| (pair["name"].as_str().unwrap().to_string(), pair["value"].clone()))
                .collect()
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn http_protobuf_is_converted_as_pyroscope_does() {
    let (built, _dir) = server("scrape_configs: []\n").await;
    let answer = post(
        &built.router,
        "t1",
        "application/x-protobuf",
        Some("gzip"),
        gzip(&request().encode_to_vec()),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let response = ExportProfilesServiceResponse::decode(answer.body.as_slice()).unwrap();
    assert_eq!(response.partial_success, None);

    // samples × period, split by the sample's service.name.
    let (total, names) = flame(&built.router, "t1", "svc-a").await;
    assert_eq!(total, (2 + 1 + 4) * PERIOD);
    for name in ["main", "work", "0x1234"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    assert_eq!(flame(&built.router, "t1", "svc-b").await.0, 5 * PERIOD);
    // Another tenant sees nothing.
    assert_eq!(flame(&built.router, "t2", "svc-a").await.0, 0);

    let sets = series(&built.router, "t1").await;
    let a = sets
        .iter()
        .find(|set| set["service_name"] == "svc-a")
        .unwrap_or_else(|| panic!("{sets:?}"));
    assert_eq!(a["__profile_type__"], CPU);
    assert_eq!(a["__name__"], "process_cpu");
    assert_eq!(a["k8s.pod_name"], "pod-1", "sanitised resource attribute");
    assert_eq!(a["service.name"], "svc-a");
    assert_eq!(a["scope.attr"], "s1");
    assert!(!a.contains_key("process.pid"), "int attributes are not labels: {a:?}");
    let b = sets.iter().find(|set| set["service_name"] == "svc-b").unwrap();
    assert_eq!(b["k8s.pod_name"], "pod-1");
}

#[tokio::test]
async fn otlp_json_with_hex_ids_and_string_int64s() {
    let (built, _dir) = server("scrape_configs: []\n").await;
    let now_nanos = ((pyrite::now_ms() - 60_000) * 1_000_000).to_string();
    // As pdata's MarshalJSON writes it: lowerCamelCase, int64/fixed64 as strings, hex ids.
    let body = json!({
        "resourceProfiles": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
            "scopeProfiles": [{"profiles": [{
                "sampleType": {"typeStrindex": 1, "unitStrindex": 2},
                "periodType": {"typeStrindex": 1, "unitStrindex": 2},
                "period": "1",
                "timeUnixNano": now_nanos,
                "profileId": "0102030405060708090a0b0c0d0e0f10",
                "samples": [{"stackIndex": 1, "values": ["7"], "linkIndex": 1}]
            }]}]
        }],
        "dictionary": {
            "stringTable": ["", "cpu", "nanoseconds", "leaf"],
            "functionTable": [{}, {"nameStrindex": 3}],
            "locationTable": [{}, {"lines": [{"functionIndex": 1}]}],
            "mappingTable": [{}],
            "stackTable": [{}, {"locationIndices": [1]}],
            "linkTable": [{}, {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}],
            "attributeTable": [{}]
        }
    });
    let answer = post(
        &built.router,
        "t1",
        "application/json",
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.content_type, "application/json");
    let (start, end) = window();
    let body = querier(
        &built.router,
        "t1",
        "SelectMergeStacktraces",
        json!({"profileTypeID": "cpu:cpu:nanoseconds:cpu:nanoseconds", "labelSelector": "{service_name=\"json-svc\"}", "start": start, "end": end}),
    )
    .await;
    assert_eq!(body["flamegraph"]["total"], "7", "{body}");

    // A hex id that is not hex is the client's error, in JSON.
    let bad = r#"{"resourceProfiles":[],"dictionary":{"linkTable":[{"spanId":"zz"}]}}"#;
    let answer = post(&built.router, "t1", "application/json", None, bad.into()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(error["code"], 3, "{error}");
    assert!(error["message"].as_str().unwrap().contains("hex"), "{error}");
}

#[tokio::test]
async fn malformed_requests_are_invalid_argument_and_store_nothing() {
    let (built, _dir) = server("scrape_configs: []\n").await;
    let router = &built.router;
    let cases: Vec<(&str, ExportProfilesServiceRequest, &str)> = vec![
        (
            "no dictionary",
            ExportProfilesServiceRequest {
                dictionary: None,
                ..request()
            },
            "no dictionary",
        ),
        (
            "no profiles",
            ExportProfilesServiceRequest {
                resource_profiles: vec![],
                ..request()
            },
            "no profiles",
        ),
        (
            "function index",
            {
                let mut r = request();
                r.dictionary.as_mut().unwrap().location_table[1].lines[0].function_index = 99;
                r
            },
            "function index 99 is out of range",
        ),
        (
            "stack index",
            {
                let mut r = request();
                r.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = -1;
                r
            },
            "stack index -1 is out of range",
        ),
        (
            "string index",
            {
                let mut r = request();
                r.dictionary.as_mut().unwrap().function_table[1].name_strindex = 1000;
                r
            },
            "function name index 1000 is out of range (the dictionary's string_table",
        ),
        (
            "two values",
            {
                let mut r = request();
                r.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].values = vec![1, 2];
                r
            },
            "2 values",
        ),
        (
            "no sample type",
            {
                let mut r = request();
                r.resource_profiles[0].scope_profiles[0].profiles[0].sample_type = None;
                r
            },
            "sample_type is missing",
        ),
    ];
    for (what, request, needle) in cases {
        let answer = post(router, "bad", "application/x-protobuf", None, request.encode_to_vec()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(answer.retry_after, None, "{what}");
        let status = answer.status_body();
        assert_eq!(status.code, 3, "{what}: {status:?}");
        assert!(
            status.message.contains(needle),
            "{what}: {needle:?} not in {:?}",
            status.message
        );
        assert!(status.details.is_empty(), "{what}");
    }
    // The dictionary over limits.max_locations (3; the request has 4), checked on the wire.
    let (limited, _limited_dir) = server("scrape_configs: []\nlimits:\n  max_locations: 3\n").await;
    let answer = post(
        &limited.router,
        "bad",
        "application/x-protobuf",
        None,
        request().encode_to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.status_body().message.contains("limits.max_locations"));

    for (content_type, body) in [
        ("application/x-protobuf", b"\xff\xff\xff\xff".to_vec()),
        ("application/json", b"{\"resourceProfiles\": 5}".to_vec()),
    ] {
        let answer = post(router, "bad", content_type, None, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{content_type}");
    }
    let answer = post(router, "bad", "text/plain", None, b"x".to_vec()).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        series(router, "bad").await.is_empty(),
        "a refused request stored series"
    );
}

#[tokio::test]
async fn gzip_bombs_and_large_bodies_are_refused_before_decoding() {
    let (built, _dir) = server("scrape_configs: []\napi:\n  max_body_bytes: 65536\n").await;
    let bomb = gzip(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 65536);
    let answer = post(&built.router, "t", "application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.status_body().message.contains("max_body_bytes"));
    let answer = post(&built.router, "t", "application/x-protobuf", None, vec![0u8; 70_000]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.status_body().message.contains("max_body_bytes"));
}

#[tokio::test]
async fn over_the_tenant_rate_is_429_with_retry_after() {
    let (built, _dir) =
        server("scrape_configs: []\ntenant_limits:\n  ingestion_rate: 0.001\n  ingestion_burst_size: 5\n").await;
    let body = request().encode_to_vec();
    let first = post(&built.router, "t", "application/x-protobuf", None, body.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    let second = post(&built.router, "t", "application/x-protobuf", None, body).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.retry_after.as_deref(), Some("10"));
    let status = second.status_body();
    assert_eq!(status.code, 8, "{status:?}");
    assert_eq!(status.details.len(), 1);
    assert_eq!(status.details[0].type_url, "type.googleapis.com/google.rpc.RetryInfo");
    // The first export is stored once.
    assert_eq!(flame(&built.router, "t", "svc-a").await.0, 7 * PERIOD);
}

#[tokio::test]
async fn grpc_over_h2c_with_a_tonic_client() {
    let (built, _dir) = server("scrape_configs: []\n").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = built.router.clone();
    let config = pyrite::server::ServerConfig::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        pyrite::server::serve(listener, router, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    let mut client = ProfilesServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let mut export = tonic::Request::new(request());
    export
        .metadata_mut()
        .insert("x-scope-orgid", "grpc-tenant".parse().unwrap());
    let response = client.export(export).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    assert_eq!(flame(&built.router, "grpc-tenant", "svc-a").await.0, 7 * PERIOD);

    let mut bad = request();
    bad.dictionary.as_mut().unwrap().stack_table[1].location_indices = vec![42];
    let err = client.export(tonic::Request::new(bad)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("location index 42 is out of range"),
        "{}",
        err.message()
    );
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}
