//! The fuzz targets' bodies, one function per target (`src/bin/<target>.rs` wraps each in
//! `afl::fuzz!`). Each reads input as untrusted, as Pyrite does, and asserts what must hold of
//! whatever it accepts; a panic anywhere (an assertion, an index out of range, an arithmetic
//! overflow: cargo-afl builds with overflow checks) is a crash AFL++ keeps.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pyrite::block::{self, Partition};
use pyrite::head::{Head, HeadConfig, Wal};
use pyrite::ingest::parse_folded;
use pyrite::model::{Labels, ProfileType, Selector};
use pyrite::pprof::{self, DecodeLimits, Profile};
use pyrite::storage::Storage;

/// The segment file name the WAL target writes its input as.
pub const SEGMENT: &str = "0000000000000001.wal";
/// The WAL's largest record (`MAX_RECORD_BYTES` in src/head/wal.rs): a longer frame is torn.
const MAX_RECORD_BYTES: u32 = 512 * 1024 * 1024;
/// The profile type every series of a stored profile gets here (the head takes it from the
/// client; nothing below depends on it).
const PROFILE_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
/// Time the pprof target stores a profile at (any will do).
const TIME_MS: i64 = 1_764_600_000_000;

/// `pyrite::pprof::decode` with the default limits. A profile it accepts validates, re-encodes
/// to bytes that decode to the same profile, and stores as the head stores it (symbols, one
/// series per sample type) into a partition that round-trips through a block.
pub fn pprof(data: &[u8]) {
    let limits = DecodeLimits::default();
    let Ok(profile) = pprof::decode(data, &limits) else {
        return;
    };
    pprof::validate(&profile, &limits).expect("a decoded profile validates");
    let again = pprof::decode(&pprof::encode(&profile), &limits).expect("a decoded profile, re-encoded, decodes");
    assert_eq!(again, profile, "a decoded profile, re-encoded, decodes to itself");
    let totals = pprof::sample_type_totals(&profile);
    assert_eq!(totals.len(), profile.sample_type.len());
    let partition = store(&profile, TIME_MS);
    for (index, series) in partition.series.iter().enumerate() {
        let nonzero = profile.sample.iter().filter(|sample| sample.value[index] != 0).count();
        assert_eq!(series.times.len(), nonzero, "one row per sample with a value");
    }
    block_round_trip(&partition);
}

/// `pyrite::block::decode` of a whole block object (symbols, rows, index, trailer), as a peer's
/// head arrives. A block it accepts walks (every stack of every row resolves to names),
/// re-encodes to a block that decodes to the same rows (encoding is a fixed point after one
/// round), and merges into an empty partition (the compactor's `Partition::absorb`) keeping
/// every row.
pub fn block(data: &[u8]) {
    let Ok(partition) = block::decode(data) else {
        return;
    };
    let mut names = Vec::new();
    for series in &partition.series {
        assert_eq!(series.times.len(), series.stacks.len());
        assert_eq!(series.times.len(), series.values.len());
        for &stack in &series.stacks {
            names.clear();
            partition.symbols.stack_names(stack, &mut names);
        }
    }
    block_round_trip(&partition);
    let mut merged = Partition::default();
    merged.absorb(&partition);
    assert_eq!(
        merged.sample_count(),
        partition.sample_count(),
        "a merge keeps every row"
    );
    block_round_trip(&merged);
}

/// Encodes `partition` as a block, decodes it, and checks the decoded block holds the same rows
/// and encodes to the same bytes.
fn block_round_trip(partition: &Partition) {
    let encoded = block::encode(partition).data;
    let decoded = block::decode(&encoded).expect("an encoded block decodes");
    let rows = |partition: &Partition| -> usize { partition.series.iter().map(|series| series.times.len()).sum() };
    assert_eq!(rows(&decoded), rows(partition), "an encoded block keeps every row");
    assert_eq!(
        block::encode(&decoded).data,
        encoded,
        "a decoded block re-encodes to the same bytes"
    );
}

/// The profile stored as `Head::apply` stores it: its symbols, and one series per sample type
/// holding a row for each sample with a value in that column.
pub fn store(profile: &Profile, time_ms: i64) -> Partition {
    let profile_type = ProfileType::parse(PROFILE_TYPE).expect("a valid profile type");
    let mut partition = Partition::default();
    let symbols = partition.symbols.add_profile(profile);
    let series: Vec<usize> = (0..profile.sample_type.len())
        .map(|column| {
            let labels = Labels::new([
                ("__profile_type__".to_string(), PROFILE_TYPE.to_string()),
                ("column".to_string(), column.to_string()),
                ("service_name".to_string(), "fuzz".to_string()),
            ])
            .expect("valid labels");
            partition.series_index(&labels, &profile_type)
        })
        .collect();
    for sample in &profile.sample {
        let stack = partition.symbols.add_stack(&symbols, &sample.location_id);
        let span_id = block::sample_span_id(profile, sample);
        for (column, &index) in series.iter().enumerate() {
            let value = sample.value.get(column).copied().unwrap_or(0);
            if value != 0 {
                partition.push_row_with_span(index, time_ms, stack, value, span_id);
            }
        }
    }
    partition
}

