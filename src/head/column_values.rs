//! A decoded profile's sample values as the head stores them when they are not the ones
//! the client sent: the cumulative → delta step of `ingest::delta` replaces some columns. The
//! WAL keeps these values beside the raw pushed bytes, and ingest and replay read a sample's
//! values through [`ColumnValues::value`] alike, so what was accepted is what replays —
//! without writing (or encoding) a second copy of the profile.

use crate::proto::google::v1::{Profile, Sample};

/// New values for some sample types (columns) of a decoded profile: what a cumulative → delta
/// step changes, kept beside the profile rather than written into a copy of it. The WAL keeps
/// it with the raw pushed bytes ([`ColumnValues::to_wal`]) and replay applies it to the
/// re-decoded profile with the same code as ingest ([`ColumnValues::value`]). Samples whose values are all 0 once replaced are not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnValues {
    /// Value indices replaced, each at most once.
    columns: Vec<usize>,
    /// Sample-major: sample `s`'s new value of `columns[k]` at `s * columns.len() + k`. Empty
    /// when every new value is 0 (a priming profile).
    values: Vec<i64>,
}

/// Why a [`ColumnValues`] does not fit the profile it is applied to (a damaged WAL record).
#[derive(Debug, thiserror::Error)]
pub enum ColumnValuesError {
    #[error("replaced column {column} is not a sample type of the profile ({types} types) or repeats")]
    Column { column: usize, types: usize },
    #[error("{values} replaced values for {samples} samples × {columns} columns")]
    Shape {
        values: usize,
        samples: usize,
        columns: usize,
    },
}

impl crate::error::Classify for ColumnValuesError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Internal
    }
}

impl ColumnValues {
    /// New values of `columns` for every sample, sample-major (see [`ColumnValues::check`]).
    pub fn new(columns: Vec<usize>, values: Vec<i64>) -> Self {
        Self { columns, values }
    }

    /// `columns` set to 0 in every sample: a priming profile, whose cumulative values are
    /// history, not activity in its window.
    pub fn zeroed(columns: &[usize]) -> Self {
        Self {
            columns: columns.to_vec(),
            values: Vec::new(),
        }
    }

    /// Checks that these values fit `profile` (its sample types and sample count).
    pub fn check(&self, profile: &Profile) -> Result<(), ColumnValuesError> {
        let types = profile.sample_type.len();
        for (position, &column) in self.columns.iter().enumerate() {
            if column >= types || self.columns[..position].contains(&column) {
                return Err(ColumnValuesError::Column { column, types });
            }
        }
        if !self.values.is_empty() && self.values.len() != profile.sample.len() * self.columns.len() {
            return Err(ColumnValuesError::Shape {
                values: self.values.len(),
                samples: profile.sample.len(),
                columns: self.columns.len(),
            });
        }
        Ok(())
    }

    /// Value `value_index` of sample number `sample` (of the profile these were checked for).
    pub fn value(&self, sample_index: usize, sample: &Sample, value_index: usize) -> i64 {
        match self.columns.iter().position(|&column| column == value_index) {
            None => sample.value.get(value_index).copied().unwrap_or(0),
            Some(_) if self.values.is_empty() => 0,
            Some(position) => self.values[sample_index * self.columns.len() + position],
        }
    }

    /// Whether sample number `sample` keeps any non-zero value.
    pub fn keeps(&self, sample_index: usize, sample: &Sample) -> bool {
        (0..sample.value.len()).any(|value_index| self.value(sample_index, sample, value_index) != 0)
    }

    /// Samples of `profile` kept.
    pub fn kept_samples(&self, profile: &Profile) -> usize {
        profile
            .sample
            .iter()
            .enumerate()
            .filter(|(index, sample)| self.keeps(*index, sample))
            .count()
    }

    /// `profile` with these values written in and the samples left all 0 dropped (for tests
    /// and tools; ingest reads [`ColumnValues::value`] instead of building it).
    pub fn to_profile(&self, profile: &Profile) -> Profile {
        let mut out = Profile {
            sample: Vec::new(),
            ..profile.clone()
        };
        for (index, sample) in profile.sample.iter().enumerate() {
            if !self.keeps(index, sample) {
                continue;
            }
            let mut sample = sample.clone();
            for (value_index, slot) in sample.value.iter_mut().enumerate() {
                *slot = self.value(index, &profile.sample[index], value_index);
            }
            out.sample.push(sample);
        }
        out
    }

    /// The WAL's form of these values.
    pub fn to_wal(&self) -> crate::proto::pyrite::v1::WalColumnValues {
        crate::proto::pyrite::v1::WalColumnValues {
            columns: self.columns.iter().map(|&column| column as u32).collect(),
            values: self.values.clone(),
        }
    }

    /// Values read back from the WAL; [`ColumnValues::check`] them against their profile.
    pub fn from_wal(wal: &crate::proto::pyrite::v1::WalColumnValues) -> Self {
        Self {
            columns: wal.columns.iter().map(|&column| column as usize).collect(),
            values: wal.values.clone(),
        }
    }
}
