//! The HTTP API in process: `server::build` gives the router `pyrite serve` serves, and each
//! test calls it with tower's `oneshot`, no socket and no child process. What a client sees is
//! asserted here — connect codes and statuses per error class, the tenant header, limits, the
//! legacy routes' own statuses — on real corpus profiles. Process-level tests (SIGKILL, the
//! CLI, the real agents) stay in tests/server.rs, tests/agents.rs and the others.

mod common;

use std::io::Write;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use prost::Message;
use pyrite::config::Config;
use pyrite::proto::google::v1 as pprof;
use pyrite::server::Built;
use serde_json::{Value, json};
use tower::ServiceExt;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// A server over a fresh data directory; `yaml` is a config (its data directory is replaced).
async fn server(yaml: &str) -> (Built, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse(yaml).unwrap();
    config.data_dir = dir.path().to_path_buf();
    (pyrite::server::build(&config).await.unwrap(), dir)
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a connect error: its status, its JSON body's code, and a word of its message.
    fn assert_error(&self, status: u16, code: &str, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.content_type, "application/json", "{}", self.text());
        let error = self.json();
        assert_eq!(error["code"], code, "{error}");
        let message = error["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(message.contains(&needle.to_lowercase()), "{needle:?} not in {error}");
    }
}

async fn call(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn querier(router: &Router, tenant: Option<&str>, method: &str, body: Value) -> Answer {
    let mut request =
        Request::post(format!("/querier.v1.QuerierService/{method}")).header("content-type", "application/json");
    if let Some(tenant) = tenant {
        request = request.header("x-scope-orgid", tenant);
    }
    call(router, request.body(Body::from(body.to_string())).unwrap()).await
}

async fn get(router: &Router, uri: &str) -> Answer {
    call(router, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn push(router: &Router, tenant: &str, service: &str, raw_profile: Vec<u8>) -> Answer {
    use pyrite::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
    use pyrite::proto::types::v1::LabelPair;
    let labels = [("__name__", "process_cpu"), ("service_name", service)];
    let request = PushRequest {
        series: vec![RawProfileSeries {
            labels: labels
                .iter()
                .map(|(name, value)| LabelPair {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: raw_profile.into(),
                id: String::new(),
            }],
            annotations: Vec::new(),
        }],
    };
    let request = Request::post("/push.v1.PusherService/Push")
        .header("content-type", "application/proto")
        .header("x-scope-orgid", tenant)
        .body(Body::from(request.encode_to_vec()))
        .unwrap();
    call(router, request).await
}

fn corpus_bytes(name: &str) -> Vec<u8> {
    std::fs::read(common::corpus_dir().join("files").join(name)).unwrap()
}

/// The corpus file's total of `sample_type` as Go's pprof counts it (MANIFEST.tsv).
fn manifest_total(name: &str, sample_type: &str) -> i64 {
    let file = common::corpus().into_iter().find(|file| file.name == name).unwrap();
    file.totals.unwrap()[sample_type]
}

/// A corpus profile stamped with the time now (its own may be from 1970).
fn corpus_now(name: &str) -> Vec<u8> {
    let mut profile = pyrite::pprof::decode(&corpus_bytes(name), &Default::default()).unwrap();
    profile.time_nanos = pyrite::now_ms() * 1_000_000;
    pyrite::pprof::encode_gzip(&profile)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn window_json(profile_type: &str, selector: &str, start: i64, end: i64) -> Value {
    json!({"profileTypeID": profile_type, "labelSelector": selector,
           "start": start.to_string(), "end": end.to_string()})
}

/// A pushed corpus profile reads back with Go's total, through querier.v1, the legacy render
/// and `/api/v1/render`; a tenant sees only its own data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_profiles_read_back_with_their_totals_per_tenant() {
    let (built, _dir) = server("scrape_configs: []\n").await;
    let router = &built.router;
    let name = "gotarget__cpu_5s.pb.gz";
    let answer = push(router, "team-a", "api", corpus_now(name)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let now = pyrite::now_ms();
    let (start, end) = (now - 600_000, now + 60_000);
    let want = manifest_total(name, "cpu/nanoseconds");

    let merged = querier(
        router,
        Some("team-a"),
        "SelectMergeStacktraces",
        window_json(CPU, r#"{service_name="api"}"#, start, end),
    )
    .await;
    assert_eq!(merged.status, 200, "{}", merged.text());
    assert_eq!(merged.json()["flamegraph"]["total"], want.to_string());
    let other = querier(
        router,
        Some("team-b"),
        "SelectMergeStacktraces",
        window_json(CPU, "{}", start, end),
    )
    .await;
    assert_eq!(other.status, 200);
    assert!(
        other.json()["flamegraph"]["total"]
            .as_str()
            .is_none_or(|total| total == "0"),
        "{}",
        other.text()
    );

    let legacy = call(
        router,
        Request::get(format!("/pyroscope/render?query={CPU}{{}}&from={start}&until={end}"))
            .header("x-scope-orgid", "team-a")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(legacy.status, 200, "{}", legacy.text());
    assert_eq!(legacy.json()["flamebearer"]["numTicks"], want);

    let folded = call(
        router,
        Request::get(format!(
            "/api/v1/render?query={{}}&from={start}&until={end}&format=folded"
        ))
        .header("x-scope-orgid", "team-a")
        .body(Body::empty())
        .unwrap(),
    )
    .await;
    assert_eq!(folded.status, 200, "{}", folded.text());
    assert_eq!(folded.content_type, "text/plain; charset=utf-8");
    let folded_total: i64 = folded
        .text()
        .lines()
        .map(|line| line.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap())
        .sum();
    assert_eq!(folded_total, want);
}

/// Every bad read parameter is a 400 `invalid_argument` naming the problem, whichever edge
/// parses it (querier.v1, the legacy routes, `/api/v1/render`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_read_parameters_are_invalid_argument_at_every_edge() {
    let (built, _dir) = server("scrape_configs: []\napi:\n  default_max_nodes: 100\n  max_nodes_limit: 1000\n").await;
    let router = &built.router;
    let now = pyrite::now_ms();
    for (what, body, needle) in [
        (
            "bad selector",
            window_json(CPU, "{service_name=}", now - 1000, now),
            "selector",
        ),
        ("start after end", window_json(CPU, "{}", now, now - 1000), "after"),
        ("no window", window_json(CPU, "{}", 0, 0), "missing time range"),
        (
            "unknown profile type",
            window_json("cpu", "{}", now - 1000, now),
            "profile type",
        ),
        (
            "too many nodes",
            json!({"profileTypeID": CPU, "labelSelector": "{}", "start": (now - 1000).to_string(),
                   "end": now.to_string(), "maxNodes": "1001"}),
            "1..=1000",
        ),
    ] {
        let answer = querier(router, None, "SelectMergeStacktraces", body).await;
        answer.assert_error(400, "invalid_argument", needle);
        println!("{what}: ok");
    }
    get(router, "/api/v1/render?query={}&from=now&until=now-1h&format=svg")
        .await
        .assert_error(400, "invalid_argument", "must be before until");
    get(router, "/api/v1/render?query={}&format=png")
        .await
        .assert_error(400, "invalid_argument", "unknown format");
    get(router, "/api/v1/render?query={}&max-nodes=lots")
        .await
        .assert_error(400, "invalid_argument", "not an integer");
    get(router, "/pyroscope/render?from=now-1h")
        .await
        .assert_error(400, "invalid_argument", "query is required");
    get(router, "/pyroscope/render?query={}").await.assert_error(
        400,
        "invalid_argument",
        "must start with a profile type",
    );
    get(router, "/pyroscope/label-values?label=x&query={a=}")
        .await
        .assert_error(400, "invalid_argument", "selector");
    get(router, "/api/v1/render-diff?query={}&from=now-2h&until=now-1h")
        .await
        .assert_error(400, "invalid_argument", "baseline_from");
    // Not a connect codec: 415 with the codecs it takes.
    let answer = call(
        router,
        Request::post("/querier.v1.QuerierService/ProfileTypes")
            .header("content-type", "text/plain")
            .body(Body::from("{}"))
            .unwrap(),
    )
    .await;
    answer.assert_error(415, "unimplemented", "content type");
    querier(router, None, "NoSuchMethod", json!({}))
        .await
        .assert_error(501, "unimplemented", "NoSuchMethod");
}

/// `X-Scope-OrgID`: optional by default (tenant `anonymous`), 401 when required and missing,
/// 400 when malformed or naming several tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_header_is_checked_before_anything_is_read() {
    let (open, _dir) = server("scrape_configs: []\n").await;
    let answer = querier(&open.router, None, "ProfileTypes", json!({})).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    querier(&open.router, Some(&"t".repeat(151)), "ProfileTypes", json!({}))
        .await
        .assert_error(400, "invalid_argument", "150");
    querier(&open.router, Some("a|b"), "ProfileTypes", json!({}))
        .await
        .assert_error(400, "invalid_argument", "several tenants");

    let (strict, _dir) = server("scrape_configs: []\napi:\n  require_tenant_header: true\n").await;
    querier(&strict.router, None, "ProfileTypes", json!({}))
        .await
        .assert_error(401, "unauthenticated", "X-Scope-OrgID");
    get(&strict.router, "/api/v1/render?query={}")
        .await
        .assert_error(401, "unauthenticated", "X-Scope-OrgID");
    let answer = push(
        &strict.router,
        "team-a",
        "api",
        corpus_bytes("ddnotes_cpu-profiler-labels.pprof"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// Bad profiles: push.v1 answers 400 `invalid_argument` naming the problem; the legacy
/// `/ingest` answers Pyroscope's statuses (422 for pprof that does not decode, 413 for a body
/// over `api.max_body_bytes`), and a connect body over the limit is 400, not 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_profiles_and_bodies_over_the_limits() {
    let (built, _dir) = server("scrape_configs: []\napi:\n  max_body_bytes: 1048576\n").await;
    let router = &built.router;
    let valid = corpus_bytes("gotarget__cpu_5s.pb.gz");
    let bad_string_index = pprof::Profile {
        sample_type: vec![pprof::ValueType { r#type: 1, unit: 99 }],
        string_table: vec!["".into(), "cpu".into()],
        ..Default::default()
    }
    .encode_to_vec();
    // 200 MiB of valid protobuf once decompressed (unknown field 100 holding 512 KiB of
    // zeros, over and over), so only its size refuses it.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut field = vec![0xa2, 0x06, 0x80, 0x80, 0x20];
    field.resize(field.len() + (512 << 10), 0);
    for _ in 0..400 {
        bomb.write_all(&field).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb fits the body limit: {}", bomb.len());
    for (what, body, needle) in [
        ("truncated gzip", valid[..valid.len() / 2].to_vec(), "gzip"),
        (
            "random bytes",
            (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(),
            "",
        ),
        ("gzip bomb", bomb, "decompressed"),
        ("string index out of range", gzip(&bad_string_index), "99"),
    ] {
        let answer = push(router, "anonymous", "bad", body).await;
        answer.assert_error(400, "invalid_argument", needle);
        println!("{what}: ok");
    }
    let answer = push(router, "anonymous", "good", valid.clone()).await;
    assert_eq!(answer.status, 200, "after bad input: {}", answer.text());

    let ingest = |body: Vec<u8>| {
        Request::post("/ingest?name=app.cpu&format=pprof")
            .body(Body::from(body))
            .unwrap()
    };
    call(router, ingest(b"definitely not a profile".to_vec()))
        .await
        .assert_error(422, "invalid_argument", "profile");
    let over = vec![b'x'; (1 << 20) + 1];
    let answer = call(router, ingest(over.clone())).await;
    assert_eq!(answer.status.as_u16(), 413, "{}", answer.text());
    let answer = push(router, "anonymous", "big", over).await;
    answer.assert_error(400, "invalid_argument", "max_body_bytes");
}

/// Object storage that cannot be reached is `unavailable` (503: retry later), not a 500: the
/// class `StorageError` gives, mapped once. The bucket is a closed local port, no retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_object_storage_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let yaml = format!(
        "scrape_configs: []\nstorage:\n  backend: s3\n  bucket: gone\n  endpoint: http://127.0.0.1:{port}\n  \
         access_key_id: k\n  secret_access_key: s\n  allow_http: true\n  max_retries: 0\n  connect_timeout: 1s\n"
    );
    let (built, _dir) = server(&yaml).await;
    let now = pyrite::now_ms();
    let answer = querier(
        &built.router,
        None,
        "SelectMergeStacktraces",
        window_json(CPU, "{}", now - 7 * 86_400_000, now),
    )
    .await;
    answer.assert_error(503, "unavailable", "object storage");
    get(&built.router, "/api/v1/render?query={}&from=now-7d&until=now")
        .await
        .assert_error(503, "unavailable", "object storage");
}
