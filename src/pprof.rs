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

use std::io::{Read, Write};

use flate2::Compression;
use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use prost::Message;

pub use crate::proto::google::v1::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
pub use validate::validate;

/// Upper bounds on what one profile may contain. Every bound is checked before the structure it
/// limits is allocated where the wire format allows it (decompressed size, top-level counts),
/// so memory use while decoding is at most a small constant factor of `max_decompressed_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Size of the protobuf after gunzip (or of the raw protobuf).
    pub max_decompressed_bytes: usize,
    pub max_samples: usize,
    pub max_strings: usize,
    pub max_locations: usize,
    pub max_functions: usize,
    pub max_mappings: usize,
    /// Deeper stacks are not refused but truncated to this many frames, keeping the frames
    /// nearest the root: one runaway recursion should not cost the whole profile, totals stay
    /// exact, and the kept prefix still merges with the other stacks of a flame graph (keeping
    /// the leaf end instead would grow a spurious root for every truncated stack).
    pub max_stack_depth: usize,
    /// Length in bytes of one string of the string table (after lossy UTF-8 conversion).
    pub max_string_length: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 64 << 20,
            max_samples: 1_000_000,
            max_strings: 1_000_000,
            max_locations: 1_000_000,
            max_functions: 1_000_000,
            max_mappings: 10_000,
            max_stack_depth: 4096,
            max_string_length: 64 << 10,
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
    #[error("profile has {count} {what}, more than the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
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

/// Whether `bytes` start with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decodes a pprof profile, gzip-compressed (sniffed by magic number, not trusted from any
/// header) or raw, validates it and truncates over-deep stacks (see [`DecodeLimits`]).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Profile, DecodeError> {
    let decompressed;
    let raw = if is_gzip(bytes) {
        decompressed = gunzip(bytes, limits.max_decompressed_bytes)?;
        &decompressed[..]
    } else if bytes.len() > limits.max_decompressed_bytes {
        return Err(DecodeError::TooLarge {
            limit: limits.max_decompressed_bytes,
        });
    } else {
        bytes
    };
    if raw.is_empty() {
        return Err(DecodeError::Empty);
    }
    validate::check_counts(&wire::count_top_level(raw), limits)?;
    let mut profile = wire::RawProfile::decode(raw)?.into_profile();
    validate(&profile, limits)?;
    for sample in &mut profile.sample {
        let excess = sample.location_id.len().saturating_sub(limits.max_stack_depth);
        // location_id[0] is the leaf, so the root end is the tail.
        sample.location_id.drain(..excess);
    }
    Ok(profile)
}

/// Decompresses a gzip stream (all members, as Go's reader does), refusing it as soon as it
/// exceeds `limit` bytes: at most `limit + 1` bytes are ever written (the buffer's doubling may
/// reserve more address space, never touched).
fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    // A gzip member ends with its uncompressed size (mod 2^32): a hint that spares the regrowth,
    // bounded by deflate's best ratio (~1032:1) so a forged trailer cannot reserve much more.
    let trailer_size = bytes
        .last_chunk::<4>()
        .map_or(0, |size| u32::from_le_bytes(*size) as usize);
    let capacity = trailer_size
        .max(bytes.len().saturating_mul(4))
        .min(bytes.len().saturating_mul(1032))
        .min(limit.saturating_add(1));
    let mut out = Vec::with_capacity(capacity);
    MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(DecodeError::Gzip)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
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
