//! Structural validation of a decoded profile: limits, string indices, ids and references.

use foldhash::{HashSet, HashSetExt};

use super::{DecodeError, DecodeLimits, Profile};

/// Refuses a profile that is not internally consistent or exceeds `limits`. Stack depth is not
/// checked: [`super::decode`] truncates deep stacks instead of refusing them.
pub fn validate(profile: &Profile, limits: &DecodeLimits) -> Result<(), DecodeError> {
    check_counts(profile, limits)?;
    check_strings(profile, limits)?;
    if profile.sample_type.is_empty() {
        return Err(DecodeError::NoSampleTypes);
    }

    let mappings = unique_ids("mapping", profile.mapping.iter().map(|mapping| mapping.id))?;
    let functions = unique_ids("function", profile.function.iter().map(|function| function.id))?;
    let locations = unique_ids("location", profile.location.iter().map(|location| location.id))?;

    for location in &profile.location {
        if location.mapping_id != 0 && !mappings.contains(&location.mapping_id) {
            return Err(DecodeError::MissingMapping {
                location: location.id,
                id: location.mapping_id,
            });
        }
        // Unlike a mapping, a line's function is not optional: id 0 is a dangling reference too.
        for (line, &super::Line { function_id: id, .. }) in location.line.iter().enumerate() {
            if !functions.contains(&id) {
                return Err(DecodeError::MissingFunction {
                    location: location.id,
                    line,
                    id,
                });
            }
        }
    }

    let types = profile.sample_type.len();
    for (index, sample) in profile.sample.iter().enumerate() {
        if sample.value.len() != types {
            return Err(DecodeError::ValueCount {
                sample: index,
                values: sample.value.len(),
                types,
            });
        }
        if let Some(&id) = sample.location_id.iter().find(|id| !locations.contains(id)) {
            return Err(DecodeError::MissingLocation { sample: index, id });
        }
    }
    Ok(())
}

fn check_counts(profile: &Profile, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if let Some((sample, labels)) = profile
        .sample
        .iter()
        .map(|sample| sample.label.len())
        .enumerate()
        .find(|&(_, labels)| labels > limits.max_labels_per_sample)
    {
        return Err(DecodeError::TooManyLabels {
            sample,
            count: labels,
            limit: limits.max_labels_per_sample,
        });
    }
    let checks = [
        ("samples", profile.sample.len(), limits.max_samples),
        ("strings", profile.string_table.len(), limits.max_strings),
        ("locations", profile.location.len(), limits.max_locations),
        ("functions", profile.function.len(), limits.max_functions),
        ("mappings", profile.mapping.len(), limits.max_mappings),
    ];
    match checks.into_iter().find(|&(_, count, limit)| count > limit) {
        Some((what, count, limit)) => Err(DecodeError::TooMany { what, count, limit }),
        None => Ok(()),
    }
}

/// Checks the string table and every index into it.
fn check_strings(profile: &Profile, limits: &DecodeLimits) -> Result<(), DecodeError> {
    let table = &profile.string_table;
    match table.first() {
        None => return Err(DecodeError::EmptyStringTable),
        Some(first) if !first.is_empty() => {
            let shown: String = first.chars().take(64).collect();
            return Err(DecodeError::FirstStringNotEmpty(shown));
        }
        Some(_) => {}
    }
    if let Some((index, string)) = table
        .iter()
        .enumerate()
        .find(|(_, s)| s.len() > limits.max_string_length)
    {
        return Err(DecodeError::StringTooLong {
            index,
            len: string.len(),
            limit: limits.max_string_length,
        });
    }

    // The context is only formatted once an index is found out of range.
    let check = |index: i64, context: &dyn Fn() -> String| {
        if usize::try_from(index).is_ok_and(|i| i < table.len()) {
            Ok(())
        } else {
            Err(DecodeError::StringIndex {
                context: context(),
                index,
                len: table.len(),
            })
        }
    };
    for (i, value_type) in profile.sample_type.iter().enumerate() {
        check(value_type.r#type, &|| format!("sample type {i} type"))?;
        check(value_type.unit, &|| format!("sample type {i} unit"))?;
    }
    if let Some(period_type) = &profile.period_type {
        check(period_type.r#type, &|| "period type type".into())?;
        check(period_type.unit, &|| "period type unit".into())?;
    }
    for (i, sample) in profile.sample.iter().enumerate() {
        for (j, label) in sample.label.iter().enumerate() {
            check(label.key, &|| format!("sample {i} label {j} key"))?;
            check(label.str, &|| format!("sample {i} label {j} str"))?;
            check(label.num_unit, &|| format!("sample {i} label {j} num_unit"))?;
        }
    }
    for mapping in &profile.mapping {
        check(mapping.filename, &|| format!("mapping {} filename", mapping.id))?;
        check(mapping.build_id, &|| format!("mapping {} build_id", mapping.id))?;
    }
    for function in &profile.function {
        check(function.name, &|| format!("function {} name", function.id))?;
        check(function.system_name, &|| {
            format!("function {} system_name", function.id)
        })?;
        check(function.filename, &|| format!("function {} filename", function.id))?;
    }
    for (i, &comment) in profile.comment.iter().enumerate() {
        check(comment, &|| format!("comment {i}"))?;
    }
    check(profile.drop_frames, &|| "drop_frames".into())?;
    check(profile.keep_frames, &|| "keep_frames".into())?;
    check(profile.default_sample_type, &|| "default_sample_type".into())?;
    check(profile.doc_url, &|| "doc_url".into())
}

/// The ids of one table, checked unique and non-zero.
enum IdSet {
    /// Exactly `1..=n` in order, as Go and most profilers write them: no hashing needed.
    Dense(u64),
    Sparse(HashSet<u64>),
}

impl IdSet {
    fn contains(&self, id: &u64) -> bool {
        match self {
            Self::Dense(count) => (1..=*count).contains(id),
            Self::Sparse(ids) => ids.contains(id),
        }
    }
}

fn unique_ids(kind: &'static str, ids: impl ExactSizeIterator<Item = u64> + Clone) -> Result<IdSet, DecodeError> {
    let count = ids.len() as u64;
    if ids.clone().zip(1..).all(|(id, expected)| id == expected) {
        return Ok(IdSet::Dense(count));
    }
    let mut seen = HashSet::with_capacity(ids.len());
    for (position, id) in ids.enumerate() {
        if id == 0 {
            return Err(DecodeError::ZeroId { kind, position });
        }
        if !seen.insert(id) {
            return Err(DecodeError::DuplicateId { kind, id });
        }
    }
    Ok(IdSet::Sparse(seen))
}
