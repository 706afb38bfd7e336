//! `pyrite serve` as a process: push with the CLI, query over HTTP, export with the CLI, a
//! SIGKILL right after acknowledged pushes, and bad input answered with a 4xx.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::{Server, folded_total, pyrite, querier};
use prost::Message;
use pyrite::proto::google::v1 as pprof;
use serde_json::{Value, json};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn corpus_file(name: &str) -> PathBuf {
    common::corpus_dir().join("files").join(name)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn flamegraph_total(server: &Server, tenant: &str, selector: &str, start: i64, end: i64) -> i64 {
    let (status, body) = querier(
        server,
        tenant,
        "SelectMergeStacktraces",
        json!({"profileTypeID": CPU, "labelSelector": selector, "start": start.to_string(), "end": end.to_string()}),
    );
    assert_eq!(status, 200, "{body}");
    body["flamegraph"]["total"]
        .as_str()
        .map_or(0, |total| total.parse().unwrap())
}

#[test]
fn push_query_and_export_through_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let file = corpus_file("gotarget__cpu_5s.pb.gz");
    pyrite(&[
        "push",
        "--url",
        &server.url,
        "--tenant",
        "team-a",
        "--name",
        "checkout",
        "--labels",
        "env=prod,zone=eu",
        "--at",
        "now",
        file.to_str().unwrap(),
    ]);
    let now = pyrite::now_ms();
    let (start, end) = (now - 600_000, now + 1000);
    assert_eq!(
        flamegraph_total(
            &server,
            "team-a",
            r#"{service_name="checkout", env=~"pr.*"}"#,
            start,
            end
        ),
        3_900_000_000
    );
    assert_eq!(
        flamegraph_total(
            &server,
            "team-a",
            r#"{service_name="checkout", env!="prod"}"#,
            start,
            end
        ),
        0
    );
    // Tenants never see each other's data.
    assert_eq!(flamegraph_total(&server, "team-b", "{}", start, end), 0);

    let (_, types) = querier(
        &server,
        "team-a",
        "ProfileTypes",
        json!({"start": start.to_string(), "end": end.to_string()}),
    );
    let ids: Vec<&str> = types["profileTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["ID"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
            "process_cpu:samples:count:cpu:nanoseconds"
        ]
    );
    let (_, values) = querier(
        &server,
        "team-a",
        "LabelValues",
        json!({"name": "zone", "matchers": ["{}"], "start": start.to_string(), "end": end.to_string()}),
    );
    assert_eq!(values["names"], json!(["eu"]));

    let out = tempfile::tempdir().unwrap();
    let svg = out.path().join("incident.svg");
    pyrite(&[
        "export",
        "--url",
        &server.url,
        "--tenant",
        "team-a",
        "--query",
        r#"{service_name="checkout"}"#,
        "--type",
        CPU,
        "--from",
        "now-10m",
        "--until",
        "now+1m",
        "--format",
        "svg",
        "--output",
        svg.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(
        svg.contains("cpuHashLoop"),
        "the SVG names the program's hottest function"
    );
    let folded = out.path().join("incident.folded");
    pyrite(&[
        "export",
        "--url",
        &server.url,
        "--tenant",
        "team-a",
        "--from",
        "now-10m",
        "--until",
        "now+1m",
        "--format",
        "folded",
        "--output",
        folded.to_str().unwrap(),
    ]);
    let exported_total = folded_total(&std::fs::read_to_string(folded).unwrap());
    assert_eq!(exported_total, 3_900_000_000);
}

#[test]
fn sigkill_after_acknowledged_pushes_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    let file = corpus_file("gotarget__cpu_5s.pb.gz");
    let pushes = 12;
    for index in 0..pushes {
        pyrite(&[
            "push",
            "--url",
            &server.url,
            "--name",
            "crashy",
            "--labels",
            &format!("run={index}"),
            "--at",
            "now",
            file.to_str().unwrap(),
        ]);
    }
    server.kill();

    // Offline first: the data directory alone answers, with no server running.
    let out = tempfile::tempdir().unwrap();
    let folded = out.path().join("offline.folded");
    pyrite(&[
        "export",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--query",
        r#"{service_name="crashy"}"#,
        "--from",
        "now-10m",
        "--until",
        "now+1m",
        "--format",
        "folded",
        "--output",
        folded.to_str().unwrap(),
    ]);
    let offline_total: i64 = folded_total(&std::fs::read_to_string(folded).unwrap());
    assert_eq!(offline_total, pushes * 3_900_000_000);

    let mut server = Server::start(data.path());
    let now = pyrite::now_ms();
    let total = flamegraph_total(
        &server,
        "anonymous",
        r#"{service_name="crashy"}"#,
        now - 600_000,
        now + 1000,
    );
    assert_eq!(total, pushes * 3_900_000_000);
    // A graceful stop flushes to blocks; the data survives that too, now read from blocks.
    server.terminate();
    let blocks = std::fs::read_dir(data.path().join("blocks/anonymous")).unwrap().count();
    assert!(blocks >= 1);
    let server = Server::start(data.path());
    let total = flamegraph_total(
        &server,
        "anonymous",
        r#"{service_name="crashy"}"#,
        now - 600_000,
        now + 1000,
    );
    assert_eq!(total, pushes * 3_900_000_000);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn push_raw(server: &Server, tenant: &str, raw_profile: Vec<u8>) -> (u16, String, String) {
    common::push_v1(
        server,
        tenant,
        &[("__name__", "process_cpu"), ("service_name", "bad")],
        raw_profile,
    )
}

fn assert_still_serving(server: &Server) {
    let good = std::fs::read(corpus_file("ddnotes_cpu-profiler-labels.pprof")).unwrap();
    let (status, _, body) = push_raw(server, "anonymous", good);
    assert_eq!(status, 200, "a valid push after bad input: {body}");
}

#[test]
fn bad_input_gets_a_4xx_naming_the_problem_and_the_server_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let valid = std::fs::read(corpus_file("gotarget__cpu_5s.pb.gz")).unwrap();

    // 200 MiB of valid protobuf (unknown field 100 holding 512 KiB of zeros, over and over),
    // so only its size refuses it (bare zeros are field 0, refused at the first byte).
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut field = vec![0xa2, 0x06, 0x80, 0x80, 0x20];
    field.resize(field.len() + (512 << 10), 0);
    for _ in 0..400 {
        bomb.write_all(&field).unwrap();
    }
    let bomb = bomb.finish().unwrap();
    let bad_string_index = pprof::Profile {
        sample_type: vec![pprof::ValueType { r#type: 1, unit: 99 }],
        string_table: vec!["".into(), "cpu".into()],
        ..Default::default()
    }
    .encode_to_vec();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated gzip", valid[..valid.len() / 2].to_vec(), "gzip"),
        (
            "random bytes",
            (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(),
            "",
        ),
        ("gzip bomb", bomb, "decompressed"),
        ("string index out of range", gzip(&bad_string_index), "99"),
    ];
    for (what, body, needle) in cases {
        let (status, content_type, message) = push_raw(&server, "anonymous", body);
        assert_eq!(status, 400, "{what}: {message}");
        assert_eq!(
            content_type, "application/json",
            "{what}: connect clients need a JSON error"
        );
        let error: Value = serde_json::from_str(&message).unwrap();
        assert_eq!(error["code"], "invalid_argument", "{what}");
        assert!(
            error["message"].as_str().unwrap().to_lowercase().contains(needle),
            "{what}: {message}"
        );
        assert_still_serving(&server);
    }

    // Wrong content type on a connect route.
    let response = client()
        .post(format!("{}/push.v1.PusherService/Push", server.url))
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    assert!(response.text().unwrap().contains("content type"));

    let now = pyrite::now_ms();
    let window = |start: i64, end: i64| (start.to_string(), end.to_string());
    let (start, end) = window(now - 1000, now);
    let querier_cases = [
        (
            "bad selector",
            json!({"profileTypeID": CPU, "labelSelector": "{service_name=}", "start": start, "end": end}),
            "selector",
        ),
        (
            "from after until",
            json!({"profileTypeID": CPU, "labelSelector": "{}", "start": end, "end": start}),
            "after",
        ),
        (
            "unknown profile type",
            json!({"profileTypeID": "cpu", "labelSelector": "{}", "start": start, "end": end}),
            "profile type",
        ),
    ];
    for (what, body, needle) in querier_cases {
        let (status, error) = querier(&server, "anonymous", "SelectMergeStacktraces", body);
        assert_eq!(status, 400, "{what}: {error}");
        assert!(error["message"].as_str().unwrap().contains(needle), "{what}: {error}");
    }
    let long_tenant = "t".repeat(151);
    let (status, error) = querier(&server, &long_tenant, "ProfileTypes", json!({}));
    assert_eq!(status, 400);
    assert!(error["message"].as_str().unwrap().contains("150"), "{error}");
    let response = client()
        .get(format!(
            "{}/api/v1/render?query={{}}&from=now&until=now-1h&format=svg",
            server.url
        ))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let response = client()
        .post(format!("{}/ingest?name=app.cpu&format=pprof", server.url))
        .body("definitely not a profile")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    assert_still_serving(&server);
}
