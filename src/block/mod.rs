//! The on-object-store block format and the in-memory [`Partition`] it is cut from.
//!
//! One block = one tenant × one time bucket × one flush. It is one object
//! `<tenant>/<bucket-start-ms>/<block-id>/data` laid out as
//! `[symbols][series 1 rows]…[series n rows][per-stack totals…][per-profile totals…][index]`
//! `[trailer]`, and a `meta.json` beside it, written last: a block without its meta is
//! invisible, so a crash mid-upload never shows half a block. The meta carries the index's byte
//! range, so a query reads the index, then the symbols, then only the ranges of matching series.
//!
//! Formats ([`BlockMeta::format_version`]): 1 stored every section as plain protobuf (until
//! ad6371c; still read). 2, written now, compresses each section as its own zstd frame (so each
//! stays a range read) after delta-encoding what sorts, and adds per-profile totals. Every
//! compressed section declares its decompressed size (in the meta or the index), and is
//! decompressed into at most that, capped by [`MAX_SECTION_BYTES`]: a damaged or hostile
//! block is an error, never a memory bomb. Compaction rewrites the blocks it merges in the
//! current format.

mod catalog;
mod partition;

pub use catalog::{Catalog, Listing};
pub use partition::{Partition, ProfileTotals, SPAN_ID_LABELS, Series, parse_span_id, sample_span_id};

use std::borrow::Cow;

use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::model::{Labels, ProfileType, Tenant};
use crate::proto::pyrite::v1 as block_proto;
use crate::storage::{Storage, StorageError};
use crate::symbols::{SymbolTable, SymbolsError};

const MAGIC_V1: &[u8; 8] = b"PYRBLK01";
const MAGIC_V2: &[u8; 8] = b"PYRBLK02";
/// `[index length][magic]` in format 1, `[index length][index raw length][magic]` in format 2.
const TRAILER_V1: usize = 16;
const TRAILER_V2: usize = 24;
/// The format [`encode`] writes.
pub const FORMAT_VERSION: u32 = 2;
/// zstd's default level. It already brings blocks under a tenth of the gzipped input
/// (BENCHMARKS.md, "Blocks and ingest"); other levels are not measured yet.
const ZSTD_LEVEL: i32 = 3;
/// Most bytes one block section may take decompressed, whatever it declares: 1 GiB, far above
/// what a flush writes (the head flushes at `max_head_bytes`, 64 MiB by default).
pub const MAX_SECTION_BYTES: u64 = 1 << 30;
const DATA_OBJECT: &str = "data";
const META_OBJECT: &str = "meta.json";

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("block {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("block {key}: {source}")]
    Symbols { key: String, source: SymbolsError },
}

impl BlockError {
    /// The block's bytes are damaged (as opposed to storage being unreachable): reading it
    /// again will fail again, so readers skip it and count it instead of failing.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::Symbols { .. })
    }
}

impl crate::error::Classify for BlockError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            Self::Storage(err) => crate::error::Classify::class(err),
            Self::Corrupt { .. } | Self::Symbols { .. } => crate::error::ErrorClass::Internal,
        }
    }
}

/// What a block holds, published as `meta.json` once its data object is complete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockMeta {
    pub id: String,
    pub tenant: String,
    pub bucket_start_ms: i64,
    pub bucket_duration_ms: i64,
    pub min_time_ms: i64,
    pub max_time_ms: i64,
    pub series: u64,
    pub samples: u64,
    pub size_bytes: u64,
    /// The symbols section is `[0, symbols_length)`.
    pub symbols_length: u64,
    pub index_offset: u64,
    pub index_length: u64,
    pub profile_types: Vec<String>,
    pub created_at_ms: i64,
    /// Blocks this one was compacted from; a listing hides them while they still exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compacted_from: Vec<String>,
    /// Layout of the data object: 1 (metas without this field) or [`FORMAT_VERSION`].
    #[serde(default = "format_1")]
    pub format_version: u32,
    /// Format 2: sizes of the symbols and index sections once decompressed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub symbols_raw_length: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index_raw_length: u64,
}

fn format_1() -> u32 {
    1
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl BlockMeta {
    pub fn data_key(&self) -> String {
        format!("{}/{}/{}/{DATA_OBJECT}", self.tenant, self.bucket_start_ms, self.id)
    }

    pub fn meta_key(&self) -> String {
        format!("{}/{}/{}/{META_OBJECT}", self.tenant, self.bucket_start_ms, self.id)
    }

    /// Whether any sample may fall in `[from, until)`.
    pub fn overlaps(&self, from_ms: i64, until_ms: i64) -> bool {
        crate::model::TimeWindow::new(from_ms, until_ms).overlaps(self.min_time_ms, self.max_time_ms)
    }
}

/// Byte ranges of an encoded block.
pub struct EncodedBlock {
    pub data: Vec<u8>,
    pub symbols_length: u64,
    pub symbols_raw_length: u64,
    pub index_offset: u64,
    pub index_length: u64,
    pub index_raw_length: u64,
}

/// Serializes a partition in the current format ([`FORMAT_VERSION`]).
pub fn encode(partition: &Partition) -> EncodedBlock {
    encode_parts(&partition.symbols, partition.series.iter())
}

/// Appends zstd-compressed sections to a data object.
struct SectionWriter {
    data: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
}

/// Where one compressed section lies and how large it is decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SectionRange {
    offset: u64,
    length: u64,
    raw_length: u64,
}

impl SectionWriter {
    fn new() -> Self {
        let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("a valid zstd level");
        // A frame checksum (4 bytes a section) makes damaged bytes a decompression error
        // rather than plausible wrong rows.
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .expect("zstd takes a checksum flag");
        Self {
            data: Vec::new(),
            compressor,
        }
    }

    fn put(&mut self, raw: &[u8]) -> SectionRange {
        let offset = self.data.len() as u64;
        let compressed = self
            .compressor
            .compress(raw)
            .expect("zstd compresses into a growing Vec");
        self.data.extend_from_slice(&compressed);
        SectionRange {
            offset,
            length: compressed.len() as u64,
            raw_length: raw.len() as u64,
        }
    }
}

