//! Criterion benchmarks of the read path on profiles this benchmark generates (issue 8):
//! flame graphs of one profile of 1 M and 3 M unique stacks (depths 10–40 over a vocabulary
//! of 50,000 function names) at `max_nodes` 8,192 and at a large cut, the SVG of the 3 M
//! profile (with its peak memory), and a 7-day flame graph (168 hourly blocks, 10 services,
//! one profile a minute) with cold and warm caches.
//!
//! Run: `cargo bench --bench merge` (`PYRITE_MERGE_BENCH=1m,svg,7d` picks parts;
//! `PYRITE_MERGE_BENCH_QUICK=1` stops after the CPU seconds of `max_nodes` 8,192). Besides the
//! criterion medians it prints the CPU seconds of one query and the peak memory of the query
//! and of the SVG, and writes each generated profile as gzipped pprof to
//! `target/merge-bench/` so `go tool pprof -proto` can be timed on the very same input.

mod common;

use common::Store;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;
use pyrite::block::{self, Partition};
use pyrite::model::{Labels, ProfileType, Selector, Tenant};
use pyrite::pprof::DecodeLimits;
use pyrite::proto::google::v1 as pprof;
use pyrite::query::{Querier, SelectParams};
use pyrite::render::{self, SvgOptions};

const AT_MS: i64 = 1_700_000_000_000;
const VOCABULARY: u64 = 50_000;
const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn wanted(part: &str) -> bool {
    std::env::var("PYRITE_MERGE_BENCH").map_or(true, |parts| parts.split(',').any(|p| p == part))
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % n
    }
}

