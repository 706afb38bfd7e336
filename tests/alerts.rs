//! The shipped alert rules (`deploy/alerts`) against Prometheus's own `promtool` (installed by
//! `scripts/install-deps.sh`) and against a running `pyrite serve`: they parse, every alert has
//! a unit test that fires it and keeps it quiet, every metric they name is one the server
//! exports, and the flush heartbeat behind `PyriteFlushFailing` moves as flushes fail and
//! recover.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Server;

fn alerts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/alerts")
}

fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(alerts_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".rules.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files
}

fn yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every rule of a rules file, as (alert name, expression).
fn rules(path: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for group in yaml(path)["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            found.push((
                rule["alert"].as_str().unwrap().to_string(),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    found
}

fn promtool(args: &[&str], dir: &Path) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_checks_and_unit_tests_every_alert() {
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alerts");
    for rule_file in rule_files() {
        promtool(&["check", "rules", rule_file.to_str().unwrap()], &tests_dir);
        let name = rule_file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".rules.yaml", "");
        let test_file = format!("{name}.test.yaml");
        promtool(&["test", "rules", &test_file], &tests_dir);

        // Each alert of the file is evaluated by its unit test at least once with an alert
        // expected, so none ships untested.
        let alerts: BTreeSet<String> = rules(&rule_file).into_iter().map(|(alert, _)| alert).collect();
        let mut fired = BTreeSet::new();
        for test in yaml(&tests_dir.join(&test_file))["tests"].as_sequence().unwrap() {
            for case in test["alert_rule_test"].as_sequence().unwrap() {
                if !case["exp_alerts"].as_sequence().unwrap().is_empty() {
                    fired.insert(case["alertname"].as_str().unwrap().to_string());
                }
            }
        }
        assert_eq!(
            fired,
            alerts,
            "alerts of {} that {test_file} fires",
            rule_file.display()
        );
    }
}

fn metrics(server: &Server) -> String {
    reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap()
}

/// The value of an unlabelled series in a `/metrics` text.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
}

#[test]
fn the_rules_name_only_metrics_a_running_server_exports() {
    let dir = tempfile::tempdir().unwrap();
    // The default config: it scrapes itself, so the scrape series exist once a scrape ran.
    let server = Server::start(&dir.path().join("data"));
    common::wait_until("a self-scrape result", Duration::from_secs(60), || {
        metrics(&server).contains("\npyrite_scrape_up{")
    });
    let exported = metrics(&server);
    let name = regex::Regex::new(r"pyrite_[a-z_]+").unwrap();
    for rule_file in rule_files() {
        for (alert, expr) in rules(&rule_file) {
            for metric in name.find_iter(&expr) {
                let metric = metric.as_str();
                assert!(
                    exported.contains(&format!("\n{metric} ")) || exported.contains(&format!("\n{metric}{{")),
                    "{alert} names {metric}, which the server does not export:\n{exported}"
                );
            }
        }
    }
}

/// The status of a CPU flame graph query of service `flushed`, and its total (or the error).
fn cpu_query(server: &Server) -> (u16, serde_json::Value) {
    let (status, body) = common::select_cpu(server, "anonymous", "flushed", 1, pyrite::now_ms() + 3_600_000);
    if status == 200 {
        (status, body["flamegraph"]["total"].clone())
    } else {
        (status, body)
    }
}

#[test]
fn a_failing_flush_is_reported_keeps_its_data_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("pyrite.yaml");
    std::fs::write(&config, "scrape_configs: []\nhead:\n  flush_interval: 300ms\n").unwrap();
    let server = Server::start_with_config(&data, Some(&config));
    let raw = std::fs::read(common::corpus_dir().join("files/gotarget__cpu_5s.pb.gz")).unwrap();
    assert_eq!(
        common::push_v1(&server, "anonymous", &[("service_name", "flushed")], raw).0,
        200
    );
    let (status, pushed) = cpu_query(&server);
    assert_eq!(status, 200);
    assert_ne!(pushed, serde_json::Value::Null);

    // The blocks directory becomes a file: every write under it fails, as a refusing bucket.
    let blocks = data.join("blocks");
    std::fs::remove_dir_all(&blocks).unwrap();
    std::fs::write(&blocks, b"not a directory").unwrap();
    let failures = |text: &str| value(text, "pyrite_head_flush_failures_total").unwrap_or(0.0);
    common::wait_until("a failed flush", Duration::from_secs(20), || {
        failures(&metrics(&server)) >= 2.0
    });
    let stuck = metrics(&server);
    let last_success = value(&stuck, "pyrite_head_flush_last_success_timestamp_seconds").unwrap();
    assert!(value(&stuck, "pyrite_head_flush_runs_total").unwrap() >= failures(&stuck));
    // A query that cannot list the blocks says so (503, retry later) rather than answering
    // with part of the window.
    let (status, error) = cpu_query(&server);
    assert_eq!((status, error["code"].as_str()), (503, Some("unavailable")), "{error}");

    // Storage is back: the next flush succeeds, the heartbeat moves, the block is written once.
    std::fs::remove_file(&blocks).unwrap();
    std::fs::create_dir(&blocks).unwrap();
    common::wait_until("a flush after the storage came back", Duration::from_secs(20), || {
        value(&metrics(&server), "pyrite_head_flush_last_success_timestamp_seconds").unwrap() > last_success
    });
    let blocks_written = walk(&blocks).iter().filter(|path| path.ends_with("meta.json")).count();
    assert_eq!(blocks_written, 1);
    assert_eq!(cpu_query(&server), (200, pushed), "neither lost nor counted twice");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// While flushes fail, unflushed data stops at `head.max_unflushed_bytes`: pushes past it get
/// 503 `unavailable` (clients retry) instead of the process growing until it dies, and are
/// taken again once a flush gets through.
#[test]
fn a_head_that_cannot_flush_refuses_pushes_with_503_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("pyrite.yaml");
    std::fs::write(
        &config,
        "scrape_configs: []\nhead:\n  flush_interval: 300ms\n  max_head_bytes: 4096\n  max_unflushed_bytes: 8192\n",
    )
    .unwrap();
    let server = Server::start_with_config(&data, Some(&config));
    let blocks = data.join("blocks");
    std::fs::remove_dir_all(&blocks).unwrap();
    std::fs::write(&blocks, b"not a directory").unwrap();

    let raw = std::fs::read(common::corpus_dir().join("files/gotarget__cpu_5s.pb.gz")).unwrap();
    let push = || common::push_v1(&server, "anonymous", &[("service_name", "flushed")], raw.clone());
    assert_eq!(push().0, 200, "room for one profile");
    common::wait_until("a failed flush", Duration::from_secs(20), || {
        value(&metrics(&server), "pyrite_head_flush_failures_total").unwrap_or(0.0) >= 1.0
    });
    let (status, _, body) = push();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("unavailable") && body.contains("max_unflushed_bytes"),
        "{body}"
    );
    let full = metrics(&server);
    assert!(
        full.contains("outcome=\"head_full\""),
        "counted as refused for a full head"
    );
    assert_eq!(value(&full, "pyrite_head_max_unflushed_bytes"), Some(8192.0));
    assert!(value(&full, "pyrite_head_unflushed_bytes").unwrap() > 8192.0, "{full}");

    std::fs::remove_file(&blocks).unwrap();
    std::fs::create_dir(&blocks).unwrap();
    common::wait_until("pushes taken again", Duration::from_secs(20), || push().0 == 200);
    assert_eq!(
        common::cpu_nanos(&server, "anonymous", "flushed"),
        2 * 3_900_000_000,
        "the first and the last push, nothing of the refused one"
    );
}
