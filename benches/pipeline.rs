//! Criterion benchmarks over the shared corpus: decode, ingest (head append incl. WAL fsync),
//! merge (query over a flushed block), render (flame graph levels, SVG, pprof), compaction and
//! block listing.
//! Run: `cargo bench --bench pipeline`; figures go to BENCHMARKS.md.

mod common;

use common::Store;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pyrite::model::{Labels, ProfileType, Selector, Tenant};
use pyrite::pprof::DecodeLimits;
use pyrite::query::{Querier, SelectParams};
use pyrite::render::{self, ExportContext, ExportFormat};
use pyrite::storage::{Storage, StorageConfig};

const AT_MS: i64 = 1_700_000_000_000;
const LARGE: &str = "gpprof_large.cpu";

fn corpus_files() -> Vec<PathBuf> {
    let dir = std::env::var_os("PYRITE_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("corpus manifest");
    manifest
        .lines()
        .skip(1)
        .filter(|line| !line.contains("\tREJECTED\t"))
        .map(|line| dir.join("files").join(line.split('\t').next().unwrap()))
        .collect()
}

fn read(path: &Path) -> Bytes {
    Bytes::from(std::fs::read(path).unwrap())
}

fn decode(c: &mut Criterion) {
    let files = corpus_files();
    let all: Vec<Bytes> = files.iter().map(|p| read(p)).collect();
    let total_bytes: usize = all.iter().map(Bytes::len).sum();
    let large = read(&files.iter().find(|p| p.ends_with(LARGE)).unwrap().clone());
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(total_bytes as u64));
    group.bench_function("corpus", |b| {
        b.iter(|| {
            for raw in &all {
                black_box(pyrite::pprof::decode(raw, &limits).unwrap());
            }
        })
    });
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.bench_function("large_cpu_20k_samples", |b| {
        b.iter(|| black_box(pyrite::pprof::decode(&large, &limits).unwrap()))
    });
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let files = corpus_files();
    let large = read(files.iter().find(|p| p.ends_with(LARGE)).unwrap());
    let store = Store::new(&runtime);
    let tenant = Tenant::parse("bench").unwrap();
    let labels = Labels::new([("service_name".to_string(), "bench".to_string())]).unwrap();
    let mut group = c.benchmark_group("ingest");
    group.sample_size(20);
    group.bench_function("large_cpu_profile_with_wal_fsync", |b| {
        b.iter(|| {
            runtime
                .block_on(
                    store
                        .ingester
                        .push_pprof(&tenant, labels.clone(), large.clone(), Some(AT_MS)),
                )
                .unwrap()
        })
    });
    // 64 concurrent pushes share fsyncs (group commit).
    let small = read(files.iter().find(|p| p.ends_with("gotarget__cpu_5s.pb.gz")).unwrap());
    group.throughput(Throughput::Elements(64));
    group.bench_function("64_concurrent_small_pushes", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let pushes = (0..64).map(|_| {
                    store
                        .ingester
                        .push_pprof(&tenant, labels.clone(), small.clone(), Some(AT_MS))
                });
                for result in futures::future::join_all(pushes).await {
                    result.unwrap();
                }
            })
        })
    });
    group.finish();
}

