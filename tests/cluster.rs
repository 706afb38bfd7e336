//! Two replicas on one bucket (a shared blocks directory), each with its own head: a query on
//! either sees what was pushed to both, exactly once, while both keep flushing; and scrape
//! targets are split between them.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Server, free_port};

const CPU_FILE: &str = "ddnotes_cpu-profiler-labels.pprof";
/// CPU time of one push of `CPU_FILE` (MANIFEST.tsv).
const CPU_NANOS: u64 = 160_000_000;

fn start_replica(dir: &Path, name: &str, ports: &[(&str, u16)], shared_blocks: &Path) -> Server {
    let peers: String = ports
        .iter()
        .map(|(peer, port)| format!("    {peer}: 127.0.0.1:{port}\n"))
        .collect();
    let port = ports.iter().find(|(peer, _)| *peer == name).unwrap().1;
    let config = dir.join(format!("{name}.yaml"));
    // Peers send each other the cluster secret (a Kubernetes Secret mounted as a file).
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, "a-shared-cluster-secret-for-the-test\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "storage:\n  backend: filesystem\n  directory: {}\n\
             head: {{ flush_interval: 150ms }}\n\
             cluster:\n  replica: {name}\n  published_grace: 10s\n  secret_file: {}\n  peers:\n{peers}\
             scrape_configs:\n  - job_name: fleet\n    scrape_interval: 1s\n    scrape_timeout: 500ms\n    \
             profiles: [goroutine]\n    static_configs:\n      - targets: [{}]\n",
            shared_blocks.display(),
            secret.display(),
            (1..=8)
                .map(|i| format!("'127.0.0.1:{i}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .unwrap();
    Server::start_on(&dir.join(name), Some(&config), port)
}

fn cpu_total(server: &Server) -> u64 {
    common::cpu_nanos(server, "anonymous", "fleet-app") as u64
}

/// Scrape targets (`instance` of `pyrite_scrape_up`) of one replica's job `fleet`.
fn scraped_targets(server: &Server) -> Vec<String> {
    let text = reqwest::blocking::get(format!("{}/metrics", server.url))
        .unwrap()
        .text()
        .unwrap();
    let mut targets: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with("pyrite_scrape_up{") && line.contains("job=\"fleet\""))
        .filter_map(|line| line.split("instance=\"").nth(1)?.split('"').next().map(str::to_string))
        .collect();
    targets.sort();
    targets
}

#[test]
fn every_replica_answers_for_all_of_them_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = dir.path().join("shared-blocks");
    let ports = [("a", free_port()), ("b", free_port())];
    let a = start_replica(dir.path(), "a", &ports, &blocks);
    let b = start_replica(dir.path(), "b", &ports, &blocks);
    let raw = std::fs::read(common::corpus_dir().join("files").join(CPU_FILE)).unwrap();

    // Pushes alternate between the replicas while both flush every 150 ms.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        let urls = [a.url.clone(), b.url.clone()];
        std::thread::spawn(move || {
            let mut turn = 0;
            while !stop.load(Ordering::SeqCst) {
                let response = reqwest::blocking::Client::new()
                    .post(format!("{}/ingest?name=fleet-app&format=pprof", urls[turn % 2]))
                    .body(raw.clone())
                    .send()
                    .unwrap();
                assert_eq!(response.status().as_u16(), 200);
                acknowledged.fetch_add(1, Ordering::SeqCst);
                turn += 1;
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    // A row counted twice or missed would fall outside what was acknowledged around the query
    // (plus the one push in flight: stored, its answer not yet read).
    for round in 0..60 {
        let server = if round % 2 == 0 { &a } else { &b };
        let before = acknowledged.load(Ordering::SeqCst);
        let total = cpu_total(server);
        let after = acknowledged.load(Ordering::SeqCst) + 1;
        assert!(
            (before * CPU_NANOS..=after * CPU_NANOS).contains(&total),
            "round {round}: {total} outside [{}, {}]",
            before * CPU_NANOS,
            after * CPU_NANOS
        );
        std::thread::sleep(Duration::from_millis(40));
    }
    stop.store(true, Ordering::SeqCst);
    pusher.join().unwrap();
    let pushed = acknowledged.load(Ordering::SeqCst);
    assert!(pushed > 50, "{pushed} pushes");
    // Both flushed: the blocks are shared, and each still counts everything once.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cpu_total(&a), pushed * CPU_NANOS);
    assert_eq!(cpu_total(&b), pushed * CPU_NANOS);

    // Each of the eight scrape targets is scraped by exactly one replica.
    let all: Vec<String> = (1..=8).map(|i| format!("127.0.0.1:{i}")).collect();
    let (of_a, of_b) = (scraped_targets(&a), scraped_targets(&b));
    assert!(of_a.iter().all(|target| !of_b.contains(target)), "{of_a:?} {of_b:?}");
    let mut union: Vec<String> = of_a.iter().chain(&of_b).cloned().collect();
    union.sort_by_key(|target| target.rsplit(':').next().unwrap().parse::<u16>().unwrap());
    assert_eq!(union, all);
}
