//! The scraper against the real Go program in `../shared/gotarget`: `pyrite serve` pulls its
//! `net/http/pprof` endpoints on a 2 s schedule, and the query API must then show what the
//! program really does (named CPU loops, allocation deltas, goroutines, contention). Then
//! failures: a killed and restarted target, and targets that hang, answer HTML, a 500 or
//! 100 MB.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Server, free_port};
use serde_json::{Value, json};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const ALLOC_SPACE: &str = "memory:alloc_space:bytes:space:bytes";
const GOROUTINES: &str = "goroutine:goroutine:count:goroutine:count";
const MUTEX_DELAY: &str = "mutex:delay:nanoseconds:contentions:count";
const BLOCK_DELAY: &str = "block:delay:nanoseconds:contentions:count";
const TENANT: &str = "scrape-test";

/// `go build` of ../shared/gotarget, once per test binary.
fn gotarget_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let output = root.join("target/gotarget/gotarget");
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&output)
                .arg(".")
                .current_dir(root.join("../shared/gotarget"))
                .status()
                .expect("go is needed to build ../shared/gotarget");
            assert!(status.success(), "building gotarget failed");
            output
        })
        .clone()
}

struct GoTarget {
    child: Child,
    address: String,
}

impl GoTarget {
    fn start(port: u16) -> GoTarget {
        let address = format!("127.0.0.1:{port}");
        let child = Command::new(gotarget_binary())
            .args(["-listen", &address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gotarget");
        let target = GoTarget { child, address };
        let deadline = Instant::now() + Duration::from_secs(20);
        while target.workload().is_none() {
            assert!(Instant::now() < deadline, "gotarget did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        target
    }

    /// `(allocated_bytes, unix_ms)` from `/workload`.
    fn workload(&self) -> Option<(i64, i64)> {
        let body: Value = reqwest::blocking::get(format!("http://{}/workload", self.address))
            .ok()?
            .json()
            .ok()?;
        Some((body["allocated_bytes"].as_i64()?, body["unix_ms"].as_i64()?))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GoTarget {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_pyrite(dir: &Path, config: &str) -> Server {
    let path = dir.join("pyrite.yaml");
    std::fs::write(&path, config).unwrap();
    Server::start_with_config(&dir.join("data"), Some(&path))
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `/api/v1/render?format=folded` of a profile type over the whole test: stack → value.
fn folded(server: &Server, tenant: &str, selector: &str, profile_type: &str) -> BTreeMap<String, i64> {
    let now = pyrite::now_ms();
    let mut url = url::Url::parse(&format!("{}/api/v1/render", server.url)).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("query", selector.to_string()),
        ("type", profile_type.to_string()),
        ("from", (now - 600_000).to_string()),
        ("until", (now + 60_000).to_string()),
        ("format", "folded".to_string()),
    ]);
    let response = client().get(url).header("X-Scope-OrgID", tenant).send().unwrap();
    assert!(response.status().is_success(), "render: {}", response.status());
    let mut stacks = BTreeMap::new();
    for line in response.text().unwrap().lines() {
        if let Some((stack, value)) = line.rsplit_once(' ') {
            *stacks.entry(stack.to_string()).or_insert(0) += value.parse::<i64>().unwrap();
        }
    }
    stacks
}

fn share(stacks: &BTreeMap<String, i64>, function: &str) -> f64 {
    let total: i64 = stacks.values().sum();
    let matching: i64 = stacks
        .iter()
        .filter(|(stack, _)| stack.split(';').any(|frame| frame.contains(function)))
        .map(|(_, value)| value)
        .sum();
    if total == 0 {
        0.0
    } else {
        matching as f64 / total as f64
    }
}

/// SelectSeries points `(timestamp_ms, value)` of one profile type, 500 ms steps.
fn points(server: &Server, tenant: &str, selector: &str, profile_type: &str) -> Vec<(i64, f64)> {
    let now = pyrite::now_ms();
    let response = client()
        .post(format!("{}/querier.v1.QuerierService/SelectSeries", server.url))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", tenant)
        .body(
            json!({"profileTypeID": profile_type, "labelSelector": selector,
                   "start": (now - 600_000).to_string(), "end": (now + 1000).to_string(), "step": 0.5})
            .to_string(),
        )
        .send()
        .unwrap();
    assert!(response.status().is_success(), "SelectSeries: {}", response.status());
    let body: Value = response.json().unwrap();
    let mut points: Vec<(i64, f64)> = body["series"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
                .map(|p| {
                    let timestamp = match &p["timestamp"] {
                        Value::String(text) => text.parse().unwrap(),
                        other => other.as_i64().unwrap(),
                    };
                    (timestamp, p["value"].as_f64().unwrap_or(0.0))
                })
                .collect()
        })
        .unwrap_or_default();
    points.sort_by_key(|(timestamp, _)| *timestamp);
    points
}

/// `/metrics` samples named `name` whose labels contain every `key="value"` of `labels`.
fn metric(server: &Server, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
}

/// Polls `check` until it returns Some, or panics with `what` after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn scrapes_the_go_program_through_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let target = GoTarget::start(free_port());
    // Let the program run first, so its cumulative alloc total is far above any 2 s delta.
    std::thread::sleep(Duration::from_secs(3));
    let server = start_pyrite(
        dir.path(),
        &format!(
            r#"
scrape_configs:
  - job_name: gotarget
    tenant: {TENANT}
    scrape_interval: 2s
    scrape_timeout: 3s
    static_configs:
      - targets: ["{}"]
        labels: {{ service_name: checkout, env: test }}
"#,
            target.address
        ),
    );
    let selector = r#"{service_name="checkout", env="test", job="gotarget"}"#;
    // Enough scrapes for several alloc deltas (the first scrape only primes).
    let alloc_points = wait_for("five alloc deltas", Duration::from_secs(40), || {
        let points = points(&server, TENANT, selector, ALLOC_SPACE);
        (points.len() >= 5).then_some(points)
    });
    let (allocated_end, end_ms) = target.workload().unwrap();

    // CPU: the program's named loops, hashing the larger share.
    let cpu = folded(&server, TENANT, selector, CPU);
    let (hash, sort) = (share(&cpu, "main.cpuHashLoop"), share(&cpu, "main.cpuSortLoop"));
    assert!(hash > 0.2, "cpuHashLoop share {hash:.2} of {} stacks", cpu.len());
    assert!(
        sort > 0.0 && hash > sort,
        "cpuHashLoop {hash:.2}, cpuSortLoop {sort:.2}"
    );
    assert!(share(&cpu, "crypto/sha256") > 0.1);

    // Allocations: each stored point is one scrape's delta. Their sum over the points matches
    // what the program allocated over the same span (32 MB/s from allocChurn, measured by its
    // own /workload counter). Tolerance ±40%: Go samples allocations (every ~512 KiB, i.e.
    // ~12% of the 64 KiB chunks, a few % error over hundreds of samples) and publishes them to
    // the profile only at the end of a GC cycle, so each end of the span can lag by one GC
    // cycle (~1 s at this heap size) — up to ~25% of an 8 s span.
    let values: Vec<f64> = alloc_points.iter().map(|(_, v)| *v).collect();
    assert!(values.iter().all(|v| *v >= 0.0), "negative delta: {values:?}");
    let (first_ts, last_ts) = (alloc_points.first().unwrap().0, alloc_points.last().unwrap().0);
    // The first point covers the 2 s since the priming scrape.
    let span_ms = (last_ts - first_ts + 2000) as f64;
    let measured_rate = allocation_rate(&target);
    let expected = measured_rate * span_ms;
    let stored: f64 = values.iter().sum();
    assert!(
        stored > 0.6 * expected && stored < 1.4 * expected,
        "alloc_space deltas {stored:.0} vs allocated {expected:.0} over {span_ms} ms (points {values:?})"
    );
    // ...and never the cumulative total since the program started.
    let largest = values.iter().cloned().fold(0.0, f64::max);
    assert!(
        largest < 0.5 * allocated_end as f64,
        "a point of {largest:.0} looks cumulative (program allocated {allocated_end} in total)"
    );
    let allocs = folded(&server, TENANT, selector, ALLOC_SPACE);
    assert!(share(&allocs, "main.allocChurn") > 0.5, "{allocs:?}");

    // Goroutines: a gauge, stored as is: each scrape sees the 50 idle workers and the others.
    let goroutines = points(&server, TENANT, selector, GOROUTINES);
    assert!(!goroutines.is_empty());
    for (_, count) in &goroutines {
        assert!((55.0..500.0).contains(count), "goroutines per scrape: {goroutines:?}");
    }
    let stacks = folded(&server, TENANT, selector, GOROUTINES);
    assert!(share(&stacks, "main.idleWorkers") > 0.5, "{stacks:?}");

    // Contention: mutex and block profiles, as deltas, with the program's stacks.
    let mutex = folded(&server, TENANT, selector, MUTEX_DELAY);
    assert!(share(&mutex, "main.contendMutex") > 0.5, "mutex stacks: {mutex:?}");
    let block = folded(&server, TENANT, selector, BLOCK_DELAY);
    assert!(share(&block, "main.blockOnChan") > 0.0, "block stacks: {block:?}");

    // Heartbeats of every profile.
    for profile in ["process_cpu", "memory", "goroutine", "mutex", "block"] {
        let labels = [
            ("job", "gotarget"),
            ("instance", target.address.as_str()),
            ("profile", profile),
        ];
        assert_eq!(metric(&server, "pyrite_scrape_up", &labels), Some(1.0), "{profile}");
        let last = metric(&server, "pyrite_scrape_last_success_timestamp_seconds", &labels).unwrap();
        assert!(last * 1000.0 <= pyrite::now_ms() as f64 && last * 1000.0 > (end_ms - 60_000) as f64);
    }
}

/// The program's allocation rate in bytes per ms, measured over 2 s by its own counter.
fn allocation_rate(target: &GoTarget) -> f64 {
    let (a, a_ms) = target.workload().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (b, b_ms) = target.workload().unwrap();
    (b - a) as f64 / (b_ms - a_ms).max(1) as f64
}

/// A target that misbehaves in one way on every request.
fn bad_target(behaviour: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = match behaviour {
                    "hang" => {
                        std::thread::sleep(Duration::from_secs(120));
                        Ok(())
                    }
                    "html" => stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 38\r\n\r\n<html><body>Welcome to nginx!</body>\n",
                    ),
                    "error" => stream.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\ncould not profile CPU\n",
                    ),
                    // 100 MB of a valid-looking gzip stream start, no Content-Length.
                    "huge" => (|| {
                        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")?;
                        let chunk = vec![0x1fu8; 1 << 20];
                        for _ in 0..100 {
                            stream.write_all(&chunk)?;
                        }
                        Ok(())
                    })(),
                    _ => unreachable!(),
                };
            });
        }
    });
    address
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn failing_targets_are_reported_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut target = GoTarget::start(port);
    let (hang, html, error, huge) = (
        bad_target("hang"),
        bad_target("html"),
        bad_target("error"),
        bad_target("huge"),
    );
    let server = start_pyrite(
        dir.path(),
        &format!(
            r#"
limits:
  max_decompressed_bytes: 8388608
scrape_configs:
  - job_name: go
    tenant: {TENANT}
    scrape_interval: 2s
    scrape_timeout: 2s
    profiles: [memory, goroutine]
    static_configs:
      - targets: ["{}"]
        labels: {{ service_name: restarted }}
  - job_name: bad
    tenant: {TENANT}
    scrape_interval: 2s
    scrape_timeout: 1s
    profiles: [goroutine]
    static_configs:
      - targets: ["{hang}", "{html}", "{error}", "{huge}"]
"#,
            target.address
        ),
    );
    let go = |profile: &'static str| [("job", "go"), ("instance", target_address(port)), ("profile", profile)];
    // Each profile of a target has its own timer offset, so wait for both to have succeeded once.
    wait_for("the Go target up", Duration::from_secs(20), || {
        let up = |profile| metric(&server, "pyrite_scrape_up", &go(profile)) == Some(1.0);
        (up("memory") && up("goroutine")).then_some(())
    });

    // Each bad target ends as a failed scrape with its reason.
    for (address, reason) in [
        (&hang, "timeout"),
        (&html, "not_pprof"),
        (&error, "http_status"),
        (&huge, "too_large"),
    ] {
        let labels = [("job", "bad"), ("instance", address.as_str()), ("profile", "goroutine")];
        wait_for(reason, Duration::from_secs(20), || {
            let failures = metric(
                &server,
                "pyrite_scrape_failures_total",
                &[labels[0], labels[1], ("reason", reason)],
            )?;
            (failures >= 1.0).then_some(())
        });
        assert_eq!(metric(&server, "pyrite_scrape_up", &labels), Some(0.0), "{reason}");
        assert_eq!(
            metric(&server, "pyrite_scrape_last_success_timestamp_seconds", &labels),
            None
        );
    }
    // ...while the Go target keeps being scraped: its last success moves on.
    let last = metric(
        &server,
        "pyrite_scrape_last_success_timestamp_seconds",
        &go("goroutine"),
    )
    .unwrap();
    wait_for("another successful scrape", Duration::from_secs(15), || {
        let now = metric(
            &server,
            "pyrite_scrape_last_success_timestamp_seconds",
            &go("goroutine"),
        )?;
        (now > last).then_some(())
    });
    // The 100 MB body was cut at the 8 MiB limit, not buffered.
    let rss = vm_rss_kib(server.child.id());
    assert!(rss < 200 * 1024, "pyrite RSS {rss} KiB after 100 MB bodies");

    // The first memory scrape only primes; hold the kill until a delta has been stored.
    let selector = r#"{service_name="restarted"}"#;
    let early = wait_for("a delta before the kill", Duration::from_secs(15), || {
        let early = points(&server, TENANT, selector, ALLOC_SPACE);
        (!early.is_empty()).then_some(early)
    });

    // Killed: up drops to 0 at its next scrape; the hanging target still fails on time.
    let before_kill_ms = pyrite::now_ms();
    target.kill();
    wait_for("up=0 after the kill", Duration::from_secs(10), || {
        (metric(&server, "pyrite_scrape_up", &go("memory")) == Some(0.0)).then_some(())
    });
    let hang_labels = [("job", "bad"), ("instance", hang.as_str()), ("reason", "timeout")];
    let timeouts = metric(&server, "pyrite_scrape_failures_total", &hang_labels).unwrap();
    wait_for("the hanging target scraped again", Duration::from_secs(10), || {
        (metric(&server, "pyrite_scrape_failures_total", &hang_labels)? > timeouts).then_some(())
    });

    // Restarted (a new process, counts from zero): deltas restart cleanly.
    let restart_ms = pyrite::now_ms();
    let target = GoTarget::start(port);
    wait_for("up=1 after the restart", Duration::from_secs(20), || {
        (metric(&server, "pyrite_scrape_up", &go("memory")) == Some(1.0)).then_some(())
    });
    let after = wait_for("two deltas after the restart", Duration::from_secs(30), || {
        let after: Vec<(i64, f64)> = points(&server, TENANT, selector, ALLOC_SPACE)
            .into_iter()
            .filter(|(timestamp, _)| *timestamp > restart_ms)
            .collect();
        (after.len() >= 2).then_some(after)
    });
    let all = points(&server, TENANT, selector, ALLOC_SPACE);
    // SelectSeries stamps a point with the end of its 0.5 s step (Pyroscope's bucketing), and
    // the steps are aligned to the query's start, so a point may move by up to one step.
    assert!(
        all.iter().any(|(timestamp, _)| *timestamp <= before_kill_ms + 500),
        "deltas before the kill at {before_kill_ms}: {early:?}, then {all:?}"
    );
    assert!(all.iter().all(|(_, value)| *value >= 0.0), "negative delta: {all:?}");
    // No giant first delta: every point after the restart is about one interval of allocation
    // (32 MB/s × 2 s = 64 MiB), far from the old or new process's cumulative totals.
    let rate = allocation_rate(&target);
    for (_, value) in &after {
        assert!(
            *value < rate * 2000.0 * 2.5,
            "delta {value:.0} after the restart (rate {rate:.0} B/ms)"
        );
    }
}

