//! Cumulative profiles turned into deltas.
//!
//! Go's allocation (`alloc_objects`, `alloc_space`), mutex and block profiles count since the
//! process started. Stored as is, every profile would repeat the whole history; a flame graph of
//! a window has to show what happened in that window. [`CumulativeDelta`] keeps, per source (one
//! scraped target and profile, or one pushed series), the previous profile's values per stack and
//! replaces the cumulative columns by the difference, as Alloy's `delta_profiles.go` does.
//!
//! Stacks are matched by what they *mean* — resolved function names, files and lines (addresses
//! for unsymbolized frames) plus the sample's labels — never by location ids, which Go renumbers
//! on every profile it writes.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

pub use crate::head::ColumnValues;
use crate::proto::google::v1::{Profile, Sample};

/// Per-source state turning cumulative pprof values into deltas between consecutive profiles.
#[derive(Debug, Default)]
pub struct CumulativeDelta {
    previous: Option<Previous>,
    /// The baseline the latest [`apply`](Self::apply) replaced when it returned a delta.
    replaced: Option<Previous>,
    /// Counts applies, so an [`undo`](Self::undo) never reverts a later one.
    generation: u64,
}

#[derive(Debug)]
struct Previous {
    /// Which sample types the state was built for; a change re-primes.
    cumulative: Vec<usize>,
    /// Cumulative values per stack key, in the order of `cumulative`.
    values: HashMap<Vec<u8>, Vec<i64>>,
    totals: Vec<i64>,
    time_nanos: i64,
}

impl CumulativeDelta {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a baseline is held (the next [`apply`](Self::apply) can return a delta).
    pub fn is_primed(&self) -> bool {
        self.previous.is_some()
    }

    /// Forgets the baseline: the next profile primes again.
    pub fn reset(&mut self) {
        self.previous = None;
        self.replaced = None;
    }

    /// Which [`apply`](Self::apply) was the latest; pass it to [`undo`](Self::undo).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes back the delta of apply number `generation`, if it was the latest and returned
    /// one: the baseline goes back to the profile before, so the next delta also covers the
    /// window of the undone one (a delta refused by a limit is not lost). A priming apply keeps
    /// its baseline: it stored no delta that could be lost. Returns whether it undid anything.
    pub fn undo(&mut self, generation: u64) -> bool {
        if generation != self.generation {
            return false;
        }
        match self.replaced.take() {
            Some(replaced) => {
                self.previous = Some(replaced);
                true
            }
            None => false,
        }
    }

    /// `cumulative` = indices of sample types that are cumulative (e.g. alloc_objects, alloc_space;
    /// contentions, delay). First call primes and returns None. Later calls return the profile
    /// with those columns replaced by current − previous per stack (stack identity = resolved
    /// function names/files/lines + sample labels, not location ids); other columns kept as is;
    /// samples whose values all become 0 are dropped. If any cumulative total or any stack's value
    /// went down (process restart), the state resets to this profile and None is returned: a
    /// restarted source re-primes, it never yields negative values or its whole history as one
    /// delta. Builds a new profile: the ingest path stores [`CumulativeDelta::apply_values`]
    /// beside the decoded profile instead.
    pub fn apply(&mut self, profile: &Profile, cumulative: &[usize]) -> Option<Profile> {
        let values = self.apply_values(profile, cumulative)?;
        let mut delta = values.to_profile(profile);
        if let Some(previous) = self.replaced.as_ref()
            && previous.time_nanos > 0
            && profile.time_nanos > previous.time_nanos
        {
            delta.duration_nanos = profile.time_nanos - previous.time_nanos;
        }
        Some(delta)
    }

