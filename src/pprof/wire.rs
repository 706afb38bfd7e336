//! The wire-level half of decoding: a mirror of `Profile` that tolerates invalid UTF-8, and a
//! bounded reader that frames the top-level entries one at a time from a (decompressing)
//! stream and checks every limit on an entry's length prefix and shape before the entry is
//! read or allocated.

use std::io::BufRead;
use std::mem::size_of;

use prost::Message;

use super::{DecodeError, DecodeLimits, Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

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

/// Largest top-level entry other than a sample or a string (a location with its inlined lines,
/// a function, a mapping, a value type, a packed comment list, an unknown field): far above
/// what any profiler writes (a location of 1 MiB holds ~100 000 inlined lines).
pub(super) const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Wire bytes a sample may take for its values: one varint (at most 10 bytes) per sample type,
/// for up to this many sample types (validation then requires exactly one per type).
const MAX_SAMPLE_VALUES: usize = 1024;

/// The largest encoding of a sample within `limits`: every location id and value a 10-byte
/// varint, every label four 10-byte varints, plus field keys and length prefixes.
pub(super) fn max_sample_bytes(limits: &DecodeLimits) -> usize {
    limits
        .max_locations_per_sample
        .saturating_mul(10)
        .saturating_add(limits.max_labels_per_sample.saturating_mul(48))
        .saturating_add(MAX_SAMPLE_VALUES * 10)
        .saturating_add(32)
}

/// Reads one profile from `input` (the decompressed protobuf), entry by entry. Each top-level
/// entry's key and length prefix is read first and checked against its limit (a sample against
/// [`max_sample_bytes`], a string against `max_string_length`, anything else against
/// [`MAX_ENTRY_BYTES`], the running total against `max_decompressed_bytes`); then its body is
/// read into a reused buffer, its repeated fields counted (location ids and labels per sample,
/// lines per location) and its decoded size estimated and checked against
/// `max_decoded_bytes`; only then is it decoded (by prost, merging one field at a time, which
/// protobuf defines to be the same as decoding the whole message). A sample deeper than
/// `max_stack_depth` is truncated as soon as it is decoded, so a profile of many deep samples
/// never holds their whole stacks. Memory while decoding is the decoded profile (at most
/// `max_decoded_bytes`) plus one entry (at most [`max_sample_bytes`] or [`MAX_ENTRY_BYTES`])
/// plus the reader's buffers.
pub(super) fn decode_bounded<R: BufRead>(input: &mut R, limits: &DecodeLimits) -> Result<RawProfile, DecodeError> {
    let mut profile = RawProfile::default();
    let mut reader = Reader { input, read: 0 };
    let mut entry: Vec<u8> = Vec::new();
    let mut decoded = size_of::<Profile>();
    let mut samples = 0usize;
    let mut strings = 0usize;
    let mut locations = 0usize;
    let mut functions = 0usize;
    let mut mappings = 0usize;
    loop {
        entry.clear();
        let key = match reader.varint(&mut entry)? {
            Varint::Value(key) => key,
            Varint::End if entry.is_empty() => break,
            // A key cut short or longer than 10 bytes: prost says which.
            Varint::End | Varint::Malformed => return Err(malformed(&mut profile, &entry)),
        };
        let (field, wire_type) = (key >> 3, key & 7);
        let mut scalar = 0u64;
        let len = match wire_type {
            0 => {
                match reader.varint(&mut entry)? {
                    Varint::Value(value) => scalar = value,
                    _ => return Err(malformed(&mut profile, &entry)),
                }
                0
            }
            1 => 8,
            5 => 4,
            2 => match reader.varint(&mut entry)? {
                Varint::Value(len) => usize::try_from(len).unwrap_or(usize::MAX),
                _ => return Err(malformed(&mut profile, &entry)),
            },
            // Groups are obsolete and nothing else is valid: prost names the problem.
            _ => return Err(malformed(&mut profile, &entry)),
        };
        if wire_type == 2 {
            let limit = match field {
                2 => max_sample_bytes(limits),
                6 => limits.max_string_length,
                _ => MAX_ENTRY_BYTES,
            };
            if len > limit {
                return Err(match field {
                    2 => DecodeError::SampleTooLarge {
                        sample: samples,
                        len,
                        limit,
                        max_locations_per_sample: limits.max_locations_per_sample,
                        max_labels_per_sample: limits.max_labels_per_sample,
                    },
                    6 => DecodeError::StringTooLong {
                        index: strings,
                        len,
                        limit,
                    },
                    _ => DecodeError::EntryTooLarge {
                        what: entry_name(field),
                        len,
                        limit,
                    },
                });
            }
        }
        if reader.read.saturating_add(len) > limits.max_decompressed_bytes {
            return Err(DecodeError::TooLarge {
                limit: limits.max_decompressed_bytes,
            });
        }
        if wire_type == 0 {
            // Scalars are set as prost would (last one wins, comments appended), without a
            // merge call each: a profile of millions of them stays fast.
            let value = scalar as i64;
            match field {
                7 => profile.drop_frames = value,
                8 => profile.keep_frames = value,
                9 => profile.time_nanos = value,
                10 => profile.duration_nanos = value,
                12 => profile.period = value,
                13 => {
                    decoded = decoded.saturating_add(8);
                    if decoded > limits.max_decoded_bytes {
                        return Err(DecodeError::DecodedTooLarge {
                            limit: limits.max_decoded_bytes,
                        });
                    }
                    profile.comment.push(value);
                }
                14 => profile.default_sample_type = value,
                15 => profile.doc_url = value,
                // Field 0 and out-of-range keys are invalid, fields 1-6 are not varints:
                // prost names the error. Other fields are unknown, skipped as prost does.
                0..=6 => return Err(malformed(&mut profile, &entry)),
                _ if key > u64::from(u32::MAX) || field > (1 << 29) - 1 => {
                    return Err(malformed(&mut profile, &entry));
                }
                _ => {}
            }
            continue;
        }
        let header = entry.len();
        if !reader.take(len, &mut entry)? {
            // The input ends inside this entry.
            return Err(malformed(&mut profile, &entry));
        }
        let body = &entry[header..];
        let count = |what: &'static str, count: &mut usize, limit: usize| {
            *count += 1;
            if *count > limit {
                Err(DecodeError::TooMany {
                    what,
                    count: *count,
                    limit,
                })
            } else {
                Ok(())
            }
        };
        // A sample's location ids, values and labels (in 1..=3), counted before it is decoded.
        let shape = if (field, wire_type) == (2, 2) {
            scan(body, |field| matches!(field, 1 | 2), |field| field == 3)
        } else {
            [0; 5]
        };
        let cost = match (field, wire_type) {
            (2, 2) => {
                count("samples", &mut samples, limits.max_samples)?;
                let (ids, values, labels) = (shape[1], shape[2], shape[3]);
                if ids > limits.max_locations_per_sample {
                    return Err(DecodeError::SampleTooDeep {
                        sample: samples - 1,
                        count: ids,
                        limit: limits.max_locations_per_sample,
                    });
                }
                if labels > limits.max_labels_per_sample {
                    return Err(DecodeError::TooManyLabels {
                        sample: samples - 1,
                        count: labels,
                        limit: limits.max_labels_per_sample,
                    });
                }
                size_of::<Sample>() + 8 * (ids.min(limits.max_stack_depth) + values) + size_of::<Label>() * labels
            }
            (3, 2) => {
                count("mappings", &mut mappings, limits.max_mappings)?;
                size_of::<Mapping>()
            }
            (4, 2) => {
                count("locations", &mut locations, limits.max_locations)?;
                let lines = scan(body, |_| false, |field| field == 4)[4];
                size_of::<Location>() + size_of::<Line>() * lines
            }
            (5, 2) => {
                count("functions", &mut functions, limits.max_functions)?;
                size_of::<Function>()
            }
            (6, 2) => {
                count("strings", &mut strings, limits.max_strings)?;
                size_of::<String>() + len
            }
            (1 | 11, 2) => size_of::<ValueType>(),
            // A packed list of comments (string indices).
            (13, 2) => 8 * body.iter().filter(|&&byte| byte < 0x80).count(),
            _ => 0,
        };
        decoded = decoded.saturating_add(cost);
        if decoded > limits.max_decoded_bytes {
            return Err(DecodeError::DecodedTooLarge {
                limit: limits.max_decoded_bytes,
            });
        }
        match (field, wire_type) {
            (2, 2) => match decode_sample(body, shape[1..4].try_into().expect("three counts")) {
                Some(sample) => profile.sample.push(sample),
                None => profile.merge(&entry[..])?,
            },
            _ => profile.merge(&entry[..])?,
        }
        if (field, wire_type) == (2, 2)
            && let Some(sample) = profile.sample.last_mut()
            && sample.location_id.len() > limits.max_stack_depth
        {
            // location_id[0] is the leaf, so the root end is the tail.
            let excess = sample.location_id.len() - limits.max_stack_depth;
            sample.location_id.drain(..excess);
            sample.location_id.shrink_to_fit();
        }
    }
    if reader.read == 0 {
        return Err(DecodeError::Empty);
    }
    Ok(profile)
}

