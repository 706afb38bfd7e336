//! The server under load it must not fall over from (hardening items 5 and 6): heavy queries
//! run off the async threads under `api.query_timeout` and `api.max_concurrent_queries`, and
//! connections are bounded by `server.*` limits, while `/ready` keeps answering.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use prost::Message;

const CPU_FILE: &str = "ddnotes_cpu-profiler-labels.pprof";
const TENANT: &str = "heavy";
const CPU_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
/// Series pushed for the heavy queries: each query matches 10,000 matchers against each.
const SERIES: usize = 100;
const MATCHERS: usize = 10_000;

fn start(dir: &Path, extra: &str) -> Server {
    let config = dir.join("pyrite.yaml");
    std::fs::write(&config, format!("scrape_configs: []\n{extra}")).unwrap();
    Server::start_with_config(&dir.join("data"), Some(&config))
}

/// The CPU file stamped now.
fn cpu_now() -> Vec<u8> {
    let raw = std::fs::read(common::corpus_dir().join("files").join(CPU_FILE)).unwrap();
    let mut profile = pyrite::pprof::decode(&raw, &Default::default()).unwrap();
    profile.time_nanos = pyrite::now_ms() * 1_000_000;
    profile.encode_to_vec()
}

/// Pushes `SERIES` series of service `heavy` (label `i` apart), in requests of 50 series.
fn push_many_series(server: &Server) {
    use pyrite::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
    use pyrite::proto::types::v1::LabelPair;
    let raw = bytes::Bytes::from(cpu_now());
    let client = reqwest::blocking::Client::new();
    let label = |name: &str, value: String| LabelPair {
        name: name.into(),
        value,
    };
    for batch in (0..SERIES).collect::<Vec<_>>().chunks(50) {
        let request = PushRequest {
            series: batch
                .iter()
                .map(|i| RawProfileSeries {
                    labels: vec![label("service_name", "heavy".into()), label("i", i.to_string())],
                    samples: vec![RawSample {
                        raw_profile: raw.clone(),
                        id: String::new(),
                    }],
                    annotations: Vec::new(),
                })
                .collect(),
        };
        let response = client
            .post(format!("{}/push.v1.PusherService/Push", server.url))
            .header("Content-Type", "application/proto")
            .header("X-Scope-OrgID", TENANT)
            .body(request.encode_to_vec())
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    }
}

/// A SelectMergeStacktraces body whose selector has `MATCHERS` regex matchers, all true for
/// every series (their labels are absent), so every one is evaluated against every series.
fn heavy_query_body() -> String {
    let mut selector = String::from("{service_name=\"heavy\"");
    for i in 0..MATCHERS {
        selector.push_str(&format!(", m{i}!~\"x{i}.*\""));
    }
    selector.push('}');
    let now = pyrite::now_ms();
    serde_json::json!({
        "profileTypeID": CPU_TYPE,
        "labelSelector": selector,
        "start": now - 3_600_000,
        "end": now + 3_600_000,
    })
    .to_string()
}

/// Runs the heavy query; its status and how long it took.
fn heavy_query(url: &str, body: &str) -> (u16, Duration) {
    let started = Instant::now();
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
        .post(format!("{url}/querier.v1.QuerierService/SelectMergeStacktraces"))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", TENANT)
        .body(body.to_string())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes();
    (status, started.elapsed())
}

/// Polls `/ready` every 50 ms (a fresh connection each time) until `done`; the latencies.
fn poll_ready(url: &str, done: &std::sync::atomic::AtomicBool) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let started = Instant::now();
        let response = client.get(format!("{url}/ready")).send();
        let latency = started.elapsed();
        assert!(response.is_ok_and(|r| r.status() == 200), "/ready did not answer");
        latencies.push(latency);
        std::thread::sleep(Duration::from_millis(50));
    }
    latencies
}

fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn heavy_queries_neither_stall_ready_nor_outlive_their_timeout_nor_exceed_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "api:\n  query_timeout: 60s\n  max_concurrent_queries: 3\n  query_queue_timeout: 200ms\n",
    );
    push_many_series(&server);
    let body = heavy_query_body();
    let (status, alone) = heavy_query(&server.url, &body);
    assert_eq!(status, 200);
    eprintln!("one heavy query alone: {alone:?}");

    // (a) Three heavy queries at once while /ready is polled every 50 ms.
    let done = std::sync::atomic::AtomicBool::new(false);
    let (latencies, results) = std::thread::scope(|scope| {
        let queries: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| heavy_query(&server.url, &body)))
            .collect();
        let poller = scope.spawn(|| poll_ready(&server.url, &done));
        let results: Vec<_> = queries.into_iter().map(|query| query.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (poller.join().unwrap(), results)
    });
    let max = latencies.iter().max().unwrap();
    eprintln!(
        "three heavy queries: {results:?}; /ready answered {} times, max latency {max:?}",
        latencies.len()
    );
    assert!(results.iter().all(|(status, _)| *status == 200), "{results:?}");
    assert!(
        latencies.len() >= 5,
        "the queries ended before /ready was polled: {latencies:?}"
    );
    assert!(*max < Duration::from_secs(1), "/ready took {max:?}");

    // (c) More heavy queries than api.max_concurrent_queries (3): the extra ones get 503
    // after the 200 ms queue wait, long before the running ones end.
    let results: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let queries: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| heavy_query(&server.url, &body)))
            .collect();
        queries.into_iter().map(|query| query.join().unwrap()).collect()
    });
    eprintln!("six heavy queries, cap 3: {results:?}");
    let refused: Vec<_> = results.iter().filter(|(status, _)| *status == 503).collect();
    assert!(refused.len() >= 2, "{results:?}");
    assert!(
        refused.iter().all(|(_, took)| *took < Duration::from_secs(2)),
        "{results:?}"
    );
    assert!(
        results.iter().all(|(status, _)| *status == 200 || *status == 503),
        "{results:?}"
    );
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("pyrite_queries_unanswered_total{reason=\"busy\"}"),
        "{metrics}"
    );
}

