//! A set of series rows sharing one symbol table: what a head bucket accumulates and what a
//! block stores.

use std::collections::HashMap;

use crate::model::{Labels, ProfileType};
use crate::symbols::SymbolTable;

/// The rows `(time, stack, value)` of one series.
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
}

/// Series and the symbols their stacks point into.
#[derive(Debug, Clone, Default)]
pub struct Partition {
    pub symbols: SymbolTable,
    pub series: Vec<Series>,
    index: HashMap<Labels, usize>,
}

impl Partition {
    pub fn with_symbols(symbols: SymbolTable) -> Self {
        Self {
            symbols,
            series: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Index of the series with these labels, created if new. The labels include
    /// `__profile_type__`, so they identify the series on their own.
    pub fn series_index(&mut self, labels: &Labels, profile_type: &ProfileType) -> usize {
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
        });
        self.index.insert(labels.clone(), index);
        index
    }

    /// Appends one row to series `index`.
    pub fn push_row(&mut self, index: usize, time_ms: i64, stack: u32, value: i64) {
        let series = &mut self.series[index];
        series.min_time_ms = series.min_time_ms.min(time_ms);
        series.max_time_ms = series.max_time_ms.max(time_ms);
        series.total = series.total.saturating_add(value);
        series.times.push(time_ms);
        series.stacks.push(stack);
        series.values.push(value);
    }

    /// Appends one row, finding or creating the series.
    pub fn push(&mut self, labels: &Labels, profile_type: &ProfileType, time_ms: i64, stack: u32, value: i64) {
        let index = self.series_index(labels, profile_type);
        self.push_row(index, time_ms, stack, value);
    }

    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.times.len()).sum()
    }

    /// Rough heap size, for the head's flush-by-size rule.
    pub fn estimated_bytes(&self) -> usize {
        self.symbols.estimated_bytes() + self.sample_count() * 20 + self.series.len() * 256
    }
}
