//! OTLP profiles ingest beside push.v1, on the same corpus profiles, measured in CPU seconds
//! of this process (`/proc/self/stat`), not wall time: the machine is shared. Every valid
//! corpus file is sent through `server::build`'s router (in process, `oneshot`) once as a
//! push.v1 request (its pprof as is) and once as an OTLP/HTTP export (the same profile turned
//! into OTLP here, gzipped as the collector sends it), each with its own service name, so both
//! include conversion, decoding, validation, the head append and the WAL fsync.
//! Run: `cargo bench --bench otlp` (10 rounds); under `cargo test` it runs one round.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::Request;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use pyrite::pprof::{DecodeLimits, Profile};
use pyrite::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
use pyrite::proto::types::v1::LabelPair;
use tower::ServiceExt;

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

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based, counting pid and comm), in clock ticks.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The OTLP form of a pprof: one profile per sample type over one dictionary (what the
/// collector's receivers make of a pprof).
fn to_otlp(p: &Profile, service: &str, time_nanos: u64) -> ExportProfilesServiceRequest {
    let mut dictionary = otlp::ProfilesDictionary {
        string_table: p.string_table.clone(),
        mapping_table: vec![otlp::Mapping::default()],
        location_table: vec![otlp::Location::default()],
        function_table: vec![otlp::Function::default()],
        stack_table: vec![otlp::Stack::default()],
        attribute_table: vec![otlp::KeyValueAndUnit::default()],
        link_table: vec![otlp::Link::default()],
    };
    let index = |ids: &std::collections::HashMap<u64, i32>, id: u64| ids.get(&id).copied().unwrap_or(0);
    let mut mappings = std::collections::HashMap::new();
    for m in &p.mapping {
        mappings.insert(m.id, dictionary.mapping_table.len() as i32);
        dictionary.mapping_table.push(otlp::Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename_strindex: m.filename as i32,
            attribute_indices: vec![],
        });
    }
    let mut functions = std::collections::HashMap::new();
    for f in &p.function {
        functions.insert(f.id, dictionary.function_table.len() as i32);
        dictionary.function_table.push(otlp::Function {
            name_strindex: f.name as i32,
            system_name_strindex: f.system_name as i32,
            filename_strindex: f.filename as i32,
            start_line: f.start_line,
        });
    }
    let mut locations = std::collections::HashMap::new();
    for l in &p.location {
        locations.insert(l.id, dictionary.location_table.len() as i32);
        dictionary.location_table.push(otlp::Location {
            mapping_index: index(&mappings, l.mapping_id),
            address: l.address,
            lines: l
                .line
                .iter()
                .map(|line| otlp::Line {
                    function_index: index(&functions, line.function_id),
                    line: line.line,
                    column: 0,
                })
                .collect(),
            attribute_indices: vec![],
        });
    }
    let mut stacks = Vec::with_capacity(p.sample.len());
    for s in &p.sample {
        stacks.push(dictionary.stack_table.len() as i32);
        dictionary.stack_table.push(otlp::Stack {
            location_indices: s.location_id.iter().map(|&id| index(&locations, id)).collect(),
        });
    }
    let value_type = |v: &pyrite::pprof::ValueType| otlp::ValueType {
        type_strindex: v.r#type as i32,
        unit_strindex: v.unit as i32,
    };
    let profiles = p
        .sample_type
        .iter()
        .enumerate()
        .map(|(i, sample_type)| otlp::Profile {
            sample_type: Some(value_type(sample_type)),
            period_type: p.period_type.as_ref().map(value_type),
            period: p.period,
            time_unix_nano: time_nanos,
            duration_nano: 10_000_000_000,
            samples: p
                .sample
                .iter()
                .zip(&stacks)
                .map(|(s, &stack_index)| otlp::Sample {
                    stack_index,
                    values: vec![s.value[i]],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportProfilesServiceRequest {
        resource_profiles: vec![otlp::ResourceProfiles {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_profiles: vec![otlp::ScopeProfiles {
                profiles,
                ..Default::default()
            }],
            ..Default::default()
        }],
        dictionary: Some(dictionary),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn main() {
    let rounds = if std::env::args().any(|arg| arg == "--bench") {
        10
    } else {
        1
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = pyrite::config::Config::parse("scrape_configs: []\n").unwrap();
    config.data_dir = dir.path().to_path_buf();
    let built = runtime.block_on(pyrite::server::build(&config)).unwrap();
    let now_nanos = (pyrite::now_ms() as u64 - 60_000) * 1_000_000;
    let limits = DecodeLimits::default();

    let mut push_bodies = Vec::new();
    let mut otlp_bodies = Vec::new();
    for (index, path) in corpus_files().iter().enumerate() {
        let raw = std::fs::read(path).unwrap();
        let mut profile = pyrite::pprof::decode(&raw, &limits).unwrap();
        profile.time_nanos = now_nanos as i64;
        let service = format!("bench-{index}");
        let push = PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![
                    LabelPair {
                        name: "service_name".into(),
                        value: format!("push-{service}"),
                    },
                    LabelPair {
                        name: "__delta__".into(),
                        value: "false".into(),
                    },
                ],
                samples: vec![RawSample {
                    raw_profile: pyrite::pprof::encode_gzip(&profile).into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        push_bodies.push(push.encode_to_vec());
        otlp_bodies.push(gzip(
            &to_otlp(&profile, &format!("otlp-{service}"), now_nanos).encode_to_vec(),
        ));
    }

    let run = |path: &str, content_type: &str, encoding: Option<&str>, bodies: &[Vec<u8>]| {
        let started = cpu_seconds();
        let wall = std::time::Instant::now();
        for _ in 0..rounds {
            for body in bodies {
                let mut request = Request::post(path).header("content-type", content_type);
                if let Some(encoding) = encoding {
                    request = request.header("content-encoding", encoding);
                }
                let response = runtime
                    .block_on(
                        built
                            .router
                            .clone()
                            .oneshot(request.body(Body::from(body.clone())).unwrap()),
                    )
                    .unwrap();
                assert!(response.status().is_success(), "{path}: {}", response.status());
            }
        }
        let cpu = cpu_seconds() - started;
        let bytes = (bodies.iter().map(Vec::len).sum::<usize>() * rounds) as f64;
        println!(
            "{path}: {} requests, {:.2} MB, {cpu:.2} CPU-s ({:.2} s wall): {:.2} MB/s per core, {:.2} ms CPU per request",
            bodies.len() * rounds,
            bytes / 1e6,
            wall.elapsed().as_secs_f64(),
            bytes / 1e6 / cpu.max(0.01),
            cpu * 1e3 / (bodies.len() * rounds) as f64
        );
    };
    run("/push.v1.PusherService/Push", "application/proto", None, &push_bodies);
    run(
        "/v1development/profiles",
        "application/x-protobuf",
        Some("gzip"),
        &otlp_bodies,
    );
}