    /// [`CumulativeDelta::apply`] without a new profile: the delta as the new values of the
    /// cumulative columns of `profile`'s samples ([`ColumnValues`]).
    pub fn apply_values(&mut self, profile: &Profile, cumulative: &[usize]) -> Option<ColumnValues> {
        self.generation += 1;
        self.replaced = None;
        let cumulative: Vec<usize> = cumulative
            .iter()
            .copied()
            .filter(|&index| index < profile.sample_type.len())
            .collect();
        let keys = StackKeys::new(profile);
        // Current cumulative values per stack; duplicates (same meaning, different ids) summed.
        let mut current: HashMap<Vec<u8>, Vec<i64>> = HashMap::with_capacity(profile.sample.len());
        let mut sample_keys = Vec::with_capacity(profile.sample.len());
        for sample in &profile.sample {
            let key = keys.key(sample);
            let entry = current.entry(key.clone()).or_insert_with(|| vec![0; cumulative.len()]);
            for (slot, &index) in entry.iter_mut().zip(&cumulative) {
                *slot = slot.saturating_add(sample.value.get(index).copied().unwrap_or(0));
            }
            sample_keys.push(key);
        }
        let totals: Vec<i64> = cumulative
            .iter()
            .map(|&index| {
                profile
                    .sample
                    .iter()
                    .map(|sample| sample.value.get(index).copied().unwrap_or(0))
                    .fold(0i64, i64::saturating_add)
            })
            .collect();
        let next = Previous {
            cumulative: cumulative.clone(),
            values: current,
            totals,
            time_nanos: profile.time_nanos,
        };
        let previous = self.previous.replace(next)?;
        let next = self.previous.as_ref().expect("just set");
        if previous.cumulative != next.cumulative {
            return None;
        }
        let restarted = previous
            .totals
            .iter()
            .zip(&next.totals)
            .any(|(before, now)| now < before)
            || next.values.iter().any(|(key, now)| {
                previous
                    .values
                    .get(key)
                    .is_some_and(|before| now.iter().zip(before).any(|(now, before)| now < before))
            });
        if restarted {
            return None;
        }

        let mut values = Vec::with_capacity(profile.sample.len() * cumulative.len());
        let mut emitted: HashSet<&[u8]> = HashSet::with_capacity(profile.sample.len());
        for key in &sample_keys {
            // The first sample of a key carries the key's whole delta; duplicates carry none.
            let first = emitted.insert(key.as_slice());
            let now = &next.values[key];
            let before = previous.values.get(key);
            for position in 0..cumulative.len() {
                values.push(if first {
                    let base = before.map_or(0, |before| before[position]);
                    (now[position] - base).max(0)
                } else {
                    0
                });
            }
        }
        self.replaced = Some(previous);
        Some(ColumnValues::new(cumulative, values))
    }
}

/// Indices of the cumulative sample types of a Go profile by name (memory:
/// alloc_objects/alloc_space; mutex/block: contentions/delay). Empty for anything else
/// (process_cpu, goroutine, inuse-only heap profiles).
pub fn cumulative_indices(profile: &Profile, profile_name: &str) -> Vec<usize> {
    let cumulative_types: &[&str] = match profile_name {
        "memory" => &["alloc_objects", "alloc_space"],
        "mutex" | "block" => &["contentions", "delay"],
        _ => &[],
    };
    profile
        .sample_type
        .iter()
        .enumerate()
        .filter(|(_, value_type)| {
            let name = profile
                .string_table
                .get(value_type.r#type as usize)
                .map_or("", String::as_str);
            cumulative_types.contains(&name)
        })
        .map(|(index, _)| index)
        .collect()
}

/// Builds location-id-free keys of samples: each frame as function name, file and line (or the
/// mapping file and address when unsymbolized), then the labels sorted by key.
struct StackKeys<'a> {
    profile: &'a Profile,
    locations: HashMap<u64, usize>,
    functions: HashMap<u64, usize>,
    mappings: HashMap<u64, usize>,
}

impl<'a> StackKeys<'a> {
    fn new(profile: &'a Profile) -> Self {
        Self {
            profile,
            locations: profile.location.iter().enumerate().map(|(i, l)| (l.id, i)).collect(),
            functions: profile.function.iter().enumerate().map(|(i, f)| (f.id, i)).collect(),
            mappings: profile.mapping.iter().enumerate().map(|(i, m)| (m.id, i)).collect(),
        }
    }

