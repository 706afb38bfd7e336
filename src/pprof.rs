//! Owns the pprof protobuf: decoding (gzip or raw) under explicit [`DecodeLimits`], validation
//! of every cross-reference, and encoding. Everything downstream may assume a decoded
//! [`Profile`] is internally consistent.
//!
//! Decoding is modelled on Go's `github.com/google/pprof/profile` reader, the reference every
//! profiler is tested against: strings that are not valid UTF-8 are read (lossily) instead of
//! refused, function, location and mapping id 0 are reserved, and a sample must carry one value
//! per sample type. It is stricter than Go in two places: a location naming a mapping id that
//! does not exist (Go silently drops the reference) and a profile without sample types (Go
//! accepts one without samples, but there is nothing in it to store) are refused.

mod validate;
mod wire;

use std::io::Write;

use flate2::Compression;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use prost::Message;

pub use crate::proto::google::v1::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
pub use validate::validate;

/// Upper bounds on what one profile may contain. Every bound is checked while reading, before
/// the structure it limits is allocated: each top-level entry's length prefix is checked
/// before its body is read (a sample against what `max_locations_per_sample` and
/// `max_labels_per_sample` allow, a string against `max_string_length`), its repeated fields
/// are counted before it is decoded, and gzip is decompressed as the entries are read, never
/// into one buffer. Memory while decoding one profile is at most `max_decoded_bytes` plus one
/// entry: a 58 KB gzipped profile claiming one sample of 60 M location ids costs a few KB.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Size of the protobuf after gunzip (or of the raw protobuf).
    pub max_decompressed_bytes: usize,
    /// Estimated in-memory size of the decoded profile: each entry's struct size plus 8 bytes
    /// per location id (after truncation to `max_stack_depth`) and value, its labels and lines,
    /// and string lengths. Varint ids take 1–2 bytes on the wire and 8 decoded, so this, not
    /// `max_decompressed_bytes`, bounds the memory a profile costs.
    pub max_decoded_bytes: usize,
    /// The sum of `max_decoded_bytes`' estimate over all profiles of one push.v1 request, which
    /// are all decoded before any is stored (so a request is stored or refused whole).
    pub max_request_decoded_bytes: usize,
    pub max_samples: usize,
    pub max_strings: usize,
    pub max_locations: usize,
    pub max_functions: usize,
    pub max_mappings: usize,
    /// Deeper stacks are not refused but truncated to this many frames, keeping the frames
    /// nearest the root: one runaway recursion should not cost the whole profile, totals stay
    /// exact, and the kept prefix still merges with the other stacks of a flame graph (keeping
    /// the leaf end instead would grow a spurious root for every truncated stack). Truncation
    /// happens as each sample is read, so the location ids it drops are not checked to exist.
    pub max_stack_depth: usize,
    /// Hard cap on the location ids of one sample: a sample with more is refused (400) before
    /// its body is read; between `max_stack_depth` and this, it is truncated.
    pub max_locations_per_sample: usize,
    /// Labels of one sample; a sample with more is refused.
    pub max_labels_per_sample: usize,
    /// Length in bytes of one string of the string table (after lossy UTF-8 conversion), and of
    /// one frame name of a folded profile.
    pub max_string_length: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 64 << 20,
            max_decoded_bytes: 256 << 20,
            max_request_decoded_bytes: 512 << 20,
            max_samples: 1_000_000,
            max_strings: 1_000_000,
            max_locations: 1_000_000,
            max_functions: 1_000_000,
            max_mappings: 10_000,
            max_stack_depth: 4096,
            max_locations_per_sample: 65_536,
            max_labels_per_sample: 256,
            max_string_length: 64 << 10,
        }
    }
}

impl DecodeLimits {
    /// These limits with at most `bytes` decompressed and decoded: a decode short enough to run
    /// where it arrived, the caller trying again under the full limits when it
    /// [is over size](DecodeError::is_over_size).
    pub fn capped(&self, bytes: usize) -> Self {
        Self {
            max_decompressed_bytes: self.max_decompressed_bytes.min(bytes),
            max_decoded_bytes: self.max_decoded_bytes.min(bytes),
            ..self.clone()
        }
    }
}