/// What a top-level field holds, for error messages.
fn entry_name(field: u64) -> &'static str {
    match field {
        1 => "sample type",
        3 => "mapping",
        4 => "location",
        5 => "function",
        11 => "period type",
        13 => "comment list",
        _ => "unknown field",
    }
}

/// The error prost reports for a malformed entry (its bytes as far as they go).
fn malformed(profile: &mut RawProfile, entry: &[u8]) -> DecodeError {
    match profile.merge(entry) {
        Err(err) => DecodeError::Protobuf(err),
        Ok(()) => DecodeError::Malformed,
    }
}

/// How many elements each field (1..=4) of an encoded message has: one per occurrence, or for
/// a field that `packed` accepts, one per varint of a length-delimited occurrence; a field that
/// `message` accepts counts one per occurrence. Stops at the first malformed field (prost then
/// refuses the entry).
fn scan(mut body: &[u8], packed: impl Fn(u64) -> bool, message: impl Fn(u64) -> bool) -> [usize; 5] {
    let mut counts = [0usize; 5];
    while let Some(key) = read_varint(&mut body) {
        let (field, wire_type) = (key >> 3, key & 7);
        let slot = usize::try_from(field).ok().filter(|&field| field < counts.len());
        let skip = match wire_type {
            0 => match read_varint(&mut body) {
                Some(_) => 0,
                None => break,
            },
            1 => 8,
            2 => match read_varint(&mut body).and_then(|len| usize::try_from(len).ok()) {
                Some(len) => len,
                None => break,
            },
            5 => 4,
            _ => break,
        };
        let Some(payload) = body.get(..skip) else {
            break;
        };
        if let Some(slot) = slot {
            counts[slot] += if wire_type == 2 && packed(field) && !message(field) {
                payload.iter().filter(|&&byte| byte < 0x80).count()
            } else {
                1
            };
        }
        body = &body[skip..];
    }
    counts
}

