//! Criterion benchmarks for the block format and the ingest path (issue 8): `SelectSeries` over
//! 7 days × 10 services × one CPU profile a minute with a 1 h step (history written through the
//! real ingest → head → flush path into a local-directory store), ingest throughput in bytes of
//! gzipped input through decode → series split → head append with its WAL on a tempdir, and the
//! bytes a stored profile takes in the bucket against the gzipped pprof received (printed, not
//! timed).
//!
//! Run: `cargo bench --bench blocks`; figures go to BENCHMARKS.md ("Blocks and ingest").
//! Writing the 7-day history takes over a minute, whatever criterion's filter says:
//! `PYRITE_BENCH_GROUPS=ingest` (or `series`) sets up and runs one group only.

mod common;

use common::Store;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pyrite::model::{Labels, ProfileType, Selector, Tenant};
use pyrite::pprof::{DecodeLimits, Profile};
use pyrite::query::{Aggregation, Querier, SelectParams};

const HOUR_MS: i64 = 3_600_000;
const START_MS: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;
const DAYS: i64 = 7;
const SERVICES: usize = 10;
const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn corpus_dir() -> PathBuf {
    std::env::var_os("PYRITE_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"))
}

fn corpus_file(name: &str) -> Bytes {
    Bytes::from(std::fs::read(corpus_dir().join("files").join(name)).unwrap())
}

/// Corpus files Go's pprof tool reads as CPU profiles (a `cpu/nanoseconds` total).
fn corpus_cpu_profiles() -> Vec<Bytes> {
    let manifest = std::fs::read_to_string(corpus_dir().join("MANIFEST.tsv")).unwrap();
    manifest
        .lines()
        .skip(1)
        .filter(|line| {
            line.split('\t')
                .nth(8)
                .is_some_and(|totals| totals.contains("cpu/nanoseconds="))
        })
        .map(|line| corpus_file(line.split('\t').next().unwrap()))
        .collect()
}

/// Bytes of every object in the store (block data and metas).
fn bucket_bytes(store: &Store) -> u64 {
    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_dir() {
                    walk(&entry.path())
                } else {
                    entry.metadata().unwrap().len()
                }
            })
            .sum()
    }
    walk(&store.dir.path().join("blocks"))
}

