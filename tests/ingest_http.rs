//! `POST /ingest` request shapes the real agents in tests/agents.rs don't send, built by hand as
//! the clients send them (PYROSCOPE-COMPAT.md §3): pyroscope-go's multipart with `profile` and
//! `sample_type_config` parts, folded text (the corpus files, UTF-16LE and CRLF included),
//! `from`/`until` in s/ms/µs/ns, and the refusals (no profile part, JFR, a bad name).

mod common;

use std::io::{Read, Write};

use common::Server;
use prost::Message;
use pyrite::proto::google::v1 as pprof;
use serde_json::{Value, json};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// POSTs to `/ingest` with `query` (already encoded) and returns (status, body).
fn ingest(server: &Server, tenant: &str, query: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let response = client()
        .post(format!("{}/ingest?{query}", server.url))
        .header("Content-Type", content_type)
        .header("X-Scope-OrgID", tenant)
        .body(body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

fn querier(server: &Server, tenant: &str, method: &str, body: Value) -> Value {
    let (status, body) = common::querier(server, tenant, method, body);
    assert_eq!(status, 200, "{method}: {body}");
    body
}

/// Flame graph total of `profile_type` for `selector` in `[start_ms, end_ms]` (both included).
fn total(server: &Server, tenant: &str, profile_type: &str, selector: &str, start_ms: i64, end_ms: i64) -> i64 {
    let body = querier(
        server,
        tenant,
        "SelectMergeStacktraces",
        json!({"profileTypeID": profile_type, "labelSelector": selector,
               "start": start_ms.to_string(), "end": end_ms.to_string()}),
    );
    body["flamegraph"]["total"]
        .as_str()
        .map_or(0, |total| total.parse().unwrap())
}

fn recent_total(server: &Server, tenant: &str, profile_type: &str, selector: &str) -> i64 {
    let now = pyrite::now_ms();
    total(server, tenant, profile_type, selector, now - 600_000, now + 60_000)
}

fn profile_type_ids(server: &Server, tenant: &str) -> Vec<String> {
    querier(server, tenant, "ProfileTypes", json!({}))["profileTypes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A corpus Go pprof, re-stamped `now` as a live pyroscope-go would send it, gzipped.
fn go_profile_now(name: &str) -> Vec<u8> {
    let raw = std::fs::read(common::corpus_dir().join("files").join(name)).unwrap();
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut decoded)
        .unwrap();
    let mut profile = pprof::Profile::decode(decoded.as_slice()).unwrap();
    profile.time_nanos = pyrite::now_ms() * 1_000_000;
    gzip(&profile.encode_to_vec())
}

const BOUNDARY: &str = "pyrite-test-boundary-7d1c2e";

/// A multipart/form-data body of file parts `(field, filename, content)`, as Go's
/// `multipart.Writer.CreateFormFile` writes them.
fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, filename, content) in parts {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").unwrap();
    body
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// The query string pyroscope-go's `upstream/remote` builds (times in unix ns, no `format`).
fn pyroscope_go_query(app: &str) -> String {
    let now_ns = pyrite::now_ms() * 1_000_000;
    let name = format!(
        "{app}{{__session_id__=2f4a8c1e9b3d5f70,otel.scope.name=com.grafana.pyroscope/go,\
         otel.scope.version=0.1.9,process.runtime.name=go,process.runtime.version=go1.24.0,env=prod}}"
    );
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!(
        "name={encoded}&from={}&until={now_ns}&spyName=gospy&sampleRate=100&units=samples&aggregationType=sum",
        now_ns - 10_000_000_000
    )
}

#[test]
fn pyroscope_go_multipart_with_profile_and_sample_type_config_parts() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let tenant = "team-go";

    // CPU: a `profile` part only, as pyroscope-go sends for its CPU profile.
    let cpu = go_profile_now("gotarget__cpu_5s.pb.gz");
    let (status, body) = ingest(
        &server,
        tenant,
        &pyroscope_go_query("goapp.cpu"),
        &multipart_type(),
        multipart(&[("profile", "profile.pprof", &cpu)]),
    );
    assert_eq!(status, 200, "{body}");

    // Heap: `profile` plus `sample_type_config`, as pyroscope-go's godeltaprof heap upload.
    let heap = go_profile_now("gotarget__heap_t0.pb.gz");
    let config = json!({
        "alloc_objects": {"units": "objects"},
        "alloc_space": {"units": "bytes"},
        "inuse_space": {"units": "bytes", "aggregation": "average"},
        "inuse_objects": {"units": "objects", "aggregation": "average"},
    })
    .to_string();
    let (status, body) = ingest(
        &server,
        tenant,
        &pyroscope_go_query("goapp.alloc_objects"),
        &multipart_type(),
        multipart(&[
            ("profile", "profile.pprof", &heap),
            ("sample_type_config", "sample_type_config.json", config.as_bytes()),
        ]),
    );
    assert_eq!(status, 200, "{body}");

    let ids = profile_type_ids(&server, tenant);
    assert!(ids.iter().any(|id| id == CPU), "{ids:?}");
    let selector = r#"{service_name="goapp", env="prod", pyroscope_spy="gospy"}"#;
    assert_eq!(recent_total(&server, tenant, CPU, selector), 3_900_000_000);
    let inuse_space = ids
        .iter()
        .find(|id| id.starts_with("memory:inuse_space:bytes:"))
        .unwrap_or_else(|| panic!("no memory:inuse_space type in {ids:?}"));
    assert_eq!(recent_total(&server, tenant, inuse_space, selector), 13_707_335);
    let alloc_objects = ids
        .iter()
        .find(|id| id.starts_with("memory:alloc_objects:count:"))
        .unwrap_or_else(|| panic!("no memory:alloc_objects type in {ids:?}"));
    assert_eq!(recent_total(&server, tenant, alloc_objects, selector), 9_112);
}

/// What @pyroscope/nodejs 0.6.4 sends (`pyroscope-api-exporter.js`, captured from the real agent
/// in tests/agents.rs): `format=pprof`, times in unix seconds, `Content-Type:
/// application/octet-stream`, the body a gzipped pprof from @datadog/pprof whose wall profile
/// with `collectCpuTime` has samples/count, wall/nanoseconds and cpu/nanoseconds.
#[test]
fn nodejs_raw_pprof_wall_profile_with_cpu_time_splits_into_wall_and_process_cpu() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let tenant = "team-node";
    let strings = [
        "",
        "samples",
        "count",
        "wall",
        "nanoseconds",
        "cpu",
        "main",
        "./app.js",
        "work",
    ];
    let function = |id: u64, name: i64| pprof::Function {
        id,
        name,
        system_name: name,
        filename: 7,
        ..Default::default()
    };
    let location = |id: u64| pprof::Location {
        id,
        line: vec![pprof::Line {
            function_id: id,
            line: 1,
            column: 0,
        }],
        ..Default::default()
    };
    let value_type = |r#type: i64, unit: i64| pprof::ValueType { r#type, unit };
    let profile = pprof::Profile {
        sample_type: vec![value_type(1, 2), value_type(3, 4), value_type(5, 4)],
        sample: vec![
            pprof::Sample {
                location_id: vec![2, 1],
                value: vec![7, 70_000_000, 60_000_000],
                label: vec![],
            },
            pprof::Sample {
                location_id: vec![1],
                value: vec![3, 30_000_000, 0],
                label: vec![],
            },
        ],
        location: vec![location(1), location(2)],
        function: vec![function(1, 6), function(2, 8)],
        string_table: strings.iter().map(|s| s.to_string()).collect(),
        time_nanos: 0,
        duration_nanos: 10_000_000_000,
        period_type: Some(value_type(3, 4)),
        period: 10_000_000,
        ..Default::default()
    };
    let now_s = pyrite::now_ms() / 1000;
    let name = "nodeapp{otel.scope.name=com.grafana.pyroscope/nodejs,process.runtime.name=nodejs,agent=node}";
    let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let (status, body) = ingest(
        &server,
        tenant,
        &format!(
            "format=pprof&from={}&name={name}&spyName=nodespy&until={now_s}",
            now_s - 10
        ),
        "application/octet-stream",
        gzip(&profile.encode_to_vec()),
    );
    assert_eq!(status, 200, "{body}");
    let mut ids = profile_type_ids(&server, tenant);
    ids.sort();
    assert_eq!(
        ids,
        [
            "process_cpu:cpu:nanoseconds:wall:nanoseconds",
            "wall:samples:count:wall:nanoseconds",
            "wall:wall:nanoseconds:wall:nanoseconds",
        ]
    );
    let selector = r#"{service_name="nodeapp", pyroscope_spy="nodespy", agent="node"}"#;
    let at_from = |profile_type: &str| {
        let from_ms = (now_s - 10) * 1000;
        total(&server, tenant, profile_type, selector, from_ms, from_ms)
    };
    // A profile without a time is stamped with `from`.
    assert_eq!(at_from("wall:wall:nanoseconds:wall:nanoseconds"), 100_000_000);
    assert_eq!(at_from("wall:samples:count:wall:nanoseconds"), 10);
    assert_eq!(at_from("process_cpu:cpu:nanoseconds:wall:nanoseconds"), 60_000_000);
}

#[test]
fn multipart_without_a_profile_part_is_a_400() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (status, body) = ingest(
        &server,
        "anonymous",
        &pyroscope_go_query("goapp.cpu"),
        &multipart_type(),
        multipart(&[("sample_type_config", "sample_type_config.json", b"{}")]),
    );
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(error["message"].as_str().unwrap().contains("profile"), "{body}");
    assert!(profile_type_ids(&server, "anonymous").is_empty());
}

