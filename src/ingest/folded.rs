//! Folded stacks (`root;caller;leaf 42` per line) as `/ingest?format=folded` sends them,
//! turned into a pprof profile so every format takes the same path to the head.

use std::collections::HashMap;

use crate::proto::google::v1 as pprof;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FoldedError {
    #[error("folded profile is not valid UTF-8 or UTF-16")]
    Encoding,
    #[error("folded profile has no valid stack lines ({invalid} invalid)")]
    Empty { invalid: usize },
}

/// A parsed folded profile.
pub struct FoldedProfile {
    pub profile: pprof::Profile,
    pub stacks: usize,
    pub invalid_lines: usize,
}

/// Parses folded text (UTF-8, or UTF-16 with a BOM; LF or CRLF). Each value is multiplied by
/// `value_scale` (e.g. 1e9/sampleRate to turn CPU sample counts into nanoseconds). Lines
/// without a trailing integer are counted as invalid and skipped.
pub fn parse_folded(
    body: &[u8],
    sample_type: (&str, &str),
    period_type: Option<(&str, &str)>,
    value_scale: i64,
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
    for line in text.lines() {
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
        // pprof stacks are leaf first; folded lines are root first.
        let mut location_ids = Vec::new();
        for frame in stack.split(';').rev() {
            let name = intern(frame, &mut strings);
            let next_id = function_ids.len() as u64 + 1;
            location_ids.push(*function_ids.entry(name).or_insert(next_id));
        }
        let value = count.saturating_mul(value_scale);
        match stacks.get_mut(&location_ids) {
            Some(total) => *total += value,
            None => {
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

fn decode_text(body: &[u8]) -> Result<String, FoldedError> {
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
        String::from_utf16(&units).map_err(|_| FoldedError::Encoding)
    };
    match body {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8(rest.to_vec()).map_err(|_| FoldedError::Encoding),
        _ => String::from_utf8(body.to_vec()).map_err(|_| FoldedError::Encoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_crlf_merges_and_counts_invalid() {
        let body = b"main;work;hash 3\r\nmain;idle 2\r\nmain;work;hash 1\r\nbroken line\r\nx;y notanumber\r\n";
        let folded = parse_folded(body, ("cpu", "nanoseconds"), Some(("cpu", "nanoseconds")), 10).unwrap();
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
        assert_eq!(parse_folded(&body, ("samples", "count"), None, 1).unwrap().stacks, 1);
        assert_eq!(
            parse_folded(b"nothing here", ("samples", "count"), None, 1).err(),
            Some(FoldedError::Empty { invalid: 1 })
        );
    }
}