/// A deterministic pseudo-random number from `seed` (splitmix64).
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `variants` CPU profiles like `base` whose sample counts differ (each sample's count moves
/// by -1, 0 or +1 period; a sample may drop out), gzipped as a client sends them: the same
/// service a minute apart does not send the same bytes.
fn cpu_variants(base: &Profile, variants: usize) -> Vec<(Bytes, Profile)> {
    (0..variants)
        .map(|variant| {
            let mut profile = base.clone();
            for (index, sample) in profile.sample.iter_mut().enumerate() {
                let step = (mix((variant as u64) << 32 | index as u64) % 3) as i64 - 1;
                let count = (sample.value[0] + step).max(0);
                let period = sample.value[1] / sample.value[0].max(1);
                sample.value = vec![count, count * period];
            }
            profile.sample.retain(|sample| sample.value[0] > 0);
            let raw = Bytes::from(pyrite::pprof::encode_gzip(&profile));
            (raw, profile)
        })
        .collect()
}

fn service_labels(service: usize) -> Labels {
    Labels::new([("service_name".to_string(), format!("service-{service:02}"))]).unwrap()
}

/// 7 days × 10 services × one CPU profile a minute, flushed hour by hour as the head does; the
/// gzipped bytes pushed and the sum of the profiles' CPU totals.
fn write_history(runtime: &tokio::runtime::Runtime, store: &Store, tenant: &Tenant) -> (u64, i64) {
    let base = pyrite::pprof::decode(&corpus_file("gotarget__cpu_5s.pb.gz"), &DecodeLimits::default()).unwrap();
    // One variant per service and minute of an hour: no profile repeats within a block.
    let variants = cpu_variants(&base, SERVICES * 60);
    let mut pushed = 0u64;
    let mut cpu_total = 0i64;
    runtime.block_on(async {
        for hour in 0..DAYS * 24 {
            for minute in 0..60 {
                for service in 0..SERVICES {
                    let (raw, profile) = &variants[minute as usize * SERVICES + service];
                    let at = START_MS + hour * HOUR_MS + minute * 60_000 + service as i64 * 1000;
                    pushed += raw.len() as u64;
                    cpu_total += profile.sample.iter().map(|sample| sample.value[1]).sum::<i64>();
                    store
                        .ingester
                        .push_scraped(tenant, service_labels(service), raw.clone(), profile, None, at)
                        .await
                        .unwrap();
                }
            }
            store.head.flush().await.unwrap();
        }
    });
    (pushed, cpu_total)
}

/// Whether `PYRITE_BENCH_GROUPS` (comma-separated; unset: all) names `group`.
fn wanted(group: &str) -> bool {
    std::env::var("PYRITE_BENCH_GROUPS").map_or(true, |groups| groups.split(',').any(|name| name == group))
}

fn series(c: &mut Criterion) {
    if !wanted("series") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = Store::new(&runtime);
    let tenant = Tenant::parse("history").unwrap();
    let started = Instant::now();
    let (pushed, cpu_total) = write_history(&runtime, &store, &tenant);
    let profiles = (DAYS * 24 * 60) as u64 * SERVICES as u64;
    let stored = bucket_bytes(&store);
    eprintln!(
        "history: {profiles} CPU profiles written in {:.1} s; {pushed} bytes gzipped pushed ({} B a profile), \
         {stored} bytes in the bucket ({} B a profile, {:.3}× the gzipped input)",
        started.elapsed().as_secs_f64(),
        pushed / profiles,
        stored / profiles,
        stored as f64 / pushed as f64
    );
    let querier = Querier::new(store.head.clone(), store.storage.clone());
    let params = SelectParams {
        tenant: tenant.clone(),
        profile_type: ProfileType::parse(CPU).unwrap(),
        selector: Selector::parse("{}").unwrap(),
        from_ms: START_MS,
        until_ms: START_MS + DAYS * 24 * HOUR_MS,
    };
    // Inclusive: the last hour's profiles count at the point that ends it.
    let end_ms = START_MS + DAYS * 24 * HOUR_MS;
    let group_by = ["service_name".to_string()];
    let select = || {
        runtime
            .block_on(querier.select_series_range(&params, START_MS, end_ms, HOUR_MS, &group_by, Aggregation::Sum, &[]))
            .unwrap()
    };
    // The answer is the history: every service, every hour, every profile's total.
    let answer = select();
    assert_eq!(answer.len(), SERVICES);
    let points: usize = answer.iter().map(|series| series.points.len()).sum();
    // A point per hour boundary (169) and service, but the first one of the nine services
    // whose profiles come a second or more after the hour (they count at the next point).
    assert_eq!(points, SERVICES * (DAYS * 24 + 1) as usize - (SERVICES - 1));
    let sum: f64 = answer
        .iter()
        .flat_map(|series| &series.points)
        .map(|&(_, value)| value)
        .sum();
    assert_eq!(sum, cpu_total as f64);
    let cold = Querier::new(store.head.clone(), store.storage.clone());
    let started = Instant::now();
    runtime
        .block_on(cold.select_series_range(&params, START_MS, end_ms, HOUR_MS, &group_by, Aggregation::Sum, &[]))
        .unwrap();
    eprintln!(
        "select_series 7d cold (fresh querier, OS page cache warm): {:?}",
        started.elapsed()
    );

    let mut group = c.benchmark_group("series");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("select_series_7d_10_services_1_per_min_step_1h_warm", |b| {
        b.iter(|| black_box(select()))
    });
    group.finish();
}

/// The `tools/pushbench` load in process: 100 services × the gotarget CPU, allocs, goroutine,
/// mutex and block profiles, each pushed again and again as the same bytes (as pushbench
/// re-stamps them), one flush.
fn pushbench_bytes(runtime: &tokio::runtime::Runtime) {
    let store = Store::new(runtime);
    let tenant = Tenant::parse("pushbench").unwrap();
    let files = [
        "gotarget__cpu_5s.pb.gz",
        "gotarget__allocs_t1.pb.gz",
        "gotarget__goroutine.pb.gz",
        "gotarget__mutex_t1.pb.gz",
        "gotarget__block_t1.pb.gz",
    ];
    let decoded: Vec<(Bytes, Profile)> = files
        .iter()
        .map(|name| {
            let raw = corpus_file(name);
            let profile = pyrite::pprof::decode(&raw, &DecodeLimits::default()).unwrap();
            (raw, profile)
        })
        .collect();
    const ROUNDS: i64 = 20;
    let mut pushed = 0u64;
    let mut profiles = 0u64;
    runtime.block_on(async {
        for round in 0..ROUNDS {
            for service in 0..100 {
                for (raw, profile) in &decoded {
                    let labels = Labels::new([
                        ("service_name".to_string(), format!("pushbench-{service:03}")),
                        ("__delta__".to_string(), "false".to_string()),
                    ])
                    .unwrap();
                    let at = START_MS + round * 15_000 + service;
                    store
                        .ingester
                        .push_scraped(&tenant, labels, raw.clone(), profile, None, at)
                        .await
                        .unwrap();
                    pushed += raw.len() as u64;
                    profiles += 1;
                }
            }
        }
        store.head.flush().await.unwrap();
    });
    let stored = bucket_bytes(&store);
    eprintln!(
        "pushbench load: {profiles} profiles, {pushed} bytes gzipped pushed, {stored} bytes in the bucket \
         ({} B a profile, {:.3}× the gzipped input)",
        stored / profiles,
        stored as f64 / pushed as f64
    );
}

/// Every corpus CPU profile once (each distinct: the least a block can share), one flush.
fn corpus_bytes(runtime: &tokio::runtime::Runtime, files: &[Bytes]) {
    let store = Store::new(runtime);
    let tenant = Tenant::parse("corpus").unwrap();
    let labels = Labels::new([("service_name".to_string(), "corpus".to_string())]).unwrap();
    runtime.block_on(async {
        for (index, raw) in files.iter().enumerate() {
            store
                .ingester
                .push_pprof(
                    &tenant,
                    labels.clone(),
                    raw.clone(),
                    Some(START_MS + index as i64 * 1000),
                )
                .await
                .unwrap();
        }
        store.head.flush().await.unwrap();
    });
    let pushed: u64 = files.iter().map(|raw| raw.len() as u64).sum();
    let stored = bucket_bytes(&store);
    eprintln!(
        "corpus CPU profiles: {} profiles, {pushed} bytes pushed, {stored} bytes in the bucket ({:.3}× the input)",
        files.len(),
        stored as f64 / pushed as f64
    );
}

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime, fields 14 and 15 of stat(5), in clock ticks (100 a second on Linux).
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

fn ingest(c: &mut Criterion) {
    if !wanted("ingest") {
        return;
    }
    // One core's worth of push work: pushes on a current-thread runtime (the WAL writer has
    // its own thread, as in the server).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let files = corpus_cpu_profiles();
    pushbench_bytes(&runtime);
    corpus_bytes(&runtime, &files);
    let store = Store::new(&runtime);
    let tenant = Tenant::parse("ingest").unwrap();
    let labels = Labels::new([("service_name".to_string(), "ingest".to_string())]).unwrap();
    let total: u64 = files.iter().map(|raw| raw.len() as u64).sum();
    let mut round = 0i64;
    // Every corpus CPU profile pushed at once, acknowledged (fsynced; group commit).
    let mut push_all = || {
        round += 1;
        runtime.block_on(async {
            let pushes = files.iter().enumerate().map(|(index, raw)| {
                store.ingester.push_pprof(
                    &tenant,
                    labels.clone(),
                    raw.clone(),
                    Some(START_MS + round * 60_000 + index as i64),
                )
            });
            for pushed in futures::future::join_all(pushes).await {
                pushed.unwrap();
            }
        })
    };
    let flush_when_large = |store: &Store| {
        if store.head.live_bytes() > 32 << 20 {
            runtime.block_on(store.head.flush()).unwrap();
        }
    };
    // Bytes per CPU-second over a few seconds, the figure the target names ("per core").
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        flush_when_large(&store);
        push_all();
        rounds += 1;
    }
    let cpu = cpu_seconds() - cpu_before;
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "ingest: {rounds} rounds of {} corpus CPU profiles ({total} bytes gzipped): {:.1} MB/s wall, \
         {:.1} MB per CPU-second (process CPU {cpu:.2} s in {wall:.2} s, flushes included)",
        files.len(),
        (rounds * total) as f64 / wall / 1e6,
        (rounds * total) as f64 / cpu / 1e6
    );

    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(total));
    group.bench_function("corpus_cpu_profiles_decode_split_append_wal", |b| {
        b.iter_batched(|| flush_when_large(&store), |()| push_all(), BatchSize::PerIteration)
    });
    group.finish();
}

criterion_group!(benches, series, ingest);
criterion_main!(benches);
