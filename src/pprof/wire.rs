//! The wire-level half of decoding: a mirror of `Profile` that tolerates invalid UTF-8, and a
//! pre-scan that counts top-level entries before anything is allocated for them.

use super::{Function, Location, Mapping, Profile, Sample, ValueType};

/// `google.v1.Profile` with `string_table` read as bytes: prost refuses invalid UTF-8 in a
/// `string` field, but Go's reader, and so every profiler tested against it, accepts it.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RawProfile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    string_table: Vec<Vec<u8>>,
    #[prost(int64, tag = "7")]
    drop_frames: i64,
    #[prost(int64, tag = "8")]
    keep_frames: i64,
    #[prost(int64, tag = "9")]
    time_nanos: i64,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
    #[prost(int64, repeated, tag = "13")]
    comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    default_sample_type: i64,
    #[prost(int64, tag = "15")]
    doc_url: i64,
}

impl RawProfile {
    pub(super) fn into_profile(self) -> Profile {
        let string_table = self
            .string_table
            .into_iter()
            .map(|bytes| {
                String::from_utf8(bytes).unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
            })
            .collect();
        Profile {
            sample_type: self.sample_type,
            sample: self.sample,
            mapping: self.mapping,
            location: self.location,
            function: self.function,
            string_table,
            drop_frames: self.drop_frames,
            keep_frames: self.keep_frames,
            time_nanos: self.time_nanos,
            duration_nanos: self.duration_nanos,
            period_type: self.period_type,
            period: self.period,
            comment: self.comment,
            default_sample_type: self.default_sample_type,
            doc_url: self.doc_url,
        }
    }
}

/// How many entries each limited top-level table has.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub samples: usize,
    pub mappings: usize,
    pub locations: usize,
    pub functions: usize,
    pub strings: usize,
}

/// Counts the top-level entries of an encoded profile without decoding them, so a profile of a
/// million empty samples (2 bytes each on the wire, ~70 once decoded) is refused cheaply.
/// Stops at the first malformed field: prost then reports the error precisely, and the counts
/// are checked again on the decoded profile.
pub(super) fn count_top_level(mut buf: &[u8]) -> Counts {
    let mut counts = Counts::default();
    while let Some(key) = read_varint(&mut buf) {
        let skip = match key & 7 {
            0 => match read_varint(&mut buf) {
                Some(_) => 0,
                None => break,
            },
            1 => 8,
            2 => match read_varint(&mut buf) {
                Some(len) => len,
                None => break,
            },
            5 => 4,
            _ => break, // groups are obsolete, and nothing else is valid
        };
        let Some(rest) = usize::try_from(skip).ok().and_then(|skip| buf.get(skip..)) else {
            break;
        };
        buf = rest;
        if key & 7 == 2 {
            match key >> 3 {
                2 => counts.samples += 1,
                3 => counts.mappings += 1,
                4 => counts.locations += 1,
                5 => counts.functions += 1,
                6 => counts.strings += 1,
                _ => {}
            }
        }
    }
    counts
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}
