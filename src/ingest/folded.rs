//! Folded stacks (`root;caller;leaf 42` per line) as `/ingest?format=folded` sends them,
//! turned into a pprof profile so every format takes the same path to the head.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::pprof::DecodeLimits;
use crate::proto::google::v1 as pprof;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FoldedError {
    #[error("folded profile is not valid UTF-8 or UTF-16")]
    Encoding,
    #[error("folded profile has no valid stack lines ({invalid} invalid)")]
    Empty { invalid: usize },
    #[error("line {line}: a frame name is {len} bytes long, more than max_string_length ({limit})")]
    NameTooLong { line: usize, len: usize, limit: usize },
    #[error("line {line}: the stack has {count} frames, more than max_locations_per_sample ({limit})")]
    TooDeep { line: usize, count: usize, limit: usize },
    #[error("line {line}: the value overflows a 64-bit integer (scaled, or summed with the earlier lines)")]
    Overflow { line: usize },
    #[error("line {line}: the profile has more than {limit} {what}")]
    TooMany {
        line: usize,
        what: &'static str,
        limit: usize,
    },
}

/// A parsed folded profile.
pub struct FoldedProfile {
    pub profile: pprof::Profile,
    pub stacks: usize,
    pub invalid_lines: usize,
}

impl FoldedProfile {
    /// The profile as pprof bytes: what the WAL keeps of every ingested profile.
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(crate::pprof::encode(&self.profile))
    }
}