    fn string(&self, index: i64) -> &str {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.profile.string_table.get(index))
            .map_or("", String::as_str)
    }

    fn key(&self, sample: &Sample) -> Vec<u8> {
        let mut key = Vec::with_capacity(sample.location_id.len() * 24);
        let push_str = |key: &mut Vec<u8>, text: &str| {
            key.extend_from_slice(&(text.len() as u32).to_le_bytes());
            key.extend_from_slice(text.as_bytes());
        };
        for id in &sample.location_id {
            let Some(location) = self.locations.get(id).map(|&i| &self.profile.location[i]) else {
                key.push(0xff);
                continue;
            };
            if location.line.is_empty() {
                key.push(1);
                let mapping = self
                    .mappings
                    .get(&location.mapping_id)
                    .map(|&i| &self.profile.mapping[i]);
                push_str(&mut key, mapping.map_or("", |m| self.string(m.filename)));
                let offset = mapping.map_or(location.address, |m| {
                    location
                        .address
                        .wrapping_sub(m.memory_start)
                        .wrapping_add(m.file_offset)
                });
                key.extend_from_slice(&offset.to_le_bytes());
            }
            for line in &location.line {
                key.push(2);
                let function = self
                    .functions
                    .get(&line.function_id)
                    .map(|&i| &self.profile.function[i]);
                push_str(&mut key, function.map_or("", |f| self.string(f.name)));
                push_str(&mut key, function.map_or("", |f| self.string(f.filename)));
                key.extend_from_slice(&line.line.to_le_bytes());
            }
            key.push(3);
        }
        let mut labels: Vec<(&str, &str, i64, &str)> = sample
            .label
            .iter()
            .map(|label| {
                (
                    self.string(label.key),
                    self.string(label.str),
                    label.num,
                    self.string(label.num_unit),
                )
            })
            .collect();
        labels.sort_unstable();
        key.push(4);
        for (name, text, num, unit) in labels {
            push_str(&mut key, name);
            push_str(&mut key, text);
            key.extend_from_slice(&num.to_le_bytes());
            push_str(&mut key, unit);
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::{DecodeLimits, decode, sample_type_totals};

    fn corpus(name: &str) -> Profile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/corpus/files")
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        decode(&bytes, &DecodeLimits::default()).unwrap()
    }

    fn totals(profile: &Profile) -> Vec<(String, i64)> {
        sample_type_totals(profile)
            .into_iter()
            .map(|(name, _, total)| (name, total))
            .collect()
    }

    fn totals_of(profile: &Profile) -> Vec<(String, i64)> {
        totals(profile)
    }

    fn check_pair(kind: &str, name: &str, expected_types: &[&str]) {
        let t0 = corpus(&format!("gotarget__{kind}_t0.pb.gz"));
        let t1 = corpus(&format!("gotarget__{kind}_t1.pb.gz"));
        let cumulative = cumulative_indices(&t0, name);
        let names: Vec<&str> = cumulative
            .iter()
            .map(|&i| t0.string_table[t0.sample_type[i].r#type as usize].as_str())
            .collect();
        assert_eq!(names, expected_types, "{kind}");

        let mut state = CumulativeDelta::new();
        assert!(state.apply(&t0, &cumulative).is_none(), "the first profile only primes");
        let delta = state.apply(&t1, &cumulative).expect("second profile yields a delta");
        crate::pprof::validate(&delta, &DecodeLimits::default()).unwrap();
        let (before, after, got) = (totals(&t0), totals(&t1), totals(&delta));
        for (index, (name, total)) in got.iter().enumerate() {
            if cumulative.contains(&index) {
                assert_eq!(*total, after[index].1 - before[index].1, "{kind} {name}: delta total");
                assert!(*total > 0, "{kind} {name}: the window saw activity");
                assert!(*total < after[index].1, "{kind} {name}: not the cumulative total");
            } else {
                assert_eq!(*total, after[index].1, "{kind} {name}: gauge kept as is");
            }
        }
        assert!(
            delta.sample.iter().all(|s| s.value.iter().all(|&v| v >= 0)),
            "{kind}: negative value"
        );
        assert!(
            delta.sample.iter().all(|s| s.value.iter().any(|&v| v != 0)),
            "{kind}: zero sample kept"
        );
        assert!(delta.sample.len() <= t1.sample.len());

        // Restart: the counts go down. The state re-primes instead of yielding negatives...
        assert!(state.apply(&t0, &cumulative).is_none(), "{kind}: a restart re-primes");
        // ...and the baseline is now the restarted process's profile.
        let again = state.apply(&t1, &cumulative).expect("delta after the re-prime");
        assert_eq!(totals(&again), got, "{kind}: same delta from the new baseline");
    }

    #[test]
    fn allocs_delta_is_t1_minus_t0() {
        check_pair("allocs", "memory", &["alloc_objects", "alloc_space"]);
    }

    #[test]
    fn heap_delta_keeps_inuse_as_is() {
        check_pair("heap", "memory", &["alloc_objects", "alloc_space"]);
    }

    #[test]
    fn mutex_delta_is_t1_minus_t0() {
        check_pair("mutex", "mutex", &["contentions", "delay"]);
    }

    #[test]
    fn block_delta_is_t1_minus_t0() {
        check_pair("block", "block", &["contentions", "delay"]);
    }

    #[test]
    fn same_profile_twice_is_empty_and_gauges_are_not_cumulative() {
        let t1 = corpus("gotarget__mutex_t1.pb.gz");
        let cumulative = cumulative_indices(&t1, "mutex");
        let mut state = CumulativeDelta::new();
        assert!(state.apply(&t1, &cumulative).is_none());
        let delta = state.apply(&t1, &cumulative).unwrap();
        assert!(delta.sample.is_empty(), "nothing happened between identical profiles");

        let goroutine = corpus("gotarget__goroutine.pb.gz");
        assert!(cumulative_indices(&goroutine, "goroutine").is_empty());
        let cpu = corpus("gotarget__cpu_5s.pb.gz");
        assert!(cumulative_indices(&cpu, "process_cpu").is_empty());
    }

    #[test]
    fn an_undone_delta_is_covered_by_the_next_one() {
        let t0 = corpus("gotarget__allocs_t0.pb.gz");
        let t1 = corpus("gotarget__allocs_t1.pb.gz");
        let cumulative = cumulative_indices(&t0, "memory");
        let mut state = CumulativeDelta::new();
        assert!(state.apply(&t0, &cumulative).is_none());
        assert!(!state.undo(state.generation()), "a priming profile keeps its baseline");
        let refused = state.apply(&t1, &cumulative).expect("delta t1 - t0");
        let generation = state.generation();
        assert!(totals(&refused).iter().any(|(_, total)| *total > 0));

        // The delta t1 - t0 was refused: the baseline is t0 again, so nothing is lost.
        assert!(state.undo(generation));
        assert!(!state.undo(generation), "undone once");
        let retried = state.apply(&t1, &cumulative).expect("delta t1 - t0 again");
        assert_eq!(totals(&retried), totals(&refused));

        // An undo for an earlier apply never reverts a later one.
        let stale = state.generation();
        state.apply(&t1, &cumulative).expect("empty delta t1 - t1");
        assert!(!state.undo(stale));
        let since_t1 = totals(&state.apply(&t1, &cumulative).unwrap());
        assert!(cumulative.iter().all(|&index| since_t1[index].1 == 0), "{since_t1:?}");
    }

    #[test]
    fn stacks_match_by_meaning_not_location_ids() {
        let t0 = corpus("gotarget__allocs_t0.pb.gz");
        let mut renumbered = t0.clone();
        for location in &mut renumbered.location {
            location.id += 1000;
        }
        for sample in &mut renumbered.sample {
            for id in &mut sample.location_id {
                *id += 1000;
            }
        }
        let cumulative = cumulative_indices(&t0, "memory");
        let mut state = CumulativeDelta::new();
        state.apply(&t0, &cumulative);
        let delta = state.apply(&renumbered, &cumulative).unwrap();
        let totals = totals(&delta);
        for &index in &cumulative {
            assert_eq!(
                totals[index].1, 0,
                "same stacks under new ids: no {} delta",
                totals[index].0
            );
        }
        assert_eq!(totals[3].1, totals_of(&t0)[3].1, "inuse_space kept as is");
    }
}
