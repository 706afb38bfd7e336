//! Blocks on a real S3 server: Ceph's RADOS Gateway from `../shared/tools/micro-ceph.sh`
//! (started here if nothing answers on its port). Pushed profiles are flushed to the bucket
//! (as multipart uploads, the threshold set low), read back by a restarted server, and by
//! `pyrite export --data-dir` with no server at all.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, pyrite};

use common::ceph::{ACCESS_KEY, ENDPOINT, SECRET_KEY};

/// A fresh bucket on the real RGW (Ceph started if need be); no Ceph fails the test.
fn fresh_bucket() -> String {
    common::ceph::fresh_bucket().unwrap_or_else(|reason| panic!("{reason}"))
}

#[test]
fn blocks_round_trip_through_ceph_rgw() {
    let bucket = fresh_bucket();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pyrite.yaml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  backend: s3\n  bucket: {bucket}\n  endpoint: {ENDPOINT}\n  access_key_id: {ACCESS_KEY}\n  \
             secret_access_key: {SECRET_KEY}\n  allow_http: true\n  path_style: true\n  prefix: cluster-a\n  \
             multipart_threshold: 1024\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let file = common::corpus_dir().join("files/gotarget__cpu_5s.pb.gz");
    let mut server = Server::start_with_config(&data, Some(&config));
    for index in 0..3 {
        pyrite(&[
            "push",
            "--url",
            &server.url,
            "--tenant",
            "ops",
            "--name",
            "s3-app",
            "--labels",
            &format!("run={index}"),
            "--at",
            "now",
            file.to_str().unwrap(),
        ]);
    }
    // SIGTERM flushes the head into blocks in the bucket.
    server.terminate();
    std::fs::remove_dir_all(data.join("wal")).unwrap();

    // The data object went up in parts: S3 gives a multipart object an ETag ending in -<parts>.
    let loaded = pyrite::config::Config::load(&config).unwrap();
    let storage = pyrite::storage::Storage::from_config(&loaded.storage, &data).unwrap();
    let listed = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(storage.list_objects("ops"))
        .unwrap();
    let data_object = listed
        .iter()
        .find(|object| object.key.ends_with("/data"))
        .expect("a block");
    let head = Command::new("curl")
        .args(["-s", "-I", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
        .args([
            "-H",
            "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ])
        .arg(format!("{ENDPOINT}/{bucket}/cluster-a/{}", data_object.key))
        .output()
        .expect("running curl");
    let headers = String::from_utf8_lossy(&head.stdout).to_lowercase();
    let etag = headers
        .lines()
        .find_map(|line| line.strip_prefix("etag:"))
        .unwrap_or_else(|| panic!("no ETag in {headers}"));
    assert!(etag.trim().trim_matches('"').ends_with("-1"), "ETag {etag}");

    let out = dir.path().join("out.folded");
    pyrite(&[
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--tenant",
        "ops",
        "--query",
        r#"{service_name="s3-app"}"#,
        "--from",
        "now-10m",
        "--until",
        "now+1m",
        "--format",
        "folded",
        "--output",
        out.to_str().unwrap(),
    ]);
    let total: i64 = common::folded_total(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        total,
        3 * 3_900_000_000,
        "every pushed sample, read back from the bucket"
    );

    let server = Server::start_with_config(&data, Some(&config));
    let svg = dir.path().join("out.svg");
    pyrite(&[
        "export",
        "--url",
        &server.url,
        "--tenant",
        "ops",
        "--query",
        r#"{service_name="s3-app", run="1"}"#,
        "--from",
        "now-10m",
        "--until",
        "now+1m",
        "--format",
        "svg",
        "--output",
        svg.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(svg).unwrap().contains("cpuHashLoop"));
}

/// Compaction against RGW: three flushes of an old bucket become one block (the compacted data
/// object is created with `If-None-Match: *`), listed with its sources hidden, then deleted, and
/// the query reads every sample once throughout.
#[test]
fn compaction_on_ceph_rgw() {
    let bucket = fresh_bucket();
    let dir = tempfile::tempdir().unwrap();
    let storage_yaml = format!(
        "backend: s3\nbucket: {bucket}\nendpoint: {ENDPOINT}\naccess_key_id: {ACCESS_KEY}\n\
         secret_access_key: {SECRET_KEY}\nallow_http: true\npath_style: true\n"
    );
    let config = dir.path().join("pyrite.yaml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs: []\nhead: {{ flush_interval: 300ms }}\n\
             compactor: {{ interval: 300ms, min_age: 0s, delete_delay: 1s }}\nstorage:\n{}",
            storage_yaml
                .lines()
                .map(|line| format!("  {line}\n"))
                .collect::<String>()
        ),
    )
    .unwrap();
    let storage_config: pyrite::storage::StorageConfig = serde_yaml::from_str(&storage_yaml).unwrap();
    let data = dir.path().join("data");
    let storage = pyrite::storage::Storage::from_config(&storage_config, &data).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tenant = pyrite::model::Tenant::parse("ops").unwrap();
    let listed = || {
        runtime
            .block_on(pyrite::block::Catalog::new(storage.clone(), 0).list(&tenant, i64::MIN, i64::MAX))
            .unwrap()
    };

    let server = Server::start_with_config(&data, Some(&config));
    let file = common::corpus_dir().join("files/gotarget__cpu_5s.pb.gz");
    let total = || common::cpu_nanos(&server, "ops", "s3-compact");
    // Each push waits for its own block, so compaction has blocks of several flushes to merge
    // (merged blocks included: a later flush is merged with the earlier compaction).
    let visible_rows = || listed().visible.iter().map(|meta| meta.samples).sum::<u64>();
    let mut rows_per_profile = 0;
    for flush in 1..=3u64 {
        pyrite(&[
            "push",
            "--url",
            &server.url,
            "--tenant",
            "ops",
            "--name",
            "s3-compact",
            "--at",
            "now-2h",
            file.to_str().unwrap(),
        ]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let rows = visible_rows();
            if flush == 1 && rows > 0 {
                rows_per_profile = rows;
            }
            if rows_per_profile > 0 && rows == flush * rows_per_profile {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no block for push {flush}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert_eq!(total(), 3 * 3_900_000_000, "every sample once, at every step");
        let pyrite::block::Listing { visible, replaced, .. } = listed();
        if visible.len() == 1 && !visible[0].compacted_from.is_empty() && replaced.is_empty() {
            assert_eq!(visible[0].samples, 3 * rows_per_profile);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not compacted: {visible:?} {replaced:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A server whose bucket is at an S3 endpoint nobody answers (a port just closed), with
/// `config` added to its top level and `storage` (a YAML flow mapping's fields) to its storage.
fn serve_on_unreachable_bucket(dir: &Path, config: &str, storage: &str) -> Server {
    let closed_port = common::free_port();
    let path = dir.join("pyrite.yaml");
    std::fs::write(
        &path,
        format!(
            "scrape_configs: []\n{config}storage: {{ backend: s3, bucket: nowhere, \
             endpoint: \"http://127.0.0.1:{closed_port}\", access_key_id: {ACCESS_KEY}, \
             secret_access_key: {SECRET_KEY}, allow_http: true, {storage} }}\n"
        ),
    )
    .unwrap();
    Server::start_with_config(&dir.join("data"), Some(&path))
}

/// An S3 endpoint nobody answers (a port just closed): pushes are still acknowledged (the WAL
/// holds them), while a query answers 503 `unavailable` once `retry_timeout` is spent, instead
/// of hanging for object_store's default three minutes.
#[test]
fn an_unreachable_bucket_fails_queries_fast_and_keeps_taking_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_on_unreachable_bucket(dir.path(), "", "max_retries: 3, retry_timeout: 2s, connect_timeout: 1s");
    let raw = std::fs::read(common::corpus_dir().join("files/gotarget__cpu_5s.pb.gz")).unwrap();
    assert_eq!(
        common::push_v1(&server, "ops", &[("service_name", "offline")], raw).0,
        200
    );

    let started = std::time::Instant::now();
    let (status, body) = common::select_cpu(
        &server,
        "ops",
        "offline",
        pyrite::now_ms() - 3_600_000,
        pyrite::now_ms(),
    );
    let took = started.elapsed();
    assert_eq!((status, body["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert!(
        took < std::time::Duration::from_secs(20),
        "answered after {took:?}, not within the retry budget"
    );
}

/// A read still retrying an unreachable bucket when `api.query_timeout` ends answers
/// `deadline_exceeded` (504) then, not when the retries give up.
#[test]
fn a_query_past_the_query_timeout_answers_deadline_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_on_unreachable_bucket(
        dir.path(),
        "api: { query_timeout: 300ms }\n",
        "max_retries: 100, retry_timeout: 5m",
    );
    let (status, body) = common::select_cpu(&server, "ops", "late", pyrite::now_ms() - 3_600_000, pyrite::now_ms());
    assert_eq!(
        (status, body["code"].as_str()),
        (504, Some("deadline_exceeded")),
        "{body}"
    );
    let svg = reqwest::blocking::get(format!(
        "{}/api/v1/render?query={{}}&from=now-1h&until=now&format=svg",
        server.url
    ))
    .unwrap();
    assert_eq!(svg.status().as_u16(), 504);
}