/// Why a profile was refused. Messages name the offending element so a client can fix it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("profile is empty")]
    Empty,
    #[error("decompressing gzip: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("profile is larger than {limit} bytes once decompressed")]
    TooLarge { limit: usize },
    #[error("not a pprof protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// `count` is where reading stopped (the limit + 1) when decoding, the exact count when
    /// validating a decoded profile.
    #[error("profile has {count} or more {what}, more than the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error(
        "sample {sample} is {len} bytes long, more than a sample within max_locations_per_sample \
         ({max_locations_per_sample}) and max_labels_per_sample ({max_labels_per_sample}) can take \
         ({limit} bytes)"
    )]
    SampleTooLarge {
        sample: usize,
        len: usize,
        limit: usize,
        max_locations_per_sample: usize,
        max_labels_per_sample: usize,
    },
    #[error("sample {sample} has {count} location ids, more than max_locations_per_sample ({limit})")]
    SampleTooDeep { sample: usize, count: usize, limit: usize },
    #[error("sample {sample} has {count} labels, more than max_labels_per_sample ({limit})")]
    TooManyLabels { sample: usize, count: usize, limit: usize },
    #[error("a {what} entry is {len} bytes long, more than the limit of {limit}")]
    EntryTooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("profile would take more than max_decoded_bytes ({limit}) once decoded")]
    DecodedTooLarge { limit: usize },
    #[error("not a pprof protobuf: malformed field")]
    Malformed,
    #[error("string {index} is {len} bytes long, more than the limit of {limit}")]
    StringTooLong { index: usize, len: usize, limit: usize },
    #[error("string table is empty (it must start with the empty string)")]
    EmptyStringTable,
    #[error("string table must start with the empty string, found {0:?}")]
    FirstStringNotEmpty(String),
    #[error("{context}: string index {index} out of range (table has {len} strings)")]
    StringIndex { context: String, index: i64, len: usize },
    #[error("profile has no sample types")]
    NoSampleTypes,
    #[error("{kind} {position} has id 0, which is reserved")]
    ZeroId { kind: &'static str, position: usize },
    #[error("more than one {kind} has id {id}")]
    DuplicateId { kind: &'static str, id: u64 },
    #[error("sample {sample} references location id {id} that does not exist")]
    MissingLocation { sample: usize, id: u64 },
    #[error("location {location} references mapping id {id} that does not exist")]
    MissingMapping { location: u64, id: u64 },
    #[error("location {location} line {line} references function id {id} that does not exist")]
    MissingFunction { location: u64, line: usize, id: u64 },
    #[error("sample {sample} has {values} values but the profile has {types} sample types")]
    ValueCount { sample: usize, values: usize, types: usize },
}

impl DecodeError {
    /// Over the decompressed or decoded size: the one refusal a larger limit can change.
    pub fn is_over_size(&self) -> bool {
        matches!(self, Self::TooLarge { .. } | Self::DecodedTooLarge { .. })
    }
}

impl crate::error::Classify for DecodeError {
    /// Every decode failure is the sender's: the same bytes never decode.
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Client
    }
}

/// Whether `bytes` start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decodes a pprof profile, gzip-compressed (sniffed by magic number, not trusted from any
/// header) or raw, validates it and truncates over-deep stacks, within `limits` (see
/// [`DecodeLimits`]: every bound is checked before the memory it limits is spent).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Profile, DecodeError> {
    let raw = if is_gzip(bytes) {
        // All members, as Go's reader does; decompressed as the entries are read.
        // A buffer of a few times the compressed size (profiles compress 3-10x), so a small push
        // does not set up 64 KiB it never fills.
        let capacity = bytes.len().saturating_mul(4).clamp(8 << 10, 64 << 10);
        let mut input = std::io::BufReader::with_capacity(capacity, MultiGzDecoder::new(bytes));
        wire::decode_bounded(&mut input, limits)?
    } else if bytes.len() > limits.max_decompressed_bytes {
        return Err(DecodeError::TooLarge {
            limit: limits.max_decompressed_bytes,
        });
    } else {
        wire::decode_bounded(&mut &bytes[..], limits)?
    };
    let profile = raw.into_profile();
    validate(&profile, limits)?;
    Ok(profile)
}

/// Frames per unit of [`sample_weight`]: Go's profilers record at most 64 frames a stack, so a
/// typical sample still weighs 1.
pub const FRAMES_PER_WEIGHT: usize = 64;

/// What a profile's samples weigh against a tenant's `ingestion_rate`: each sample one per
/// started [`FRAMES_PER_WEIGHT`] frames of its stack (at least 1), so a 4096-frame sample
/// (the default `max_stack_depth`) counts 64, not 1 — its cost to store and query grows
/// with its depth.
pub fn sample_weight(profile: &Profile) -> usize {
    profile
        .sample
        .iter()
        .map(|sample| sample.location_id.len().div_ceil(FRAMES_PER_WEIGHT).max(1))
        .sum()
}

/// Estimated in-memory size of a decoded profile, as [`DecodeLimits::max_decoded_bytes`]
/// counts it.
pub fn decoded_size(profile: &Profile) -> usize {
    use std::mem::size_of;
    size_of::<Profile>()
        + profile
            .sample
            .iter()
            .map(|s| {
                size_of::<Sample>() + 8 * (s.location_id.len() + s.value.len()) + size_of::<Label>() * s.label.len()
            })
            .sum::<usize>()
        + size_of::<Mapping>() * profile.mapping.len()
        + profile
            .location
            .iter()
            .map(|l| size_of::<Location>() + size_of::<Line>() * l.line.len())
            .sum::<usize>()
        + size_of::<Function>() * profile.function.len()
        + profile
            .string_table
            .iter()
            .map(|s| size_of::<String>() + s.len())
            .sum::<usize>()
        + size_of::<ValueType>() * (profile.sample_type.len() + usize::from(profile.period_type.is_some()))
        + 8 * profile.comment.len()
}

/// Encodes a profile as raw protobuf.
pub fn encode(profile: &Profile) -> Vec<u8> {
    profile.encode_to_vec()
}

/// Encodes a profile as gzip-compressed protobuf, the form profilers usually send.
pub fn encode_gzip(profile: &Profile) -> Vec<u8> {
    let raw = encode(profile);
    let mut encoder = GzEncoder::new(Vec::with_capacity(raw.len() / 4), Compression::default());
    encoder.write_all(&raw).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Each sample type of a validated profile as `(type, unit, total of its values)`.
pub fn sample_type_totals(profile: &Profile) -> Vec<(String, String, i64)> {
    let string = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| profile.string_table.get(i))
            .cloned()
            .unwrap_or_default()
    };
    profile
        .sample_type
        .iter()
        .enumerate()
        .map(|(i, value_type)| {
            let total = profile
                .sample
                .iter()
                .filter_map(|sample| sample.value.get(i))
                .fold(0i64, |sum, &value| sum.saturating_add(value));
            (string(value_type.r#type), string(value_type.unit), total)
        })
        .collect()
}

#[cfg(test)]
mod tests;
