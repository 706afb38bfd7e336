//! Pyroscope wire shapes built by hand over plain HTTP against `pyrite serve` (the official Go
//! clients in tests/compat can't send malformed requests): push.v1 in connect JSON, malformed
//! connect requests and the code/status each gets, the legacy `/pyroscope/*` render API
//! (PYROSCOPE-COMPAT.md §5), span ids surviving a flush and restart, and the Grafana
//! provisioning files in deploy/grafana.

mod common;

use std::io::Write;
use std::path::Path;

use common::Server;
use prost::Message;
use pyrite::proto::google::v1 as pprof;
use serde_json::{Value, json};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const SAMPLES: &str = "process_cpu:samples:count:cpu:nanoseconds";

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Standard base64 with padding, as proto3 JSON writes `bytes`.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Manifest total (Go's `pprof`) of one sample type of a corpus file.
fn manifest_total(file: &str, sample_type: &str) -> i64 {
    common::corpus()
        .into_iter()
        .find(|entry| entry.name == file)
        .and_then(|entry| entry.totals)
        .and_then(|totals| totals.get(sample_type).copied())
        .unwrap_or_else(|| panic!("{file} {sample_type} not in MANIFEST.tsv"))
}

/// A corpus profile (gzipped) with its time set to `at_ms`.
fn corpus_profile_at(file: &str, at_ms: i64) -> Vec<u8> {
    let raw = std::fs::read(common::corpus_dir().join("files").join(file)).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut plain).unwrap();
    let mut profile = pprof::Profile::decode(&plain[..]).unwrap();
    profile.time_nanos = at_ms * 1_000_000;
    gzip(&profile.encode_to_vec())
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }

    /// Asserts a connect error: status, `application/json` and the code.
    fn assert_connect_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        assert_eq!(
            self.content_type, "application/json",
            "{what}: connect clients need JSON errors"
        );
        assert_eq!(self.json()["code"], code, "{what}: {}", self.body);
    }
}

fn post(url: &str, tenant: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut request = client().post(url).header("X-Scope-OrgID", tenant).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().unwrap())
}

fn get(url: &str, tenant: &str) -> Answer {
    answer(client().get(url).header("X-Scope-OrgID", tenant).send().unwrap())
}

fn answer(response: reqwest::blocking::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: response.text().unwrap(),
    }
}

/// A push.v1 request in connect JSON, as the Drilldown app or a curl user writes it.
fn json_push(service: &str, raw_profile: &[u8]) -> Value {
    json!({"series": [{
        "labels": [
            {"name": "__name__", "value": "process_cpu"},
            {"name": "service_name", "value": service},
            {"name": "__delta__", "value": "false"},
        ],
        "samples": [{"rawProfile": base64(raw_profile), "ID": "6a2e0c6e-6f1b-4b7a-9f76-3f2a1d4c5b6a"}],
        "annotations": [{"key": "throttled", "value": "{}"}],
    }]})
}

fn querier_json(server: &Server, tenant: &str, method: &str, body: &Value) -> Answer {
    post(
        &format!("{}/querier.v1.QuerierService/{method}", server.url),
        tenant,
        &[("Content-Type", "application/json")],
        body.to_string().into_bytes(),
    )
}

