//! A set of series rows sharing one symbol table: what a head bucket accumulates and what a
//! block stores.

use foldhash::HashMap;

use crate::model::{Labels, ProfileType};
use crate::symbols::SymbolTable;

/// The rows `(time, stack, value[, span id])` of one series.
///
/// `span_ids` is an optional column: empty while no row of the series carries a span id (the
/// common case costs nothing), otherwise one entry per row, 0 meaning "no span".
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub profile_type: ProfileType,
    pub min_time_ms: i64,
    pub max_time_ms: i64,
    pub total: i64,
    pub times: Vec<i64>,
    pub stacks: Vec<u32>,
    pub values: Vec<i64>,
    pub span_ids: Vec<u64>,
    /// The rows summed per profile (per distinct time), kept beside them so a time series reads
    /// one entry per profile instead of every row. Empty for a series read back as its
    /// per-stack totals (`block::load_series_totals`), whose rows are not real rows either; a
    /// series read back as these totals alone (`block::load_series_profiles`) has no rows.
    pub profiles: ProfileTotals,
}

/// Per profile of a series, sorted by time and one entry per distinct time: the time and the
/// sum of the values of the rows at it. Profiles of one series at the same millisecond are
/// one entry, as a time series cannot tell them apart either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileTotals {
    pub times: Vec<i64>,
    pub totals: Vec<i64>,
}

impl ProfileTotals {
    /// The totals of rows given as parallel columns, in any order.
    pub fn from_rows(times: &[i64], values: &[i64]) -> Self {
        let mut profiles = Self::default();
        if times.is_sorted() {
            for (&time, &value) in times.iter().zip(values) {
                profiles.add(time, value);
            }
            return profiles;
        }
        // Out of order (a damaged or fuzzed block): sorted first, so this stays O(n log n).
        let mut rows: Vec<(i64, i64)> = times.iter().copied().zip(values.iter().copied()).collect();
        rows.sort_unstable_by_key(|&(time, _)| time);
        for (time, value) in rows {
            profiles.add(time, value);
        }
        profiles
    }

    /// Adds one row's value at `time`; true when that makes a new entry. Rows come mostly in
    /// time order, so the common case appends or adds to the last entry.
    pub fn add(&mut self, time: i64, value: i64) -> bool {
        let at = match self.times.last() {
            Some(&last) if last == time => self.times.len() - 1,
            Some(&last) if last > time => match self.times.binary_search(&time) {
                Ok(at) => at,
                Err(at) => {
                    self.times.insert(at, time);
                    self.totals.insert(at, value);
                    return true;
                }
            },
            _ => {
                self.times.push(time);
                self.totals.push(value);
                return true;
            }
        };
        self.totals[at] = self.totals[at].saturating_add(value);
        false
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

impl Series {
    /// The span id of row `row`, 0 if none.
    pub fn span_id(&self, row: usize) -> u64 {
        self.span_ids.get(row).copied().unwrap_or(0)
    }
}

/// Sample label keys that carry a span id: Pyroscope's `span_id`, `pprof.span_id` as some
/// OpenTelemetry profilers name it, and `profile_id`, which Pyroscope's distributor renames to
/// `span_id` (`pprof.RenameLabel(profile, ProfileIDLabelName, SpanIDLabelName)`).
pub const SPAN_ID_LABELS: [&str; 3] = ["span_id", "pprof.span_id", "profile_id"];

/// A span id as clients write it: exactly 16 hex digits. 0 (all zeros) is "no span".
pub fn parse_span_id(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok().filter(|&id| id != 0)
}

/// The span id of a pprof sample, from its first string label named in [`SPAN_ID_LABELS`]
/// that holds a valid id; 0 if none.
pub fn sample_span_id(profile: &crate::proto::google::v1::Profile, sample: &crate::proto::google::v1::Sample) -> u64 {
    let string = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|index| profile.string_table.get(index))
            .map_or("", String::as_str)
    };
    sample
        .label
        .iter()
        .filter(|label| SPAN_ID_LABELS.contains(&string(label.key)))
        .find_map(|label| parse_span_id(string(label.str)))
        .unwrap_or(0)
}

/// Series and the symbols their stacks point into.
#[derive(Debug, Clone, Default)]
pub struct Partition {
    pub symbols: SymbolTable,
    pub series: Vec<Series>,
    index: HashMap<Labels, usize>,
    /// Rows over all series, rows carrying the span-id column and per-profile totals: kept so
    /// [`Partition::estimated_bytes`] is O(1), as the head asks on every append.
    rows: usize,
    span_rows: usize,
    profiles: usize,
}

impl Partition {
    /// A partition read back from a block. Its label index is built on the first
    /// [`Partition::series_index`] call: queries load partitions only to read them.
    pub fn from_parts(symbols: SymbolTable, series: Vec<Series>) -> Self {
        Self {
            symbols,
            rows: series.iter().map(|s| s.times.len()).sum(),
            span_rows: series.iter().map(|s| s.span_ids.len()).sum(),
            profiles: series.iter().map(|s| s.profiles.len()).sum(),
            series,
            index: HashMap::default(),
        }
    }

    /// Whether a series with these labels (which include `__profile_type__`) exists.
    pub fn contains_series(&self, labels: &Labels) -> bool {
        if self.index.len() == self.series.len() {
            self.index.contains_key(labels)
        } else {
            self.series.iter().any(|series| &series.labels == labels)
        }
    }