/// The WAL replay: the input is written as segment `0000000000000001.wal` of an otherwise empty
/// WAL directory and read back by `Wal::read_only`, which must account for every byte (intact
/// frames, then a torn tail) and return exactly the intact frames' payloads. Then the same frames
/// with their CRCs made right (so mutations reach the records, not only the checksums) are
/// replayed into a read-only head (`Head::open_read_only`: record decoding, pprof decoding,
/// series splitting), which may refuse a record but must not panic.
pub fn wal(data: &[u8]) {
    let dir = scratch_dir();
    let segment = dir.join(SEGMENT);
    // As this version writes segments (magic first): the scanner that tells damage from a torn
    // tail. Every byte after the magic is a record, damage between records, or the torn tail.
    let mut file = SEGMENT_MAGIC.to_vec();
    file.extend_from_slice(data);
    std::fs::write(&segment, &file).expect("writing the segment");
    let replay = Wal::read_only(dir).expect("a readable segment replays");
    let mut covered: u64 = replay.torn_bytes + replay.damaged.iter().map(|(_, length)| length).sum::<u64>();
    let mut last = 0u64;
    for record in &replay.records {
        let offset = record.position.offset as usize;
        assert!(record.position.offset >= last, "records in order");
        let length = u32::from_le_bytes(file[offset..offset + 4].try_into().unwrap()) as usize;
        assert_eq!(length, record.payload.len());
        assert_eq!(&file[offset + 12..offset + 12 + length], &record.payload[..]);
        covered += 12 + length as u64;
        last = record.position.offset + 12 + length as u64;
    }
    assert_eq!(
        covered,
        data.len() as u64,
        "every byte is a record, damage or the torn tail"
    );

    let (fixed, frames) = with_checksums(&file);
    std::fs::write(&segment, &fixed).expect("writing the segment");
    let replay = Wal::read_only(dir).expect("a readable segment replays");
    assert!(
        replay.records.len() >= frames,
        "every frame with right checksums is a record"
    );
    let storage = Storage::new(Arc::new(object_store::memory::InMemory::new()));
    let _ = Head::open_read_only(HeadConfig::default(), storage, dir, &DecodeLimits::default());

    // Segments of earlier versions (no magic) are read too.
    std::fs::write(&segment, data).expect("writing the segment");
    let _ = Wal::read_only(dir).expect("a readable segment replays");
}

/// The magic of a segment this version writes (src/head/wal.rs).
pub const SEGMENT_MAGIC: &[u8; 8] = b"PYRWAL2\n";

/// `file` (a segment: magic, then frames `[u32 le length][u32 le crc32 of the payload][u32 le
/// crc32 of those 8 bytes][payload]`) with each complete frame's checksums set right; returns
/// the bytes and how many frames were fixed.
pub fn with_checksums(file: &[u8]) -> (Vec<u8>, usize) {
    let mut out = file.to_vec();
    let mut offset = SEGMENT_MAGIC.len();
    let mut frames = 0;
    while let Some(header) = file.get(offset..offset + 12) {
        let length = u32::from_le_bytes(header[..4].try_into().unwrap());
        if length > MAX_RECORD_BYTES {
            break;
        }
        let Some(payload) = file.get(offset + 12..offset + 12 + length as usize) else {
            break;
        };
        out[offset + 4..offset + 8].copy_from_slice(&crc32(payload).to_le_bytes());
        let header_crc = crc32(&out[offset..offset + 8]);
        out[offset + 8..offset + 12].copy_from_slice(&header_crc.to_le_bytes());
        offset += 12 + length as usize;
        frames += 1;
    }
    (out, frames)
}

/// The WAL's checksum (CRC-32, as `flate2::Crc` computes it in src/head/wal.rs).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// A WAL segment holding `records`, framed as the WAL writer frames them.
pub fn segment(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let mut header = (record.len() as u32).to_le_bytes().to_vec();
        header.extend_from_slice(&crc32(record).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&crc32(&header).to_le_bytes());
        out.extend_from_slice(record);
    }
    out
}

/// This process's own empty directory for the WAL target's segment: under
/// `$PYRITE_FUZZ_SCRATCH` (run.sh points it into the run's output and removes it), else the
/// system temp dir; in memory (/dev/shm) when there is one. Per process, since AFL++ may run
/// several.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("PYRITE_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let shm = Path::new("/dev/shm");
                if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                }
            });
        let dir = base.join(format!("pyrite-fuzz-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        dir
    })
}

