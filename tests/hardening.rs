//! Off the happy path, on real `pyrite serve` processes: profiles the edge must normalise, a
//! crash at every point of their life, a WAL damaged in the middle, a disk that fills up, and a
//! second process on one data directory. Every profile is built by the test.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, push_v1, querier, wait_until};
use prost::Message;
use pyrite::proto::google::v1::{Function, Line, Location, Profile, Sample, ValueType};

/// A CPU-like profile: one sample per stack of `functions` (root last), each worth `value`,
/// with sample type strings `type_name`/`unit` (empty strings are index 0) and `padding` bytes
/// of incompressible comment text (to make a record large).
fn profile(type_name: &str, unit: &str, stacks: &[&[&str]], value: i64, padding: usize) -> Vec<u8> {
    let mut strings = vec![String::new()];
    let mut intern = |text: &str| -> i64 {
        if text.is_empty() {
            return 0;
        }
        match strings.iter().position(|s| s == text) {
            Some(index) => index as i64,
            None => {
                strings.push(text.to_string());
                strings.len() as i64 - 1
            }
        }
    };
    let sample_type = ValueType {
        r#type: intern(type_name),
        unit: intern(unit),
    };
    let period_type = ValueType {
        r#type: intern("cpu"),
        unit: intern("nanoseconds"),
    };
    let mut functions: Vec<Function> = Vec::new();
    let mut samples = Vec::new();
    for stack in stacks {
        let mut location_ids = Vec::new();
        for name in *stack {
            let name_index = intern(name);
            let id = match functions.iter().position(|f| f.name == name_index) {
                Some(position) => position as u64 + 1,
                None => {
                    functions.push(Function {
                        id: functions.len() as u64 + 1,
                        name: name_index,
                        ..Default::default()
                    });
                    functions.len() as u64
                }
            };
            location_ids.push(id);
        }
        samples.push(Sample {
            location_id: location_ids,
            value: vec![value],
            label: Vec::new(),
        });
    }
    let mut comment = Vec::new();
    if padding > 0 {
        // Random-looking hex: pushed uncompressed, so the record is as large as asked.
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ padding as u64;
        let text: String = (0..padding)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b"0123456789abcdef"[(state & 15) as usize])
            })
            .collect();
        // Strings are at most 64 KiB each (`limits.max_string_length`).
        for chunk in text.as_bytes().chunks(60_000) {
            comment.push(intern(std::str::from_utf8(chunk).unwrap()));
        }
    }
    Profile {
        sample_type: vec![sample_type],
        sample: samples,
        location: functions
            .iter()
            .map(|f| Location {
                id: f.id,
                line: vec![Line {
                    function_id: f.id,
                    line: 1,
                    column: 0,
                }],
                ..Default::default()
            })
            .collect(),
        function: functions,
        string_table: strings,
        time_nanos: pyrite::now_ms() * 1_000_000,
        period_type: Some(period_type),
        period: 10_000_000,
        comment,
        ..Default::default()
    }
    .encode_to_vec()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pyrite.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Values of `label` among the series of `tenant` (all of history).