/// Parses folded text (UTF-8, or UTF-16 with a BOM; LF or CRLF). Each value is multiplied by
/// `value_scale` (e.g. 1e9/sampleRate to turn CPU sample counts into nanoseconds). Lines
/// without a trailing integer are counted as invalid and skipped.
///
/// The pprof limits hold here too, checked line by line before anything of a line is kept, as
/// for a decoded pprof: a stack of more than `max_locations_per_sample` frames is refused
/// (counted by its separators, nothing split out), a stack deeper than `max_stack_depth` keeps
/// its first (root) frames and the frames past them are never split out; a kept frame name longer than
/// `max_string_length`, a value that overflows i64 once scaled or summed (per stack and over
/// the profile), and more distinct stacks than `max_samples` or names than `max_functions`
/// are refused naming the line (line numbers count from 1).
pub fn parse_folded(
    body: &[u8],
    sample_type: (&str, &str),
    period_type: Option<(&str, &str)>,
    value_scale: i64,
    limits: &DecodeLimits,
) -> Result<FoldedProfile, FoldedError> {
    let text = decode_text(body)?;
    let mut strings: Vec<String> = vec![String::new()];
    let mut string_ids: HashMap<String, i64> = HashMap::new();
    let mut intern = |value: &str, strings: &mut Vec<String>| -> i64 {
        *string_ids.entry(value.to_string()).or_insert_with(|| {
            strings.push(value.to_string());
            strings.len() as i64 - 1
        })
    };
    let mut function_ids: HashMap<i64, u64> = HashMap::new();
    let mut stacks: HashMap<Vec<u64>, i64> = HashMap::new();
    let mut order: Vec<Vec<u64>> = Vec::new();
    let mut invalid_lines = 0;
    let mut total: i64 = 0;
    let mut frames: Vec<&str> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() {
            continue;
        }
        let parsed = line
            .rsplit_once(' ')
            .and_then(|(stack, count)| Some((stack.trim(), count.parse::<i64>().ok()?)));
        let Some((stack, count)) = parsed.filter(|(stack, count)| !stack.is_empty() && *count >= 0) else {
            invalid_lines += 1;
            continue;
        };
        let value = count
            .checked_mul(value_scale)
            .ok_or(FoldedError::Overflow { line: number })?;
        total = total.checked_add(value).ok_or(FoldedError::Overflow { line: number })?;
        let depth = memchr_count(stack.as_bytes(), b';') + 1;
        if depth > limits.max_locations_per_sample {
            return Err(FoldedError::TooDeep {
                line: number,
                count: depth,
                limit: limits.max_locations_per_sample,
            });
        }
        frames.clear();
        frames.extend(stack.split(';').take(limits.max_stack_depth));
        if let Some(frame) = frames.iter().find(|frame| frame.len() > limits.max_string_length) {
            return Err(FoldedError::NameTooLong {
                line: number,
                len: frame.len(),
                limit: limits.max_string_length,
            });
        }
        // pprof stacks are leaf first; folded lines are root first.
        let mut location_ids = Vec::with_capacity(frames.len());
        for frame in frames.iter().rev() {
            let name = intern(frame, &mut strings);
            let next_id = function_ids.len() as u64 + 1;
            location_ids.push(*function_ids.entry(name).or_insert(next_id));
        }
        if function_ids.len() > limits.max_functions || strings.len() > limits.max_strings {
            return Err(FoldedError::TooMany {
                line: number,
                what: "distinct frame names",
                limit: limits.max_functions.min(limits.max_strings),
            });
        }
        match stacks.get_mut(&location_ids) {
            // Within the profile's checked total, so this sum cannot overflow.
            Some(sum) => *sum += value,
            None => {
                if order.len() == limits.max_samples {
                    return Err(FoldedError::TooMany {
                        line: number,
                        what: "distinct stacks",
                        limit: limits.max_samples,
                    });
                }
                order.push(location_ids.clone());
                stacks.insert(location_ids, value);
            }
        }
    }
    if order.is_empty() {
        return Err(FoldedError::Empty { invalid: invalid_lines });
    }
    let mut functions: Vec<(i64, u64)> = function_ids.into_iter().collect();
    functions.sort_by_key(|&(_, id)| id);
    let sample_type_value = pprof::ValueType {
        r#type: intern(sample_type.0, &mut strings),
        unit: intern(sample_type.1, &mut strings),
    };
    let period_type = period_type.map(|(kind, unit)| pprof::ValueType {
        r#type: intern(kind, &mut strings),
        unit: intern(unit, &mut strings),
    });
    let stack_count = order.len();
    let profile = pprof::Profile {
        sample_type: vec![sample_type_value],
        sample: order
            .into_iter()
            .map(|location_id| {
                let value = stacks[&location_id];
                pprof::Sample {
                    location_id,
                    value: vec![value],
                    label: vec![],
                }
            })
            .collect(),
        function: functions
            .iter()
            .map(|&(name, id)| pprof::Function {
                id,
                name,
                system_name: name,
                ..Default::default()
            })
            .collect(),
        location: functions
            .iter()
            .map(|&(_, id)| pprof::Location {
                id,
                line: vec![pprof::Line {
                    function_id: id,
                    line: 0,
                    column: 0,
                }],
                ..Default::default()
            })
            .collect(),
        period: if period_type.is_some() { value_scale } else { 0 },
        period_type,
        string_table: strings,
        ..Default::default()
    };
    Ok(FoldedProfile {
        profile,
        stacks: stack_count,
        invalid_lines,
    })
}

fn memchr_count(bytes: &[u8], needle: u8) -> usize {
    bytes.iter().filter(|&&byte| byte == needle).count()
}