/// Decodes a sample's body as prost does, each repeated field allocated once at its size as
/// [`scan`] counted it (`counts`: location ids, values, labels) where prost grows each a push at
/// a time — decoding the samples was most of decoding a profile. `None` for anything but a
/// well-formed body of known wire types; prost then decodes it and names the problem.
fn decode_sample(mut body: &[u8], [ids, values, labels]: [usize; 3]) -> Option<Sample> {
    let mut sample = Sample {
        location_id: Vec::with_capacity(ids),
        value: Vec::with_capacity(values),
        label: Vec::with_capacity(labels),
    };
    while !body.is_empty() {
        let key = read_strict_varint(&mut body)?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 || key > u64::from(u32::MAX) {
            return None;
        }
        match (field, wire_type) {
            (1, 0) => sample.location_id.push(read_strict_varint(&mut body)?),
            (2, 0) => sample.value.push(read_strict_varint(&mut body)? as i64),
            (1 | 2, 2) => {
                let mut packed = read_length_delimited(&mut body)?;
                while !packed.is_empty() {
                    let value = read_strict_varint(&mut packed)?;
                    if field == 1 {
                        sample.location_id.push(value);
                    } else {
                        sample.value.push(value as i64);
                    }
                }
            }
            (3, 2) => sample
                .label
                .push(Label::decode(read_length_delimited(&mut body)?).ok()?),
            // Unknown fields are skipped, as prost does.
            (4.., 0) => {
                read_strict_varint(&mut body)?;
            }
            (4.., 1) => body = body.get(8..)?,
            (4.., 2) => {
                read_length_delimited(&mut body)?;
            }
            (4.., 5) => body = body.get(4..)?,
            _ => return None,
        }
    }
    Some(sample)
}

/// A varint as prost reads it: at most 10 bytes, the tenth at most 1 (no bits past 64).
fn read_strict_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

/// The payload of a length-delimited field whose key was read.
fn read_length_delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_strict_varint(buf)?).ok()?;
    let (payload, rest) = (buf.get(..len)?, buf.get(len..)?);
    *buf = rest;
    Some(payload)
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

enum Varint {
    Value(u64),
    /// The input ended (before or inside the varint).
    End,
    /// More than 10 bytes.
    Malformed,
}

/// The decompressed input and how much of it was read.
struct Reader<'a, R> {
    input: &'a mut R,
    read: usize,
}