/// Encodes the chosen `series` of a partition with its whole symbol table.
pub fn encode_parts<'a>(symbols: &SymbolTable, series: impl Iterator<Item = &'a Series>) -> EncodedBlock {
    let mut writer = SectionWriter::new();
    let mut symbols_proto = symbols.to_proto();
    // Parents precede their children and mostly sit just before them: small differences.
    for (node, parent) in symbols_proto.stack_parents.iter_mut().enumerate().skip(1) {
        *parent = (node as u32).wrapping_sub(*parent);
    }
    if let Some(root) = symbols_proto.stack_parents.first_mut() {
        *root = 0;
    }
    let symbols_section = writer.put(&symbols_proto.encode_to_vec());
    drop(symbols_proto);
    let mut entries = Vec::new();
    let mut later_sections = Vec::new();
    for series in series.filter(|series| !series.times.is_empty()) {
        // By time, then stack: within a profile the stack column climbs in small steps.
        let mut order: Vec<usize> = (0..series.times.len()).collect();
        order.sort_by_key(|&row| (series.times[row], series.stacks[row]));
        let (values, value_divisor) = divided(order.iter().map(|&row| series.values[row]));
        let rows = block_proto::SeriesSamples {
            time_deltas_ms: deltas(order.iter().map(|&row| series.times[row])),
            stack_deltas: deltas(order.iter().map(|&row| i64::from(series.stacks[row]))),
            values,
            value_divisor,
            span_ids: if series.span_ids.is_empty() {
                Vec::new()
            } else {
                order.iter().map(|&row| series.span_id(row)).collect()
            },
            stacks: Vec::new(),
        };
        let rows_section = writer.put(&rows.encode_to_vec());
        entries.push(block_proto::SeriesEntry {
            labels: series.labels.to_pairs(),
            profile_type: series.profile_type.id(),
            min_time_ms: series.min_time_ms,
            max_time_ms: series.max_time_ms,
            total: series.total,
            sample_count: series.times.len() as u64,
            offset: rows_section.offset,
            length: rows_section.length,
            raw_length: rows_section.raw_length,
            ..Default::default()
        });
        // Derived from the rows being written, whatever the series' own profile totals say.
        let sorted_times: Vec<i64> = order.iter().map(|&row| series.times[row]).collect();
        let sorted_values: Vec<i64> = order.iter().map(|&row| series.values[row]).collect();
        later_sections.push((
            stack_totals(series),
            ProfileTotals::from_rows(&sorted_times, &sorted_values),
        ));
    }
    // After every series' rows, so the totals of the series a query wants sit close together
    // (one coalesced range read on S3): first all per-stack totals, then all per-profile ones.
    for (entry, (totals, _)) in entries.iter_mut().zip(&later_sections) {
        let Some(totals) = totals else { continue };
        let section = writer.put(&totals.encode_to_vec());
        (entry.totals_offset, entry.totals_length, entry.totals_raw_length) =
            (section.offset, section.length, section.raw_length);
    }
    for (entry, (_, profiles)) in entries.iter_mut().zip(&later_sections) {
        let (values, value_divisor) = divided(profiles.totals.iter().copied());
        let encoded = block_proto::SeriesSamples {
            time_deltas_ms: deltas(profiles.times.iter().copied()),
            values,
            value_divisor,
            ..Default::default()
        };
        let section = writer.put(&encoded.encode_to_vec());
        (entry.profiles_offset, entry.profiles_length, entry.profiles_raw_length) =
            (section.offset, section.length, section.raw_length);
    }
    drop(later_sections);
    let index = block_proto::BlockIndex {
        symbols_offset: 0,
        symbols_length: symbols_section.length,
        symbols_raw_length: symbols_section.raw_length,
        series: entries,
    };
    let index_section = writer.put(&index.encode_to_vec());
    let mut data = writer.data;
    data.extend_from_slice(&index_section.length.to_le_bytes());
    data.extend_from_slice(&index_section.raw_length.to_le_bytes());
    data.extend_from_slice(MAGIC_V2);
    EncodedBlock {
        data,
        symbols_length: symbols_section.length,
        symbols_raw_length: symbols_section.raw_length,
        index_offset: index_section.offset,
        index_length: index_section.length,
        index_raw_length: index_section.raw_length,
    }
}

/// A column as differences to its previous entry (from 0); wrapping, as decoding adds them:
/// rows may be over i64::MAX ms apart.
fn deltas(column: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut previous = 0i64;
    column
        .map(|value| {
            let delta = value.wrapping_sub(previous);
            previous = value;
            delta
        })
        .collect()
}

/// A value column divided by the greatest common divisor of its values, and that divisor (0
/// when it is 1, or when dividing would gain nothing).
fn divided(column: impl Iterator<Item = i64> + Clone) -> (Vec<i64>, u64) {
    let gcd = column.clone().fold(0u64, |gcd, value| {
        let mut a = gcd;
        let mut b = value.unsigned_abs();
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    });
    match i64::try_from(gcd) {
        Ok(divisor) if divisor > 1 => (column.map(|value| value / divisor).collect(), gcd),
        _ => (column.collect(), 0),
    }
}

/// A series' values summed per stack, where that is at most half its rows (else reading the
/// rows costs about as much).
fn stack_totals(series: &Series) -> Option<block_proto::SeriesSamples> {
    let mut per_stack: std::collections::BTreeMap<u32, i64> = Default::default();
    for (&stack, &value) in series.stacks.iter().zip(&series.values) {
        let total = per_stack.entry(stack).or_default();
        *total = total.saturating_add(value);
        if per_stack.len() * 2 > series.stacks.len() {
            return None;
        }
    }
    per_stack.retain(|_, total| *total != 0);
    let (values, value_divisor) = divided(per_stack.values().copied());
    Some(block_proto::SeriesSamples {
        stack_deltas: deltas(per_stack.keys().map(|&stack| i64::from(stack))),
        values,
        value_divisor,
        ..Default::default()
    })
}

/// Uploads a partition's data object; the block stays invisible until [`publish`].
pub async fn upload(
    storage: &Storage,
    tenant: &Tenant,
    bucket_start_ms: i64,
    bucket_duration_ms: i64,
    partition: &Partition,
) -> Result<BlockMeta, BlockError> {
    let now = crate::now_ms();
    let meta = describe(
        partition,
        format!("{now:013}-{}", uuid::Uuid::new_v4().simple()),
        tenant,
        bucket_start_ms,
        bucket_duration_ms,
    );
    let (meta, data) = meta.with_data(partition);
    storage.put(&meta.data_key(), data).await?;
    Ok(meta)
}

