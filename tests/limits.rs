//! Per-tenant limits on a running `pyrite serve`, from a Mimir-shaped overrides file: a tenant
//! over its ingestion rate or series limit gets 429 (connect `resource_exhausted`, and on the
//! legacy `/ingest`) while another tenant goes on, a changed file applies without a restart, and
//! blocks past a tenant's retention period are deleted while another tenant's stay.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Server;

/// A Go CPU profile: 6 pprof samples, two sample types (so two series per label set).
const CPU_FILE: &str = "ddnotes_cpu-profiler-labels.pprof";

fn corpus_file(name: &str) -> PathBuf {
    common::corpus_dir().join("files").join(name)
}

fn push(server: &Server, tenant: &str, service: &str) -> (u16, serde_json::Value) {
    let raw = std::fs::read(corpus_file(CPU_FILE)).unwrap();
    let (status, _, body) = common::push_v1(server, tenant, &[("service_name", service)], raw);
    let body = if status == 200 {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&body).unwrap()
    };
    (status, body)
}

/// `pyrite push` of the CPU file as service `app`, stamped `at`.
fn push_at(server: &Server, tenant: &str, at: &str) {
    let file = corpus_file(CPU_FILE);
    common::pyrite(&[
        "push",
        "--url",
        &server.url,
        "--tenant",
        tenant,
        "--name",
        "app",
        "--at",
        at,
        file.to_str().unwrap(),
    ]);
}

fn legacy_ingest(server: &Server, tenant: &str) -> u16 {
    reqwest::blocking::Client::new()
        .post(format!("{}/ingest?name=legacy&format=pprof", server.url))
        .header("X-Scope-OrgID", tenant)
        .body(std::fs::read(corpus_file(CPU_FILE)).unwrap())
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn write_overrides(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn start(dir: &Path, extra: &str) -> Server {
    let config = dir.join("pyrite.yaml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs: []\nruntime_config:\n  file: {}\n  period: 200ms\n{extra}",
            dir.join("overrides.yaml").display()
        ),
    )
    .unwrap();
    Server::start_with_config(&dir.join("data"), Some(&config))
}

#[test]
fn a_tenant_over_its_rate_gets_429_and_the_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let overrides = dir.path().join("overrides.yaml");
    // 10 samples of burst and almost no refill: one 6-sample profile passes, the next does not.
    write_overrides(
        &overrides,
        "overrides:\n  small: { ingestion_rate: 0.001, ingestion_burst_size: 10 }\n  pair: { ingestion_rate: 0.001, ingestion_burst_size: 10 }\n",
    );
    let server = start(dir.path(), "");

    assert_eq!(push(&server, "small", "app").0, 200);
    let (status, body) = push(&server, "small", "app");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "resource_exhausted");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("ingestion rate") && message.contains("small"),
        "{message}"
    );
    assert_eq!(legacy_ingest(&server, "small"), 429);

    // Another tenant, with the defaults, is not held back.
    for _ in 0..20 {
        assert_eq!(push(&server, "big", "app").0, 200);
    }
    assert_eq!(legacy_ingest(&server, "big"), 200);

    // Only the accepted profile of `small` is stored: 16 CPU samples' worth, once.
    assert_eq!(common::cpu_nanos(&server, "small", "app"), 160_000_000);

    // A request of two profiles (12 samples) over a 10-sample burst is refused whole: a retry
    // would otherwise store its first profile twice.
    let raw = std::fs::read(corpus_file(CPU_FILE)).unwrap();
    let (status, _, body) = common::push_v1_profiles(&server, "pair", &[("service_name", "two")], vec![raw.clone(); 2]);
    assert_eq!(status, 429, "{body}");
    assert_eq!(common::push_v1(&server, "pair", &[("service_name", "two")], raw).0, 200);
    assert_eq!(
        common::cpu_nanos(&server, "pair", "two"),
        160_000_000,
        "only the single push"
    );

    // A raised limit applies without a restart.
    write_overrides(
        &overrides,
        "overrides:\n  small: { ingestion_rate: 1000, ingestion_burst_size: 1000 }\n",
    );
    common::wait_until("the raised limit", Duration::from_secs(10), || {
        push(&server, "small", "app").0 == 200
    });
    let scraped = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    let refused = scraped
        .lines()
        .find(|line| {
            line.starts_with("pyrite_ingest_profiles_total{")
                && line.contains("outcome=\"rate_limited\"")
                && line.contains("tenant=\"small\"")
        })
        .expect("refusals are counted per tenant");
    // The push.v1 refusal and the /ingest one, at least (more while the new limit loaded).
    let count: f64 = refused.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{refused}");
}

#[test]
fn a_tenant_at_its_series_limit_may_add_to_its_series_but_not_start_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    write_overrides(
        &dir.path().join("overrides.yaml"),
        "overrides:\n  few: { max_global_series_per_user: 2 }\n",
    );
    let server = start(dir.path(), "");

    assert_eq!(push(&server, "few", "a").0, 200, "two series: samples and cpu");
    let (status, body) = push(&server, "few", "b");
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("limit of 2 series"),
        "{body}"
    );
    assert_eq!(push(&server, "few", "a").0, 200, "existing series still take profiles");
    assert_eq!(push(&server, "other", "b").0, 200);
}