impl<R: BufRead> Reader<'_, R> {
    /// Reads a varint, appending its bytes to `out`.
    fn varint(&mut self, out: &mut Vec<u8>) -> Result<Varint, DecodeError> {
        // Fast path: the whole varint is in the buffer (one virtual call, not one a byte).
        let buf = self.input.fill_buf().map_err(DecodeError::Gzip)?;
        if buf.len() >= 10 {
            let mut value = 0u64;
            for (i, &byte) in buf.iter().take(10).enumerate() {
                value |= u64::from(byte & 0x7f) << (7 * i);
                if byte < 0x80 {
                    out.extend_from_slice(&buf[..=i]);
                    self.input.consume(i + 1);
                    self.read += i + 1;
                    return Ok(Varint::Value(value));
                }
            }
            out.extend_from_slice(&buf[..10]);
            self.input.consume(10);
            self.read += 10;
            return Ok(Varint::Malformed);
        }
        let mut value = 0u64;
        for i in 0..10 {
            let Some(byte) = self.byte()? else {
                return Ok(Varint::End);
            };
            out.push(byte);
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(Varint::Value(value));
            }
        }
        Ok(Varint::Malformed)
    }

    fn byte(&mut self) -> Result<Option<u8>, DecodeError> {
        let buf = self.input.fill_buf().map_err(DecodeError::Gzip)?;
        let Some(&byte) = buf.first() else {
            return Ok(None);
        };
        self.input.consume(1);
        self.read += 1;
        Ok(Some(byte))
    }

    /// Appends the next `len` bytes to `out`; false if the input ends first.
    fn take(&mut self, mut len: usize, out: &mut Vec<u8>) -> Result<bool, DecodeError> {
        out.reserve(len);
        while len > 0 {
            let buf = self.input.fill_buf().map_err(DecodeError::Gzip)?;
            if buf.is_empty() {
                return Ok(false);
            }
            let n = buf.len().min(len);
            out.extend_from_slice(&buf[..n]);
            self.input.consume(n);
            self.read += n;
            len -= n;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::{Label, Sample, decode_sample, scan};

    /// What prost makes of a sample body, or `None` where it refuses it.
    fn prost_sample(body: &[u8]) -> Option<Sample> {
        Sample::decode(body).ok()
    }

    fn fast_sample(body: &[u8]) -> Option<Sample> {
        let shape = scan(body, |field| matches!(field, 1 | 2), |field| field == 3);
        decode_sample(body, shape[1..4].try_into().unwrap())
    }

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    /// One field of a sample body: known fields packed and unpacked, labels, unknown fields of
    /// every wire type, and raw bytes (truncations, overlong varints, groups).
    fn field() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (1u64..=2, any::<u64>()).prop_map(|(field, value)| {
                let mut out = Vec::new();
                varint(field << 3, &mut out);
                varint(value, &mut out);
                out
            }),
            (1u64..=2, prop::collection::vec(any::<u64>(), 0..6)).prop_map(|(field, values)| {
                let mut payload = Vec::new();
                values.iter().for_each(|&value| varint(value, &mut payload));
                let mut out = Vec::new();
                varint(field << 3 | 2, &mut out);
                varint(payload.len() as u64, &mut out);
                out.extend(payload);
                out
            }),
            (any::<i64>(), any::<i64>()).prop_map(|(key, num)| {
                let payload = Label {
                    key,
                    num,
                    ..Label::default()
                }
                .encode_to_vec();
                let mut out = vec![3 << 3 | 2];
                varint(payload.len() as u64, &mut out);
                out.extend(payload);
                out
            }),
            (4u64..100_000, 0u64..8, prop::collection::vec(any::<u8>(), 0..12)).prop_map(|(field, wire, tail)| {
                let mut out = Vec::new();
                varint(field << 3 | wire, &mut out);
                out.extend(tail);
                out
            }),
            prop::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The sample decoder gives exactly prost's sample, or leaves the body to prost.
        #[test]
        fn sample_decoder_agrees_with_prost(fields in prop::collection::vec(field(), 0..8)) {
            let body = fields.concat();
            if let Some(fast) = fast_sample(&body) {
                prop_assert_eq!(Some(fast), prost_sample(&body));
            }
        }

        /// On bodies prost writes, the sample decoder never leaves the work to prost.
        #[test]
        fn sample_decoder_reads_what_prost_writes(
            location_id in prop::collection::vec(any::<u64>(), 0..64),
            value in prop::collection::vec(any::<i64>(), 0..4),
            keys in prop::collection::vec(any::<i64>(), 0..3),
        ) {
            let sample = Sample {
                location_id,
                value,
                label: keys.into_iter().map(|key| Label { key, str: 1, ..Label::default() }).collect(),
            };
            prop_assert_eq!(fast_sample(&sample.encode_to_vec()), Some(sample));
        }
    }

    #[test]
    fn overlong_and_cut_varints_are_left_to_prost() {
        // Ten bytes whose last holds bits past 64: prost refuses it.
        let mut body = vec![1 << 3];
        body.extend([0xff; 9]);
        body.push(0x02);
        assert_eq!(fast_sample(&body), None);
        assert_eq!(prost_sample(&body), None);
        // The same with the tenth byte 1 is u64::MAX.
        *body.last_mut().unwrap() = 0x01;
        assert_eq!(fast_sample(&body).unwrap().location_id, vec![u64::MAX]);
        // A packed list cut short.
        assert_eq!(fast_sample(&[1 << 3 | 2, 3, 1, 2]), None);
    }
}
