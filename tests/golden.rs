//! Golden files of the rendered outputs: for a few corpus profiles, pushed into an in-process
//! server at a fixed time and read back over its API, the SVG (`/api/v1/render?format=svg`),
//! the flamebearer JSON (`/pyroscope/render`) and the querier.v1 levels
//! (`SelectMergeStacktraces`) must equal `testdata/golden/*`.
//!
//! After a change that is meant to change them, rewrite them and review the diff:
//! `PYRITE_BLESS=1 cargo test --test golden`. A missing golden file is written (and the test
//! fails under CI=true, where nothing may be blessed by accident).

mod common;

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use prost::Message;
use pyrite::config::Config;
use serde_json::{Value, json};
use tower::ServiceExt;

/// 2026-01-01T00:00:00Z: every profile is stamped with it, so titles and timelines are fixed.
const AT_MS: i64 = 1_767_225_600_000;
const FROM_MS: i64 = AT_MS - 60_000;
const UNTIL_MS: i64 = AT_MS + 60_000;

/// The corpus files and the sample type of each that is rendered (as MANIFEST.tsv names it).
const CASES: &[(&str, &str)] = &[
    ("gotarget__cpu_5s.pb.gz", "cpu/nanoseconds"),
    ("gotarget__heap_t0.pb.gz", "inuse_space/bytes"),
    ("parca_fib.pb.gz", "samples/count"),
    ("ddnotes_block-net_block.pb.gz", "delay/nanoseconds"),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden")
}

fn blessing() -> bool {
    std::env::var_os("PYRITE_BLESS").is_some_and(|value| value != "0")
}

/// Compares `actual` with the golden file `name`, rewriting it when blessing. Returns the
/// mismatch, if any, rather than panicking, so one run reports every changed file.
fn check(name: &str, actual: &[u8]) -> Option<String> {
    let path = golden_dir().join(name);
    let ci = std::env::var_os("CI").is_some_and(|value| value == "true");
    match std::fs::read(&path) {
        Ok(expected) if expected == actual => None,
        _ if blessing() => {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, actual).unwrap();
            None
        }
        Err(_) if !ci => {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, actual).unwrap();
            eprintln!("wrote missing golden file {}", path.display());
            None
        }
        Err(err) => Some(format!(
            "{}: {err} (run with PYRITE_BLESS=1 to write it)",
            path.display()
        )),
        Ok(expected) => {
            let (expected, actual) = (String::from_utf8_lossy(&expected), String::from_utf8_lossy(actual));
            let line = expected
                .lines()
                .zip(actual.lines())
                .position(|(want, got)| want != got)
                .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
            Some(format!(
                "{} differs from line {}:\n  want: {}\n  got:  {}\n(PYRITE_BLESS=1 rewrites it after review)",
                path.display(),
                line + 1,
                expected.lines().nth(line).unwrap_or("<end>"),
                actual.lines().nth(line).unwrap_or("<end>"),
            ))
        }
    }
}

async fn body(router: &Router, request: Request<Body>) -> Vec<u8> {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&bytes));
    bytes
}

fn pretty(json: &[u8]) -> Vec<u8> {
    let value: Value = serde_json::from_slice(json).unwrap();
    let mut text = serde_json::to_vec_pretty(&value).unwrap();
    text.push(b'\n');
    text
}

fn encode_query(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_outputs_match_their_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse("scrape_configs: []\n").unwrap();
    config.data_dir = dir.path().to_path_buf();
    let built = pyrite::server::build(&config).await.unwrap();
    let router = &built.router;
    let mut mismatches = Vec::new();
    let manifest = common::corpus();
    for (index, (file, sample_type)) in CASES.iter().enumerate() {
        let service = format!("golden-{index}");
        let want_total = manifest
            .iter()
            .find(|row| row.name == *file)
            .unwrap()
            .totals
            .as_ref()
            .unwrap()[*sample_type];
        let raw = std::fs::read(common::corpus_dir().join("files").join(file)).unwrap();
        let mut profile = pyrite::pprof::decode(&raw, &Default::default()).unwrap();
        profile.time_nanos = AT_MS * 1_000_000;
        let request = pyrite::proto::push::v1::PushRequest {
            series: vec![pyrite::proto::push::v1::RawProfileSeries {
                labels: vec![pyrite::proto::types::v1::LabelPair {
                    name: "service_name".into(),
                    value: service.clone(),
                }],
                samples: vec![pyrite::proto::push::v1::RawSample {
                    raw_profile: pyrite::pprof::encode_gzip(&profile).into(),
                    id: String::new(),
                }],
                annotations: Vec::new(),
            }],
        };
        body(
            router,
            Request::post("/push.v1.PusherService/Push")
                .header("content-type", "application/proto")
                .body(Body::from(request.encode_to_vec()))
                .unwrap(),
        )
        .await;

        // The profile type the pushed file's sample type is stored under.
        let types = body(
            router,
            Request::post("/querier.v1.QuerierService/ProfileTypes")
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"start": FROM_MS.to_string(), "end": UNTIL_MS.to_string()}).to_string(),
                ))
                .unwrap(),
        )
        .await;
        let types: Value = serde_json::from_slice(&types).unwrap();
        let (name, unit) = sample_type.split_once('/').unwrap();
        let wanted = format!(":{name}:{unit}:");
        let profile_type = types["profileTypes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|profile_type| profile_type["ID"].as_str())
            .find(|id| id.contains(&wanted))
            .unwrap_or_else(|| panic!("{file}: no profile type with {wanted} in {types}"))
            .to_string();
        let selector = format!(r#"{{service_name="{service}"}}"#);
        let stem = file.split('.').next().unwrap();
        let svg = body(
            router,
            Request::get(format!(
                "/api/v1/render?query={}&type={profile_type}&from={FROM_MS}&until={UNTIL_MS}&format=svg",
                encode_query(&selector)
            ))
            .body(Body::empty())
            .unwrap(),
        )
        .await;
        mismatches.extend(check(&format!("{stem}.svg"), &svg));

        let flamebearer = body(
            router,
            Request::get(format!(
                "/pyroscope/render?query={}&from={FROM_MS}&until={UNTIL_MS}",
                encode_query(&format!("{profile_type}{selector}"))
            ))
            .body(Body::empty())
            .unwrap(),
        )
        .await;
        mismatches.extend(check(&format!("{stem}.flamebearer.json"), &pretty(&flamebearer)));

        let levels = body(
            router,
            Request::post("/querier.v1.QuerierService/SelectMergeStacktraces")
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"profileTypeID": profile_type, "labelSelector": selector,
                           "start": FROM_MS.to_string(), "end": UNTIL_MS.to_string(), "maxNodes": "1024"})
                    .to_string(),
                ))
                .unwrap(),
        )
        .await;
        let levels = pretty(&levels);
        // Whatever the layout, the graph holds exactly what Go's pprof counts in the file.
        let total = serde_json::from_slice::<Value>(&levels).unwrap()["flamegraph"]["total"].clone();
        assert_eq!(total, json!(want_total.to_string()), "{file} {profile_type}");
        mismatches.extend(check(&format!("{stem}.levels.json"), &levels));
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}