fn target_address(port: u16) -> &'static str {
    Box::leak(format!("127.0.0.1:{port}").into_boxed_str())
}

#[test]
fn file_discovery_picks_up_new_targets() {
    let dir = tempfile::tempdir().unwrap();
    let target = GoTarget::start(free_port());
    let targets = dir.path().join("targets");
    std::fs::create_dir_all(&targets).unwrap();
    std::fs::write(targets.join("none.yaml"), "[]\n").unwrap();
    let server = start_pyrite(
        dir.path(),
        &format!(
            r#"
scrape_configs:
  - job_name: discovered
    tenant: {TENANT}
    scrape_interval: 1s
    profiles: [goroutine]
    file_sd_configs:
      - files: ["{}/*.json"]
        refresh_interval: 1s
"#,
            targets.display()
        ),
    );
    std::fs::write(
        targets.join("go.json"),
        format!(
            r#"[{{"targets": ["{}"], "labels": {{"service_name": "from-file", "team": "a"}}}}]"#,
            target.address
        ),
    )
    .unwrap();
    wait_for("goroutines of the discovered target", Duration::from_secs(20), || {
        let stacks = folded(
            &server,
            TENANT,
            r#"{service_name="from-file", team="a", job="discovered"}"#,
            GOROUTINES,
        );
        (share(&stacks, "main.idleWorkers") > 0.5).then_some(())
    });
    assert_eq!(
        metric(
            &server,
            "pyrite_scrape_up",
            &[("job", "discovered"), ("instance", target.address.as_str())]
        ),
        Some(1.0)
    );
}