fn merge_and_render(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let files = corpus_files();
    let store = Store::new(&runtime);
    let warm = store.querier();
    let tenant = Tenant::parse("bench").unwrap();
    let cpu_5s = read(files.iter().find(|p| p.ends_with("gotarget__cpu_5s.pb.gz")).unwrap());
    // 1,000 CPU profiles of one service, one per second: the `go tool pprof -proto` anchor.
    runtime.block_on(async {
        for second in 0..1000i64 {
            let labels = Labels::new([("service_name".to_string(), "bench".to_string())]).unwrap();
            store
                .ingester
                .push_pprof(&tenant, labels, cpu_5s.clone(), Some(AT_MS + second * 1000))
                .await
                .unwrap();
        }
        store.head.flush().await.unwrap();
    });
    let profile_type = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
    let params = SelectParams {
        tenant: tenant.clone(),
        profile_type: profile_type.clone(),
        selector: Selector::parse(r#"{service_name="bench"}"#).unwrap(),
        from_ms: AT_MS,
        until_ms: AT_MS + 1_000_000,
    };
    let mut group = c.benchmark_group("merge");
    group.sample_size(20);
    group.bench_function("1000_cpu_profiles_from_blocks", |b| {
        b.iter(|| black_box(runtime.block_on(warm.select_merge(&params)).unwrap()))
    });
    group.finish();

    let tree = runtime.block_on(warm.select_merge(&params)).unwrap();
    let context = ExportContext {
        profile_type,
        query: "{}".into(),
        from_ms: params.from_ms,
        until_ms: params.until_ms,
        max_nodes: None,
    };
    let mut group = c.benchmark_group("render");
    group.bench_function("flamegraph_levels", |b| {
        b.iter(|| black_box(render::flamegraph(&tree, None)))
    });
    group.bench_function("svg", |b| {
        b.iter(|| black_box(render::export(&tree, ExportFormat::Svg, &context).unwrap()))
    });
    group.bench_function("pprof_gzip", |b| {
        b.iter(|| black_box(render::export(&tree, ExportFormat::Pprof, &context).unwrap()))
    });
    group.bench_function("flamebearer_json", |b| {
        b.iter_batched(
            || (),
            |()| black_box(render::export(&tree, ExportFormat::Json, &context).unwrap()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// An hour of one service as the head writes it (12 flushes of 100 CPU profiles each, one block
/// per flush), merged by a query, compacted into one block, and merged again.
fn compaction(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let files = corpus_files();
    let store = Store::new(&runtime);
    let warm = store.querier();
    let tenant = Tenant::parse("bench").unwrap();
    let cpu_5s = read(files.iter().find(|p| p.ends_with("gotarget__cpu_5s.pb.gz")).unwrap());
    let hour = AT_MS - AT_MS % 3_600_000;
    runtime.block_on(async {
        for flush in 0..12i64 {
            for profile in 0..100i64 {
                let labels = Labels::new([("service_name".to_string(), "bench".to_string())]).unwrap();
                let at = hour + (flush * 100 + profile) * 3000;
                store
                    .ingester
                    .push_pprof(&tenant, labels, cpu_5s.clone(), Some(at))
                    .await
                    .unwrap();
            }
            store.head.flush().await.unwrap();
        }
    });
    let storage = store.storage.clone();
    let sources = runtime
        .block_on(pyrite::block::list(&storage, &tenant, i64::MIN, i64::MAX))
        .unwrap();
    assert_eq!(sources.len(), 12);
    let params = SelectParams {
        tenant: tenant.clone(),
        profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
        selector: Selector::parse(r#"{service_name="bench"}"#).unwrap(),
        from_ms: hour,
        until_ms: hour + 3_600_000,
    };
    let mut group = c.benchmark_group("compaction");
    group.sample_size(10);
    group.bench_function("merge_query_12_blocks", |b| {
        b.iter(|| black_box(runtime.block_on(warm.select_merge(&params)).unwrap()))
    });
    // A querier that has cached no block index or symbol table yet: what a first query pays.
    let cold_merge = || {
        let querier = Querier::new(store.head.clone(), storage.clone());
        runtime.block_on(querier.select_merge(&params)).unwrap()
    };
    group.bench_function("merge_query_12_blocks_cold", |b| b.iter(|| black_box(cold_merge())));
    group.bench_function("compact_12_blocks_of_100_cpu_profiles", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(pyrite::compactor::compact(&storage, &sources))
                    .unwrap(),
            )
        })
    });
    let compacted = runtime
        .block_on(pyrite::block::list(&storage, &tenant, i64::MIN, i64::MAX))
        .unwrap();
    assert_eq!(compacted.len(), 1);
    group.bench_function("merge_query_1_compacted_block", |b| {
        b.iter(|| black_box(runtime.block_on(warm.select_merge(&params)).unwrap()))
    });
    group.bench_function("merge_query_1_compacted_block_cold", |b| {
        b.iter(|| black_box(cold_merge()))
    });
    group.finish();
    let bytes = |metas: &[pyrite::block::BlockMeta]| metas.iter().map(|meta| meta.size_bytes).sum::<u64>();
    eprintln!(
        "compaction: {} blocks, {} bytes -> 1 block, {} bytes",
        sources.len(),
        bytes(&sources),
        bytes(&compacted)
    );
}

/// Listing the blocks of the last hour of a tenant with 30 days of hourly buckets: what a query
/// paid before it kept a catalog (a fresh one lists every bucket and reads every meta), and
/// what it pays with one (one LIST of buckets, one LIST of the overlapping bucket).
fn listing(c: &mut Criterion) {
    use pyrite::block::{Catalog, Partition};
    const HOUR: i64 = 3_600_000;
    const BUCKETS: i64 = 30 * 24;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::from_config(&StorageConfig::default(), dir.path()).unwrap();
    let tenant = Tenant::parse("history").unwrap();
    let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
    let labels = Labels::new([("service_name".to_string(), "bench".to_string())]).unwrap();
    let first = AT_MS - AT_MS % HOUR - (BUCKETS - 1) * HOUR;
    runtime.block_on(async {
        for bucket in 0..BUCKETS {
            let start = first + bucket * HOUR;
            let mut partition = Partition::default();
            partition.push(&labels, &cpu, start + 1, pyrite::symbols::ROOT_STACK, 1);
            pyrite::block::write(&storage, &tenant, start, HOUR, &partition)
                .await
                .unwrap();
        }
    });
    let last_hour = (first + (BUCKETS - 1) * HOUR, first + BUCKETS * HOUR);
    let warm = Catalog::new(storage.clone(), HOUR);
    let all = runtime.block_on(warm.list(&tenant, i64::MIN, i64::MAX)).unwrap();
    assert_eq!(all.visible.len(), BUCKETS as usize);
    let mut group = c.benchmark_group("listing");
    group.sample_size(10);
    group.bench_function("last_hour_of_720_buckets_fresh_catalog", |b| {
        b.iter(|| {
            let fresh = Catalog::new(storage.clone(), HOUR);
            black_box(runtime.block_on(fresh.list(&tenant, last_hour.0, last_hour.1)).unwrap())
        })
    });
    group.bench_function("last_hour_of_720_buckets_kept_catalog", |b| {
        b.iter(|| black_box(runtime.block_on(warm.list(&tenant, last_hour.0, last_hour.1)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, decode, ingest, merge_and_render, compaction, listing);
criterion_main!(benches);