    /// Index of the series with these labels, created if new. The labels include
    /// `__profile_type__`, so they identify the series on their own.
    pub fn series_index(&mut self, labels: &Labels, profile_type: &ProfileType) -> usize {
        if self.index.len() < self.series.len() {
            self.index = self
                .series
                .iter()
                .enumerate()
                .map(|(position, series)| (series.labels.clone(), position))
                .collect();
        }
        if let Some(&index) = self.index.get(labels) {
            return index;
        }
        let index = self.series.len();
        self.series.push(Series {
            labels: labels.clone(),
            profile_type: profile_type.clone(),
            min_time_ms: i64::MAX,
            max_time_ms: i64::MIN,
            total: 0,
            times: Vec::new(),
            stacks: Vec::new(),
            values: Vec::new(),
            span_ids: Vec::new(),
            profiles: ProfileTotals::default(),
        });
        self.index.insert(labels.clone(), index);
        index
    }

    /// Appends one row to series `index`.
    pub fn push_row(&mut self, index: usize, time_ms: i64, stack: u32, value: i64) {
        self.push_row_with_span(index, time_ms, stack, value, 0);
    }

    /// Appends one row to series `index`, with the span id of its sample (0: none).
    pub fn push_row_with_span(&mut self, index: usize, time_ms: i64, stack: u32, value: i64, span_id: u64) {
        let series = &mut self.series[index];
        if span_id != 0 && series.span_ids.is_empty() {
            series.span_ids.resize(series.times.len(), 0);
            self.span_rows += series.times.len();
        }
        if span_id != 0 || !series.span_ids.is_empty() {
            series.span_ids.push(span_id);
            self.span_rows += 1;
        }
        self.rows += 1;
        series.min_time_ms = series.min_time_ms.min(time_ms);
        series.max_time_ms = series.max_time_ms.max(time_ms);
        series.total = series.total.saturating_add(value);
        series.times.push(time_ms);
        series.stacks.push(stack);
        series.values.push(value);
        if series.profiles.add(time_ms, value) {
            self.profiles += 1;
        }
    }

    /// Appends one row, finding or creating the series.
    pub fn push(&mut self, labels: &Labels, profile_type: &ProfileType, time_ms: i64, stack: u32, value: i64) {
        let index = self.series_index(labels, profile_type);
        self.push_row(index, time_ms, stack, value);
    }

    /// Appends every row of `other` (another block of the same tenant and bucket), its stacks
    /// re-interned into this partition's symbols.
    pub fn absorb(&mut self, other: &Partition) {
        let stacks = self.symbols.import(&other.symbols);
        for series in &other.series {
            let index = self.series_index(&series.labels, &series.profile_type);
            for row in 0..series.times.len() {
                self.push_row_with_span(
                    index,
                    series.times[row],
                    stacks[series.stacks[row] as usize],
                    series.values[row],
                    series.span_id(row),
                );
            }
        }
    }

    pub fn sample_count(&self) -> usize {
        self.rows
    }

    /// Rough heap size, for the head's flush-by-size rule.
    pub fn estimated_bytes(&self) -> usize {
        self.symbols.estimated_bytes()
            + self.rows * 20
            + self.span_rows * 8
            + self.profiles * 16
            + self.series.len() * 256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_ids_parse_and_column_is_optional() {
        assert_eq!(parse_span_id("00000000000000ef"), Some(0xef));
        assert_eq!(parse_span_id("FFFFFFFFFFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_span_id("239"), None);
        assert_eq!(parse_span_id("0000000000000000"), None);
        assert_eq!(parse_span_id("000000000000000g"), None);

        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let labels = Labels::new([("service_name".to_string(), "a".to_string())]).unwrap();
        let mut partition = Partition::default();
        let index = partition.series_index(&labels, &cpu);
        partition.push_row(index, 1, 0, 5);
        assert!(partition.series[0].span_ids.is_empty());
        partition.push_row_with_span(index, 2, 0, 6, 42);
        partition.push_row(index, 3, 0, 7);
        assert_eq!(partition.series[0].span_ids, vec![0, 42, 0]);
        assert_eq!(partition.series[0].span_id(1), 42);
    }

    #[test]
    fn size_counters_match_a_recount() {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/files/gotarget__heap_t1.pb.gz"),
        )
        .unwrap();
        let profile = crate::pprof::decode(&bytes, &crate::pprof::DecodeLimits::default()).unwrap();
        let mut partition = Partition::default();
        let empty = partition.estimated_bytes();
        let symbols = partition.symbols.add_profile(&profile);
        for (value_index, name) in ["a", "b"].into_iter().enumerate() {
            let labels = Labels::new([("service_name".to_string(), name.to_string())]).unwrap();
            let index = partition.series_index(&labels, &ProfileType::parse("memory:a:b:c:d").unwrap());
            for (row, sample) in profile.sample.iter().enumerate() {
                let stack = partition.symbols.add_stack(&symbols, &sample.location_id);
                let span_id = if row == 3 { 7 } else { 0 };
                partition.push_row_with_span(index, 1, stack, sample.value[value_index], span_id);
            }
        }
        assert!(partition.estimated_bytes() > empty);
        assert_eq!(partition.sample_count(), 2 * profile.sample.len());
        let symbols = crate::symbols::SymbolTable::from_proto(partition.symbols.to_proto()).unwrap();
        let recounted = Partition::from_parts(symbols, partition.series.clone());
        assert_eq!(recounted.sample_count(), partition.sample_count());
        assert_eq!(recounted.estimated_bytes(), partition.estimated_bytes());
        // A loaded partition still finds its series by labels.
        let mut recounted = recounted;
        let labels = Labels::new([("service_name".to_string(), "b".to_string())]).unwrap();
        assert_eq!(
            recounted.series_index(&labels, &ProfileType::parse("memory:a:b:c:d").unwrap()),
            1
        );
        assert_eq!(recounted.series.len(), 2);
    }
}