/// One row of the corpus FOLDED.tsv.
struct FoldedFile {
    name: String,
    encoding: String,
    total: i64,
}

fn folded_corpus() -> Vec<FoldedFile> {
    let tsv = std::fs::read_to_string(common::corpus_dir().join("FOLDED.tsv")).unwrap();
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let column = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (file, encoding, total) = (column("file"), column("encoding"), column("total"));
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            FoldedFile {
                name: cells[file].to_string(),
                encoding: cells[encoding].to_string(),
                total: cells[total].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn folded_corpus_files_ingest_with_their_manifest_totals() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let tenant = "team-folded";
    let files = folded_corpus();
    assert!(files.len() >= 6, "FOLDED.tsv lists the corpus folded files");
    assert!(files.iter().any(|file| file.encoding == "utf-16-le"));
    for (index, file) in files.iter().enumerate() {
        let body = std::fs::read(common::corpus_dir().join("folded").join(&file.name)).unwrap();
        if file.name.contains("crlf") {
            assert!(
                body.windows(2).any(|w| w == b"\r\n"),
                "{} has CRLF line ends",
                file.name
            );
        }
        // Alternate sample rates: each count is worth 1e9/sampleRate ns of CPU.
        let sample_rate = [100, 250][index % 2];
        let app = format!("folded-{index}");
        let (status, response) = ingest(
            &server,
            tenant,
            &format!("name={app}.cpu&format=folded&sampleRate={sample_rate}&spyName=perf"),
            "text/plain",
            body,
        );
        assert_eq!(status, 200, "{}: {response}", file.name);
        let selector = format!(r#"{{service_name="{app}"}}"#);
        assert_eq!(
            recent_total(&server, tenant, CPU, &selector),
            file.total * (1_000_000_000 / sample_rate),
            "{} at sampleRate {sample_rate}",
            file.name
        );
    }
    assert_eq!(profile_type_ids(&server, tenant), [CPU]);
}

#[test]
fn from_in_seconds_millis_micros_and_nanos_stamps_the_same_instant() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let tenant = "team-time";
    // A whole second two minutes ago, so every precision names exactly the same instant.
    let at_s = pyrite::now_ms() / 1000 - 120;
    let cases = [
        ("s", at_s.to_string()),
        ("ms", (at_s * 1_000).to_string()),
        ("us", (at_s * 1_000_000).to_string()),
        ("ns", (at_s * 1_000_000_000).to_string()),
    ];
    for (unit, from) in &cases {
        let (status, body) = ingest(
            &server,
            tenant,
            &format!("name=time-{unit}.cpu&from={from}&until={from}&format=folded"),
            "text/plain",
            b"main;work 3\n".to_vec(),
        );
        assert_eq!(status, 200, "{unit}: {body}");
    }
    let at_ms = at_s * 1000;
    for (unit, _) in &cases {
        let selector = format!(r#"{{service_name="time-{unit}"}}"#);
        // Exactly at `from`: the one-millisecond window [at, at] holds it, its neighbours don't.
        assert_eq!(
            total(&server, tenant, CPU, &selector, at_ms, at_ms),
            30_000_000,
            "{unit}"
        );
        assert_eq!(
            total(&server, tenant, CPU, &selector, at_ms - 1000, at_ms - 1),
            0,
            "{unit}"
        );
        assert_eq!(
            total(&server, tenant, CPU, &selector, at_ms + 1, at_ms + 1000),
            0,
            "{unit}"
        );
    }
}

#[test]
fn jfr_and_bad_names_are_refused_with_a_clear_message() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (status, body) = ingest(
        &server,
        "anonymous",
        "name=javaapp&format=jfr&spyName=javaspy",
        "application/octet-stream",
        b"FLR\0not really jfr".to_vec(),
    );
    assert_eq!(status, 415, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("jfr") && message.contains("pprof"), "{body}");

    let bad_names = [
        ("missing", ""),
        ("no app name", "%7Benv%3Dprod%7D"),
        ("bad app character", "my%20app.cpu"),
        ("reserved tag", "app.cpu%7B__name__%3Dx%7D"),
        ("text after the tags", "app.cpu%7Benv%3Dprod%7Dx"),
        ("unknown suffix", "app.nonsense"),
    ];
    for (what, name) in bad_names {
        let (status, body) = ingest(
            &server,
            "anonymous",
            &format!("name={name}&format=folded"),
            "text/plain",
            b"main;work 1\n".to_vec(),
        );
        assert_eq!(status, 400, "{what}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["code"], "invalid_argument", "{what}: {body}");
    }
    assert!(profile_type_ids(&server, "anonymous").is_empty());
}