#[test]
fn a_heavy_query_past_its_timeout_answers_504_within_a_second_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "api:\n  query_timeout: 1s\n  max_concurrent_queries: 1\n");
    push_many_series(&server);
    let body = heavy_query_body();
    // (b) Each query would take seconds; it answers at the timeout.
    for _ in 0..2 {
        let (status, took) = heavy_query(&server.url, &body);
        eprintln!("heavy query under a 1 s timeout: {status} after {took:?}");
        assert_eq!(status, 504);
        assert!(took < Duration::from_millis(2500), "{took:?}");
    }
    // The cut query stopped: with a single turn, a cheap query gets it at once.
    let started = Instant::now();
    let (status, body) = common::querier(
        &server,
        TENANT,
        "LabelNames",
        serde_json::json!({"start": pyrite::now_ms() - 60_000, "end": pyrite::now_ms()}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

/// Sends headers announcing `length` bytes, then up to `length` bytes `chunk` at a time every
/// `every`, until the server closes the connection; how long it stayed open and the status
/// line the server answered, if any.
fn trickle(url: &str, length: usize, chunk: usize, every: Duration, give_up: Duration) -> (Duration, String) {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let started = Instant::now();
    write!(
        stream,
        "POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/proto\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let data = vec![b'x'; chunk];
    let mut answer = Vec::new();
    let mut sent = 0;
    while started.elapsed() < give_up && sent < length {
        if stream.write_all(&data).is_err() {
            break;
        }
        sent += chunk;
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock || err.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        std::thread::sleep(every);
    }
    let open = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    (open, answer.lines().next().unwrap_or("").to_string())
}

#[test]
fn trickled_bodies_are_cut_at_the_body_timeout_and_their_memory_freed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "server:\n  body_timeout: 2s\n");
    let before = rss_kib(&server);
    // (d) Ten clients each announce 50 MB and send 64 KiB every 50 ms (1.3 MB/s): without a
    // body deadline they would hold 10 × 50 MB for 40 s.
    let (results, peak) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..10)
            .map(|_| {
                scope.spawn(|| {
                    trickle(
                        &server.url,
                        50 << 20,
                        64 << 10,
                        Duration::from_millis(50),
                        Duration::from_secs(20),
                    )
                })
            })
            .collect();
        let mut peak = 0;
        while clients.iter().any(|client| !client.is_finished()) {
            peak = peak.max(rss_kib(&server));
            std::thread::sleep(Duration::from_millis(100));
        }
        let results: Vec<_> = clients.into_iter().map(|client| client.join().unwrap()).collect();
        (results, peak)
    });
    eprintln!("trickled bodies: {results:?}; RSS before {before} KiB, peak {peak} KiB");
    for (open, status) in &results {
        assert!(*open < Duration::from_secs(5), "a trickled body stayed open {open:?}");
        assert!(status.is_empty() || status.contains("408"), "{status}");
    }
    // At most ~2.6 MB each arrived before the cut.
    assert!(peak < before + 80 * 1024, "RSS grew from {before} KiB to {peak} KiB");
    let response = reqwest::blocking::get(format!("{}/ready", server.url)).unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn idle_connections_past_the_cap_are_closed_and_ready_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        "server:\n  max_connections: 8\n  header_read_timeout: 1s\n  idle_timeout: 2s\n",
    );
    let address = server.url.trim_start_matches("http://").to_string();
    // (e) 24 sockets that send nothing and 8 that send half a request line, 4 times the cap.
    let mut idle: Vec<TcpStream> = (0..24).map(|_| TcpStream::connect(&address).unwrap()).collect();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(&address).unwrap();
        stream.write_all(b"GET /ready HT").unwrap();
        idle.push(stream);
    }
    let started = Instant::now();
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("{}/ready", server.url))
        .send()
        .unwrap();
    let waited = started.elapsed();
    eprintln!("/ready behind 32 idle sockets (cap 8, header timeout 1 s): {waited:?}");
    assert_eq!(response.status(), 200);
    // Four rounds of 8 idle sockets, each closed after 1 s, are ahead of it at most.
    assert!(waited < Duration::from_secs(7), "{waited:?}");
    // Every idle socket was closed by the server.
    for stream in &mut idle {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    // Idle keep-alive connections go too, once the cap is free: a served connection left idle
    // is closed after the header read timeout.
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .write_all(format!("GET /ready HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    let open = started.elapsed();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    assert!(
        open < Duration::from_secs(3),
        "an idle keep-alive connection stayed open {open:?}"
    );
    let response = reqwest::blocking::get(format!("{}/ready", server.url)).unwrap();
    assert_eq!(response.status(), 200);
}