#[test]
fn default_config_scrapes_itself() {
    let dir = tempfile::tempdir().unwrap();
    // No config file: the default config, whose self-scrape follows --listen.
    let server = Server::start(dir.path());
    let instance = format!("127.0.0.1:{}", server.port);
    let labels = [
        ("job", "pyrite"),
        ("instance", instance.as_str()),
        ("profile", "process_cpu"),
    ];
    // Give the server work to profile: pushes of a corpus profile (decode, WAL, head).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), server.url.clone());
        let raw = std::fs::read(common::corpus_dir().join("files/gotarget__cpu_5s.pb.gz")).unwrap();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client()
                    .post(format!("{url}/ingest?name=load&format=pprof"))
                    .header("X-Scope-OrgID", "load")
                    .body(raw.clone())
                    .send();
            }
        })
    };
    // Interval 15 s, offset < 15 s, 5 s profiles: a first CPU profile within ~21 s.
    wait_for(
        "a self-scraped CPU profile with samples",
        Duration::from_secs(50),
        || (metric(&server, "pyrite_scrape_samples", &labels)? > 0.0).then_some(()),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(metric(&server, "pyrite_scrape_up", &labels), Some(1.0));
    let stacks = folded(&server, "anonymous", r#"{service_name="pyrite", job="pyrite"}"#, CPU);
    assert!(stacks.values().sum::<i64>() > 0, "a real flame graph of pyrite");
    assert!(share(&stacks, "pyrite::") > 0.0, "pyrite's own functions: {stacks:?}");
}

/// A Kubernetes API server as far as pod discovery needs one: a recorded pod list answers a
/// list, and a watch stays open, streaming whatever events the test sends.
struct FakeKubeApi {
    address: std::net::SocketAddr,
    /// Path and query, and the Authorization header, of every request.
    requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    events: std::sync::mpsc::Sender<Value>,
}

impl FakeKubeApi {
    fn start(pod_list: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (events, receiver) = std::sync::mpsc::channel::<Value>();
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (recorded, receiver, pod_list) = (recorded.clone(), receiver.clone(), pod_list.to_string());
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    let authorization = head
                        .lines()
                        .find_map(|line| {
                            line.strip_prefix("authorization: ")
                                .or(line.strip_prefix("Authorization: "))
                        })
                        .unwrap_or("")
                        .to_string();
                    let watch = target.contains("watch=true") || target.contains("watch=1");
                    recorded.lock().unwrap().push((target, authorization));
                    if !watch {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{pod_list}",
                            pod_list.len()
                        );
                        return;
                    }
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    );
                    let _ = stream.flush();
                    loop {
                        let event = receiver.lock().unwrap().recv_timeout(Duration::from_millis(200));
                        match event {
                            Ok(event) => {
                                let line = format!("{event}\n");
                                if write!(stream, "{:x}\r\n{line}\r\n", line.len()).is_err() {
                                    return;
                                }
                                let _ = stream.flush();
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                });
            }
        });
        Self {
            address,
            requests,
            events,
        }
    }
}

