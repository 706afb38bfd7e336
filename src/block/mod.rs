//! The on-object-store block format and the in-memory [`Partition`] it is cut from.
//!
//! One block = one tenant × one time bucket × one flush. It is one object
//! `<tenant>/<bucket-start-ms>/<block-id>/data` laid out as
//! `[symbols][series 1 rows]…[series n rows][index][index length: u64 LE][magic]`, and a
//! `meta.json` beside it, written last: a block without its meta is invisible, so a crash
//! mid-upload never shows half a block. The meta carries the index's byte range, so a query
//! reads the index, then the symbols, then only the row ranges of matching series.

mod catalog;
mod partition;

pub use catalog::{Catalog, Listing};
pub use partition::{Partition, SPAN_ID_LABELS, Series, parse_span_id, sample_span_id};

use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::model::{Labels, ProfileType, Tenant};
use crate::proto::pyrite::v1 as block_proto;
use crate::storage::{Storage, StorageError};
use crate::symbols::{SymbolTable, SymbolsError};

const MAGIC: &[u8; 8] = b"PYRBLK01";
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

/// Serializes a partition; rows of each series sorted by time, times delta-encoded.
/// Byte ranges of an encoded block.
pub struct EncodedBlock {
    pub data: Vec<u8>,
    pub symbols_length: u64,
    pub index_offset: u64,
    pub index_length: u64,
}

pub fn encode(partition: &Partition) -> EncodedBlock {
    encode_parts(&partition.symbols, partition.series.iter())
}

