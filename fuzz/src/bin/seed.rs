//! Writes the seed corpora: `seed CORPUS_DIR OUT_DIR` (fuzz/seed.sh calls it with
//! `../shared/corpus` and `fuzz/seeds`), one directory per target.
//!
//! The corpus files are not copied into the repository (its licences differ; its README asks
//! to read them in place), so the seeds are made from them on each run:
//! - pprof: the small profiles (at most 8 KiB as stored) decompressed, since AFL++ mutates a raw
//!   protobuf far better than a gzip stream, plus the smallest few as stored (gzip);
//! - block: each of those profiles stored as the head stores it and encoded as a block;
//! - wal: WAL segments of records holding those profiles (one, two, and one with a torn tail);
//! - folded: the small folded files, plus a few written here;
//! - selector: selectors written here;
//! - otlp: each of those profiles as an OTLP export (one OTLP profile per sample type, as the
//!   OpenTelemetry Collector sends it), protobuf-encoded.

use std::io::Read;
use std::path::Path;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development::{self as otlp, ResourceProfiles};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use pyrite::proto::pyrite::v1::{WalRecord, WalSeries};
use pyrite::proto::types::v1::LabelPair;

const MAX_STORED_BYTES: u64 = 8 << 10;
const MAX_SEED_BYTES: usize = 24 << 10;
const GZIP_SEEDS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, corpus, out] = &args[..] else {
        eprintln!("usage: seed CORPUS_DIR OUT_DIR");
        std::process::exit(2);
    };
    let (corpus, out) = (Path::new(corpus), Path::new(out));
    for target in ["pprof", "block", "wal", "folded", "selector", "otlp"] {
        let dir = out.join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
    }

    let mut files: Vec<(u64, String, Vec<u8>)> = std::fs::read_dir(corpus.join("files"))
        .expect("reading the corpus's files/")
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.metadata().unwrap().len() <= MAX_STORED_BYTES)
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (
                entry.metadata().unwrap().len(),
                name,
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    files.sort();

    let limits = pyrite::pprof::DecodeLimits::default();
    let mut records = Vec::new();
    let mut gzip_seeds = 0;
    for (_, name, stored) in &files {
        let raw = if pyrite::pprof::is_gzip(stored) {
            if gzip_seeds < GZIP_SEEDS {
                write(out, "pprof", &format!("{name}.gz"), stored);
                gzip_seeds += 1;
            }
            let mut raw = Vec::new();
            if flate2::read::MultiGzDecoder::new(&stored[..])
                .read_to_end(&mut raw)
                .is_err()
            {
                continue;
            }
            raw
        } else {
            stored.clone()
        };
        if raw.len() > MAX_SEED_BYTES {
            continue;
        }
        write(out, "pprof", name, &raw);
        let Ok(profile) = pyrite::pprof::decode(&raw, &limits) else {
            continue;
        };
        let export = as_otlp(&profile, name).encode_to_vec();
        if export.len() <= MAX_SEED_BYTES {
            write(out, "otlp", name, &export);
        }
        let block = pyrite::block::encode(&pyrite_fuzz::store(&profile, 1_764_600_000_000)).data;
        if block.len() <= MAX_SEED_BYTES {
            write(out, "block", name, &block);
        }
        let record = WalRecord {
            tenant: "anonymous".into(),
            time_ms: 1_764_600_000_000,
            raw_profile: raw.into(),
            series: (0..profile.sample_type.len().min(2))
                .map(|column| WalSeries {
                    labels: vec![
                        pair("__name__", "process_cpu"),
                        pair("__profile_type__", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"),
                        pair("service_name", name),
                    ],
                    profile_type: "process_cpu:cpu:nanoseconds:cpu:nanoseconds".into(),
                    value_index: column as u32,
                })
                .collect(),
            // Seeds log profiles as sent; the fuzzer reaches field 5 (a delta's values) by mutation.
            column_values: None,
        }
        .encode_to_vec();
        if record.len() <= MAX_SEED_BYTES {
            write(out, "wal", name, &pyrite_fuzz::segment(std::slice::from_ref(&record)));
            records.push(record);
        }
    }
    if let [first, second, ..] = &records[..] {
        write(
            out,
            "wal",
            "two-records",
            &pyrite_fuzz::segment(&[first.clone(), second.clone()]),
        );
        let mut torn = pyrite_fuzz::segment(std::slice::from_ref(first));
        torn.extend_from_slice(&pyrite_fuzz::segment(std::slice::from_ref(second))[..20]);
        write(out, "wal", "torn-tail", &torn);
    }

    for entry in std::fs::read_dir(corpus.join("folded")).expect("reading the corpus's folded/") {
        let entry = entry.unwrap();
        if entry.metadata().unwrap().len() <= MAX_STORED_BYTES {
            let name = entry.file_name().to_string_lossy().into_owned();
            write(out, "folded", &name, &std::fs::read(entry.path()).unwrap());
        }
    }
    let folded: [&[u8]; 4] = [
        b"main;work;hash 3\nmain;idle 2\nmain;work;hash 1\n",
        b"a;b 5\r\nbroken line\r\nx;y notanumber\r\n\r\n  a;b;c   7  \n",
        b"\xEF\xBB\xBFroot;\xC3\xA9t\xC3\xA9 9223372036854775807\nroot 0\n",
        b"java;Thread.run;[unknown] 12\n;; 1\na;;b 2\n",
    ];
    for (index, text) in folded.iter().enumerate() {
        write(out, "folded", &format!("written-{index}"), text);
    }

    let selectors = [
        "{}",
        "",
        "{service_name=\"checkout\"}",
        "{service_name=\"a\\\"b\", env=~\"prod|st.*\", pod!=\"x\\ny\", zone!~\"eu-\\\\d\"}",
        "{__name__=\"process_cpu\",service_name!=\"\",span_name=~\".+\"}",
        "{ a = \"1\" , b != \"2\" , }",
        "{k8s_pod_name=~\"api-[a-z0-9]{5}\\\\t\", x=\"\\u00e9\"}",
        "{name=\"unterminated}",
        "{env=~\"(prod\"}",
        "{service.name=\"dots\", _x=\"\", X9=\"\\\\\"}",
    ];
    for (index, text) in selectors.iter().enumerate() {
        write(out, "selector", &format!("written-{index}"), text.as_bytes());
    }
}

/// `profile` as an OTLP export from service `service`: its tables become the shared dictionary
/// (index 0 of each table the zero entry, as OTLP requires), each sample one stack, and each
/// sample type one OTLP profile.
fn as_otlp(profile: &pyrite::pprof::Profile, service: &str) -> ExportProfilesServiceRequest {
    let index_of = |ids: &[u64], id: u64| ids.iter().position(|&known| known == id).map_or(0, |at| at as i32 + 1);
    let string = |index: i64| i32::try_from(index).unwrap_or(0);
    let mapping_ids: Vec<u64> = profile.mapping.iter().map(|mapping| mapping.id).collect();
    let function_ids: Vec<u64> = profile.function.iter().map(|function| function.id).collect();
    let location_ids: Vec<u64> = profile.location.iter().map(|location| location.id).collect();
    let mut dictionary = otlp::ProfilesDictionary {
        string_table: profile.string_table.clone(),
        mapping_table: vec![otlp::Mapping::default()],
        function_table: vec![otlp::Function::default()],
        location_table: vec![otlp::Location::default()],
        stack_table: vec![otlp::Stack::default()],
        attribute_table: vec![otlp::KeyValueAndUnit::default()],
        link_table: vec![otlp::Link::default()],
    };
    dictionary
        .mapping_table
        .extend(profile.mapping.iter().map(|mapping| otlp::Mapping {
            memory_start: mapping.memory_start,
            memory_limit: mapping.memory_limit,
            file_offset: mapping.file_offset,
            filename_strindex: string(mapping.filename),
            ..Default::default()
        }));
    dictionary
        .function_table
        .extend(profile.function.iter().map(|function| otlp::Function {
            name_strindex: string(function.name),
            system_name_strindex: string(function.system_name),
            filename_strindex: string(function.filename),
            start_line: function.start_line,
        }));
    dictionary
        .location_table
        .extend(profile.location.iter().map(|location| {
            otlp::Location {
                mapping_index: index_of(&mapping_ids, location.mapping_id),
                address: location.address,
                lines: location
                    .line
                    .iter()
                    .map(|line| otlp::Line {
                        function_index: index_of(&function_ids, line.function_id),
                        line: line.line,
                        column: line.column,
                    })
                    .collect(),
                ..Default::default()
            }
        }));
    dictionary.stack_table.extend(profile.sample.iter().map(|sample| {
        otlp::Stack {
            location_indices: sample
                .location_id
                .iter()
                .map(|&id| index_of(&location_ids, id))
                .collect(),
        }
    }));
    let value_type = |value_type: &pyrite::proto::google::v1::ValueType| otlp::ValueType {
        type_strindex: string(value_type.r#type),
        unit_strindex: string(value_type.unit),
    };
    let profiles = profile
        .sample_type
        .iter()
        .enumerate()
        .map(|(column, sample_type)| otlp::Profile {
            sample_type: Some(value_type(sample_type)),
            period_type: profile.period_type.as_ref().map(value_type),
            period: profile.period,
            time_unix_nano: u64::try_from(profile.time_nanos).unwrap_or(0),
            duration_nano: u64::try_from(profile.duration_nanos).unwrap_or(0),
            samples: profile
                .sample
                .iter()
                .enumerate()
                .map(|(stack, sample)| otlp::Sample {
                    stack_index: stack as i32 + 1,
                    values: vec![sample.value.get(column).copied().unwrap_or(0)],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
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

fn pair(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: name.into(),
        value: value.into(),
    }
}

fn write(out: &Path, target: &str, name: &str, data: &[u8]) {
    std::fs::write(out.join(target).join(name), data).unwrap();
}
