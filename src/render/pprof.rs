//! pprof export of a merged tree: one function and one location per distinct frame name, one
//! sample per stack, laid out so Go's `profile.Parse` and `CheckValid` accept it.

use std::collections::HashMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use crate::model::FlameTree;
use crate::model::ProfileType;
use crate::proto::google::v1::{Function, Line, Location, Mapping, Profile, Sample, ValueType};

/// Every location points at this one mapping, flagged as symbolized so pprof tools do not try
/// to symbolize the (address-less) locations.
const MAPPING_ID: u64 = 1;

/// A pprof profile of `tree` with the single sample type of `profile_type`.
pub fn pprof(tree: &FlameTree, profile_type: &ProfileType, time_nanos: i64, duration_nanos: i64) -> Profile {
    let mut strings = StringTable::default();
    let sample_type = ValueType {
        r#type: strings.id(&profile_type.sample_type),
        unit: strings.id(&profile_type.sample_unit),
    };
    let period_type = (!profile_type.period_type.is_empty()).then(|| ValueType {
        r#type: strings.id(&profile_type.period_type),
        unit: strings.id(&profile_type.period_unit),
    });

    // Tree name id -> location id (== function id); 0 while unused.
    let mut location_ids = vec![0u64; tree.names().len()];
    let mut functions = Vec::new();
    let mut locations = Vec::new();
    let mut samples = Vec::new();
    tree.for_each_stack(|stack, value| {
        let location_id = stack
            .iter()
            .rev()
            .map(|&name| {
                let id = &mut location_ids[name as usize];
                if *id == 0 {
                    *id = functions.len() as u64 + 1;
                    let name = strings.id(tree.name(name));
                    functions.push(Function {
                        id: *id,
                        name,
                        system_name: name,
                        ..Function::default()
                    });
                    locations.push(Location {
                        id: *id,
                        mapping_id: MAPPING_ID,
                        line: vec![Line {
                            function_id: *id,
                            ..Line::default()
                        }],
                        ..Location::default()
                    });
                }
                *id
            })
            .collect();
        samples.push(Sample {
            location_id,
            value: vec![value],
            label: Vec::new(),
        });
    });

    Profile {
        sample_type: vec![sample_type],
        sample: samples,
        mapping: vec![Mapping {
            id: MAPPING_ID,
            has_functions: true,
            ..Mapping::default()
        }],
        location: locations,
        function: functions,
        string_table: strings.strings,
        time_nanos,
        duration_nanos,
        period_type,
        period: 1,
        ..Profile::default()
    }
}