/// Functions, one location each, named from a 50,000-word vocabulary.
fn symbols_profile() -> pprof::Profile {
    let mut string_table = vec![String::new(), "cpu".into(), "nanoseconds".into()];
    string_table.extend(
        (0..VOCABULARY).map(|i| format!("github.com/example/service/pkg{}.(*T{}).Method{}", i % 97, i % 1013, i)),
    );
    pprof::Profile {
        sample_type: vec![pprof::ValueType { r#type: 1, unit: 2 }],
        period_type: Some(pprof::ValueType { r#type: 1, unit: 2 }),
        period: 10_000_000,
        function: (1..=VOCABULARY)
            .map(|id| pprof::Function {
                id,
                name: 2 + id as i64,
                system_name: 2 + id as i64,
                ..Default::default()
            })
            .collect(),
        location: (1..=VOCABULARY)
            .map(|id| pprof::Location {
                id,
                address: 0x40_0000 + 16 * id,
                line: vec![pprof::Line {
                    function_id: id,
                    line: 1 + (id % 300) as i64,
                    column: 0,
                }],
                ..Default::default()
            })
            .collect(),
        string_table,
        time_nanos: AT_MS * 1_000_000,
        duration_nanos: 10_000_000_000,
        ..Default::default()
    }
}

/// One profile of `stacks` unique stacks, depths 10–40: each stack shares a prefix with an
/// earlier one and adds a few frames (now and then it branches higher up), the shape of a
/// large service's CPU profile: about 3 stack-tree nodes per stack, so 3 M stacks make the
/// ~9 M nodes of the case. Returns its partition (one series) and the number of distinct
/// stack prefixes (tree nodes); writes the gzipped pprof to `pprof_path` unless it exists.
fn generate(stacks: usize, pprof_path: &Path) -> (Partition, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ stacks as u64);
    let profile = symbols_profile();
    let mut partition = Partition::default();
    let symbols = partition.symbols.add_profile(&profile);
    let labels = Labels::new([("service_name".to_string(), "large".to_string())]).unwrap();
    let cpu = ProfileType::parse(CPU).unwrap();
    let series = partition.series_index(&labels, &cpu);
    let mut pprof_out = (!pprof_path.exists()).then(|| {
        std::fs::create_dir_all(pprof_path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(pprof_path.with_extension("partial")).unwrap();
        let mut gzip = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast());
        gzip.write_all(&profile.encode_to_vec()).unwrap();
        gzip
    });
    // The generated tree: parent, location and depth per node; node 0 is the root.
    let (mut parent, mut location, mut depth) = (vec![0u32], vec![0u32], vec![0u8]);
    let mut leaves: Vec<u32> = Vec::with_capacity(stacks);
    let mut frames: Vec<u64> = Vec::with_capacity(64);
    let mut sample = Vec::new();
    for _ in 0..stacks {
        let mut length = 10 + rng.below(31) as u8;
        let mut node = 0u32;
        if !leaves.is_empty() {
            let from = leaves[rng.below(leaves.len() as u64) as usize];
            let at = depth[from as usize];
            // Mostly a sibling of a recent shape (a few frames off an earlier stack, about as
            // deep); one stack in 25 branches anywhere above with a fresh depth.
            let keep = if rng.below(25) == 0 {
                rng.below(u64::from(at.min(length))) as u8
            } else {
                length = (i32::from(at) + rng.below(5) as i32 - 2).clamp(10, 40) as u8;
                at.min(length).saturating_sub(1 + rng.below(3) as u8)
            };
            node = from;
            while depth[node as usize] > keep {
                node = parent[node as usize];
            }
        }
        while depth[node as usize] < length {
            parent.push(node);
            location.push(1 + rng.below(VOCABULARY) as u32);
            depth.push(depth[node as usize] + 1);
            node = (parent.len() - 1) as u32;
        }
        leaves.push(node);
        frames.clear();
        let mut at = node;
        while at != 0 {
            frames.push(u64::from(location[at as usize]));
            at = parent[at as usize];
        }
        let value = 10_000_000 * (1 + rng.below(20) as i64);
        let stack = partition.symbols.add_stack(&symbols, &frames);
        partition.push_row(series, AT_MS, stack, value);
        if let Some(out) = pprof_out.as_mut() {
            let s = pprof::Sample {
                location_id: frames.clone(),
                value: vec![value],
                label: Vec::new(),
            };
            sample.clear();
            // Profile.sample is field 2, length-delimited: samples appended one by one.
            sample.push(0x12);
            s.encode_length_delimited(&mut sample).unwrap();
            out.write_all(&sample).unwrap();
        }
    }
    if let Some(out) = pprof_out {
        out.finish().unwrap().flush().unwrap();
        std::fs::rename(pprof_path.with_extension("partial"), pprof_path).unwrap();
    }
    let nodes = partition.symbols.stack_count() - 1;
    (partition, nodes)
}

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/merge-bench")
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 a second).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Peak resident memory `work` adds above what the process held before it, in MiB (resets
/// the kernel's high-water mark first: `clear_refs` 5).
fn peak_mib<T>(work: impl FnOnce() -> T) -> (T, f64) {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    let out = work();
    let peak = status_kib("VmHWM:");
    (out, peak.saturating_sub(before) as f64 / 1024.0)
}

fn report_cpu(label: &str, runs: u32, mut work: impl FnMut()) {
    work();
    let (start, wall) = (cpu_time(), std::time::Instant::now());
    for _ in 0..runs {
        work();
    }
    let cpu = (cpu_time() - start).as_secs_f64() / f64::from(runs);
    let wall = wall.elapsed().as_secs_f64() / f64::from(runs);
    eprintln!("{label}: {cpu:.3} CPU-s, {wall:.3} s wall per query ({runs} runs)");
}

fn large_profiles(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tenant = Tenant::parse("bench").unwrap();
    let params = SelectParams {
        tenant: tenant.clone(),
        profile_type: ProfileType::parse(CPU).unwrap(),
        selector: Selector::parse("{}").unwrap(),
        from_ms: AT_MS,
        until_ms: AT_MS + 1,
    };
    for (name, stacks) in [("1m", 1_000_000usize), ("3m", 3_000_000)] {
        if !(wanted(name) || name == "3m" && wanted("svg")) {
            continue;
        }
        let store = Store::new(&runtime);
        let (nodes, rows) = {
            let (partition, nodes) = generate(stacks, &bench_dir().join(format!("{name}_stacks_v2.pb.gz")));
            let rows = partition.sample_count();
            runtime
                .block_on(block::write(
                    &store.storage,
                    &tenant,
                    AT_MS - AT_MS % 3_600_000,
                    3_600_000,
                    &partition,
                ))
                .unwrap();
            (nodes, rows)
        };
        eprintln!("{name}: {rows} unique stacks, {nodes} stack-tree nodes, in one block");
        let querier = Querier::new(store.head.clone(), store.storage.clone());
        let flamegraph = |max_nodes: usize| {
            let tree = runtime
                .block_on(querier.select_merge_truncated(&params, max_nodes))
                .unwrap();
            render::flamegraph(&tree, Some(max_nodes))
        };
        // Loads and caches the block's symbols: the figures below are warm queries.
        let (graph, query_mib) = peak_mib(|| flamegraph(8192));
        eprintln!(
            "{name}: flame graph of {} levels, first (cold) query peak +{query_mib:.0} MiB",
            graph.levels.len()
        );
        if wanted(name) {
            report_cpu(&format!("{name} max_nodes 8192"), 3, || {
                black_box(flamegraph(8192));
            });
            if std::env::var_os("PYRITE_MERGE_BENCH_QUICK").is_some() {
                // CPU seconds of the small cut only (for a profiler run).
                continue;
            }
            report_cpu(&format!("{name} max_nodes 1048576"), 1, || {
                black_box(flamegraph(1 << 20));
            });
            let mut group = c.benchmark_group(format!("merge_{name}_stacks"));
            group.sample_size(10).measurement_time(Duration::from_secs(20));
            group.bench_function("flamegraph_max_nodes_8192", |b| b.iter(|| black_box(flamegraph(8192))));
            group.bench_function("flamegraph_max_nodes_1048576", |b| {
                b.iter(|| black_box(flamegraph(1 << 20)))
            });
            group.finish();
        }
        if name == "3m" && wanted("svg") {
            let options = SvgOptions {
                title: "3 M stacks".into(),
                subtitle: None,
                profile_type: params.profile_type.clone(),
                max_nodes: Some(8192),
            };
            let svg = || {
                let tree = runtime.block_on(querier.select_merge_truncated(&params, 8192)).unwrap();
                render::svg(&tree, &options).unwrap()
            };
            let (_, graph_mib) = peak_mib(|| flamegraph(8192));
            let (bytes, svg_mib) = peak_mib(svg);
            eprintln!(
                "3m: warm flame graph query peak +{graph_mib:.0} MiB; SVG ({} bytes) peak +{svg_mib:.0} MiB",
                bytes.len()
            );
            let mut group = c.benchmark_group("svg_3m_stacks");
            group.sample_size(10).measurement_time(Duration::from_secs(20));
            group.bench_function("max_nodes_8192", |b| b.iter(|| black_box(svg())));
            group.finish();
        }
    }
}

/// 7 days of hourly blocks, 10 services, one profile a minute, each profile the stacks of the
/// corpus's 5-second CPU profile of the Go target: a week's flame graph over every service,
/// with a fresh querier (cold caches) and with one that ran it before (warm).
fn seven_days(c: &mut Criterion) {
    if !wanted("7d") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = Store::new(&runtime);
    let tenant = Tenant::parse("bench").unwrap();
    let raw =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/files/gotarget__cpu_5s.pb.gz"))
            .unwrap();
    let profile = pyrite::pprof::decode(&raw, &DecodeLimits::default()).unwrap();
    let cpu = ProfileType::parse(CPU).unwrap();
    let column = profile
        .sample_type
        .iter()
        .position(|t| profile.string_table[t.r#type as usize] == "cpu")
        .unwrap();
    const HOURS: i64 = 168;
    let start = AT_MS - AT_MS % 3_600_000 - HOURS * 3_600_000;
    for hour in 0..HOURS {
        let mut partition = Partition::default();
        let symbols = partition.symbols.add_profile(&profile);
        let stacks: Vec<(u32, i64)> = profile
            .sample
            .iter()
            .filter(|sample| sample.value[column] != 0)
            .map(|sample| {
                (
                    partition.symbols.add_stack(&symbols, &sample.location_id),
                    sample.value[column],
                )
            })
            .collect();
        for service in 0..10 {
            let labels = Labels::new([("service_name".to_string(), format!("service-{service}"))]).unwrap();
            let series = partition.series_index(&labels, &cpu);
            for minute in 0..60 {
                let at = start + hour * 3_600_000 + minute * 60_000;
                for &(stack, value) in &stacks {
                    partition.push_row(series, at, stack, value);
                }
            }
        }
        runtime
            .block_on(block::write(
                &store.storage,
                &tenant,
                start + hour * 3_600_000,
                3_600_000,
                &partition,
            ))
            .unwrap();
    }
    let params = SelectParams {
        tenant,
        profile_type: cpu,
        selector: Selector::parse("{}").unwrap(),
        from_ms: start,
        until_ms: start + HOURS * 3_600_000,
    };
    let query = |querier: &Querier| {
        let tree = runtime.block_on(querier.select_merge_truncated(&params, 8192)).unwrap();
        render::flamegraph(&tree, Some(8192))
    };
    let warm = Querier::new(store.head.clone(), store.storage.clone());
    let total = query(&warm).levels[0].values[1];
    eprintln!("7d: {HOURS} blocks, 100,800 profiles, total {total}");
    let mut group = c.benchmark_group("seven_days_10_services");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("flamegraph_cold", |b| {
        b.iter(|| black_box(query(&Querier::new(store.head.clone(), store.storage.clone()))))
    });
    group.bench_function("flamegraph_warm", |b| b.iter(|| black_box(query(&warm))));
    group.finish();
}

criterion_group!(benches, large_profiles, seven_days);
criterion_main!(benches);