/// Paths of the block metas under the data directory whose path names `tenant`.
fn block_metas(data_dir: &Path, tenant: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.ends_with("meta.json")
                && path.components().any(|c| c.as_os_str() == tenant)
                && !path.components().any(|c| c.as_os_str() == "wal")
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn blocks_past_a_tenants_retention_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    write_overrides(
        &dir.path().join("overrides.yaml"),
        "overrides:\n  short: { compactor_blocks_retention_period: 1d }\n",
    );
    let server = start(
        dir.path(),
        "head: { flush_interval: 1s }\nretention: { sweep_interval: 300ms }\n",
    );
    for (tenant, at) in [("short", "now-72h"), ("short", "now"), ("keep", "now-72h")] {
        push_at(&server, tenant, at);
    }
    let data = dir.path().join("data");
    // The old block of `short` goes, its recent one and `keep`'s old one stay.
    common::wait_until("the recent and kept blocks", Duration::from_secs(20), || {
        !block_metas(&data, "keep").is_empty() && !block_metas(&data, "short").is_empty()
    });
    common::wait_until("the expired block to go", Duration::from_secs(20), || {
        let total = |tenant: &str, from_ms: i64, until_ms: i64| {
            let (status, tree) = common::querier(
                &server,
                tenant,
                "SelectMergeStacktraces",
                serde_json::json!({
                    "profileTypeID": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
                    "labelSelector": "{service_name=\"app\"}",
                    "start": from_ms, "end": until_ms,
                }),
            );
            assert_eq!(status, 200, "{tree}");
            tree["flamegraph"]["total"].as_str().unwrap_or("0").to_string()
        };
        let now = pyrite::now_ms();
        let old = (now - 80 * 3_600_000, now - 60 * 3_600_000);
        total("short", old.0, old.1) == "0"
            && total("short", now - 3_600_000, now + 60_000) == "160000000"
            && total("keep", old.0, old.1) == "160000000"
    });
    assert_eq!(block_metas(&data, "short").len(), 1);
}

#[test]
fn queries_keep_to_the_tenants_length_and_lookback() {
    let dir = tempfile::tempdir().unwrap();
    write_overrides(
        &dir.path().join("overrides.yaml"),
        "overrides:\n  narrow: { max_query_length: 1h }\n  recent: { max_query_lookback: 24h }\n",
    );
    let server = start(dir.path(), "");
    for (tenant, at) in [("narrow", "now-10m"), ("recent", "now-48h"), ("recent", "now-10m")] {
        push_at(&server, tenant, at);
    }
    let select = |tenant: &str, hours_back: i64| {
        let now = pyrite::now_ms();
        common::select_cpu(&server, tenant, "app", now - hours_back * 3_600_000, now)
    };
    let (status, body) = select("narrow", 2);
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("max_query_length"), "{body}");
    let (status, body) = select("narrow", 1);
    assert_eq!(
        (status, &body["flamegraph"]["total"]),
        (200, &serde_json::json!("160000000"))
    );
    // The profile of 48 hours ago is out of sight; the recent one is there.
    let (status, body) = select("recent", 72);
    assert_eq!(
        (status, &body["flamegraph"]["total"]),
        (200, &serde_json::json!("160000000"))
    );
    let (status, body) = select("other", 72);
    assert_eq!(
        (status, body["flamegraph"]["total"].as_str()),
        (200, None),
        "no data: {body}"
    );
}

/// The CPU file stamped `offset_ms` from now, as a client with that clock would push it.
fn stamped_cpu(offset_ms: i64) -> Vec<u8> {
    let raw = std::fs::read(corpus_file(CPU_FILE)).unwrap();
    let mut profile = pyrite::pprof::decode(&raw, &Default::default()).unwrap();
    profile.time_nanos = (pyrite::now_ms() + offset_ms) * 1_000_000;
    prost::Message::encode_to_vec(&profile)
}

#[test]
fn profiles_outside_the_tenants_ingestion_window_get_400() {
    const HOUR: i64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    write_overrides(
        &dir.path().join("overrides.yaml"),
        "overrides:\n  strict: { reject_older_than: 1h }\n  skewed: { reject_newer_than: 0s }\n",
    );
    let server = start(dir.path(), "");
    let push = |tenant: &str, offset_ms: i64| {
        let (status, _, body) = common::push_v1(&server, tenant, &[("service_name", "clock")], stamped_cpu(offset_ms));
        (status, body)
    };

    // By default: a profile from the future is refused, one from last month is an import.
    let (status, body) = push("anyone", HOUR);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not_in_ingestion_window"), "{body}");
    assert_eq!(push("anyone", 5 * 60_000).0, 200, "within 10 minutes of clock skew");
    assert_eq!(push("anyone", -30 * 24 * HOUR).0, 200);

    assert_eq!(push("strict", -2 * HOUR).0, 400);
    assert_eq!(push("strict", -HOUR / 2).0, 200);
    assert_eq!(push("skewed", HOUR).0, 200, "reject_newer_than: 0s turns the check off");

    let metrics = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    let refused = |tenant: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with("pyrite_ingest_profiles_total{")
                    && line.contains("outcome=\"not_in_ingestion_window\"")
                    && line.contains(&format!("tenant=\"{tenant}\""))
            })
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(
        (refused("anyone"), refused("strict")),
        (Some(1.0), Some(1.0)),
        "{metrics}"
    );
}