/// `profile` encoded and gzipped, as pprof files are stored and served.
pub fn encode_pprof_gzip(profile: &Profile) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    encoder.write_all(&profile.encode_to_vec()).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// pprof's string table: index 0 is always "".
struct StringTable {
    strings: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Default for StringTable {
    fn default() -> Self {
        Self {
            strings: vec![String::new()],
            ids: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl StringTable {
    fn id(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(text.to_string());
        self.ids.insert(text.to_string(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::render::testutil::sample_tree;

    fn tree_stacks(tree: &FlameTree) -> BTreeMap<Vec<String>, i64> {
        let mut stacks = BTreeMap::new();
        tree.for_each_stack(|stack, value| {
            stacks.insert(stack.iter().map(|&id| tree.name(id).to_string()).collect(), value);
        });
        stacks
    }

    /// The invariants Go's `profile.Parse` + `CheckValid` enforce, plus the stacks it encodes.
    fn checked_stacks(profile: &Profile) -> BTreeMap<Vec<String>, i64> {
        let strings = &profile.string_table;
        assert_eq!(strings[0], "");
        let string = |id: i64| strings.get(id as usize).expect("string index in range").as_str();
        for value_type in profile.sample_type.iter().chain(&profile.period_type) {
            string(value_type.r#type);
            string(value_type.unit);
        }

        let mappings: HashSet<u64> = profile.mapping.iter().map(|m| m.id).collect();
        assert_eq!(mappings.len(), profile.mapping.len(), "mapping ids unique");
        assert!(!mappings.contains(&0));
        let functions: HashMap<u64, &Function> = profile.function.iter().map(|f| (f.id, f)).collect();
        assert_eq!(functions.len(), profile.function.len(), "function ids unique");
        assert!(!functions.contains_key(&0));
        let function_names: HashSet<&str> = profile.function.iter().map(|f| string(f.name)).collect();
        assert_eq!(function_names.len(), profile.function.len(), "one function per name");
        let locations: HashMap<u64, &Location> = profile.location.iter().map(|l| (l.id, l)).collect();
        assert_eq!(locations.len(), profile.location.len(), "location ids unique");
        assert!(!locations.contains_key(&0));
        for location in &profile.location {
            assert!(location.mapping_id == 0 || mappings.contains(&location.mapping_id));
            assert_eq!(location.line.len(), 1);
            assert!(functions.contains_key(&location.line[0].function_id));
        }

        let mut stacks = BTreeMap::new();
        for sample in &profile.sample {
            assert_eq!(sample.value.len(), profile.sample_type.len());
            let mut stack: Vec<String> = sample
                .location_id
                .iter()
                .map(|id| {
                    let function = functions[&locations.get(id).expect("location exists").line[0].function_id];
                    string(function.name).to_string()
                })
                .collect();
            stack.reverse();
            let sum: &mut i64 = stacks.entry(stack).or_default();
            *sum = sum.saturating_add(sample.value[0]);
        }
        stacks
    }

    #[test]
    fn valid_profile_with_the_tree_stacks() {
        let tree = sample_tree();
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let profile = pprof(&tree, &cpu, 1_700_000_000_000_000_000, 60_000_000_000);
        let decoded = Profile::decode(profile.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, profile);

        let stacks = checked_stacks(&decoded);
        assert_eq!(stacks, tree_stacks(&tree));
        assert_eq!(decoded.sample.iter().map(|s| s.value[0]).sum::<i64>(), tree.total());
        assert_eq!(
            decoded.function.len(),
            10,
            "main work hash alloc memmove idle gc mark sweep bg"
        );
        assert_eq!(decoded.location.len(), decoded.function.len());
        let name = |id: i64| decoded.string_table[id as usize].as_str();
        assert_eq!(
            (name(decoded.sample_type[0].r#type), name(decoded.sample_type[0].unit)),
            ("cpu", "nanoseconds")
        );
        let period_type = decoded.period_type.unwrap();
        assert_eq!(
            (name(period_type.r#type), name(period_type.unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(
            (decoded.time_nanos, decoded.duration_nanos),
            (1_700_000_000_000_000_000, 60_000_000_000)
        );
        // The leaf comes first in a sample.
        let hash = decoded.sample.iter().find(|s| s.value[0] == 50).unwrap();
        let leaf = decoded.function.iter().find(|f| f.id == hash.location_id[0]).unwrap();
        assert_eq!(name(leaf.name), "hash");
    }

    #[test]
    fn no_period_type_and_empty_tree() {
        let memory = ProfileType::parse("memory:inuse_space:bytes::").unwrap();
        let profile = pprof(&FlameTree::new(), &memory, 0, 0);
        assert!(profile.period_type.is_none());
        assert!(profile.sample.is_empty() && profile.location.is_empty() && profile.function.is_empty());
        assert_eq!(profile.string_table, vec!["", "inuse_space", "bytes"]);
        checked_stacks(&profile);
    }

    #[test]
    fn gzip_round_trip() {
        let tree = sample_tree();
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let profile = pprof(&tree, &cpu, 1, 2);
        let gzipped = encode_pprof_gzip(&profile);
        assert_eq!(&gzipped[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        GzDecoder::new(gzipped.as_slice()).read_to_end(&mut raw).unwrap();
        assert_eq!(Profile::decode(raw.as_slice()).unwrap(), profile);
    }
}