/// `pyrite::ingest::parse_folded`, as `/ingest?format=folded` calls it. Whatever it accepts
/// counts every non-blank line as a stack line or an invalid one, holds one sample per distinct
/// stack whose values sum to the accepted lines' counts times the scale, and is a profile the
/// pprof decoder accepts back unchanged.
pub fn folded(data: &[u8]) {
    // A scale from the input's length, so both 1 and large ones (1e9/sampleRate) are tried.
    let scale = if data.len() % 2 == 0 { 1 } else { 10_000_000 };
    let limits = DecodeLimits::default();
    let Ok(parsed) = parse_folded(
        data,
        ("cpu", "nanoseconds"),
        Some(("cpu", "nanoseconds")),
        scale,
        &limits,
    ) else {
        return;
    };
    let profile = &parsed.profile;
    assert_eq!(parsed.stacks, profile.sample.len());
    if let Some(text) = utf8_text(data) {
        let (accepted, invalid) = count_lines(text);
        assert_eq!(parsed.invalid_lines, invalid, "invalid lines of {text:?}");
        // A line's value or the total past i64::MAX is refused, so an accepted body sums exactly.
        let expected: i128 = accepted
            .iter()
            .map(|&count| i128::from(count) * i128::from(scale))
            .sum();
        let total: i128 = profile.sample.iter().map(|sample| i128::from(sample.value[0])).sum();
        assert_eq!(total, expected, "total of the accepted lines of {text:?}");
    }
    pprof::validate(profile, &limits).expect("a folded profile validates");
    let decoded = pprof::decode(&pprof::encode(profile), &limits).expect("a folded profile decodes");
    assert_eq!(&decoded, profile, "a folded profile, encoded, decodes to itself");
}

/// The text of a UTF-8 body (with or without a BOM); None for UTF-16 and invalid bodies.
fn utf8_text(data: &[u8]) -> Option<&str> {
    if data.starts_with(&[0xFF, 0xFE]) || data.starts_with(&[0xFE, 0xFF]) {
        return None;
    }
    std::str::from_utf8(data.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(data)).ok()
}

/// The counts of the valid folded lines of `text` (`stack count`, count a non-negative integer
/// after the last space, a non-empty stack before it) and the number of the other non-blank
/// lines: the format as `/ingest?format=folded` documents it, written out independently.
fn count_lines(text: &str) -> (Vec<i64>, usize) {
    let mut accepted = Vec::new();
    let mut invalid = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let valid = line
            .rsplit_once(' ')
            .filter(|(stack, _)| !stack.trim().is_empty())
            .and_then(|(_, count)| count.parse::<i64>().ok())
            .filter(|&count| count >= 0);
        match valid {
            Some(count) => accepted.push(count),
            None => invalid += 1,
        }
    }
    (accepted, invalid)
}

/// The label selector parser (`pyrite::model::Selector::parse`, what every query's
/// `labelSelector`/`query` goes through). A selector it accepts prints (`Display`) to text that
/// parses back to the same matchers, and can be matched against labels.
pub fn selector(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(selector) = Selector::parse(text) else {
        return;
    };
    let printed = selector.to_string();
    let again = Selector::parse(&printed).unwrap_or_else(|err| panic!("{printed:?} of {text:?} parses: {err}"));
    let matchers = |selector: &Selector| -> Vec<(String, String, String)> {
        selector
            .matchers
            .iter()
            .map(|m| (m.name.clone(), format!("{:?}", m.op), m.value.clone()))
            .collect()
    };
    assert_eq!(matchers(&again), matchers(&selector), "{text:?} printed as {printed:?}");
    let labels = Labels::new(
        selector
            .matchers
            .iter()
            .filter(|m| !m.name.is_empty())
            .map(|m| (m.name.clone(), m.value.clone())),
    );
    if let Ok(labels) = labels {
        let _ = selector.matches(&labels);
    }
    let _ = selector.matches(&Labels::default());
}

/// `pyrite::ingest::otlp::decode_request` and `convert_request` with the default limits, as
/// the OTLP routes (gRPC and OTLP/HTTP protobuf) take an export. A request they accept
/// converts each profile to a pprof that the push path then decodes again; one that decodes
/// must meet everything the pprof target asserts (it is stored, logged and replayed the same).
pub fn otlp(data: &[u8]) {
    let limits = DecodeLimits::default();
    let Ok(request) = pyrite::ingest::otlp::decode_request(data, &limits) else {
        return;
    };
    let Ok(converted) = pyrite::ingest::otlp::convert_request(&request, &limits, TIME_MS * 1_000_000) else {
        return;
    };
    let profiles: usize = request
        .resource_profiles
        .iter()
        .flat_map(|resource| &resource.scope_profiles)
        .map(|scope| scope.profiles.len())
        .sum();
    assert!(
        converted.len() <= profiles,
        "no more pprofs than the request has profiles"
    );
    for profile in converted {
        pprof(&prost::Message::encode_to_vec(&profile.profile));
    }
}