/// Encodes the chosen `series` of a partition with its whole symbol table.
pub fn encode_parts<'a>(symbols: &SymbolTable, series: impl Iterator<Item = &'a Series>) -> EncodedBlock {
    let mut data = symbols.to_proto().encode_to_vec();
    let symbols_length = data.len() as u64;
    let mut entries = Vec::new();
    let mut totals = Vec::new();
    for series in series.filter(|series| !series.times.is_empty()) {
        let mut order: Vec<usize> = (0..series.times.len()).collect();
        order.sort_by_key(|&row| series.times[row]);
        let mut previous = 0i64;
        let rows = block_proto::SeriesSamples {
            time_deltas_ms: order
                .iter()
                .map(|&row| {
                    // Wrapping, as decoding adds them: rows may be over i64::MAX ms apart.
                    let delta = series.times[row].wrapping_sub(previous);
                    previous = series.times[row];
                    delta
                })
                .collect(),
            stacks: order.iter().map(|&row| series.stacks[row]).collect(),
            values: order.iter().map(|&row| series.values[row]).collect(),
            span_ids: if series.span_ids.is_empty() {
                Vec::new()
            } else {
                order.iter().map(|&row| series.span_id(row)).collect()
            },
        };
        let offset = data.len() as u64;
        rows.encode(&mut data).expect("Vec grows as needed");
        entries.push(block_proto::SeriesEntry {
            labels: series.labels.to_pairs(),
            profile_type: series.profile_type.id(),
            min_time_ms: series.min_time_ms,
            max_time_ms: series.max_time_ms,
            total: series.total,
            sample_count: series.times.len() as u64,
            offset,
            length: data.len() as u64 - offset,
            totals_offset: 0,
            totals_length: 0,
        });
        totals.push(stack_totals(series));
    }
    // After every series' rows, so the totals of the series a query wants sit close together
    // (one coalesced range read on S3).
    for (entry, totals) in entries.iter_mut().zip(totals) {
        let Some(totals) = totals else { continue };
        entry.totals_offset = data.len() as u64;
        totals.encode(&mut data).expect("Vec grows as needed");
        entry.totals_length = data.len() as u64 - entry.totals_offset;
    }
    let index = block_proto::BlockIndex {
        symbols_offset: 0,
        symbols_length,
        series: entries,
    };
    let index_offset = data.len() as u64;
    index.encode(&mut data).expect("Vec grows as needed");
    let index_length = data.len() as u64 - index_offset;
    data.extend_from_slice(&index_length.to_le_bytes());
    data.extend_from_slice(MAGIC);
    EncodedBlock {
        data,
        symbols_length,
        index_offset,
        index_length,
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
    Some(block_proto::SeriesSamples {
        time_deltas_ms: Vec::new(),
        stacks: per_stack.keys().copied().collect(),
        values: per_stack.into_values().collect(),
        span_ids: Vec::new(),
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
    let trailer = data.len() as u64 - 16..data.len() as u64;
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
    }
}

impl BlockMeta {
    /// Encodes `partition` and fills in the layout fields.
    fn with_data(mut self, partition: &Partition) -> (Self, Bytes) {
        let EncodedBlock {
            data,
            symbols_length,
            index_offset,
            index_length,
        } = encode(partition);
        self.size_bytes = data.len() as u64;
        self.symbols_length = symbols_length;
        self.index_offset = index_offset;
        self.index_length = index_length;
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
    offset: u64,
    length: u64,
    /// Byte range of the per-stack totals, if the block has them for this series.
    totals: Option<(u64, u64)>,
}

impl SeriesHeader {
    /// Bytes of the series' rows in the data object.
    pub fn row_bytes(&self) -> u64 {
        self.length
    }

    /// Whether every row of the series falls in `[from, until)` and the block holds its
    /// per-stack totals, so [`load_series_totals`] can stand in for its rows.
    pub fn totals_cover(&self, from_ms: i64, until_ms: i64) -> bool {
        self.totals.is_some()
            && crate::model::TimeWindow::new(from_ms, until_ms).covers(self.min_time_ms, self.max_time_ms)
    }
}

/// The index of a published block.
pub async fn read_index(storage: &Storage, meta: &BlockMeta) -> Result<Vec<SeriesHeader>, BlockError> {
    let key = meta.data_key();
    let corrupt = |reason: String| BlockError::Corrupt {
        key: key.clone(),
        reason,
    };
    let index_end = meta
        .index_offset
        .checked_add(meta.index_length)
        .ok_or_else(|| corrupt("index range overflows".into()))?;
    let raw = storage.get_range(&key, meta.index_offset..index_end).await?;
    let index = block_proto::BlockIndex::decode(raw).map_err(|err| corrupt(format!("index: {err}")))?;
    series_headers(index.series, meta.index_offset, &key)
}

/// The headers of a block's index entries, each row range checked to lie before the index.
fn series_headers(
    entries: Vec<block_proto::SeriesEntry>,
    index_offset: u64,
    key: &str,
) -> Result<Vec<SeriesHeader>, BlockError> {
    let corrupt = |reason: String| BlockError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let mut headers = Vec::with_capacity(entries.len());
    for entry in entries {
        let outside = |offset: u64, length: u64| offset.checked_add(length).is_none_or(|end| end > index_offset);
        if outside(entry.offset, entry.length) || outside(entry.totals_offset, entry.totals_length) {
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
        headers.push(SeriesHeader {
            labels,
            profile_type,
            min_time_ms: entry.min_time_ms,
            max_time_ms: entry.max_time_ms,
            total: entry.total,
            rows: entry.sample_count,
            offset: entry.offset,
            length: entry.length,
            totals: (entry.totals_length > 0).then_some((entry.totals_offset, entry.totals_length)),
        });
    }
    Ok(headers)
}

/// A block's symbol section, decoded and checked.
fn decode_symbols(raw: &[u8], key: &str) -> Result<SymbolTable, BlockError> {
    let symbols = block_proto::Symbols::decode(raw).map_err(|err| BlockError::Corrupt {
        key: key.to_string(),
        reason: format!("symbols: {err}"),
    })?;
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
    decode_symbols(&raw_symbols, &key)
}

/// Loads the rows of the chosen series of a block, checking them against its symbols.
pub async fn load_series(
    storage: &Storage,
    meta: &BlockMeta,
    symbols: &SymbolTable,
    headers: &[SeriesHeader],
) -> Result<Vec<Series>, BlockError> {
    load_section(storage, meta, symbols, headers, Section::Rows).await
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
    load_section(storage, meta, symbols, headers, Section::Totals).await
}

/// Which encoding of a series to read.
#[derive(Debug, Clone, Copy)]
enum Section {
    Rows,
    Totals,
}

/// One section of each chosen series, fetched with one coalescing range read.
async fn load_section(
    storage: &Storage,
    meta: &BlockMeta,
    symbols: &SymbolTable,
    headers: &[SeriesHeader],
    section: Section,
) -> Result<Vec<Series>, BlockError> {
    let key = meta.data_key();
    let corrupt = |reason: String| BlockError::Corrupt {
        key: key.clone(),
        reason,
    };
    let ranges = headers
        .iter()
        .map(|header| match section {
            Section::Rows => Ok(header.offset..header.offset + header.length),
            Section::Totals => header
                .totals
                .map(|(offset, length)| offset..offset + length)
                .ok_or_else(|| corrupt("series has no per-stack totals".into())),
        })
        .collect::<Result<Vec<_>, BlockError>>()?;
    let raw = storage.get_ranges(&key, &ranges).await?;
    headers
        .iter()
        .zip(raw)
        .map(|(header, raw)| {
            match section {
                Section::Rows => decode_rows(&raw, header, symbols),
                Section::Totals => decode_totals(&raw, header, symbols),
            }
            .map_err(corrupt)
        })
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

/// One series' per-stack totals as rows at its first time.
fn decode_totals(raw: &[u8], header: &SeriesHeader, symbols: &SymbolTable) -> Result<Series, String> {
    let totals = block_proto::SeriesSamples::decode(raw).map_err(|err| format!("series totals: {err}"))?;
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
    })
}

/// One series' rows from their encoded form, checked against the block's symbols.
fn decode_rows(raw: &[u8], header: &SeriesHeader, symbols: &SymbolTable) -> Result<Series, String> {
    let rows = block_proto::SeriesSamples::decode(raw).map_err(|err| format!("series rows: {err}"))?;
    if rows.stacks.len() != rows.time_deltas_ms.len()
        || rows.values.len() != rows.time_deltas_ms.len()
        || (!rows.span_ids.is_empty() && rows.span_ids.len() != rows.time_deltas_ms.len())
    {
        return Err("series row columns differ in length".into());
    }
    check_stacks(&rows.stacks, symbols)?;
    let mut time = 0i64;
    let times = rows
        .time_deltas_ms
        .iter()
        .map(|delta| {
            time = time.wrapping_add(*delta);
            time
        })
        .collect();
    Ok(Series {
        labels: header.labels.clone(),
        profile_type: header.profile_type.clone(),
        min_time_ms: header.min_time_ms,
        max_time_ms: header.max_time_ms,
        total: header.total,
        times,
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
    let trailer = data
        .len()
        .checked_sub(16)
        .filter(|&at| &data[at + 8..] == MAGIC)
        .ok_or_else(|| corrupt("no block trailer".into()))?;
    let index_length = u64::from_le_bytes(data[trailer..trailer + 8].try_into().expect("8 bytes")) as usize;
    let index_offset = trailer
        .checked_sub(index_length)
        .ok_or_else(|| corrupt("index longer than the block".into()))?;
    let index = block_proto::BlockIndex::decode(&data[index_offset..trailer])
        .map_err(|err| corrupt(format!("index: {err}")))?;
    let symbols_length = usize::try_from(index.symbols_length).unwrap_or(usize::MAX);
    if symbols_length > index_offset {
        return Err(corrupt("symbols section overlaps the index".into()));
    }
    let symbols = decode_symbols(&data[..symbols_length], IN_MEMORY)?;
    let headers = series_headers(index.series, index_offset as u64, IN_MEMORY)?;
    let mut series = Vec::with_capacity(headers.len());
    for header in &headers {
        // Checked to end before the index, so within `data`.
        let range = header.offset as usize..(header.offset + header.length) as usize;
        series.push(decode_rows(&data[range], header, &symbols).map_err(corrupt)?);
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

    #[test]
    fn buckets_floor() {
        assert_eq!(bucket_start(7_199_999, 3_600_000), 3_600_000);
        assert_eq!(bucket_start(-1, 3_600_000), -3_600_000);
    }
}