fn decode_text(body: &[u8]) -> Result<Cow<'_, str>, FoldedError> {
    let utf16 = |bytes: &[u8], little: bool| {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| {
                if little {
                    u16::from_le_bytes([pair[0], pair[1]])
                } else {
                    u16::from_be_bytes([pair[0], pair[1]])
                }
            })
            .collect();
        String::from_utf16(&units)
            .map(Cow::Owned)
            .map_err(|_| FoldedError::Encoding)
    };
    let utf8 = |bytes| {
        std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|_| FoldedError::Encoding)
    };
    match body {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        [0xEF, 0xBB, 0xBF, rest @ ..] => utf8(rest),
        _ => utf8(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_crlf_merges_and_counts_invalid() {
        let body = b"main;work;hash 3\r\nmain;idle 2\r\nmain;work;hash 1\r\nbroken line\r\nx;y notanumber\r\n";
        let folded = parse_folded(
            body,
            ("cpu", "nanoseconds"),
            Some(("cpu", "nanoseconds")),
            10,
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(folded.stacks, 2);
        assert_eq!(folded.invalid_lines, 2);
        let total: i64 = folded.profile.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 60);
        let leaf = folded.profile.sample[0].location_id[0];
        let function = &folded.profile.function[leaf as usize - 1];
        assert_eq!(folded.profile.string_table[function.name as usize], "hash");
    }

    #[test]
    fn utf16_and_empty() {
        let mut body = vec![0xFF, 0xFE];
        for unit in "a;b 5\n".encode_utf16() {
            body.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(
            parse_folded(&body, ("samples", "count"), None, 1, &DecodeLimits::default())
                .unwrap()
                .stacks,
            1
        );
        assert_eq!(
            parse_folded(b"nothing here", ("samples", "count"), None, 1, &DecodeLimits::default()).err(),
            Some(FoldedError::Empty { invalid: 1 })
        );
    }

    #[test]
    fn deep_stacks_keep_their_root_and_limits_name_the_line() {
        let limits = DecodeLimits {
            max_stack_depth: 3,
            max_string_length: 8,
            max_samples: 2,
            ..DecodeLimits::default()
        };
        let parse = |body: &[u8], scale| parse_folded(body, ("samples", "count"), None, scale, &limits);
        let deep = format!("{} 5\nroot;a 1\n", ["root", "a", "b", "c", "d"].join(";"));
        let folded = parse(deep.as_bytes(), 1).unwrap();
        let names = |sample: &pprof::Sample| -> Vec<String> {
            sample
                .location_id
                .iter()
                .rev()
                .map(|&id| folded.profile.string_table[folded.profile.function[id as usize - 1].name as usize].clone())
                .collect()
        };
        assert_eq!(names(&folded.profile.sample[0]), ["root", "a", "b"]);
        assert_eq!(folded.profile.sample[0].value, [5]);
        // Up to max_locations_per_sample frames are truncated (past the depth, names are not
        // checked); a 33 M-frame line is refused without splitting it.
        let long = format!("{}{} 1\n", "f;".repeat(60_000), "x".repeat(100));
        assert_eq!(
            parse(long.as_bytes(), 1).unwrap().profile.sample[0].location_id.len(),
            3
        );
        let huge = format!("ok 1\n{}f 1\n", "f;".repeat(33_000_000));
        assert_eq!(
            parse(huge.as_bytes(), 1).err(),
            Some(FoldedError::TooDeep {
                line: 2,
                count: 33_000_001,
                limit: 65_536
            })
        );

        assert_eq!(
            parse(b"ok 1\nroot;much_too_long 1\n", 1).err(),
            Some(FoldedError::NameTooLong {
                line: 2,
                len: 13,
                limit: 8
            })
        );
        assert_eq!(
            parse(b"a 1\nb 1\nc 1\n", 1).err(),
            Some(FoldedError::TooMany {
                line: 3,
                what: "distinct stacks",
                limit: 2
            })
        );
        // Overflow when scaled, and when summed: the stored value was -2 before.
        assert_eq!(
            parse(b"a 4611686018427387904\n", 2).err(),
            Some(FoldedError::Overflow { line: 1 })
        );
        assert_eq!(
            parse(b"a 9223372036854775807\n\na 1\n", 1).err(),
            Some(FoldedError::Overflow { line: 3 })
        );
        assert_eq!(
            parse(b"a 9223372036854775807\nb 1\n", 1).err(),
            Some(FoldedError::Overflow { line: 2 })
        );
    }
}