fn annotated_pod(name: &str, profile: &str, port: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop", "resourceVersion": "2", "labels": {"app": "cart"},
                        "annotations": {format!("profiles.grafana.com/{profile}.scrape"): "true",
                                        format!("profiles.grafana.com/{profile}.port"): port}},
           "spec": {"nodeName": "n1", "containers": [{"name": "cart", "ports": [{"name": "pprof", "containerPort": 1}]}]},
           "status": {"phase": "Running", "podIP": "127.0.0.1"}})
}

/// Kubernetes pod discovery end to end, through the `kube` client with a kubeconfig: the API
/// server's pod list (one pod annotated for goroutine profiles at the real Go program's port),
/// then a pod added through the open watch, which must be scraped without another list.
#[test]
fn kubernetes_pods_opt_in_by_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let target = GoTarget::start(free_port());
    let port = target.address.rsplit_once(':').unwrap().1.to_string();
    let api = FakeKubeApi::start(json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": [
            annotated_pod("cart-0", "goroutine", &port),
            {"metadata": {"name": "web-0", "namespace": "shop"},
             "spec": {"containers": [{"name": "web"}]},
             "status": {"phase": "Running", "podIP": "127.0.0.2"}}
        ]
    }));
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters: [{{name: test, cluster: {{server: 'http://{}'}}}}]\n\
             users: [{{name: tester, user: {{token: pyrite-test-token}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, user: tester}}}}]\n",
            api.address
        ),
    )
    .unwrap();
    let server = start_pyrite(
        dir.path(),
        &format!(
            r#"
scrape_configs:
  - job_name: kubernetes-pods
    tenant: {TENANT}
    scrape_interval: 2s
    kubernetes_sd_configs:
      - role: pod
        namespaces: [shop]
        kubeconfig_file: {}
        label_selector: app=cart
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app]
        target_label: app
"#,
            kubeconfig.display()
        ),
    );
    wait_for("goroutines of the annotated pod", Duration::from_secs(20), || {
        let stacks = folded(
            &server,
            TENANT,
            r#"{service_name="shop/cart", namespace="shop", pod="cart-0", app="cart"}"#,
            GOROUTINES,
        );
        (share(&stacks, "main.idleWorkers") > 0.5).then_some(())
    });
    let scraped_up = || -> Vec<String> {
        let text = client()
            .get(format!("{}/metrics", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("pyrite_scrape_up{"))
            .map(str::to_string)
            .collect()
    };
    // Only the annotated profile of the annotated pod is scraped.
    let scraped = scraped_up();
    assert_eq!(scraped.len(), 1, "{scraped:?}");
    assert!(scraped[0].contains("profile=\"goroutine\"") && scraped[0].contains(&target.address));

    // A pod the watch reports is scraped too, and nothing lists the pods again.
    let lists_before = api
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| !t.contains("watch="))
        .count();
    api.events
        .send(json!({"type": "ADDED", "object": annotated_pod("cart-1", "memory", &port)}))
        .unwrap();
    wait_for("the watched pod's memory scrape", Duration::from_secs(20), || {
        scraped_up()
            .iter()
            .any(|line| line.contains("profile=\"memory\"") && line.ends_with(" 1"))
            .then_some(())
    });
    let requests = api.requests.lock().unwrap().clone();
    let lists_after = requests.iter().filter(|(t, _)| !t.contains("watch=")).count();
    assert_eq!(lists_before, lists_after, "{requests:?}");
    assert!(requests.iter().any(|(t, _)| t.contains("watch=")), "{requests:?}");
    for (target, authorization) in &requests {
        assert!(target.starts_with("/api/v1/namespaces/shop/pods?"), "{target}");
        assert!(target.contains("labelSelector=app%3Dcart"), "{target}");
        assert_eq!(authorization, "Bearer pyrite-test-token");
    }
}
