//! Deduplicated symbol tables: strings, mappings, functions, locations (lines in a `SmallVec`)
//! and stacks as a hash-consed tree (`stack = (parent_stack, location)`), so a stack seen a
//! million times is stored once. One table per head bucket and per block.

use foldhash::{HashMap, HashMapExt};
use std::hash::Hash;

use smallvec::SmallVec;

use crate::proto::google::v1 as pprof;
use crate::proto::pyrite::v1 as block_proto;

/// Stack id of the empty stack (the root); real stacks start at 1.
pub const ROOT_STACK: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Function {
    pub name: u32,
    pub system_name: u32,
    pub filename: u32,
    pub start_line: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mapping {
    pub memory_start: u64,
    pub memory_limit: u64,
    pub file_offset: u64,
    pub filename: u32,
    pub build_id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Line {
    pub function: u32,
    pub line: i64,
}

/// A code address with its (possibly inlined) lines; `lines[0]` is the innermost callee.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Location {
    /// Mapping index + 1; 0 means no mapping.
    pub mapping: u32,
    pub address: u64,
    pub lines: SmallVec<[Line; 2]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StackNode {
    parent: u32,
    location: u32,
}

/// Append-only table that hands out one id per distinct value.
#[derive(Debug, Clone)]
struct Interned<T: Hash + Eq + Clone> {
    values: Vec<T>,
    ids: HashMap<T, u32>,
}

impl<T: Hash + Eq + Clone> Default for Interned<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl<T: Hash + Eq + Clone> Interned<T> {
    fn intern(&mut self, value: T) -> u32 {
        if let Some(&id) = self.ids.get(&value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.ids.insert(value, id);
        id
    }

    fn from_values(values: Vec<T>) -> Self {
        let ids = values
            .iter()
            .enumerate()
            .map(|(id, value)| (value.clone(), id as u32))
            .collect();
        Self { values, ids }
    }
}

impl Interned<String> {
    /// Interns a borrowed string, allocating only when it is new.
    fn intern_str(&mut self, value: &str) -> u32 {
        match self.ids.get(value) {
            Some(&id) => id,
            None => self.intern(value.to_string()),
        }
    }
}

/// The symbol tables of one head bucket or block.
#[derive(Debug, Clone)]
pub struct SymbolTable {
    strings: Interned<String>,
    /// Sum of the interned strings' lengths, kept so [`SymbolTable::estimated_bytes`] is O(1):
    /// the head asks on every append.
    string_bytes: usize,
    functions: Interned<Function>,
    mappings: Interned<Mapping>,
    locations: Interned<Location>,
    stacks: Interned<StackNode>,
    /// Whole sample stacks seen before: a hash of a stack's location sequence → its leaf stack
    /// id. Interning a stack frame by frame costs one probe of `stacks` per frame, and that
    /// table is large (a node per distinct prefix), so each probe is a cache miss: one probe
    /// per *sample* here, checked by walking the candidate's parent chain (nodes interned
    /// together sit together), finds a stack seen before. Only a cache: a miss (or a hash
    /// collision, which fails the check) interns frame by frame, so ids are the same either way.
    leaves: HashMap<u64, u32>,
    /// Table location ids of the sample being interned, root first (kept to reuse its memory).
    scratch: Vec<u32>,
}

impl Default for SymbolTable {
    fn default() -> Self {
        let mut table = Self {
            strings: Interned::default(),
            string_bytes: 0,
            functions: Interned::default(),
            mappings: Interned::default(),
            locations: Interned::default(),
            stacks: Interned::default(),
            leaves: HashMap::new(),
            scratch: Vec::new(),
        };
        table.strings.intern(String::new());
        // Stack id 0 is the root sentinel, so real stack ids are never 0.
        table.stacks.intern(StackNode {
            parent: u32::MAX,
            location: u32::MAX,
        });
        table
    }
}

/// How the ids of one decoded pprof map into a [`SymbolTable`].
pub struct ProfileSymbols {
    locations: LocationIds,
}

/// pprof location (or function) id → table id. Profilers number them 1..=n (Go does), so a
/// vector indexed by id is the usual form: no hashing per frame.
enum LocationIds {
    /// Indexed by pprof id; [`NO_ID`] where the profile has no such id.
    Dense(Vec<u32>),
    /// Ids too sparse for a vector of their range.
    Sparse(HashMap<u64, u32>),
}

const NO_ID: u32 = u32::MAX;

impl LocationIds {
    fn new(ids: impl Iterator<Item = (u64, u32)> + Clone, count: usize) -> Self {
        let max = ids.clone().map(|(id, _)| id).max().unwrap_or(0);
        // A vector of at most 4 slots per location (and a little slack for tiny profiles).
        if max <= (count as u64).saturating_mul(4).saturating_add(64) {
            let mut dense = vec![NO_ID; max as usize + 1];
            for (id, location) in ids {
                dense[id as usize] = location;
            }
            Self::Dense(dense)
        } else {
            Self::Sparse(ids.collect())
        }
    }

    fn get(&self, id: u64) -> Option<u32> {
        match self {
            Self::Dense(dense) => usize::try_from(id)
                .ok()
                .and_then(|id| dense.get(id).copied())
                .filter(|&location| location != NO_ID),
            Self::Sparse(sparse) => sparse.get(&id).copied(),
        }
    }
}

/// Hash of a stack's table location ids, root first (FxHash's step: the leaf map hashes the
/// result again, so this only has to tell sequences apart).
fn sequence_hash(locations: &[u32]) -> u64 {
    locations.iter().fold(locations.len() as u64, |hash, &location| {
        (hash.rotate_left(5) ^ u64::from(location)).wrapping_mul(0x517c_c1b7_2722_0a95)
    })
}

impl SymbolTable {
    /// Interns the mappings, functions and locations of a validated profile.
    pub fn add_profile(&mut self, profile: &pprof::Profile) -> ProfileSymbols {
        // Profile string index → table string id, each looked up once per profile (Go's
        // functions share their file names, and `system_name` repeats `name`).
        let mut strings = vec![NO_ID; profile.string_table.len()];
        let mut string = |table: &mut Self, index: i64| {
            let slot = &mut strings[index as usize];
            if *slot == NO_ID {
                let value = profile.string_table[index as usize].as_str();
                let before = table.strings.values.len();
                *slot = table.strings.intern_str(value);
                if table.strings.values.len() > before {
                    table.string_bytes += value.len();
                }
            }
            *slot
        };
        let mut mapping_ids = HashMap::with_capacity(profile.mapping.len());
        for mapping in &profile.mapping {
            let value = Mapping {
                memory_start: mapping.memory_start,
                memory_limit: mapping.memory_limit,
                file_offset: mapping.file_offset,
                filename: string(self, mapping.filename),
                build_id: string(self, mapping.build_id),
            };
            mapping_ids.insert(mapping.id, self.mappings.intern(value) + 1);
        }
        let mut function_ids = Vec::with_capacity(profile.function.len());
        for function in &profile.function {
            let value = Function {
                name: string(self, function.name),
                system_name: string(self, function.system_name),
                filename: string(self, function.filename),
                start_line: function.start_line,
            };
            function_ids.push((function.id, self.functions.intern(value)));
        }
        let function_ids = LocationIds::new(function_ids.iter().copied(), function_ids.len());
        let mut locations = Vec::with_capacity(profile.location.len());
        for location in &profile.location {
            let value = Location {
                mapping: mapping_ids.get(&location.mapping_id).copied().unwrap_or(0),
                address: location.address,
                lines: location
                    .line
                    .iter()
                    .filter_map(|line| {
                        Some(Line {
                            function: function_ids.get(line.function_id)?,
                            line: line.line,
                        })
                    })
                    .collect(),
            };
            locations.push((location.id, self.locations.intern(value)));
        }
        ProfileSymbols {
            locations: LocationIds::new(locations.iter().copied(), locations.len()),
        }
    }

    /// Interns every symbol and stack of `other` (a block being merged into this table) and
    /// returns, for each of `other`'s stack ids, the id of the same stack here.
    pub fn import(&mut self, other: &SymbolTable) -> Vec<u32> {
        let strings: Vec<u32> = other
            .strings
            .values
            .iter()
            .map(|value| {
                let before = self.strings.values.len();
                let id = self.strings.intern_str(value);
                if self.strings.values.len() > before {
                    self.string_bytes += value.len();
                }
                id
            })
            .collect();
        let mappings: Vec<u32> = other
            .mappings
            .values
            .iter()
            .map(|mapping| {
                self.mappings.intern(Mapping {
                    filename: strings[mapping.filename as usize],
                    build_id: strings[mapping.build_id as usize],
                    ..*mapping
                })
            })
            .collect();
        let functions: Vec<u32> = other
            .functions
            .values
            .iter()
            .map(|function| {
                self.functions.intern(Function {
                    name: strings[function.name as usize],
                    system_name: strings[function.system_name as usize],
                    filename: strings[function.filename as usize],
                    start_line: function.start_line,
                })
            })
            .collect();
        let locations: Vec<u32> = other
            .locations
            .values
            .iter()
            .map(|location| {
                self.locations.intern(Location {
                    // Mapping index + 1, 0 for none.
                    mapping: match location.mapping {
                        0 => 0,
                        index => mappings[index as usize - 1] + 1,
                    },
                    address: location.address,
                    lines: location
                        .lines
                        .iter()
                        .map(|line| Line {
                            function: functions[line.function as usize],
                            line: line.line,
                        })
                        .collect(),
                })
            })
            .collect();
        // A stack is interned after its parent, so parents come first in id order.
        let mut stacks = Vec::with_capacity(other.stacks.values.len());
        stacks.push(ROOT_STACK);
        for node in &other.stacks.values[1..] {
            let stack = self.stacks.intern(StackNode {
                parent: stacks[node.parent as usize],
                location: locations[node.location as usize],
            });
            stacks.push(stack);
        }
        stacks
    }

    /// Interns a pprof stack (location ids, leaf first) and returns its stack id. Location ids
    /// the profile does not define are skipped.
    pub fn add_stack(&mut self, symbols: &ProfileSymbols, location_ids_leaf_first: &[u64]) -> u32 {
        let mut path = std::mem::take(&mut self.scratch);
        path.clear();
        path.extend(
            location_ids_leaf_first
                .iter()
                .rev()
                .filter_map(|&location_id| symbols.locations.get(location_id)),
        );
        let hash = sequence_hash(&path);
        let stack = match self.leaves.get(&hash) {
            Some(&leaf) if self.stack_is(leaf, &path) => leaf,
            cached => {
                let mut stack = ROOT_STACK;
                for &location in &path {
                    stack = self.stacks.intern(StackNode {
                        parent: stack,
                        location,
                    });
                }
                // On a collision the first stack keeps the slot; the other one is interned
                // frame by frame each time (correct, only slower).
                if cached.is_none() {
                    self.leaves.insert(hash, stack);
                }
                stack
            }
        };
        self.scratch = path;
        stack
    }

    /// Whether `stack`'s frames are `path` (table location ids, root first).
    fn stack_is(&self, stack: u32, path: &[u32]) -> bool {
        let mut node = stack;
        for &location in path.iter().rev() {
            if node == ROOT_STACK {
                return false;
            }
            let StackNode { parent, location: at } = self.stacks.values[node as usize];
            if at != location {
                return false;
            }
            node = parent;
        }
        node == ROOT_STACK
    }

    /// Function names of a stack, root first (inlined frames expanded).
    pub fn stack_names(&self, stack: u32, out: &mut Vec<String>) {
        out.clear();
        self.visit_stack_frames(stack, |name| out.push(name.to_string()));
    }

    /// Calls `visit` with each frame's name, root first.
    pub fn visit_stack_frames(&self, stack: u32, visit: impl FnMut(&str)) {
        self.visit_stack_frames_within(stack, usize::MAX, visit);
    }

    /// [`SymbolTable::visit_stack_frames`] of at most the first (root) `max_frames` frames,
    /// in memory O(`max_frames`) however deep the stack (data stored before ingest bounded
    /// stack depth may hold millions of frames).
    pub fn visit_stack_frames_within(&self, stack: u32, max_frames: usize, mut visit: impl FnMut(&str)) {
        let mut skip = 0usize;
        if max_frames != usize::MAX {
            let mut depth = 0usize;
            let mut node = stack;
            while node != ROOT_STACK {
                depth += 1;
                node = self.stacks.values[node as usize].parent;
            }
            skip = depth.saturating_sub(max_frames);
        }
        let mut locations: SmallVec<[u32; 64]> = SmallVec::new();
        let mut node = stack;
        while node != ROOT_STACK {
            let StackNode { parent, location } = self.stacks.values[node as usize];
            if skip > 0 {
                skip -= 1;
            } else {
                locations.push(location);
            }
            node = parent;
        }
        let mut address_name = String::new();
        let mut frames = 0usize;
        let mut visit = |name: &str| {
            if frames < max_frames {
                frames += 1;
                visit(name);
            }
        };
        for &location in locations.iter().rev() {
            let location = &self.locations.values[location as usize];
            if location.lines.is_empty() {
                address_name.clear();
                use std::fmt::Write;
                let _ = write!(address_name, "0x{:x}", location.address);
                visit(&address_name);
                continue;
            }
            // The last line is the caller; earlier ones are callees inlined into it.
            for line in location.lines.iter().rev() {
                visit(self.function_name(line.function));
            }
        }
    }

    /// A function's display name: its name, else its system name, else "unknown".
    pub fn function_name(&self, function: u32) -> &str {
        let function = &self.functions.values[function as usize];
        let name = &self.strings.values[function.name as usize];
        if !name.is_empty() {
            return name;
        }
        let system_name = &self.strings.values[function.system_name as usize];
        if !system_name.is_empty() {
            system_name
        } else {
            "unknown"
        }
    }

    /// Parent stack of `stack` (the root for one-frame stacks).
    pub fn stack_parent(&self, stack: u32) -> u32 {
        self.stacks.values[stack as usize].parent
    }

    /// Location of the leaf frame of `stack`.
    pub fn stack_location(&self, stack: u32) -> &Location {
        &self.locations.values[self.stacks.values[stack as usize].location as usize]
    }

    /// Location id of the leaf frame of `stack` (see [`SymbolTable::location`]).
    pub fn stack_location_id(&self, stack: u32) -> u32 {
        self.stacks.values[stack as usize].location
    }

    pub fn location(&self, id: u32) -> &Location {
        &self.locations.values[id as usize]
    }

    pub fn location_count(&self) -> usize {
        self.locations.values.len()
    }

    pub fn function_count(&self) -> usize {
        self.functions.values.len()
    }

    pub fn stack_count(&self) -> usize {
        self.stacks.values.len()
    }

    /// Rough heap size, for the head's flush-by-size rule. A stack node counts 40 bytes: its
    /// 24 and, at most one per node, the 16 of a `leaves` entry (so a table rebuilt from a
    /// block, whose leaf cache is empty, counts what the head's did).
    pub fn estimated_bytes(&self) -> usize {
        self.string_bytes
            + self.strings.values.len() * 48
            + self.functions.values.len() * 48
            + self.mappings.values.len() * 64
            + self.locations.values.len() * 96
            + self.stacks.values.len() * 40
    }

    /// The tables as the block format's protobuf message.
    pub fn to_proto(&self) -> block_proto::Symbols {
        block_proto::Symbols {
            strings: self.strings.values.clone(),
            functions: self
                .functions
                .values
                .iter()
                .map(|f| block_proto::Function {
                    name: f.name,
                    system_name: f.system_name,
                    filename: f.filename,
                    start_line: f.start_line,
                })
                .collect(),
            locations: self
                .locations
                .values
                .iter()
                .map(|l| block_proto::Location {
                    mapping: l.mapping,
                    address: l.address,
                    lines: l
                        .lines
                        .iter()
                        .map(|line| block_proto::Line {
                            function: line.function,
                            line: line.line,
                        })
                        .collect(),
                })
                .collect(),
            mappings: self
                .mappings
                .values
                .iter()
                .map(|m| block_proto::Mapping {
                    memory_start: m.memory_start,
                    memory_limit: m.memory_limit,
                    file_offset: m.file_offset,
                    filename: m.filename,
                    build_id: m.build_id,
                })
                .collect(),
            stack_parents: self.stacks.values.iter().map(|node| node.parent).collect(),
            stack_locations: self.stacks.values.iter().map(|node| node.location).collect(),
        }
    }

    /// Rebuilds tables from a block, refusing references that point outside them.
    pub fn from_proto(symbols: block_proto::Symbols) -> Result<Self, SymbolsError> {
        let strings = symbols.strings.len() as u32;
        let functions = symbols.functions.len() as u32;
        let mappings = symbols.mappings.len() as u32;
        let locations = symbols.locations.len() as u32;
        let check = |what: &'static str, index: u32, len: u32| {
            if index < len {
                Ok(index)
            } else {
                Err(SymbolsError::OutOfRange { what, index, len })
            }
        };
        let function_values = symbols
            .functions
            .iter()
            .map(|f| {
                Ok(Function {
                    name: check("string", f.name, strings)?,
                    system_name: check("string", f.system_name, strings)?,
                    filename: check("string", f.filename, strings)?,
                    start_line: f.start_line,
                })
            })
            .collect::<Result<Vec<_>, SymbolsError>>()?;
        let mapping_values = symbols
            .mappings
            .iter()
            .map(|m| {
                Ok(Mapping {
                    memory_start: m.memory_start,
                    memory_limit: m.memory_limit,
                    file_offset: m.file_offset,
                    filename: check("string", m.filename, strings)?,
                    build_id: check("string", m.build_id, strings)?,
                })
            })
            .collect::<Result<Vec<_>, SymbolsError>>()?;
        let location_values = symbols
            .locations
            .iter()
            .map(|l| {
                if l.mapping > mappings {
                    return Err(SymbolsError::OutOfRange {
                        what: "mapping",
                        index: l.mapping,
                        len: mappings,
                    });
                }
                Ok(Location {
                    mapping: l.mapping,
                    address: l.address,
                    lines: l
                        .lines
                        .iter()
                        .map(|line| {
                            Ok(Line {
                                function: check("function", line.function, functions)?,
                                line: line.line,
                            })
                        })
                        .collect::<Result<_, SymbolsError>>()?,
                })
            })
            .collect::<Result<Vec<_>, SymbolsError>>()?;
        if symbols.stack_parents.len() != symbols.stack_locations.len() || symbols.stack_parents.is_empty() {
            return Err(SymbolsError::StackColumns);
        }
        let mut stack_values = Vec::with_capacity(symbols.stack_parents.len());
        for (index, (&parent, &location)) in symbols.stack_parents.iter().zip(&symbols.stack_locations).enumerate() {
            if index == 0 {
                stack_values.push(StackNode {
                    parent: u32::MAX,
                    location: u32::MAX,
                });
                continue;
            }
            // Parents always precede children, which also rules out cycles.
            check("stack", parent, index as u32)?;
            check("location", location, locations)?;
            stack_values.push(StackNode { parent, location });
        }
        Ok(Self {
            string_bytes: symbols.strings.iter().map(String::len).sum(),
            strings: Interned::from_values(symbols.strings),
            functions: Interned::from_values(function_values),
            mappings: Interned::from_values(mapping_values),
            locations: Interned::from_values(location_values),
            stacks: Interned::from_values(stack_values),
            leaves: HashMap::new(),
            scratch: Vec::new(),
        })
    }
}

/// A block's symbol section that does not hold together.
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    #[error("symbol table: {what} index {index} out of range ({len} entries)")]
    OutOfRange { what: &'static str, index: u32, len: u32 },
    #[error("symbol table: stack columns differ in length or lack the root")]
    StackColumns,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> pprof::Profile {
        let strings = ["", "main", "work", "inlined", "main.go"];
        pprof::Profile {
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            function: (1..=3)
                .map(|id| pprof::Function {
                    id,
                    name: id as i64,
                    filename: 4,
                    ..Default::default()
                })
                .collect(),
            location: vec![
                pprof::Location {
                    id: 10,
                    line: vec![pprof::Line {
                        function_id: 1,
                        line: 5,
                        column: 0,
                    }],
                    ..Default::default()
                },
                pprof::Location {
                    id: 20,
                    line: vec![
                        pprof::Line {
                            function_id: 3,
                            line: 9,
                            column: 0,
                        },
                        pprof::Line {
                            function_id: 2,
                            line: 7,
                            column: 0,
                        },
                    ],
                    ..Default::default()
                },
                pprof::Location {
                    id: 30,
                    address: 0xbeef,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn stacks_are_hash_consed_and_names_root_first() {
        let mut table = SymbolTable::default();
        let symbols = table.add_profile(&profile());
        let a = table.add_stack(&symbols, &[20, 10]);
        let b = table.add_stack(&symbols, &[20, 10]);
        let c = table.add_stack(&symbols, &[30, 10]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(table.stack_parent(a), table.stack_parent(c));
        let mut names = Vec::new();
        table.stack_names(a, &mut names);
        assert_eq!(names, ["main", "work", "inlined"]);
        table.stack_names(c, &mut names);
        assert_eq!(names, ["main", "0xbeef"]);
        // Cut to the root frames, in memory of the frames kept, however deep the stack.
        let mut kept = Vec::new();
        table.visit_stack_frames_within(a, 2, |name| kept.push(name.to_string()));
        assert_eq!(kept, ["main", "work"]);
        let deep_ids: Vec<u64> = std::iter::repeat_n(30, 100_000).chain([10]).collect();
        let deep = table.add_stack(&symbols, &deep_ids);
        kept.clear();
        table.visit_stack_frames_within(deep, 3, |name| kept.push(name.to_string()));
        assert_eq!(kept, ["main", "0xbeef", "0xbeef"]);
        // A second copy of the same profile adds no symbols.
        let before = table.to_proto();
        let symbols = table.add_profile(&profile());
        assert_eq!(table.add_stack(&symbols, &[20, 10]), a);
        assert_eq!(table.to_proto(), before);
    }

    #[test]
    fn the_leaf_cache_gives_the_ids_frame_by_frame_interning_gives() {
        let mut table = SymbolTable::default();
        let symbols = table.add_profile(&profile());
        let long = table.add_stack(&symbols, &[20, 10]);
        // A prefix of a cached stack, and a stack whose prefix is cached: each its own node.
        let short = table.add_stack(&symbols, &[10]);
        assert_eq!(table.stack_parent(long), short);
        let longer = table.add_stack(&symbols, &[30, 20, 10]);
        assert_eq!(table.stack_parent(longer), long);
        // Ids the profile does not define are skipped, the cache keyed by what remains.
        assert_eq!(table.add_stack(&symbols, &[20, 99, 10]), long);
        // A wrong cache entry under a stack's hash (what a collision looks like) fails the
        // check: the stack is interned frame by frame and keeps its id.
        let path = [table.stack_location_id(short), table.stack_location_id(long)];
        table.leaves.insert(sequence_hash(&path), longer);
        assert_eq!(table.add_stack(&symbols, &[20, 10]), long);
        table.leaves.insert(sequence_hash(&path[..1]), long);
        assert_eq!(table.add_stack(&symbols, &[10]), short);
        let stacks = table.stack_count();
        assert_eq!(table.add_stack(&symbols, &[30, 20, 10]), longer);
        assert_eq!(table.stack_count(), stacks, "nothing new interned");
    }

    #[test]
    fn sparse_location_ids_map_too() {
        let mut sparse = profile();
        for location in &mut sparse.location {
            location.id *= 1 << 40;
        }
        let mut table = SymbolTable::default();
        let symbols = table.add_profile(&sparse);
        assert!(matches!(symbols.locations, LocationIds::Sparse(_)));
        let stack = table.add_stack(&symbols, &[20 << 40, 10 << 40]);
        let mut names = Vec::new();
        table.stack_names(stack, &mut names);
        assert_eq!(names, ["main", "work", "inlined"]);
        let dense = SymbolTable::default().add_profile(&profile());
        assert!(matches!(dense.locations, LocationIds::Dense(_)));
    }

    #[test]
    fn proto_round_trip_and_corruption() {
        let mut table = SymbolTable::default();
        let symbols = table.add_profile(&profile());
        let stack = table.add_stack(&symbols, &[20, 10]);
        let restored = SymbolTable::from_proto(table.to_proto()).unwrap();
        let (mut left, mut right) = (Vec::new(), Vec::new());
        table.stack_names(stack, &mut left);
        restored.stack_names(stack, &mut right);
        assert_eq!(left, right);
        let mut broken = table.to_proto();
        broken.stack_parents[1] = 5;
        assert!(matches!(
            SymbolTable::from_proto(broken),
            Err(SymbolsError::OutOfRange { what: "stack", .. })
        ));
    }
}