fn label_values(server: &Server, tenant: &str, label: &str) -> BTreeSet<String> {
    let (status, body) = querier(
        server,
        tenant,
        "LabelValues",
        serde_json::json!({"name": label, "start": 1, "end": pyrite::now_ms() + 3_600_000}),
    );
    assert_eq!(status, 200, "{body}");
    body["names"]
        .as_array()
        .map(|names| names.iter().map(|name| name.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn total(server: &Server, tenant: &str, profile_type: &str, selector: &str) -> (u16, i64) {
    let (status, body) = querier(
        server,
        tenant,
        "SelectMergeStacktraces",
        serde_json::json!({
            "profileTypeID": profile_type,
            "labelSelector": selector,
            "start": 1, "end": pyrite::now_ms() + 3_600_000,
        }),
    );
    let total = body["flamegraph"]["total"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(-1);
    (status, total)
}

fn profile_types(server: &Server, tenant: &str) -> Vec<String> {
    let (status, body) = querier(
        server,
        tenant,
        "ProfileTypes",
        serde_json::json!({"start": 1, "end": pyrite::now_ms() + 3_600_000}),
    );
    assert_eq!(status, 200, "{body}");
    body["profileTypes"]
        .as_array()
        .map(|types| types.iter().map(|t| t["ID"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

const FALLBACK_TYPE: &str = "unknown:unknown:unknown:cpu:nanoseconds";
const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// The tenant's reads after the empty-type profile went in: both services answer with their
/// own totals, and the empty one is listed under the documented fallback type.
fn assert_tenant_reads(server: &Server) {
    assert_eq!(
        total(server, "anonymous", CPU, r#"{service_name="good"}"#),
        (200, 3_000)
    );
    assert_eq!(
        total(server, "anonymous", FALLBACK_TYPE, r#"{service_name="empty-types"}"#),
        (200, 70)
    );
    assert!(profile_types(server, "anonymous").contains(&FALLBACK_TYPE.to_string()));
    let services = label_values(server, "anonymous", "service_name");
    assert!(
        services.contains("good") && services.contains("empty-types"),
        "{services:?}"
    );
}

/// The poison pill: a pprof whose sample type and unit are empty strings. It is acknowledged
/// under a documented fallback type, and a crash before and after its flush never stops a
/// restart or breaks the tenant's other reads (clients without a tenant share `anonymous`).
#[test]
fn an_empty_sample_type_is_stored_under_a_fallback_name_through_crashes_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "scrape_configs: []\nhead: { flush_interval: 1h }\n");
    let mut server = Server::start_with_config(&dir.path().join("data"), Some(&config));
    let empty = profile("", "", &[&["main", "work"]], 30, 0);
    let (status, _, body) = push_v1(&server, "anonymous", &[("service_name", "empty-types")], empty.clone());
    assert_eq!(status, 200, "{body}");
    let ingest = reqwest::blocking::Client::new()
        .post(format!("{}/ingest?name=empty-types&format=pprof", server.url))
        .body(profile("", "", &[&["main", "other"]], 40, 0))
        .send()
        .unwrap();
    assert_eq!(ingest.status().as_u16(), 200, "{}", ingest.text().unwrap());
    let good = profile("cpu", "nanoseconds", &[&["main", "serve"], &["main", "gc"]], 1_500, 0);
    assert_eq!(push_v1(&server, "anonymous", &[("service_name", "good")], good).0, 200);
    assert_tenant_reads(&server);

    // Before its flush: SIGKILL, then the WAL replays it.
    server.kill();
    let mut server = Server::start_with_config(&dir.path().join("data"), Some(&config));
    assert_tenant_reads(&server);

    // A graceful stop flushes it into a block; the next start reads it from there.
    server.terminate();
    let mut server = Server::start_with_config(&dir.path().join("data"), Some(&config));
    assert_tenant_reads(&server);
    server.kill();
    let server = Server::start_with_config(&dir.path().join("data"), Some(&config));
    assert_tenant_reads(&server);
}

/// The segment files of a WAL directory, oldest first.
fn segments(wal: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(wal)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files
}

/// Offsets of the record frames of a segment this version wrote (`PYRWAL2\n`, then
/// `[length][payload crc][header crc][payload]`).
fn frames(data: &[u8]) -> Vec<(usize, usize)> {
    assert!(data.starts_with(b"PYRWAL2\n"));
    let mut offset = 8;
    let mut frames = Vec::new();
    while offset + 12 <= data.len() {
        let length = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        frames.push((offset, length));
        offset += 12 + length;
    }
    frames
}

/// A record damaged in the middle of the WAL costs that record only: start-up goes on, every
/// acknowledged record after it is replayed, and the damage is on `/metrics` and in quarantine.
#[test]
fn a_damaged_record_in_the_middle_of_the_wal_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "scrape_configs: []\nhead: { flush_interval: 1h }\n");
    let mut server = Server::start_with_config(&data, Some(&config));
    for n in 0..10 {
        let raw = profile("cpu", "nanoseconds", &[&["main", "loop"]], 100, 0);
        let (status, _, body) = push_v1(&server, "walt", &[("service_name", "w"), ("n", &n.to_string())], raw);
        assert_eq!(status, 200, "{body}");
    }
    server.kill();

    let wal = data.join("wal");
    let segment = segments(&wal)
        .into_iter()
        .find(|path| frames(&std::fs::read(path).unwrap()).len() == 10)
        .expect("a segment with the ten records");
    let mut bytes = std::fs::read(&segment).unwrap();
    let (offset, length) = frames(&bytes)[4];
    bytes[offset + 12 + length / 2] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();

    let server = Server::start_with_config(&data, Some(&config));
    let expected: BTreeSet<String> = (0..10).filter(|&n| n != 4).map(|n| n.to_string()).collect();
    assert_eq!(label_values(&server, "walt", "n"), expected);
    assert_eq!(total(&server, "walt", CPU, "{}"), (200, 900));
    assert!(metric(&server, "pyrite_wal_damaged_bytes_total") >= (12 + length) as f64);
    let quarantined: Vec<_> = std::fs::read_dir(wal.join("quarantine")).unwrap().collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Pushes profile `n` (about `size` bytes, uncompressed so the WAL record is that large).
fn push_numbered(server: &Server, n: usize, size: usize) -> (u16, String) {
    let raw = profile("cpu", "nanoseconds", &[&["main", "disk"]], 1, size);
    let (status, _, body) = push_v1(server, "disk", &[("service_name", "d"), ("n", &n.to_string())], raw);
    (status, body)
}

/// A full disk: pushes that cannot be written get 503 `unavailable` and are never stored (no
/// phantom after a restart), every acknowledged push is there after a SIGKILL, pushes succeed
/// again by themselves once space returns, and the WAL's own budget answers 503 before the
/// disk is full.
#[test]
fn a_full_disk_refuses_with_503_loses_nothing_acknowledged_and_recovers() {
    let tmpfs = Tmpfs::mount("24m");
    let data = tmpfs.path().join("data");
    let blocks = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config_text = |budget: u64, flush: &str| {
        format!(
            "scrape_configs: []\nhead: {{ flush_interval: {flush}, max_wal_bytes: {budget} }}\n\
             storage:\n  backend: filesystem\n  directory: {}\n",
            blocks.path().display()
        )
    };
    let config = write_config(config_dir.path(), &config_text(0, "1h"));
    let mut server = Server::start_with_config(&data, Some(&config));
    let mut acknowledged = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut n = 0;

    // Phase 1: a filler leaves ~3 MB free; records of 300 KB run into ENOSPC half-way.
    let filler = tmpfs.path().join("filler");
    let free = || {
        let output = Command::new("df")
            .arg("-B1")
            .arg("--output=avail")
            .arg(tmpfs.path())
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let filler_bytes = free().saturating_sub(3 << 20);
    std::fs::write(&filler, vec![0u8; filler_bytes as usize]).unwrap();
    while refused.len() < 5 {
        assert!(n < 200, "the disk never filled");
        let (status, body) = push_numbered(&server, n, 300_000);
        match status {
            200 => assert!(acknowledged.insert(n.to_string())),
            503 => {
                assert!(body.contains("unavailable"), "{body}");
                assert!(refused.insert(n.to_string()));
            }
            other => panic!("push {n}: {other} {body}"),
        }
        n += 1;
    }
    assert!(acknowledged.len() >= 3, "{acknowledged:?}");
    // Space returns: pushes succeed again without a restart.
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..3 {
        let (status, body) = push_numbered(&server, n, 300_000);
        assert_eq!(status, 200, "after space returned: {body}");
        acknowledged.insert(n.to_string());
        n += 1;
    }
    server.kill();

    // Phase 2: a WAL budget of 4 MB refuses before the disk (24 MB) is full, and a flush
    // (every second) frees it again.
    std::fs::write(&config, config_text(4 << 20, "2s")).unwrap();
    let mut server = Server::start_with_config(&data, Some(&config));
    let mut budget_refusals = 0;
    let mut after_refusal = 0;
    while after_refusal < 2 {
        assert!(n < 400, "the budget never refused, or never recovered");
        let (status, body) = push_numbered(&server, n, 300_000);
        match status {
            200 => {
                acknowledged.insert(n.to_string());
                if budget_refusals > 0 {
                    after_refusal += 1;
                }
            }
            503 => {
                assert!(body.contains("max_wal_bytes") || body.contains("unavailable"), "{body}");
                refused.insert(n.to_string());
                budget_refusals += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            other => panic!("push {n}: {other} {body}"),
        }
        n += 1;
    }
    assert!(metric(&server, "pyrite_wal_max_bytes") == (4 << 20) as f64);
    server.kill();

    let server = Server::start_with_config(&data, Some(&config));
    let stored = label_values(&server, "disk", "n");
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    let phantoms: Vec<_> = refused.intersection(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(phantoms.is_empty(), "refused but stored: {phantoms:?}");
    assert_eq!(stored, acknowledged);
    eprintln!(
        "disk full: {} acknowledged, {} refused ({budget_refusals} by the WAL budget), all accounted for",
        acknowledged.len(),
        refused.len()
    );
}

/// One process per data directory: a second `pyrite serve` on a directory in use names the
/// process that holds it and exits non-zero, without touching that process's WAL.
#[test]
fn a_second_server_on_one_data_directory_names_the_holder_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "scrape_configs: []\n");
    let server = Server::start_with_config(&data, Some(&config));
    let raw = profile("cpu", "nanoseconds", &[&["main"]], 5, 0);
    assert_eq!(push_v1(&server, "lock", &[("service_name", "l")], raw).0, 200);
    let wal_before: Vec<_> = segments(&data.join("wal"))
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();

    let second = Command::new(common::pyrite_binary())
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    let holder = format!("PID {}", server.child.id());
    assert!(stderr.contains(&holder), "{stderr}");
    let wal_after: Vec<_> = segments(&data.join("wal"))
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    assert_eq!(wal_before, wal_after, "the second process touched the WAL");
    wait_until("the first server still answering", Duration::from_secs(5), || {
        total(&server, "lock", CPU, "{}") == (200, 5)
    });
}