/// Uploads the data object of a block compacted from `sources` under an id derived from their
/// ids. Merging the same sources gives the same bytes, so a data object already there (another
/// compactor's, or one a stopped compaction left without its meta) is this block: it is kept
/// and its meta returned, if its layout matches; `None` if it does not.
pub async fn upload_compacted(
    storage: &Storage,
    sources: &[BlockMeta],
    partition: &Partition,
) -> Result<Option<BlockMeta>, BlockError> {
    let first = &sources[0];
    let mut source_ids: Vec<String> = sources.iter().map(|meta| meta.id.clone()).collect();
    source_ids.sort();
    // Ids sort by their time prefix: the compacted block sorts with its newest source.
    let newest = source_ids
        .iter()
        .map(|id| id.split('-').next().unwrap_or(""))
        .max()
        .unwrap_or("");
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, source_ids.join(",").as_bytes());
    let tenant = Tenant::parse(&first.tenant).map_err(|err| BlockError::Corrupt {
        key: first.meta_key(),
        reason: err.to_string(),
    })?;
    let mut meta = describe(
        partition,
        format!("{newest}-c{}", digest.simple()),
        &tenant,
        first.bucket_start_ms,
        first.bucket_duration_ms,
    );
    meta.compacted_from = source_ids;
    let (meta, data) = meta.with_data(partition);
    let key = meta.data_key();
    let trailer = (data.len() - TRAILER_V2) as u64..data.len() as u64;
    let expected = data.slice(trailer.start as usize..);
    if storage.put_new(&key, data).await? {
        return Ok(Some(meta));
    }
    let found = storage.get_range(&key, trailer).await?;
    if found != expected {
        tracing::warn!(%key, "a different compacted block exists under this id; leaving it");
        return Ok(None);
    }
    Ok(Some(meta))
}

/// The meta of `partition` as block `id`, before its data layout is known.
fn describe(
    partition: &Partition,
    id: String,
    tenant: &Tenant,
    bucket_start_ms: i64,
    bucket_duration_ms: i64,
) -> BlockMeta {
    let mut profile_types: Vec<String> = partition.series.iter().map(|s| s.profile_type.id()).collect();
    profile_types.sort();
    profile_types.dedup();
    BlockMeta {
        id,
        tenant: tenant.to_string(),
        bucket_start_ms,
        bucket_duration_ms,
        min_time_ms: partition
            .series
            .iter()
            .map(|s| s.min_time_ms)
            .min()
            .unwrap_or(bucket_start_ms),
        max_time_ms: partition
            .series
            .iter()
            .map(|s| s.max_time_ms)
            .max()
            .unwrap_or(bucket_start_ms),
        series: partition
            .series
            .iter()
            .filter(|series| !series.times.is_empty())
            .count() as u64,
        samples: partition.series.iter().map(|s| s.times.len() as u64).sum(),
        size_bytes: 0,
        symbols_length: 0,
        index_offset: 0,
        index_length: 0,
        profile_types,
        created_at_ms: crate::now_ms(),
        compacted_from: Vec::new(),
        format_version: FORMAT_VERSION,
        symbols_raw_length: 0,
        index_raw_length: 0,
    }
}

impl BlockMeta {
    /// Encodes `partition` and fills in the layout fields.
    fn with_data(mut self, partition: &Partition) -> (Self, Bytes) {
        let EncodedBlock {
            data,
            symbols_length,
            symbols_raw_length,
            index_offset,
            index_length,
            index_raw_length,
        } = encode(partition);
        self.size_bytes = data.len() as u64;
        self.format_version = FORMAT_VERSION;
        self.symbols_length = symbols_length;
        self.symbols_raw_length = symbols_raw_length;
        self.index_offset = index_offset;
        self.index_length = index_length;
        self.index_raw_length = index_raw_length;
        (self, Bytes::from(data))
    }
}

/// Deletes a block, meta first: a listing never offers a block whose data is gone.
pub async fn delete(storage: &Storage, meta: &BlockMeta) -> Result<(), BlockError> {
    storage.delete(&meta.meta_key()).await?;
    storage.delete(&meta.data_key()).await?;
    Ok(())
}

/// Makes an uploaded block visible to queries by writing its meta.
pub async fn publish(storage: &Storage, meta: &BlockMeta) -> Result<(), BlockError> {
    let meta_json = serde_json::to_vec_pretty(meta).expect("meta serializes");
    storage.put(&meta.meta_key(), Bytes::from(meta_json)).await?;
    Ok(())
}

/// Uploads and publishes a partition as a block.
pub async fn write(
    storage: &Storage,
    tenant: &Tenant,
    bucket_start_ms: i64,
    bucket_duration_ms: i64,
    partition: &Partition,
) -> Result<BlockMeta, BlockError> {
    let meta = upload(storage, tenant, bucket_start_ms, bucket_duration_ms, partition).await?;
    publish(storage, &meta).await?;
    Ok(meta)
}

/// The tenants with a directory in the bucket; other objects sharing it are left out.
pub async fn list_tenants(storage: &Storage) -> Result<Vec<Tenant>, BlockError> {
    Ok(storage
        .list_dirs("")
        .await?
        .iter()
        .filter_map(|name| Tenant::parse(name).ok())
        .collect())
}

/// Metas of the tenant's published blocks that may hold samples in `[from, until)`, listed
/// afresh (long-lived readers keep a [`Catalog`]).
pub async fn list(
    storage: &Storage,
    tenant: &Tenant,
    from_ms: i64,
    until_ms: i64,
) -> Result<Vec<BlockMeta>, BlockError> {
    Ok(Catalog::new(storage.clone(), 0)
        .list(tenant, from_ms, until_ms)
        .await?
        .visible)
}

#[cfg(test)]
pub(crate) fn split_replaced_for_test(metas: Vec<BlockMeta>) -> (Vec<BlockMeta>, Vec<BlockMeta>) {
    split_replaced(metas)
}