fn flame_total(server: &Server, tenant: &str, selector: &str, start: i64, end: i64) -> i64 {
    let answer = querier_json(
        server,
        tenant,
        "SelectMergeStacktraces",
        &json!({"profileTypeID": CPU, "labelSelector": selector, "start": start.to_string(), "end": end.to_string()}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["flamegraph"]["total"]
        .as_str()
        .map_or(0, |total| total.parse().unwrap())
}

#[test]
fn connect_json_push_and_every_malformed_request_shape() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let push_url = format!("{}/push.v1.PusherService/Push", server.url);
    let tenant = "json";
    let now = pyrite::now_ms();
    let at = now - 60_000;
    let want = manifest_total("gotarget__cpu_5s.pb.gz", "cpu/nanoseconds");
    let profile = corpus_profile_at("gotarget__cpu_5s.pb.gz", at);

    // JSON push: 200 with `{}` in JSON; gzip-compressed JSON too; `charset=utf-8` accepted.
    let body = json_push("json", &profile).to_string().into_bytes();
    let ok = post(&push_url, tenant, &[("Content-Type", "application/json")], body.clone());
    assert_eq!(
        (ok.status, ok.content_type.as_str(), ok.body.as_str()),
        (200, "application/json", "{}")
    );
    let ok = post(
        &push_url,
        tenant,
        &[
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Encoding", "gzip"),
        ],
        gzip(&json_push("json-gzip", &profile).to_string().into_bytes()),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        flame_total(&server, tenant, r#"{service_name="json"}"#, at - 1000, at + 1000),
        want
    );
    assert_eq!(
        flame_total(&server, tenant, r#"{service_name="json-gzip"}"#, at - 1000, at + 1000),
        want
    );

    // The querier takes proto names as well as JSON names, int64 as strings or numbers, and
    // ignores unknown fields (protojson DiscardUnknown), as the Drilldown app relies on.
    for request in [
        json!({"profile_typeID": CPU, "label_selector": "{service_name=\"json\"}", "start": at - 1000, "end": at + 1000}),
        json!({"profileTypeID": CPU, "labelSelector": "{service_name=\"json\"}", "start": (at - 1000).to_string(), "end": at + 1000, "futureField": [1]}),
    ] {
        let answer = querier_json(&server, tenant, "SelectMergeStacktraces", &request);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["flamegraph"]["total"], want.to_string(), "{request}");
    }

    // Malformed push bodies: the connect code a Pyroscope client acts on, always in JSON.
    let json_type = [("Content-Type", "application/json")];
    for (what, body) in [
        ("bad JSON", "{\"series\": [".to_string()),
        ("series is not a list", r#"{"series": "x"}"#.to_string()),
        ("labels of the wrong type", r#"{"series": [{"labels": 7}]}"#.to_string()),
        (
            "rawProfile not base64",
            r#"{"series": [{"samples": [{"rawProfile": "%%%"}]}]}"#.to_string(),
        ),
        ("no series", "{}".to_string()),
        (
            "no samples",
            r#"{"series": [{"labels": [{"name": "service_name", "value": "x"}]}]}"#.to_string(),
        ),
        (
            "empty raw profile",
            r#"{"series": [{"samples": [{"rawProfile": ""}]}]}"#.to_string(),
        ),
        (
            "not a pprof",
            format!(
                r#"{{"series": [{{"samples": [{{"rawProfile": "{}"}}]}}]}}"#,
                base64(b"hello")
            ),
        ),
    ] {
        post(&push_url, tenant, &json_type, body.into_bytes()).assert_connect_error(400, "invalid_argument", what);
    }
    post(
        &push_url,
        tenant,
        &[("Content-Type", "application/proto")],
        vec![0x0a, 0x7f],
    )
    .assert_connect_error(400, "invalid_argument", "truncated protobuf");
    post(
        &push_url,
        tenant,
        &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        b"nope".to_vec(),
    )
    .assert_connect_error(400, "invalid_argument", "corrupt gzip");
    post(
        &push_url,
        tenant,
        &[("Content-Type", "application/json"), ("Content-Encoding", "br")],
        body.clone(),
    )
    .assert_connect_error(501, "unimplemented", "unknown Content-Encoding");
    for content_type in ["text/plain", "application/grpc", "application/x-protobuf"] {
        let answer = post(&push_url, tenant, &[("Content-Type", content_type)], body.clone());
        answer.assert_connect_error(415, "unimplemented", content_type);
    }
    post(&push_url, tenant, &[], body.clone()).assert_connect_error(415, "unimplemented", "no Content-Type");

    // Malformed querier requests.
    let window = json!({"start": (now - 3_600_000).to_string(), "end": now.to_string()});
    for (method, body, what) in [
        (
            "SelectMergeStacktraces",
            json!({"profileTypeID": 7}),
            "profile type of the wrong type",
        ),
        (
            "SelectMergeStacktraces",
            json!({"profileTypeID": CPU, "labelSelector": "{", "start": "1", "end": "2"}),
            "bad selector",
        ),
        (
            "SelectMergeStacktraces",
            json!({"profileTypeID": CPU, "labelSelector": "{}", "start": "soon", "end": "2"}),
            "start not a number",
        ),
        (
            "SelectMergeStacktraces",
            json!({"profileTypeID": CPU, "labelSelector": "{}"}),
            "no time range",
        ),
        (
            "SelectSeries",
            json!({"profileTypeID": CPU, "labelSelector": "{}", "start": window["start"], "end": window["end"], "step": 0}),
            "step 0",
        ),
        (
            "SelectMergeSpanProfile",
            json!({"profileTypeID": CPU, "labelSelector": "{}", "spanSelector": ["abc"], "start": window["start"], "end": window["end"]}),
            "short span id",
        ),
        ("LabelNames", json!({"matchers": ["{a=~\"(\"}"]}), "bad regex"),
        ("Diff", json!({"left": {"profileTypeID": CPU}}), "diff without right"),
    ] {
        querier_json(&server, tenant, method, &body).assert_connect_error(400, "invalid_argument", what);
    }
    querier_json(&server, tenant, "SelectHeatmap", &json!({})).assert_connect_error(
        400,
        "invalid_argument",
        "SelectHeatmap without a window",
    );
    querier_json(&server, tenant, "NoSuchMethod", &json!({})).assert_connect_error(
        501,
        "unimplemented",
        "unknown method",
    );
    // Profiles Drilldown's AnalyzeQuery over a window with nothing in it: both scopes, no
    // series, no bytes (proto3 JSON leaves the zeros out).
    let analyze = querier_json(
        &server,
        tenant,
        "AnalyzeQuery",
        &json!({"start": "1", "end": "2", "query": "{}"}),
    );
    assert_eq!(analyze.status, 200, "{}", analyze.body);
    let analysis: serde_json::Value = serde_json::from_str(&analyze.body).unwrap();
    assert_eq!(analysis["queryScopes"].as_array().map(Vec::len), Some(2), "{analysis}");
    assert_eq!(analysis["queryImpact"], json!({}), "{analysis}");
    // Grafana's Save & test.
    let health = querier_json(
        &server,
        tenant,
        "ProfileTypes",
        &json!({"start": "1000", "end": "4000"}),
    );
    assert_eq!((health.status, health.body.as_str()), (200, "{}"));

    // Over the body limit: invalid_argument in JSON (400: Alloy must not retry what will never
    // fit; it retries 429s), not a plain-text 413.
    let small_dir = tempfile::tempdir().unwrap();
    let config = small_dir.path().join("pyrite.yaml");
    std::fs::write(&config, "api:\n  max_body_bytes: 65536\n").unwrap();
    let small = Server::start_with_config(&small_dir.path().join("data"), Some(&config));
    let big = json_push("big", &vec![7u8; 200_000]).to_string().into_bytes();
    post(
        &format!("{}/push.v1.PusherService/Push", small.url),
        tenant,
        &json_type,
        big,
    )
    .assert_connect_error(400, "invalid_argument", "push over max_body_bytes");
    // The legacy /ingest answers 413, naming the limit.
    let over = post(
        &format!("{}/ingest?name=big&format=folded", small.url),
        tenant,
        &[],
        b"main;work 1\n".repeat(10_000),
    );
    assert_eq!(over.status, 413, "{}", over.body);
    assert!(over.body.contains("api.max_body_bytes"), "{}", over.body);
    let inflating = gzip(&[b' '; 1 << 20]);
    assert!(inflating.len() < 65536);
    post(
        &format!("{}/querier.v1.QuerierService/ProfileTypes", small.url),
        tenant,
        &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        inflating,
    )
    .assert_connect_error(400, "invalid_argument", "gzip body inflating over max_body_bytes");
}

/// Pyroscope's legacy render API (PYROSCOPE-COMPAT.md §5), as the Pyroscope UI and the
/// Drilldown app call it.
#[test]
fn legacy_render_render_diff_label_values_and_labels() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let tenant = "legacy";
    let now = pyrite::now_ms();
    let left_at = now - 40 * 60_000;
    let right_at = now - 10 * 60_000;
    let cpu_total = manifest_total("gotarget__cpu_5s.pb.gz", "cpu/nanoseconds");
    let other_total = manifest_total("ddnotes_cpu-profiler-labels.pprof", "cpu/nanoseconds");
    let push_url = format!("{}/push.v1.PusherService/Push", server.url);
    for (file, at) in [
        ("gotarget__cpu_5s.pb.gz", left_at),
        ("ddnotes_cpu-profiler-labels.pprof", right_at),
    ] {
        let body = json_push("legacy", &corpus_profile_at(file, at))
            .to_string()
            .into_bytes();
        let ok = post(&push_url, tenant, &[("Content-Type", "application/json")], body);
        assert_eq!(ok.status, 200, "{}", ok.body);
    }
    let query = format!("{CPU}{{service_name=\"legacy\"}}");
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };

    // Render: from/until in ms (the Drilldown app) over both pushes.
    let render = get(
        &format!(
            "{}/pyroscope/render?query={}&from={}&until={}&format=json",
            server.url,
            encode(&query),
            now - 3_600_000,
            now
        ),
        tenant,
    );
    assert_eq!(render.status, 200, "{}", render.body);
    let body = render.json();
    assert_eq!(body["version"], 1);
    let flamebearer = &body["flamebearer"];
    assert_eq!(flamebearer["numTicks"], cpu_total + other_total);
    assert_eq!(flamebearer["names"][0], "total");
    assert_eq!(flamebearer["levels"][0], json!([0, cpu_total + other_total, 0, 0]));
    for level in flamebearer["levels"].as_array().unwrap() {
        assert_eq!(level.as_array().unwrap().len() % 4, 0);
    }
    assert_eq!(body["metadata"]["format"], "single");
    assert_eq!(body["metadata"]["units"], "samples");
    assert_eq!(body["metadata"]["name"], "cpu");
    assert_eq!(body["metadata"]["sampleRate"], 1_000_000_000);
    let timeline = &body["timeline"];
    let step = timeline["durationDelta"].as_i64().unwrap();
    assert_eq!(step, 15, "an hour / 1500 points is under the 15 s minimum");
    let start = timeline["startTime"].as_i64().unwrap();
    assert_eq!(start % step, 0, "startTime is aligned to the step");
    assert!(start <= (now - 3_600_000) / 1000 && (now - 3_600_000) / 1000 < start + step);
    let samples: Vec<i64> = timeline["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(samples.iter().sum::<i64>(), cpu_total + other_total);
    assert_eq!(
        samples.len() as i64,
        (now / 1000 - start) / step + 1,
        "0-filled to the end"
    );
    let slot = |at_ms: i64| ((at_ms / 1000 - start) / step) as usize;
    assert_eq!(samples[slot(left_at)], cpu_total);
    assert_eq!(samples[slot(right_at)], other_total);

    // `now-1h` style times and max-nodes.
    let render = get(
        &format!(
            "{}/pyroscope/render?query={}&from=now-1h&until=now&max-nodes=3",
            server.url,
            encode(&query)
        ),
        tenant,
    );
    assert_eq!(render.status, 200, "{}", render.body);
    assert_eq!(render.json()["flamebearer"]["numTicks"], cpu_total + other_total);

    // groupBy: one timeline per value; aggregation=avg accepted.
    let render = get(
        &format!(
            "{}/pyroscope/render?query={}&from=now-1h&until=now&groupBy=service_name&aggregation=avg",
            server.url,
            encode(&format!("{CPU}{{}}"))
        ),
        tenant,
    );
    assert_eq!(render.status, 200, "{}", render.body);
    let groups = render.json()["groups"].clone();
    let legacy: Vec<i64> = groups["legacy"]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("groups: {groups}"))
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(legacy.iter().sum::<i64>(), cpu_total + other_total, "{groups}");
    assert_eq!(groups.as_object().unwrap().len(), 1, "{groups}");

    // Refusals: JSON errors with the connect code's status.
    for (what, path) in [
        ("no query", "/pyroscope/render?from=now-1h&until=now".to_string()),
        (
            "no profile type",
            format!("/pyroscope/render?query={}", encode("{service_name=\"legacy\"}")),
        ),
        (
            "bad selector",
            format!("/pyroscope/render?query={}", encode(&format!("{CPU}{{service_name=}}"))),
        ),
        (
            "bad from",
            format!("/pyroscope/render?query={}&from=yesterday-ish", encode(&query)),
        ),
        (
            "from after until",
            format!("/pyroscope/render?query={}&from=now&until=now-1h", encode(&query)),
        ),
        (
            "bad max-nodes",
            format!("/pyroscope/render?query={}&max-nodes=many", encode(&query)),
        ),
        (
            "diff of two types",
            format!(
                "/pyroscope/render-diff?leftQuery={}&rightQuery={}",
                encode(&query),
                encode(&format!("{SAMPLES}{{}}"))
            ),
        ),
        ("label-values without label", "/pyroscope/label-values".to_string()),
    ] {
        get(&format!("{}{path}", server.url), tenant).assert_connect_error(400, "invalid_argument", what);
    }

    // Render-diff: left and right windows, 7-number levels, format "double".
    let diff = get(
        &format!(
            "{}/pyroscope/render-diff?leftQuery={q}&leftFrom={}&leftUntil={}&rightQuery={q}&rightFrom={}&rightUntil={}",
            server.url,
            left_at - 60_000,
            left_at + 60_000,
            right_at - 60_000,
            right_at + 60_000,
            q = encode(&query),
        ),
        tenant,
    );
    assert_eq!(diff.status, 200, "{}", diff.body);
    let body = diff.json();
    assert_eq!(body["metadata"]["format"], "double");
    assert_eq!(body["leftTicks"], cpu_total);
    assert_eq!(body["rightTicks"], other_total);
    assert_eq!(body["flamebearer"]["numTicks"], cpu_total + other_total);
    for level in body["flamebearer"]["levels"].as_array().unwrap() {
        assert_eq!(level.as_array().unwrap().len() % 7, 0);
    }

    // Label values: profile type IDs for __name__, values otherwise; label names.
    let names = get(&format!("{}/pyroscope/label-values?label=__name__", server.url), tenant);
    assert_eq!(names.status, 200, "{}", names.body);
    assert_eq!(names.json(), json!([CPU, SAMPLES]));
    let values = get(
        &format!("{}/pyroscope/label-values?label=service_name", server.url),
        tenant,
    );
    assert_eq!(values.json(), json!(["legacy"]));
    let labels = get(&format!("{}/pyroscope/labels", server.url), tenant);
    assert_eq!(labels.status, 200, "{}", labels.body);
    let labels = labels.json();
    for name in ["service_name", "__name__", "__profile_type__"] {
        assert!(labels.as_array().unwrap().contains(&json!(name)), "{labels}");
    }
    assert!(!labels.as_array().unwrap().contains(&json!("__delta__")), "{labels}");
}

/// Span ids are kept per row through the head, the WAL, a flushed block and a restart.
#[test]
fn span_ids_survive_flush_and_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    let tenant = "spans";
    let at = pyrite::now_ms() - 60_000;
    let file = "pyroscope__pprof_single_group_with_optional_span_id.pb.gz";
    let raw = std::fs::read(common::corpus_dir().join("files").join(file)).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut plain).unwrap();
    let mut profile = pprof::Profile::decode(&plain[..]).unwrap();
    profile.time_nanos = at * 1_000_000;
    // Give the samples labelled `span_id` a real 16-hex id.
    let span_key = profile.string_table.iter().position(|s| s == "span_id").unwrap() as i64;
    profile.string_table.push("00000000deadbeef".into());
    let span_value = profile.string_table.len() as i64 - 1;
    let cpu = profile
        .sample_type
        .iter()
        .position(|t| profile.string_table[t.r#type as usize] == "cpu")
        .unwrap();
    let mut want = 0;
    for sample in &mut profile.sample {
        for label in &mut sample.label {
            if label.key == span_key {
                label.str = span_value;
                want += sample.value[cpu];
            }
        }
    }
    let all = manifest_total(file, "cpu/nanoseconds");
    assert!(0 < want && want < all);
    let body = json_push("spans", &gzip(&profile.encode_to_vec()))
        .to_string()
        .into_bytes();
    let push_url = format!("{}/push.v1.PusherService/Push", server.url);
    assert_eq!(
        post(&push_url, tenant, &[("Content-Type", "application/json")], body).status,
        200
    );

    let span_total = |server: &Server, span: &str| -> i64 {
        let answer = querier_json(
            server,
            tenant,
            "SelectMergeSpanProfile",
            &json!({"profileTypeID": CPU, "labelSelector": "{}", "spanSelector": [span],
                    "start": (at - 1000).to_string(), "end": (at + 1000).to_string()}),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["flamegraph"]["total"]
            .as_str()
            .map_or(0, |total| total.parse().unwrap())
    };
    assert_eq!(span_total(&server, "00000000deadbeef"), want);
    assert_eq!(span_total(&server, "00000000deadbeee"), 0);
    // The all-zero id is "no span": it must not select the samples without one.
    assert_eq!(span_total(&server, "0000000000000000"), 0);

    // SIGTERM flushes the head into a block; the restarted server reads it from there.
    server.terminate();
    let blocks = walk(data.path())
        .into_iter()
        .filter(|p| p.ends_with("meta.json"))
        .count();
    assert!(blocks > 0, "no block was written at shutdown");
    let server = Server::start(data.path());
    assert_eq!(span_total(&server, "00000000deadbeef"), want);
    assert_eq!(span_total(&server, "00000000deadbeee"), 0);
    assert_eq!(flame_total(&server, tenant, "{}", at - 1000, at + 1000), all);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// deploy/grafana: the data source Grafana provisions and the dashboard's queries, run against
/// a server as Grafana's data source would run them.
#[test]
fn grafana_provisioning_points_at_pyrite_with_the_tenant_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana");
    let datasources: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("provisioning/datasources/pyrite.yaml")).unwrap())
            .unwrap();
    let source = &datasources["datasources"][0];
    assert_eq!(source["type"].as_str(), Some("grafana-pyroscope-datasource"));
    assert_eq!(source["url"].as_str(), Some("http://pyrite:4040"));
    assert_eq!(source["jsonData"]["httpHeaderName1"].as_str(), Some("X-Scope-OrgID"));
    assert!(source["secureJsonData"]["httpHeaderValue1"].as_str().is_some());
    let uid = source["uid"].as_str().unwrap();

    let providers: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("provisioning/dashboards/pyrite.yaml")).unwrap())
            .unwrap();
    assert_eq!(providers["providers"][0]["type"].as_str(), Some("file"));

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dashboards/pyrite-cpu.json")).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let panel_types: Vec<&str> = panels.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert!(
        panel_types.contains(&"flamegraph") && panel_types.contains(&"timeseries"),
        "{panel_types:?}"
    );

    // Each target's query, with `$service` resolved to `.*`, runs on Pyrite.
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let now = pyrite::now_ms();
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], uid);
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], uid);
            assert_eq!(target["profileTypeId"], CPU);
            let selector = target["labelSelector"].as_str().unwrap().replace("$service", ".*");
            let (method, body) = match target["queryType"].as_str().unwrap() {
                "metrics" => (
                    "SelectSeries",
                    json!({"profileTypeID": CPU, "labelSelector": selector, "start": now - 3_600_000, "end": now,
                           "step": 15.0, "groupBy": target["groupBy"]}),
                ),
                "profile" => (
                    "SelectMergeStacktraces",
                    json!({"profileTypeID": CPU, "labelSelector": selector, "start": now - 3_600_000, "end": now}),
                ),
                other => panic!("query type {other}"),
            };
            let answer = querier_json(&server, "anonymous", method, &body);
            assert_eq!(answer.status, 200, "{method}: {}", answer.body);
        }
    }
}
