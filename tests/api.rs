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
    call(router, push_request(tenant, &[(service, raw_profile)], false)).await
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

/// A corpus profile stamped with `at_ms`, pushed with these labels.
async fn push_at(router: &Router, tenant: &str, labels: &[(&str, &str)], name: &str, at_ms: i64) {
    let mut profile = pyrite::pprof::decode(&corpus_bytes(name), &Default::default()).unwrap();
    profile.time_nanos = at_ms * 1_000_000;
    push_profile(router, tenant, labels, &profile).await;
}

async fn push_profile(router: &Router, tenant: &str, labels: &[(&str, &str)], profile: &pprof::Profile) {
    use pyrite::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
    use pyrite::proto::types::v1::LabelPair;
    let request = PushRequest {
        series: vec![RawProfileSeries {
            labels: [("__name__", "process_cpu")]
                .iter()
                .chain(labels)
                .map(|(name, value)| LabelPair {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: pyrite::pprof::encode_gzip(profile).into(),
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
    let answer = call(router, request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

fn int(value: &Value) -> i64 {
    match value {
        Value::String(text) => text.parse().unwrap(),
        Value::Number(number) => number.as_i64().unwrap(),
        Value::Null => 0,
        other => panic!("not an integer: {other}"),
    }
}

/// Every exemplar of a heatmap answer, with the slot it sits in.
fn exemplars(heatmap: &Value) -> Vec<(i64, Value)> {
    let mut out = Vec::new();
    for series in heatmap["series"].as_array().into_iter().flatten() {
        for slot in series["slots"].as_array().unwrap() {
            for exemplar in slot["exemplars"].as_array().into_iter().flatten() {
                out.push((int(&slot["timestamp"]), exemplar.clone()));
            }
        }
    }
    out
}

/// Sum of the counts of one heatmap series; checks each slot has one count per y range.
fn heatmap_counts(series: &Value) -> i64 {
    let mut sum = 0;
    for slot in series["slots"].as_array().unwrap() {
        let counts = slot["counts"].as_array().unwrap();
        assert_eq!(counts.len(), pyrite::query::Y_BUCKETS, "{slot}");
        assert_eq!(slot["yMin"].as_array().unwrap().len(), counts.len());
        sum += counts.iter().map(int).sum::<i64>();
    }
    sum
}

/// SelectHeatmap over real corpus profiles: one point per profile in the cell of its slot and
/// value, each cell's exemplar opens exactly that profile (profile_id_selector, flame graph and
/// pprof), group_by and limit split and cut the series, in the head and again from blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heatmap_cells_and_their_exemplars_open_one_profile_each() {
    let (built, _dir) = server("scrape_configs: []\n").await;
    let router = &built.router;
    let tenant = "heat";
    let t = (pyrite::now_ms() - 600_000) / 10_000 * 10_000;
    // (pod, file, time): slots of 10 s end at t + 10 s, t + 20 s, t + 30 s.
    let pushes = [
        ("a", "gotarget__cpu_5s.pb.gz", t + 1_000),
        ("a", "ddnotes_cpu-profiler-labels.pprof", t + 11_000),
        ("b", "ddnotes_pprof.samples.cpu.001.pb.gz", t + 12_000),
        ("a", "parca_labels.pb.gz", t + 21_000),
    ];
    for (pod, file, at) in pushes {
        push_at(router, tenant, &[("service_name", "heat"), ("pod", pod)], file, at).await;
    }
    let want = |file: &str| manifest_total(file, "cpu/nanoseconds");
    let window_total: i64 = pushes.iter().map(|(_, file, _)| want(file)).sum();
    let (start, end) = (t, t + 30_000);
    let heatmap = |extra: Value| {
        let mut body = json!({"profileTypeID": CPU, "labelSelector": r#"{service_name="heat"}"#,
            "start": start, "end": end, "step": 10.0,
            "queryType": "HEATMAP_QUERY_TYPE_INDIVIDUAL", "exemplarType": "EXEMPLAR_TYPE_INDIVIDUAL"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        async move {
            let answer = querier(router, Some(tenant), "SelectHeatmap", body).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            answer.json()
        }
    };
    let open = |id: String| async move {
        let mut body = window_json(CPU, "{}", start, end);
        body["profileIdSelector"] = json!([id]);
        let merged = querier(router, Some(tenant), "SelectMergeStacktraces", body.clone()).await;
        assert_eq!(merged.status, 200, "{}", merged.text());
        let pprof = querier(router, Some(tenant), "SelectMergeProfile", body).await;
        assert_eq!(pprof.status, 200, "{}", pprof.text());
        let samples: i64 = pprof.json()["sample"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|sample| int(&sample["value"][0]))
            .sum();
        (int(&merged.json()["flamegraph"]["total"]), samples)
    };

    for stage in ["head", "blocks"] {
        let all = heatmap(json!({})).await;
        let series = all["series"].as_array().unwrap();
        assert_eq!(series.len(), 1, "{stage}: no group_by, one series: {all}");
        assert_eq!(heatmap_counts(&series[0]), pushes.len() as i64, "{stage}");
        let slots: Vec<i64> = series[0]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|slot| int(&slot["timestamp"]))
            .collect();
        assert_eq!(slots, [t + 10_000, t + 20_000, t + 30_000], "{stage}");
        // Each profile is alone in its cell: the exemplars are the profiles, and their values
        // add up to the window's total, which SelectSeries and the merge also give.
        let found = exemplars(&all);
        assert_eq!(found.len(), pushes.len(), "{stage}: {all}");
        let exemplar_sum: i64 = found.iter().map(|(_, e)| int(&e["value"])).sum();
        assert_eq!(exemplar_sum, window_total, "{stage}");
        let series_answer = querier(
            router,
            Some(tenant),
            "SelectSeries",
            json!({"profileTypeID": CPU, "labelSelector": r#"{service_name="heat"}"#,
                "start": start, "end": end, "step": 10.0}),
        )
        .await;
        let series_sum: f64 = series_answer.json()["series"][0]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|point| point["value"].as_f64().unwrap())
            .sum();
        assert_eq!(series_sum, window_total as f64, "{stage}");
        for (pod, file, at) in pushes {
            let (slot, exemplar) = found
                .iter()
                .find(|(_, e)| int(&e["timestamp"]) == at)
                .unwrap_or_else(|| panic!("{stage}: no exemplar at {at}: {all}"));
            assert_eq!(*slot, pyrite::query::step_point(start, end, 10_000, at).unwrap());
            assert_eq!(int(&exemplar["value"]), want(file), "{stage} {file}");
            let labels = exemplar["labels"].as_array().unwrap();
            assert!(labels.contains(&json!({"name": "pod", "value": pod})), "{exemplar}");
            let id = exemplar["profileId"].as_str().unwrap().to_string();
            assert_eq!(open(id).await, (want(file), want(file)), "{stage}: {file} opened alone");
        }

        // group_by splits the series; limit keeps the heavier one.
        let by_pod = heatmap(json!({"groupBy": ["pod"]})).await;
        let series = by_pod["series"].as_array().unwrap();
        assert_eq!(series.len(), 2, "{by_pod}");
        assert_eq!(series[0]["labels"], json!([{"name": "pod", "value": "a"}]));
        assert_eq!((heatmap_counts(&series[0]), heatmap_counts(&series[1])), (3, 1));
        for exemplar in exemplars(&by_pod) {
            let labels = exemplar.1["labels"].as_array().unwrap();
            assert!(
                !labels.iter().any(|label| label["name"] == "pod"),
                "group_by labels are the series'"
            );
        }
        let top = heatmap(json!({"groupBy": ["pod"], "limit": 1})).await;
        assert_eq!(top["series"].as_array().unwrap().len(), 1);
        assert_eq!(top["series"][0]["labels"], json!([{"name": "pod", "value": "a"}]));
        // No exemplars asked for, none given; counts stay.
        let bare = heatmap(json!({"exemplarType": "EXEMPLAR_TYPE_NONE"})).await;
        assert!(exemplars(&bare).is_empty(), "{bare}");
        assert_eq!(heatmap_counts(&bare["series"][0]), pushes.len() as i64);

        // An id of no stored profile opens nothing, without an error.
        let unknown = "00000000-0000-0000-0000-000000000001".to_string();
        assert_eq!(open(unknown).await, (0, 0), "{stage}");
        built.head.flush().await.unwrap();
    }

    for bad in [
        "",
        "not-a-uuid",
        "7c9e6679-7425-40de-944b-e07fc1f90aeZ",
        "7c9e667974-25-40de-944b-e07fc1f90ae7",
    ] {
        for method in ["SelectMergeStacktraces", "SelectMergeProfile"] {
            let mut body = window_json(CPU, "{}", start, end);
            body["profileIdSelector"] = json!([bad]);
            querier(router, Some(tenant), method, body)
                .await
                .assert_error(400, "invalid_argument", "uuid");
        }
    }
    let mut bad_type = json!({"profileTypeID": CPU, "labelSelector": "{}", "start": start, "end": end,
        "step": 10.0, "queryType": 7});
    querier(router, Some(tenant), "SelectHeatmap", bad_type.clone())
        .await
        .assert_error(400, "invalid_argument", "query_type");
    bad_type["queryType"] = json!(1);
    bad_type["step"] = json!(0.0);
    querier(router, Some(tenant), "SelectHeatmap", bad_type)
        .await
        .assert_error(400, "invalid_argument", "step");
}

/// SelectHeatmap of spans: one point per span of a profile, its value the span's rows; the
/// exemplar's span id opens the same rows through SelectMergeSpanProfile, and rows without a
/// span are in no cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_heatmap_counts_each_span_of_each_profile() {
    let (built, _dir) = server("scrape_configs: []\n").await;
    let router = &built.router;
    let tenant = "heat-spans";
    let name = "pyroscope__pprof_single_group_with_optional_span_id.pb.gz";
    let mut profile = pyrite::pprof::decode(&corpus_bytes(name), &Default::default()).unwrap();
    let t = (pyrite::now_ms() - 600_000) / 10_000 * 10_000;
    profile.time_nanos = (t + 5_000) * 1_000_000;
    let cpu = profile
        .sample_type
        .iter()
        .position(|st| profile.string_table[st.r#type as usize] == "cpu")
        .unwrap();
    // Three span ids over the samples that had one ("239" in the file, not a 16-hex id).
    let span_key = profile.string_table.iter().position(|s| s == "span_id").unwrap() as i64;
    let spans = ["00000000000000a1", "00000000000000b2", "00000000000000c3"];
    let first = profile.string_table.len() as i64;
    profile.string_table.extend(spans.iter().map(|s| s.to_string()));
    let mut per_span = std::collections::BTreeMap::<&str, i64>::new();
    let mut spanned = 0;
    for sample in &mut profile.sample {
        if let Some(label) = sample.label.iter_mut().find(|label| label.key == span_key) {
            let which = spanned % spans.len();
            spanned += 1;
            label.str = first + which as i64;
            *per_span.entry(spans[which]).or_default() += sample.value[cpu];
        }
    }
    assert!(
        spanned > 3 && spanned < profile.sample.len(),
        "some samples without a span"
    );
    push_profile(router, tenant, &[("service_name", "spans")], &profile).await;

    let (start, end) = (t, t + 30_000);
    for stage in ["head", "blocks"] {
        let answer = querier(
            router,
            Some(tenant),
            "SelectHeatmap",
            json!({"profileTypeID": CPU, "labelSelector": "{}", "start": start, "end": end, "step": 10.0,
                "queryType": "HEATMAP_QUERY_TYPE_SPAN", "exemplarType": "EXEMPLAR_TYPE_SPAN"}),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let heatmap = answer.json();
        assert_eq!(
            heatmap_counts(&heatmap["series"][0]),
            spans.len() as i64,
            "{stage}: {heatmap}"
        );
        let mut found = std::collections::BTreeMap::<String, i64>::new();
        for (slot, exemplar) in exemplars(&heatmap) {
            assert_eq!(slot, t + 10_000);
            let span = exemplar["spanId"].as_str().unwrap().to_string();
            let opened = querier(
                router,
                Some(tenant),
                "SelectMergeSpanProfile",
                json!({"profileTypeID": CPU, "labelSelector": "{}", "start": start, "end": end,
                    "spanSelector": [span]}),
            )
            .await;
            assert_eq!(int(&opened.json()["flamegraph"]["total"]), int(&exemplar["value"]));
            found.insert(span, int(&exemplar["value"]));
        }
        // Each cell holds the heaviest of its spans; the heaviest span overall is among them,
        // and every exemplar's value is its span's.
        let heaviest = per_span.iter().max_by_key(|(_, v)| **v).unwrap();
        assert_eq!(found.get(*heaviest.0), Some(heaviest.1), "{stage}: {found:?}");
        for (span, value) in &found {
            assert_eq!(per_span.get(span.as_str()), Some(value), "{stage}");
        }
        built.head.flush().await.unwrap();
    }
}

/// A heatmap of more points than the query's memory budget (`api.max_query_tree_nodes`) is
/// refused with a 400 naming the limit, not answered from an unbounded allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heatmap_past_the_query_budget_is_refused() {
    let (built, _dir) = server("scrape_configs: []\napi:\n  max_query_tree_nodes: 2\n").await;
    let router = &built.router;
    let t = (pyrite::now_ms() - 600_000) / 10_000 * 10_000;
    for offset in 1..=3 {
        push_at(
            router,
            "budget",
            &[("service_name", "b")],
            "ddnotes_cpu-profiler-labels.pprof",
            t + offset * 1_000,
        )
        .await;
    }
    let body = |query_type: &str| {
        json!({"profileTypeID": CPU, "labelSelector": "{}", "start": t, "end": t + 10_000, "step": 10.0,
            "queryType": query_type})
    };
    querier(
        router,
        Some("budget"),
        "SelectHeatmap",
        body("HEATMAP_QUERY_TYPE_INDIVIDUAL"),
    )
    .await
    .assert_error(400, "invalid_argument", "max_query_tree_nodes");
    // Two of the three fit: the budget is the points of the window, not of the tenant.
    let fits = querier(
        router,
        Some("budget"),
        "SelectHeatmap",
        json!({"profileTypeID": CPU, "labelSelector": "{}", "start": t, "end": t + 2_000, "step": 1.0,
            "queryType": "HEATMAP_QUERY_TYPE_INDIVIDUAL"}),
    )
    .await;
    assert_eq!(fits.status, 200, "{}", fits.text());
    assert_eq!(heatmap_counts(&fits.json()["series"][0]), 2);
}

/// A push request of several series, each `(service, raw profile)`, its body gzipped as a
/// whole when `gzip_body`.
fn push_request(tenant: &str, profiles: &[(&str, Vec<u8>)], gzip_body: bool) -> Request<Body> {
    use pyrite::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
    use pyrite::proto::types::v1::LabelPair;
    let series = profiles
        .iter()
        .map(|(service, raw)| RawProfileSeries {
            labels: [("__name__", "process_cpu"), ("service_name", service)]
                .iter()
                .map(|(name, value)| LabelPair {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            samples: vec![RawSample {
                raw_profile: raw.clone().into(),
                id: String::new(),
            }],
            annotations: Vec::new(),
        })
        .collect();
    let body = PushRequest { series }.encode_to_vec();
    let request = Request::post("/push.v1.PusherService/Push")
        .header("content-type", "application/proto")
        .header("x-scope-orgid", tenant);
    if gzip_body {
        request.header("content-encoding", "gzip").body(Body::from(gzip(&body)))
    } else {
        request.body(Body::from(body))
    }
    .unwrap()
}

/// `pyrite_ingest_profiles_total` of a tenant and outcome.
async fn ingested_profiles(router: &Router, tenant: &str, outcome: &str) -> u64 {
    let metrics = get(router, "/metrics").await.text();
    let labels = [format!("tenant=\"{tenant}\""), format!("outcome=\"{outcome}\"")];
    metrics
        .lines()
        .filter(|line| line.starts_with("pyrite_ingest_profiles_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .map(|line| line.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

/// A small push is decoded on the async thread it arrived on, anything larger on the blocking
/// pool (a small body that decodes large starts on the one and is decoded again on the other;
/// a gzipped body goes to the pool at once). Which one must not show: every profile stored
/// once with its total, each refused one counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_pushes_decode_alike() {
    let (built, _dir) = server("scrape_configs: []\n").await;
    let router = &built.router;
    let now = pyrite::now_ms();
    let small = corpus_now("gotarget__cpu_5s.pb.gz");
    let small_total = manifest_total("gotarget__cpu_5s.pb.gz", "cpu/nanoseconds");
    // 40,000 samples of one frame: a body of a few KiB that decodes to megabytes.
    let strings = ["", "cpu", "nanoseconds", "main.spin"].map(String::from).to_vec();
    let large = pprof::Profile {
        sample_type: vec![pprof::ValueType { r#type: 1, unit: 2 }],
        sample: (0..40_000)
            .map(|_| pprof::Sample {
                location_id: vec![1],
                value: vec![1],
                label: Vec::new(),
            })
            .collect(),
        location: vec![pprof::Location {
            id: 1,
            line: vec![pprof::Line {
                function_id: 1,
                line: 7,
                column: 0,
            }],
            ..Default::default()
        }],
        function: vec![pprof::Function {
            id: 1,
            name: 3,
            ..Default::default()
        }],
        string_table: strings,
        period_type: Some(pprof::ValueType { r#type: 1, unit: 2 }),
        period: 1,
        time_nanos: now * 1_000_000,
        ..Default::default()
    };
    let large = pyrite::pprof::encode_gzip(&large);
    assert!(
        large.len() < 64 << 10,
        "the large profile's body is small: {}",
        large.len()
    );
    let bad = gzip(
        &pprof::Profile {
            sample_type: vec![pprof::ValueType { r#type: 1, unit: 99 }],
            string_table: vec!["".into(), "cpu".into()],
            ..Default::default()
        }
        .encode_to_vec(),
    );

    // Small, then bad, then large in one request: the bad one is refused (400), the others
    // stored.
    let request = push_request(
        "t",
        &[("small", small.clone()), ("bad", bad.clone()), ("large", large.clone())],
        false,
    );
    call(router, request)
        .await
        .assert_error(400, "invalid_argument", "series 1 sample 0");
    // Small ones alone, as plain and as gzipped bodies.
    for gzip_body in [false, true] {
        let answer = call(router, push_request("t", &[("small", small.clone())], gzip_body)).await;
        assert_eq!(answer.status, 200, "gzip body {gzip_body}: {}", answer.text());
    }
    let answer = call(router, push_request("t", &[("bad", bad)], false)).await;
    answer.assert_error(400, "invalid_argument", "99");
    // The legacy route decodes the same way.
    let legacy = Request::post("/ingest?name=legacy&format=pprof")
        .header("x-scope-orgid", "t")
        .body(Body::from(large.clone()))
        .unwrap();
    let answer = call(router, legacy).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    for (service, want) in [("small", 3 * small_total), ("large", 40_000), ("legacy", 40_000)] {
        let merged = querier(
            router,
            Some("t"),
            "SelectMergeStacktraces",
            window_json(
                CPU,
                &format!(r#"{{service_name="{service}"}}"#),
                now - 600_000,
                now + 60_000,
            ),
        )
        .await;
        assert_eq!(merged.status, 200, "{}", merged.text());
        assert_eq!(merged.json()["flamegraph"]["total"], want.to_string(), "{service}");
    }
    assert_eq!(ingested_profiles(router, "t", "accepted").await, 5);
    assert_eq!(ingested_profiles(router, "t", "invalid").await, 2);
}