/// Splits listed metas into the blocks to read and those another listed block replaces: the
/// sources of a compacted block, and a compacted block whose sources another compacted block
/// covers as well (two compactions that raced; the one with more sources, else the smaller id,
/// stays).
fn split_replaced(metas: Vec<BlockMeta>) -> (Vec<BlockMeta>, Vec<BlockMeta>) {
    use std::collections::{BTreeSet, HashSet};
    let sources: HashSet<&str> = metas
        .iter()
        .flat_map(|meta| meta.compacted_from.iter().map(String::as_str))
        .collect();
    let source_sets: Vec<(&str, BTreeSet<&str>)> = metas
        .iter()
        .filter(|meta| !meta.compacted_from.is_empty())
        .map(|meta| {
            (
                meta.id.as_str(),
                meta.compacted_from.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let superseded = |meta: &BlockMeta| -> bool {
        if meta.compacted_from.is_empty() {
            return false;
        }
        let mine: BTreeSet<&str> = meta.compacted_from.iter().map(String::as_str).collect();
        source_sets.iter().any(|(id, theirs)| {
            *id != meta.id
                && !mine.is_disjoint(theirs)
                && (theirs.len() > mine.len() || (theirs.len() == mine.len() && *id < meta.id.as_str()))
        })
    };
    let hidden: HashSet<String> = metas
        .iter()
        .filter(|meta| sources.contains(meta.id.as_str()) || superseded(meta))
        .map(|meta| meta.id.clone())
        .collect();
    metas.into_iter().partition(|meta| !hidden.contains(&meta.id))
}

/// A block's index entry for one series, without its rows.
#[derive(Debug, Clone)]
pub struct SeriesHeader {
    pub labels: Labels,
    pub profile_type: ProfileType,
    pub min_time_ms: i64,
    pub max_time_ms: i64,
    pub total: i64,
    /// Rows the series holds in this block.
    pub rows: u64,
    /// Format of the block (how its sections are encoded).
    format_version: u32,
    rows_range: SectionRange,
    /// The per-stack totals, if the block has them for this series.
    totals: Option<SectionRange>,
    /// The per-profile totals (format 2).
    profiles: Option<SectionRange>,
}

impl SeriesHeader {
    /// Bytes of the series' rows in the data object.
    pub fn row_bytes(&self) -> u64 {
        self.rows_range.length
    }

    /// Whether every row of the series falls in `[from, until)` and the block holds its
    /// per-stack totals, so [`load_series_totals`] can stand in for its rows.
    pub fn totals_cover(&self, from_ms: i64, until_ms: i64) -> bool {
        self.totals.is_some()
            && crate::model::TimeWindow::new(from_ms, until_ms).covers(self.min_time_ms, self.max_time_ms)
    }

    /// Whether the block holds the series' per-profile totals ([`load_series_profiles`]).
    pub fn has_profile_totals(&self) -> bool {
        self.profiles.is_some()
    }
}

/// What a block's data object holds where, from its meta or (in memory) its trailer.
#[derive(Debug, Clone, Copy)]
struct Layout {
    format_version: u32,
    symbols: SectionRange,
    index: SectionRange,
}

impl Layout {
    fn of(meta: &BlockMeta) -> Self {
        Self {
            format_version: meta.format_version,
            symbols: SectionRange {
                offset: 0,
                length: meta.symbols_length,
                raw_length: meta.symbols_raw_length,
            },
            index: SectionRange {
                offset: meta.index_offset,
                length: meta.index_length,
                raw_length: meta.index_raw_length,
            },
        }
    }
}

/// One section's bytes as protobuf: format 1 stored them as they are, format 2 decompresses
/// them into at most their declared size.
fn section_bytes<'a>(raw: &'a [u8], range: SectionRange, format_version: u32) -> Result<Cow<'a, [u8]>, String> {
    match format_version {
        1 => Ok(Cow::Borrowed(raw)),
        2 => {
            if range.raw_length > MAX_SECTION_BYTES {
                return Err(format!(
                    "a section declares {} bytes decompressed, more than the {MAX_SECTION_BYTES} a section may take",
                    range.raw_length
                ));
            }
            // The frame header states its content size (our writer always sets it): a frame that
            // disagrees with the declaration is refused before the declared bytes are reserved.
            match zstd::zstd_safe::get_frame_content_size(raw) {
                Ok(Some(size)) if size != range.raw_length => {
                    return Err(format!(
                        "a section's frame holds {size} bytes decompressed, not the {} declared",
                        range.raw_length
                    ));
                }
                Ok(_) => {}
                Err(_) => return Err("a section is not a zstd frame".to_string()),
            }
            let decompressed = zstd::bulk::decompress(raw, range.raw_length as usize)
                .map_err(|err| format!("decompressing a section: {err}"))?;
            if decompressed.len() as u64 != range.raw_length {
                return Err(format!(
                    "a section decompresses to {} bytes, not the {} declared",
                    decompressed.len(),
                    range.raw_length
                ));
            }
            Ok(Cow::Owned(decompressed))
        }
        other => Err(format!("unknown block format {other}")),
    }
}

/// The index of a published block.
pub async fn read_index(storage: &Storage, meta: &BlockMeta) -> Result<Vec<SeriesHeader>, BlockError> {
    let key = meta.data_key();
    let corrupt = |reason: String| BlockError::Corrupt {
        key: key.clone(),
        reason,
    };
    let layout = Layout::of(meta);
    let index_end = meta
        .index_offset
        .checked_add(meta.index_length)
        .ok_or_else(|| corrupt("index range overflows".into()))?;
    let raw = storage.get_range(&key, meta.index_offset..index_end).await?;
    let raw =
        section_bytes(&raw, layout.index, layout.format_version).map_err(|err| corrupt(format!("index: {err}")))?;
    let index = block_proto::BlockIndex::decode(&*raw).map_err(|err| corrupt(format!("index: {err}")))?;
    series_headers(index.series, &layout, &key)
}

/// The headers of a block's index entries, each range checked to lie before the index.
fn series_headers(
    entries: Vec<block_proto::SeriesEntry>,
    layout: &Layout,
    key: &str,
) -> Result<Vec<SeriesHeader>, BlockError> {
    let corrupt = |reason: String| BlockError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let index_offset = layout.index.offset;
    let mut headers = Vec::with_capacity(entries.len());
    for entry in entries {
        let outside = |offset: u64, length: u64| offset.checked_add(length).is_none_or(|end| end > index_offset);
        if outside(entry.offset, entry.length)
            || outside(entry.totals_offset, entry.totals_length)
            || outside(entry.profiles_offset, entry.profiles_length)
        {
            return Err(corrupt("series range outside the data section".into()));
        }
        // A series whose labels or profile type break the rules ingest applies (written by an
        // older version, or damaged) is skipped alone: the block's other series stay readable.
        let checked = Labels::from_pairs(&entry.labels)
            .map_err(|err| err.to_string())
            .and_then(|labels| {
                Ok((
                    labels,
                    ProfileType::parse(&entry.profile_type).map_err(|err| err.to_string())?,
                ))
            });
        let (labels, profile_type) = match checked {
            Ok(checked) => checked,
            Err(reason) => {
                crate::integrity::block_corrupt("series");
                tracing::error!(key, %reason, "block series cannot be read; skipped");
                continue;
            }
        };
        let range = |offset: u64, length: u64, raw_length: u64| SectionRange {
            offset,
            length,
            raw_length,
        };
        headers.push(SeriesHeader {
            labels,
            profile_type,
            min_time_ms: entry.min_time_ms,
            max_time_ms: entry.max_time_ms,
            total: entry.total,
            rows: entry.sample_count,
            format_version: layout.format_version,
            rows_range: range(entry.offset, entry.length, entry.raw_length),
            totals: (entry.totals_length > 0).then_some(range(
                entry.totals_offset,
                entry.totals_length,
                entry.totals_raw_length,
            )),
            profiles: (entry.profiles_length > 0 && layout.format_version >= 2).then_some(range(
                entry.profiles_offset,
                entry.profiles_length,
                entry.profiles_raw_length,
            )),
        });
    }
    Ok(headers)
}

/// A block's symbol section, decoded and checked.
fn decode_symbols(raw: &[u8], layout: &Layout, key: &str) -> Result<SymbolTable, BlockError> {
    let corrupt = |reason: String| BlockError::Corrupt {
        key: key.to_string(),
        reason: format!("symbols: {reason}"),
    };
    let raw = section_bytes(raw, layout.symbols, layout.format_version).map_err(corrupt)?;
    let mut symbols = block_proto::Symbols::decode(&*raw).map_err(|err| corrupt(err.to_string()))?;
    if layout.format_version >= 2 {
        // Stored as node - parent; a difference past the node is caught by from_proto (a
        // parent must precede its node), as the wrapped-around parent is then out of range.
        for (node, parent) in symbols.stack_parents.iter_mut().enumerate().skip(1) {
            *parent = (node as u32).wrapping_sub(*parent);
        }
    }
    SymbolTable::from_proto(symbols).map_err(|source| BlockError::Symbols {
        key: key.to_string(),
        source,
    })
}

/// Loads a block's symbol tables.
pub async fn load_symbols(storage: &Storage, meta: &BlockMeta) -> Result<SymbolTable, BlockError> {
    let key = meta.data_key();
    let corrupt = |reason: String| BlockError::Corrupt {
        key: key.clone(),
        reason,
    };
    if meta.symbols_length > meta.index_offset {
        return Err(corrupt("symbols section overlaps the index".into()));
    }
    let raw_symbols = storage.get_range(&key, 0..meta.symbols_length).await?;
    decode_symbols(&raw_symbols, &Layout::of(meta), &key)
}

/// Loads the rows of the chosen series of a block, checking them against its symbols.
pub async fn load_series(
    storage: &Storage,
    meta: &BlockMeta,
    symbols: &SymbolTable,
    headers: &[SeriesHeader],
) -> Result<Vec<Series>, BlockError> {
    load_section(storage, meta, Some(symbols), headers, Section::Rows).await
}

/// Loads the per-stack totals of the chosen series in place of their rows: one row per stack,
/// stamped with the series' first time. Only for readers that sum a window covering each
/// series whole ([`SeriesHeader::totals_cover`]); headers without totals are an error.
pub async fn load_series_totals(
    storage: &Storage,
    meta: &BlockMeta,
    symbols: &SymbolTable,
    headers: &[SeriesHeader],
) -> Result<Vec<Series>, BlockError> {
    load_section(storage, meta, Some(symbols), headers, Section::Totals).await
}

/// Loads the per-profile totals of the chosen series ([`Series::profiles`]) without their rows
/// (which stay empty) or the block's symbols: what a time series over any window needs, one
/// entry per profile. Headers without them ([`SeriesHeader::has_profile_totals`]) are an error.
pub async fn load_series_profiles(
    storage: &Storage,
    meta: &BlockMeta,
    headers: &[SeriesHeader],
) -> Result<Vec<Series>, BlockError> {
    load_section(storage, meta, None, headers, Section::Profiles).await
}

/// Which encoding of a series to read.
#[derive(Debug, Clone, Copy)]
enum Section {
    Rows,
    Totals,
    Profiles,
}

/// One section of each chosen series, fetched with one coalescing range read. `symbols` checks
/// the stacks of rows and per-stack totals.
async fn load_section(
    storage: &Storage,
    meta: &BlockMeta,
    symbols: Option<&SymbolTable>,
    headers: &[SeriesHeader],
    section: Section,
) -> Result<Vec<Series>, BlockError> {
    let key = meta.data_key();
    let corrupt = |reason: String| BlockError::Corrupt {
        key: key.clone(),
        reason,
    };
    let sections = headers
        .iter()
        .map(|header| match section {
            Section::Rows => Ok(header.rows_range),
            Section::Totals => header
                .totals
                .ok_or_else(|| corrupt("series has no per-stack totals".into())),
            Section::Profiles => header
                .profiles
                .ok_or_else(|| corrupt("series has no per-profile totals".into())),
        })
        .collect::<Result<Vec<_>, BlockError>>()?;
    let ranges: Vec<_> = sections
        .iter()
        .map(|range| range.offset..range.offset + range.length)
        .collect();
    let raw = storage.get_ranges(&key, &ranges).await?;
    let no_symbols = SymbolTable::default();
    let symbols = symbols.unwrap_or(&no_symbols);
    headers
        .iter()
        .zip(sections)
        .zip(raw)
        .map(|((header, range), raw)| {
            let raw = section_bytes(&raw, range, header.format_version)?;
            match section {
                Section::Rows => decode_rows(&raw, header, symbols),
                Section::Totals => decode_totals(&raw, header, symbols),
                Section::Profiles => decode_profiles(&raw, header),
            }
        })
        .map(|series| series.map_err(corrupt))
        .collect()
}

/// Every stack id within the block's symbols.
fn check_stacks(stacks: &[u32], symbols: &SymbolTable) -> Result<(), String> {
    let stack_count = symbols.stack_count() as u32;
    match stacks.iter().find(|&&stack| stack >= stack_count) {
        Some(bad) => Err(format!("stack {bad} out of range ({stack_count} stacks)")),
        None => Ok(()),
    }
}

/// The columns of an encoded [`block_proto::SeriesSamples`], decoded from either format.
struct Columns {
    times: Vec<i64>,
    stacks: Vec<u32>,
    values: Vec<i64>,
    span_ids: Vec<u64>,
}

fn decode_columns(raw: &[u8], format_version: u32, what: &str) -> Result<Columns, String> {
    let samples = block_proto::SeriesSamples::decode(raw).map_err(|err| format!("series {what}: {err}"))?;
    let mut time = 0i64;
    let times = samples
        .time_deltas_ms
        .iter()
        .map(|delta| {
            time = time.wrapping_add(*delta);
            time
        })
        .collect();
    if format_version < 2 {
        return Ok(Columns {
            times,
            stacks: samples.stacks,
            values: samples.values,
            span_ids: samples.span_ids,
        });
    }
    let mut stack = 0i64;
    let stacks = samples
        .stack_deltas
        .iter()
        .map(|delta| {
            stack = stack.wrapping_add(*delta);
            u32::try_from(stack).map_err(|_| format!("series {what}: stack {stack} out of range"))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    let values = match i64::try_from(samples.value_divisor) {
        Ok(0 | 1) => samples.values,
        Ok(divisor) => samples
            .values
            .iter()
            .map(|value| {
                value
                    .checked_mul(divisor)
                    .ok_or_else(|| format!("series {what}: value {value} × {divisor} overflows"))
            })
            .collect::<Result<Vec<i64>, String>>()?,
        Err(_) => {
            return Err(format!(
                "series {what}: value divisor {} out of range",
                samples.value_divisor
            ));
        }
    };
    Ok(Columns {
        times,
        stacks,
        values,
        span_ids: samples.span_ids,
    })
}

/// One series' per-stack totals as rows at its first time.
fn decode_totals(raw: &[u8], header: &SeriesHeader, symbols: &SymbolTable) -> Result<Series, String> {
    let totals = decode_columns(raw, header.format_version, "totals")?;
    if totals.stacks.len() != totals.values.len() {
        return Err("series total columns differ in length".into());
    }
    check_stacks(&totals.stacks, symbols)?;
    Ok(Series {
        labels: header.labels.clone(),
        profile_type: header.profile_type.clone(),
        min_time_ms: header.min_time_ms,
        max_time_ms: header.max_time_ms,
        total: header.total,
        times: vec![header.min_time_ms; totals.stacks.len()],
        stacks: totals.stacks,
        values: totals.values,
        span_ids: Vec::new(),
        profiles: ProfileTotals::default(),
    })
}

/// One series' per-profile totals, without rows.
fn decode_profiles(raw: &[u8], header: &SeriesHeader) -> Result<Series, String> {
    let profiles = decode_columns(raw, header.format_version, "profile totals")?;
    if profiles.times.len() != profiles.values.len() {
        return Err("series profile total columns differ in length".into());
    }
    Ok(Series {
        labels: header.labels.clone(),
        profile_type: header.profile_type.clone(),
        min_time_ms: header.min_time_ms,
        max_time_ms: header.max_time_ms,
        total: header.total,
        times: Vec::new(),
        stacks: Vec::new(),
        values: Vec::new(),
        span_ids: Vec::new(),
        profiles: ProfileTotals::from_rows(&profiles.times, &profiles.values),
    })
}

/// One series' rows from their encoded form, checked against the block's symbols.
fn decode_rows(raw: &[u8], header: &SeriesHeader, symbols: &SymbolTable) -> Result<Series, String> {
    let rows = decode_columns(raw, header.format_version, "rows")?;
    if rows.stacks.len() != rows.times.len()
        || rows.values.len() != rows.times.len()
        || (!rows.span_ids.is_empty() && rows.span_ids.len() != rows.times.len())
    {
        return Err("series row columns differ in length".into());
    }
    check_stacks(&rows.stacks, symbols)?;
    Ok(Series {
        labels: header.labels.clone(),
        profile_type: header.profile_type.clone(),
        min_time_ms: header.min_time_ms,
        max_time_ms: header.max_time_ms,
        total: header.total,
        profiles: ProfileTotals::from_rows(&rows.times, &rows.values),
        times: rows.times,
        stacks: rows.stacks,
        values: rows.values,
        span_ids: rows.span_ids,
    })
}

/// A whole block held in memory (as a peer sends its head), checked as a stored one is.
pub fn decode(data: &[u8]) -> Result<Partition, BlockError> {
    const IN_MEMORY: &str = "(in memory)";
    let corrupt = |reason: String| BlockError::Corrupt {
        key: IN_MEMORY.into(),
        reason,
    };
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    let ends_with = |magic: &[u8; 8], trailer: usize| data.len() >= trailer && data.ends_with(magic);
    let (trailer, format_version, index_raw_length) = if ends_with(MAGIC_V2, TRAILER_V2) {
        let at = data.len() - TRAILER_V2;
        (at, 2, word(at + 8))
    } else if ends_with(MAGIC_V1, TRAILER_V1) {
        (data.len() - TRAILER_V1, 1, 0)
    } else {
        return Err(corrupt("no block trailer".into()));
    };
    let index_length = usize::try_from(word(trailer)).unwrap_or(usize::MAX);
    let index_offset = trailer
        .checked_sub(index_length)
        .ok_or_else(|| corrupt("index longer than the block".into()))?;
    let index_range = SectionRange {
        offset: index_offset as u64,
        length: index_length as u64,
        raw_length: index_raw_length,
    };
    let index_bytes = section_bytes(&data[index_offset..trailer], index_range, format_version)
        .map_err(|err| corrupt(format!("index: {err}")))?;
    let index = block_proto::BlockIndex::decode(&*index_bytes).map_err(|err| corrupt(format!("index: {err}")))?;
    drop(index_bytes);
    let symbols_length = usize::try_from(index.symbols_length).unwrap_or(usize::MAX);
    if symbols_length > index_offset {
        return Err(corrupt("symbols section overlaps the index".into()));
    }
    let layout = Layout {
        format_version,
        symbols: SectionRange {
            offset: 0,
            length: symbols_length as u64,
            raw_length: index.symbols_raw_length,
        },
        index: index_range,
    };
    let symbols = decode_symbols(&data[..symbols_length], &layout, IN_MEMORY)?;
    let headers = series_headers(index.series, &layout, IN_MEMORY)?;
    let mut series = Vec::with_capacity(headers.len());
    for header in &headers {
        // Checked to end before the index, so within `data`.
        let range = header.rows_range;
        let raw = &data[range.offset as usize..(range.offset + range.length) as usize];
        let raw = section_bytes(raw, range, format_version).map_err(corrupt)?;
        series.push(decode_rows(&raw, header, &symbols).map_err(corrupt)?);
    }
    Ok(Partition::from_parts(symbols, series))
}

/// Loads a whole block: its index, symbols and every series' rows.
pub async fn load_all(storage: &Storage, meta: &BlockMeta) -> Result<Partition, BlockError> {
    let headers = read_index(storage, meta).await?;
    load(storage, meta, &headers).await
}

/// Loads the symbols and the rows of the chosen series of a block.
pub async fn load(storage: &Storage, meta: &BlockMeta, headers: &[SeriesHeader]) -> Result<Partition, BlockError> {
    let symbols = load_symbols(storage, meta).await?;
    let series = load_series(storage, meta, &symbols, headers).await?;
    Ok(Partition::from_parts(symbols, series))
}

/// Bucket start for a timestamp (floor, also for negative times).
pub fn bucket_start(time_ms: i64, bucket_duration_ms: i64) -> i64 {
    time_ms.div_euclid(bucket_duration_ms) * bucket_duration_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_list_and_load_only_wanted_series() {
        let storage = Storage::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        let tenant = Tenant::parse("t").unwrap();
        let profile = crate::proto::google::v1::Profile {
            string_table: vec!["".into(), "main".into()],
            function: vec![crate::proto::google::v1::Function {
                id: 1,
                name: 1,
                ..Default::default()
            }],
            location: vec![crate::proto::google::v1::Location {
                id: 1,
                line: vec![crate::proto::google::v1::Line {
                    function_id: 1,
                    line: 1,
                    column: 0,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut partition = Partition::default();
        let symbols = partition.symbols.add_profile(&profile);
        let stack = partition.symbols.add_stack(&symbols, &[1]);
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let mem = ProfileType::parse("memory:alloc_space:bytes:space:bytes").unwrap();
        let labels = |name: &str| Labels::new([("service_name".to_string(), name.to_string())]).unwrap();
        partition.push(&labels("a"), &cpu, 3_600_500, stack, 7);
        partition.push(&labels("a"), &cpu, 3_600_100, stack, 5);
        partition.push(&labels("b"), &mem, 3_600_200, stack, 11);
        let meta = write(&storage, &tenant, 3_600_000, 3_600_000, &partition)
            .await
            .unwrap();
        assert_eq!(
            (meta.min_time_ms, meta.max_time_ms, meta.samples),
            (3_600_100, 3_600_500, 3)
        );

        assert_eq!(list(&storage, &tenant, 0, 3_600_100).await.unwrap(), vec![]);
        let metas = list(&storage, &tenant, 3_600_500, 3_600_501).await.unwrap();
        assert_eq!(metas, vec![meta.clone()]);
        let headers = read_index(&storage, &meta).await.unwrap();
        let memory: Vec<_> = headers.iter().filter(|h| h.profile_type == mem).cloned().collect();
        let loaded = load(&storage, &meta, &memory).await.unwrap();
        assert_eq!(loaded.series[0].values, vec![11]);
        let wanted: Vec<_> = headers.into_iter().filter(|h| h.profile_type == cpu).collect();
        let loaded = load(&storage, &meta, &wanted).await.unwrap();
        assert_eq!(loaded.series.len(), 1);
        assert_eq!(loaded.series[0].times, vec![3_600_100, 3_600_500]);
        assert_eq!(loaded.series[0].values, vec![5, 7]);
        let mut names = Vec::new();
        loaded.symbols.stack_names(loaded.series[0].stacks[0], &mut names);
        assert_eq!(names, ["main"]);
    }

    #[tokio::test]
    async fn span_id_column_round_trips_and_stays_absent_when_unused() {
        let storage = Storage::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        let tenant = Tenant::parse("t").unwrap();
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let labels = |name: &str| Labels::new([("service_name".to_string(), name.to_string())]).unwrap();
        let mut partition = Partition::default();
        let stack = crate::symbols::ROOT_STACK;
        let spans = partition.series_index(&labels("spans"), &cpu);
        partition.push_row_with_span(spans, 300, stack, 3, 0xabc);
        partition.push_row(spans, 100, stack, 1);
        partition.push_row_with_span(spans, 200, stack, 2, 0xdef);
        partition.push(&labels("plain"), &cpu, 100, stack, 5);
        let meta = write(&storage, &tenant, 0, 3_600_000, &partition).await.unwrap();
        let headers = read_index(&storage, &meta).await.unwrap();
        let loaded = load(&storage, &meta, &headers).await.unwrap();
        let by_name = |name: &str| {
            loaded
                .series
                .iter()
                .find(|s| s.labels.get("service_name") == Some(name))
                .unwrap()
        };
        // Rows sorted by time, span ids moved with them.
        assert_eq!(by_name("spans").times, vec![100, 200, 300]);
        assert_eq!(by_name("spans").span_ids, vec![0, 0xdef, 0xabc]);
        assert!(by_name("plain").span_ids.is_empty());
    }

    /// Fuzzing (fuzz/, target `block`): decoding adds time deltas wrapping, so a block may hold
    /// rows more than i64::MAX ms apart; encoding them again must not overflow.
    #[test]
    fn rows_at_extreme_times_round_trip() {
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let labels = Labels::new([("service_name".to_string(), "a".to_string())]).unwrap();
        let mut partition = Partition::default();
        for time in [i64::MAX, i64::MIN, 0] {
            partition.push(&labels, &cpu, time, crate::symbols::ROOT_STACK, 1);
        }
        let decoded = decode(&encode(&partition).data).unwrap();
        assert_eq!(decoded.series[0].times, vec![i64::MIN, 0, i64::MAX]);
        assert_eq!(encode(&decoded).data, encode(&partition).data);
    }

    /// Format 2: every section compressed, rows sorted by time then stack, values divided by
    /// their common divisor, per-profile totals derived from the rows; a decode gives back the
    /// rows and the totals.
    #[tokio::test]
    async fn format_2_round_trips_rows_and_per_profile_totals() {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/files/gotarget__cpu_5s.pb.gz"),
        )
        .unwrap();
        let profile = crate::pprof::decode(&bytes, &crate::pprof::DecodeLimits::default()).unwrap();
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let labels = Labels::new([("service_name".to_string(), "a".to_string())]).unwrap();
        let mut partition = Partition::default();
        let symbols = partition.symbols.add_profile(&profile);
        let index = partition.series_index(&labels, &cpu);
        // Out of time order, one time twice.
        for at in [3_000, 1_000, 2_000, 1_000] {
            for sample in &profile.sample {
                let stack = partition.symbols.add_stack(&symbols, &sample.location_id);
                partition.push_row(index, at, stack, sample.value[1]);
            }
        }
        let written = &partition.series[0];
        assert_eq!(written.profiles.times, vec![1_000, 2_000, 3_000]);
        assert_eq!(
            written.profiles.totals,
            vec![7_800_000_000, 3_900_000_000, 3_900_000_000]
        );

        let encoded = encode(&partition);
        assert!(encoded.data.ends_with(MAGIC_V2));
        let decoded = decode(&encoded.data).unwrap();
        let read = &decoded.series[0];
        assert_eq!(read.profiles, written.profiles);
        let mut rows: Vec<(i64, Vec<String>, i64)> = (0..read.times.len())
            .map(|row| {
                let mut names = Vec::new();
                decoded.symbols.stack_names(read.stacks[row], &mut names);
                (read.times[row], names, read.values[row])
            })
            .collect();
        let mut expected: Vec<(i64, Vec<String>, i64)> = (0..written.times.len())
            .map(|row| {
                let mut names = Vec::new();
                partition.symbols.stack_names(written.stacks[row], &mut names);
                (written.times[row], names, written.values[row])
            })
            .collect();
        rows.sort();
        expected.sort();
        assert_eq!(rows, expected);
        assert!(read.times.is_sorted());
        // Re-encoding what was read gives the same bytes (encoding is a fixed point).
        assert_eq!(encode(&decoded).data, encoded.data);

        // Stored: the meta describes format 2, and the profile totals load alone.
        let storage = Storage::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        let tenant = Tenant::parse("t").unwrap();
        let meta = write(&storage, &tenant, 0, 3_600_000, &partition).await.unwrap();
        assert_eq!(meta.format_version, FORMAT_VERSION);
        let headers = read_index(&storage, &meta).await.unwrap();
        let loaded = load_series_profiles(&storage, &meta, &headers).await.unwrap();
        assert_eq!(loaded[0].profiles, written.profiles);
        assert!(loaded[0].times.is_empty());
        let symbols = load_symbols(&storage, &meta).await.unwrap();
        let loaded = load_series(&storage, &meta, &symbols, &headers).await.unwrap();
        assert_eq!(loaded[0].values.iter().sum::<i64>(), 4 * 3_900_000_000);
    }

    /// A damaged compressed section is a corrupt block, never a panic: flipped bytes fail the
    /// frame's checksum or its declared size.
    #[tokio::test]
    async fn a_damaged_compressed_section_is_corrupt() {
        let storage = Storage::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        let tenant = Tenant::parse("t").unwrap();
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let labels = Labels::new([("service_name".to_string(), "a".to_string())]).unwrap();
        let mut partition = Partition::default();
        for row in 0..1000 {
            partition.push(&labels, &cpu, row * 10, crate::symbols::ROOT_STACK, row * 7 + 1);
        }
        let meta = write(&storage, &tenant, 0, 3_600_000, &partition).await.unwrap();
        let headers = read_index(&storage, &meta).await.unwrap();
        let rows = headers[0].rows_range;
        let original = storage.get(&meta.data_key()).await.unwrap();
        let symbols = load_symbols(&storage, &meta).await.unwrap();
        for at in [
            rows.offset + rows.length / 2,
            rows.offset + rows.length - 1,
            rows.offset + 5,
        ] {
            let mut damaged = original.to_vec();
            damaged[at as usize] ^= 0x5a;
            storage.put(&meta.data_key(), damaged.into()).await.unwrap();
            let err = load_series(&storage, &meta, &symbols, &headers).await.unwrap_err();
            assert!(err.is_corrupt(), "byte {at}: {err}");
        }
        // The whole object in memory (a peer's head) as well.
        let mut damaged = original.to_vec();
        let index_at = meta.index_offset as usize + 3;
        damaged[index_at] ^= 0x5a;
        assert!(decode(&damaged).unwrap_err().is_corrupt());
    }

    /// Decompression is bounded by the declared size (and that by MAX_SECTION_BYTES): a small
    /// section that inflates past what it declares is refused, not inflated.
    #[test]
    fn decompression_is_bounded_by_the_declared_size() {
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let declared = |raw_length: u64| SectionRange {
            offset: 0,
            length: bomb.len() as u64,
            raw_length,
        };
        assert!(section_bytes(&bomb, declared(1 << 20), 2).is_err());
        // Refused from the frame header, before anything is reserved: a declaration of 1 GiB
        // over a frame of 64 MiB answers at once (the error names the frame's own size).
        let refused = section_bytes(&bomb, declared(MAX_SECTION_BYTES), 2).unwrap_err();
        assert!(refused.contains(&(64u64 << 20).to_string()), "{refused}");
        assert!(section_bytes(b"not a zstd frame", declared(16), 2).is_err());
        assert!(section_bytes(&bomb, declared(MAX_SECTION_BYTES + 1), 2).is_err());
        assert!(section_bytes(&bomb, declared((64 << 20) + 1), 2).is_err());
        assert_eq!(section_bytes(&bomb, declared(64 << 20), 2).unwrap().len(), 64 << 20);
        assert!(
            section_bytes(&bomb, declared(64 << 20), 3).is_err(),
            "an unknown format"
        );
    }

    #[test]
    fn value_columns_divide_by_their_common_divisor() {
        assert_eq!(divided([10, -20, 0, 30].into_iter()), (vec![1, -2, 0, 3], 10));
        assert_eq!(divided([7, 3].into_iter()), (vec![7, 3], 0));
        assert_eq!(divided([0, 0].into_iter()), (vec![0, 0], 0));
        assert_eq!(divided([i64::MIN, 0].into_iter()), (vec![i64::MIN, 0], 0));
        assert_eq!(divided([i64::MIN, i64::MIN / 2].into_iter()).1, 1 << 62);
    }

    #[test]
    fn buckets_floor() {
        assert_eq!(bucket_start(7_199_999, 3_600_000), 3_600_000);
        assert_eq!(bucket_start(-1, 3_600_000), -3_600_000);
    }
}
