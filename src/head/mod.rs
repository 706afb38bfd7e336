//! The writable, in-memory part of the store, per tenant and time bucket, made durable by the
//! write-ahead log and cut into immutable blocks by [`Head::flush`].
//!
//! An append is acknowledged only after its WAL record is fsynced. A flush seals the WAL
//! segment, moves every live partition to "flushing" (still visible to queries), uploads each as
//! a block, then publishes the block metas and drops the flushing partitions under the publish
//! gate, so a query sees each row exactly once. Only then are the sealed segments deleted.
//!
//! Between the uploads and the first publication the flush writes its decision to the WAL
//! directory ([`FlushCommit`]): these blocks hold the records of the segments up to this one.
//! A restart that finds it finishes the flush (publishes the blocks, deletes the segments)
//! before replaying; one that does not replays every segment and no block of theirs is visible.
//! Either way a crash at any point neither loses an acknowledged profile nor shows it twice.

mod column_values;
mod wal;

pub use column_values::{ColumnValues, ColumnValuesError};
pub use wal::{QUARANTINE_DIR, Wal, WalError};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::block::{self, BlockError, BlockMeta, Partition};
use crate::model::{Labels, ProfileType, Tenant};
use crate::pprof::{self, DecodeLimits};
use crate::proto::google::v1::Profile;
use crate::proto::pyrite::v1::{WalRecord, WalSeries};
use crate::storage::Storage;

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("this head is read-only")]
    ReadOnly,
    #[error("flush commit {path}: {reason}")]
    Commit { path: PathBuf, reason: String },
    /// Flushes are failing (object storage down or refusing writes) and unflushed data has
    /// reached `head.max_unflushed_bytes`: appends wait until a flush succeeds, so the process
    /// never runs out of memory or disk meanwhile.
    #[error(
        "the head holds {unflushed_bytes} bytes that could not be flushed to object storage yet \
         (head.max_unflushed_bytes {limit_bytes}); retry later"
    )]
    Full { unflushed_bytes: usize, limit_bytes: usize },
    /// Replacement values that do not fit their profile: a fault of the caller (the server's
    /// own delta step), nothing stored.
    #[error(transparent)]
    ColumnValues(#[from] ColumnValuesError),
}

impl crate::error::Classify for HeadError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            // Nothing was stored: the same append may succeed once flushes catch up.
            Self::Full { .. } => ErrorClass::Unavailable,
            Self::Wal(err) if err.is_temporary() => ErrorClass::Unavailable,
            Self::Block(err) => crate::error::Classify::class(err),
            Self::Wal(_) | Self::ReadOnly | Self::Commit { .. } | Self::ColumnValues(_) => ErrorClass::Internal,
        }
    }
}

/// When the head is cut into blocks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Width of a time bucket; every block covers one bucket of one tenant.
    #[serde(with = "humantime_serde")]
    pub bucket_duration: Duration,
    /// How often live data is cut into blocks.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Estimated in-memory size that triggers an early flush.
    pub max_head_bytes: usize,
    /// Estimated size of live plus not-yet-published data past which appends are refused
    /// ([`HeadError::Full`], a 503 to clients): while flushes fail, memory and the WAL stop
    /// growing here instead of at the machine's limits.
    pub max_unflushed_bytes: usize,
    /// How long a scraped profile may sit in the WAL before it is fsynced. Pushes are fsynced
    /// before they are acknowledged; a scrape has nobody to acknowledge, and an fsync per
    /// scrape cost a busy scraper a tenth of its CPU (BENCHMARKS.md).
    #[serde(with = "humantime_serde")]
    pub scraped_sync_interval: Duration,
    /// Bytes of scraped profiles that may wait for that fsync; past it (a slow or stuck disk)
    /// scrapes wait for the disk like pushes do, so memory stays bounded.
    pub max_scraped_queue_bytes: usize,
    /// Disk budget of the write-ahead log (0: none). Past it, appends are refused (503 to
    /// pushes, `head_full` to scrapes) before the disk itself fills, until a flush frees
    /// segments. `pyrite_wal_bytes` on `/metrics` shows its use.
    pub max_wal_bytes: u64,
    /// How long a published partition stays readable by peers' queries (see
    /// [`Head::snapshot_for_peer`]); set from `cluster.published_grace`, 0 without a cluster.
    #[serde(skip)]
    pub published_grace: Duration,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            bucket_duration: Duration::from_secs(3600),
            flush_interval: Duration::from_secs(300),
            max_head_bytes: 64 * 1024 * 1024,
            max_unflushed_bytes: 512 * 1024 * 1024,
            scraped_sync_interval: Duration::from_secs(1),
            max_scraped_queue_bytes: 16 * 1024 * 1024,
            max_wal_bytes: 4 << 30,
            published_grace: Duration::ZERO,
        }
    }
}

/// When an append returns, relative to its WAL record reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the record is fsynced: for anything a client is told was stored.
    Acknowledged,
    /// At once; the record is fsynced within [`HeadConfig::scraped_sync_interval`]: for
    /// scraped profiles, which no client waits on.
    Deferred,
}

/// One series a profile is split into: which value column lands under which labels.
#[derive(Debug, Clone)]
pub struct SeriesSpec {
    pub labels: Labels,
    pub profile_type: ProfileType,
    pub value_index: usize,
}

/// Why a series cannot be stored (the same rule at ingest, WAL replay and block reads).
#[derive(Debug, thiserror::Error)]
pub enum SeriesSpecError {
    #[error(transparent)]
    Labels(#[from] crate::model::LabelError),
    #[error(transparent)]
    ProfileType(#[from] crate::model::ProfileTypeError),
}

impl SeriesSpec {
    /// A series whose labels and profile type obey the rules every stage checks: the labels
    /// are validated again here (they may have been built with [`Labels::set`]), and the
    /// profile type's ID must parse back to itself.
    pub fn new(labels: Labels, profile_type: ProfileType, value_index: usize) -> Result<Self, SeriesSpecError> {
        let labels = Labels::new(labels.iter().map(|(name, value)| (name.to_string(), value.to_string())))?;
        profile_type.check()?;
        Ok(Self {
            labels,
            profile_type,
            value_index,
        })
    }

    /// A series as the WAL records it, under the same rule as [`SeriesSpec::new`].
    fn from_wal(series: &WalSeries) -> Result<Self, SeriesSpecError> {
        Ok(Self {
            labels: Labels::from_pairs(&series.labels)?,
            profile_type: ProfileType::parse(&series.profile_type)?,
            value_index: series.value_index as usize,
        })
    }
}

type TenantBuckets = Arc<RwLock<BTreeMap<i64, Partition>>>;

struct Flushing {
    tenant: Tenant,
    bucket_start_ms: i64,
    partition: Partition,
    /// Set once its block's data is in storage, so a flush retried after a failure does not
    /// upload it again.
    uploaded: parking_lot::Mutex<Option<BlockMeta>>,
}

/// A flush's decision, durable before any of its blocks is visible: `blocks` hold every record
/// of the WAL segments numbered up to `sealed_segment`.
#[derive(Debug, Serialize, Deserialize)]
struct FlushCommit {
    sealed_segment: u64,
    blocks: Vec<BlockMeta>,
}

impl FlushCommit {
    const FILE: &str = "flush-commit.json";

    fn path(wal_dir: &Path) -> PathBuf {
        wal_dir.join(Self::FILE)
    }

    fn error(wal_dir: &Path, reason: impl ToString) -> HeadError {
        HeadError::Commit {
            path: Self::path(wal_dir),
            reason: reason.to_string(),
        }
    }

    fn read(wal_dir: &Path) -> Result<Option<Self>, HeadError> {
        match std::fs::read(Self::path(wal_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| Self::error(wal_dir, err)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Self::error(wal_dir, err)),
        }
    }

    /// Writes the commit atomically: a temporary file, fsynced, renamed over the old one, and
    /// the directory fsynced.
    fn write(&self, wal_dir: &Path) -> Result<(), HeadError> {
        let write = || -> std::io::Result<()> {
            let temporary = wal_dir.join(format!("{}.tmp", Self::FILE));
            let mut file = std::fs::File::create(&temporary)?;
            std::io::Write::write_all(&mut file, &serde_json::to_vec(self).expect("commit serializes"))?;
            file.sync_all()?;
            std::fs::rename(&temporary, Self::path(wal_dir))?;
            std::fs::File::open(wal_dir)?.sync_all()
        };
        write().map_err(|err| Self::error(wal_dir, err))
    }

    fn remove(wal_dir: &Path) -> Result<(), HeadError> {
        match std::fs::remove_file(Self::path(wal_dir)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(Self::error(wal_dir, err)),
            _ => Ok(()),
        }
    }

    /// Finishes the flush this commit records: publishes its blocks (again, if they already
    /// were: a meta is the same object each time) and deletes the segments they hold. If a
    /// block's data is gone (the compactor deletes data left unpublished for
    /// `compactor.unpublished_grace`, and this replica was down longer), the flush is undone
    /// instead: its blocks are deleted and the segments, still all there, are replayed.
    async fn roll_forward(self, storage: &Storage, wal_dir: &Path) -> Result<(), HeadError> {
        let mut complete = true;
        for meta in &self.blocks {
            complete &= storage.exists(&meta.data_key()).await.map_err(BlockError::from)?;
        }
        if !complete {
            for meta in &self.blocks {
                block::delete(storage, meta).await?;
            }
            Self::remove(wal_dir)?;
            tracing::warn!(
                blocks = self.blocks.len(),
                segment = self.sealed_segment,
                "an interrupted flush lost block data while this replica was down; replaying its records instead"
            );
            return Ok(());
        }
        for meta in &self.blocks {
            block::publish(storage, meta).await?;
        }
        wal::delete_segments_through(wal_dir, self.sealed_segment)?;
        Self::remove(wal_dir)?;
        tracing::info!(
            blocks = self.blocks.len(),
            segment = self.sealed_segment,
            "finished a flush a restart interrupted"
        );
        Ok(())
    }
}

/// Counts of one flush.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStats {
    pub blocks: usize,
    pub samples: usize,
}

pub struct Head {
    config: HeadConfig,
    storage: Storage,
    /// `None` for a read-only head (a replayed copy for offline export).
    wal: Option<Wal>,
    /// Held shared from WAL append to head apply, exclusively while the WAL is sealed and the
    /// live partitions are taken, so both split at the same record.
    cut: tokio::sync::RwLock<()>,
    /// Held shared by queries while they read partitions, exclusively while a flush drops the
    /// partitions whose blocks it published (after the meta PUT, never across it).
    publish_gate: tokio::sync::RwLock<()>,
    /// Partitions dropped after their block was published, ever: a query that listed blocks
    /// before taking the gate knows from it whether a partition may have left the head unseen
    /// by its listing ([`Head::publications`]).
    publications: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
    live: RwLock<HashMap<Tenant, TenantBuckets>>,
    flushing: RwLock<Vec<Arc<Flushing>>>,
    /// Partitions whose block was published less than `published_grace` ago, with when.
    published: RwLock<Vec<(std::time::Instant, Arc<Flushing>)>>,
    live_bytes: AtomicUsize,
    /// Estimated bytes of the partitions cut but not published yet.
    flushing_bytes: AtomicUsize,
    flush_wanted: tokio::sync::Notify,
}

/// A WAL record decoded and checked by the rules the edge applied before writing it.
struct DecodedRecord {
    tenant: Tenant,
    time_ms: i64,
    profile: Profile,
    series: Vec<SeriesSpec>,
    column_values: Option<ColumnValues>,
}

/// Decodes one WAL record: tenant, time, the profile under `limits` (as the edge decoded it)
/// and each series under [`SeriesSpec`]'s rules. An error names what failed; the record is
/// then quarantined, never fatal.
fn decode_record(payload: &[u8], limits: &DecodeLimits) -> Result<DecodedRecord, String> {
    let record = WalRecord::decode(payload).map_err(|err| format!("not a WAL record: {err}"))?;
    let tenant = Tenant::parse(&record.tenant).map_err(|err| format!("tenant: {err}"))?;
    if !crate::model::time_in_range(record.time_ms) {
        return Err(format!("time {} ms out of range", record.time_ms));
    }
    let profile = pprof::decode(&record.raw_profile, limits).map_err(|err| format!("profile: {err}"))?;
    let series = record
        .series
        .iter()
        .map(|series| {
            let spec = SeriesSpec::from_wal(series).map_err(|err| format!("series: {err}"))?;
            if spec.value_index >= profile.sample_type.len() {
                return Err(format!("series value index {} out of range", spec.value_index));
            }
            Ok(spec)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let column_values = match &record.column_values {
        None => None,
        Some(wal) => {
            let values = ColumnValues::from_wal(wal);
            values.check(&profile).map_err(|err| format!("column values: {err}"))?;
            Some(values)
        }
    };
    Ok(DecodedRecord {
        tenant,
        time_ms: record.time_ms,
        profile,
        series,
        column_values,
    })
}

impl Head {
    /// Finishes a flush a restart interrupted, opens the WAL under `wal_dir` and replays it.
    pub async fn open(
        config: HeadConfig,
        storage: Storage,
        wal_dir: &Path,
        decode_limits: &DecodeLimits,
    ) -> Result<Self, HeadError> {
        if let Some(commit) = FlushCommit::read(wal_dir)? {
            commit.roll_forward(&storage, wal_dir).await?;
        }
        let deferred = wal::DeferredWrites {
            sync_interval: config.scraped_sync_interval,
            max_queued_bytes: config.max_scraped_queue_bytes,
            max_wal_bytes: config.max_wal_bytes,
        };
        let (wal, replay) = Wal::open(wal_dir, deferred)?;
        Self::from_replay(config, storage, Some(wal), replay, decode_limits)
    }

    /// A head holding what the WAL under `wal_dir` holds, that never writes: for reading a data
    /// directory while a server may still own it. Segments a flush commit covers are skipped:
    /// their blocks are published, or will be when the server restarts.
    pub fn open_read_only(
        config: HeadConfig,
        storage: Storage,
        wal_dir: &Path,
        decode_limits: &DecodeLimits,
    ) -> Result<Self, HeadError> {
        let committed = FlushCommit::read(wal_dir)?.map_or(0, |commit| commit.sealed_segment);
        let replay = Wal::read_only_after(wal_dir, committed)?;
        Self::from_replay(config, storage, None, replay, decode_limits)
    }

    fn from_replay(
        config: HeadConfig,
        storage: Storage,
        wal: Option<Wal>,
        replay: wal::Replay,
        decode_limits: &DecodeLimits,
    ) -> Result<Self, HeadError> {
        let head = Self {
            config,
            storage,
            wal,
            cut: tokio::sync::RwLock::new(()),
            publish_gate: tokio::sync::RwLock::new(()),
            publications: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            live: RwLock::new(HashMap::new()),
            flushing: RwLock::new(Vec::new()),
            published: RwLock::new(Vec::new()),
            live_bytes: AtomicUsize::new(0),
            flushing_bytes: AtomicUsize::new(0),
            flush_wanted: tokio::sync::Notify::new(),
        };
        if replay.torn_bytes > 0 {
            tracing::warn!(
                bytes = replay.torn_bytes,
                "dropped a torn write-ahead log tail (never acknowledged)"
            );
        }
        let replayed = replay.records.len();
        let mut quarantined = 0;
        for record in &replay.records {
            match decode_record(&record.payload, decode_limits) {
                Ok(decoded) => head.apply(
                    &decoded.tenant,
                    decoded.time_ms,
                    &decoded.profile,
                    decoded.column_values.as_ref(),
                    &decoded.series,
                ),
                Err(reason) => {
                    quarantined += 1;
                    crate::integrity::WAL_QUARANTINED_RECORDS.inc();
                    let position = record.position;
                    // A read-only head (offline export) leaves the WAL as it is.
                    let moved = head.wal.as_ref().map(|wal| wal.quarantine_record(record, &reason));
                    match moved {
                        Some(Ok(path)) => tracing::error!(
                            segment = position.segment,
                            offset = position.offset,
                            %reason,
                            quarantined = %path.display(),
                            "write-ahead log record cannot be replayed; moved aside, start-up goes on"
                        ),
                        Some(Err(err)) => tracing::error!(
                            segment = position.segment,
                            offset = position.offset,
                            %reason,
                            error = %err,
                            "write-ahead log record cannot be replayed; skipped (could not copy it to quarantine)"
                        ),
                        None => tracing::error!(
                            segment = position.segment,
                            offset = position.offset,
                            %reason,
                            "write-ahead log record cannot be replayed; skipped"
                        ),
                    }
                }
            }
        }
        let replayed = replayed - quarantined;
        if replayed > 0 {
            tracing::info!(records = replayed, "replayed write-ahead log");
        }
        Ok(head)
    }

    pub fn config(&self) -> &HeadConfig {
        &self.config
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Bytes of the write-ahead log on disk (0 for a read-only head).
    pub fn wal_bytes(&self) -> u64 {
        self.wal.as_ref().map_or(0, Wal::bytes)
    }

    fn bucket_ms(&self) -> i64 {
        self.config.bucket_duration.as_millis().max(1) as i64
    }

    /// Logs a decoded profile in the WAL, then makes it visible; with
    /// [`Durability::Acknowledged`] it returns only once the record is fsynced. `raw_profile` is
    /// what the client sent (it is what the WAL keeps); `profile` is its decoded form, whose
    /// values `column_values` (checked against it) replaces where given (a cumulative profile
    /// stored as a delta; the WAL keeps them too).
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        tenant: &Tenant,
        time_ms: i64,
        raw_profile: bytes::Bytes,
        profile: &Profile,
        column_values: Option<&ColumnValues>,
        series: &[SeriesSpec],
        durability: Durability,
    ) -> Result<(), HeadError> {
        if let Some(values) = column_values {
            values.check(profile)?;
        }
        let record = WalRecord {
            tenant: tenant.to_string(),
            time_ms,
            raw_profile,
            column_values: column_values.map(ColumnValues::to_wal),
            series: series
                .iter()
                .map(|spec| WalSeries {
                    labels: spec.labels.to_pairs(),
                    profile_type: spec.profile_type.id(),
                    value_index: spec.value_index as u32,
                })
                .collect(),
        };
        let wal = self.wal.as_ref().ok_or(HeadError::ReadOnly)?;
        let unflushed_bytes = self.unflushed_bytes();
        if unflushed_bytes > self.config.max_unflushed_bytes {
            self.flush_wanted.notify_one();
            return Err(HeadError::Full {
                unflushed_bytes,
                limit_bytes: self.config.max_unflushed_bytes,
            });
        }
        let _cut = self.cut.read().await;
        match durability {
            Durability::Acknowledged => wal.append(record.encode_to_vec()).await?,
            Durability::Deferred => wal.append_deferred(record.encode_to_vec()).await?,
        }
        self.apply(tenant, time_ms, profile, column_values, series);
        if self.live_bytes.load(Ordering::Relaxed) > self.config.max_head_bytes {
            self.flush_wanted.notify_one();
        }
        Ok(())
    }

    fn apply(
        &self,
        tenant: &Tenant,
        time_ms: i64,
        profile: &Profile,
        column_values: Option<&ColumnValues>,
        series: &[SeriesSpec],
    ) {
        let buckets = {
            let live = self.live.read();
            live.get(tenant).cloned()
        };
        let buckets = buckets.unwrap_or_else(|| self.live.write().entry(tenant.clone()).or_default().clone());
        let mut buckets = buckets.write();
        let partition = buckets
            .entry(block::bucket_start(time_ms, self.bucket_ms()))
            .or_default();
        let before = partition.estimated_bytes();
        let symbols = partition.symbols.add_profile(profile);
        let series_indices: Vec<usize> = series
            .iter()
            .map(|spec| partition.series_index(&spec.labels, &spec.profile_type))
            .collect();
        for (sample_index, sample) in profile.sample.iter().enumerate() {
            // A sample all 0 once its values are replaced is not stored (nor its stack).
            if column_values.is_some_and(|values| !values.keeps(sample_index, sample)) {
                continue;
            }
            let stack = partition.symbols.add_stack(&symbols, &sample.location_id);
            let span_id = block::sample_span_id(profile, sample);
            for (spec, &index) in series.iter().zip(&series_indices) {
                let value = match column_values {
                    Some(values) => values.value(sample_index, sample, spec.value_index),
                    None => sample.value.get(spec.value_index).copied().unwrap_or(0),
                };
                if value != 0 {
                    partition.push_row_with_span(index, time_ms, stack, value, span_id);
                }
            }
        }
        let after = partition.estimated_bytes();
        self.live_bytes
            .fetch_add(after.saturating_sub(before), Ordering::Relaxed);
    }

    /// Whether appending `series` at `time_ms` keeps the tenant within `max_series` distinct
    /// series in the head (0: no limit). Series in different time buckets count apart.
    pub fn within_series_limit(&self, tenant: &Tenant, time_ms: i64, series: &[SeriesSpec], max_series: usize) -> bool {
        if max_series == 0 {
            return true;
        }
        let buckets = self.live.read().get(tenant).cloned();
        let Some(buckets) = buckets else {
            return series.len() <= max_series;
        };
        let buckets = buckets.read();
        let bucket = buckets.get(&block::bucket_start(time_ms, self.bucket_ms()));
        let new = series
            .iter()
            .filter(|spec| !bucket.is_some_and(|partition| partition.contains_series(&spec.labels)))
            .count();
        let existing: usize = buckets.values().map(|partition| partition.series.len()).sum();
        new == 0 || existing + new <= max_series
    }

    /// Waits until the head should be flushed: the interval passed or it grew too large.
    pub async fn wait_for_flush(&self) {
        tokio::select! {
            () = tokio::time::sleep(self.config.flush_interval) => {}
            () = self.flush_wanted.notified() => {}
        }
    }

    /// Cuts every live partition into a block and publishes it.
    pub async fn flush(&self) -> Result<FlushStats, HeadError> {
        let wal = self.wal.as_ref().ok_or(HeadError::ReadOnly)?;
        let _one_flush = self.flush_lock.lock().await;
        let Some(sealed_segment) = self.cut(wal).await? else {
            return Ok(FlushStats::default());
        };
        let pending = self.upload_and_commit(wal, sealed_segment).await?;
        let mut stats = FlushStats::default();
        for (part, meta) in pending {
            // Outside the gate: a slow bucket stalls no query. Between this PUT and the drop
            // below a query may list the block while the partition is still here; it skips
            // the partition then ([`Head::visit_unlisted`]), so each row counts once.
            block::publish(&self.storage, &meta).await?;
            let _gate = self.publish_gate.write().await;
            self.publications.fetch_add(1, Ordering::AcqRel);
            {
                // Lock order flushing → published, as in `snapshot_for_peer`.
                let mut flushing = self.flushing.write();
                flushing.retain(|other| !Arc::ptr_eq(other, &part));
                let published_bytes = part.partition.estimated_bytes();
                let _ = self
                    .flushing_bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
                        Some(bytes.saturating_sub(published_bytes))
                    });
                if !self.config.published_grace.is_zero() {
                    let mut published = self.published.write();
                    published.retain(|(at, _)| at.elapsed() < self.config.published_grace);
                    published.push((std::time::Instant::now(), part.clone()));
                }
            }
            stats.blocks += 1;
            stats.samples += meta.samples as usize;
            log_published(&meta);
        }
        wal.delete_through(sealed_segment)?;
        FlushCommit::remove(wal.dir())?;
        Ok(stats)
    }

    /// Moves every live partition to the flushing list and seals the WAL segment holding
    /// their records; `None` when there is nothing to flush.
    async fn cut(&self, wal: &Wal) -> Result<Option<u64>, HeadError> {
        let _cut = self.cut.write().await;
        let nothing_to_flush = {
            // Lock order live → flushing, as in `visit`: a query sees every partition in
            // exactly one of the two lists.
            let mut live = self.live.write();
            let mut flushing = self.flushing.write();
            self.live_bytes.store(0, Ordering::Relaxed);
            for (tenant, buckets) in live.drain() {
                let buckets = std::mem::take(&mut *buckets.write());
                for (bucket_start_ms, partition) in buckets {
                    self.flushing_bytes
                        .fetch_add(partition.estimated_bytes(), Ordering::Relaxed);
                    flushing.push(Arc::new(Flushing {
                        tenant: tenant.clone(),
                        bucket_start_ms,
                        partition,
                        uploaded: parking_lot::Mutex::new(None),
                    }));
                }
            }
            flushing.is_empty()
        };
        if nothing_to_flush {
            return Ok(None);
        }
        Ok(Some(wal.rotate().await?))
    }

    /// Uploads the data of every flushing partition not uploaded yet (an earlier flush may have
    /// failed half-way), then commits them as holding the segments through `sealed_segment`.
    async fn upload_and_commit(
        &self,
        wal: &Wal,
        sealed_segment: u64,
    ) -> Result<Vec<(Arc<Flushing>, BlockMeta)>, HeadError> {
        let pending: Vec<Arc<Flushing>> = self.flushing.read().clone();
        let mut uploaded = Vec::with_capacity(pending.len());
        for part in pending {
            let mut earlier = part.uploaded.lock().clone();
            if let Some(meta) = &earlier {
                // An earlier attempt failed after this upload; the compactor may have deleted
                // the unpublished data since, if storage was failing long enough.
                if !self.storage.exists(&meta.data_key()).await.map_err(BlockError::from)? {
                    earlier = None;
                }
            }
            let meta = match earlier {
                Some(meta) => meta,
                None => {
                    let meta = block::upload(
                        &self.storage,
                        &part.tenant,
                        part.bucket_start_ms,
                        self.bucket_ms(),
                        &part.partition,
                    )
                    .await?;
                    *part.uploaded.lock() = Some(meta.clone());
                    meta
                }
            };
            uploaded.push((part, meta));
        }
        FlushCommit {
            sealed_segment,
            blocks: uploaded.iter().map(|(_, meta)| meta.clone()).collect(),
        }
        .write(wal.dir())?;
        Ok(uploaded)
    }

    /// Flushes every `flush_interval`, or when the head grows past `max_head_bytes`, until the
    /// task is dropped. A failed flush keeps its data in the head and the WAL and is retried at
    /// the next turn; `heartbeat` reports each outcome.
    pub async fn run_flusher(self: Arc<Self>, heartbeat: crate::heartbeat::Heartbeat) {
        loop {
            self.wait_for_flush().await;
            let outcome = self.flush().await;
            heartbeat.record(&outcome);
            if let Err(err) = outcome {
                tracing::error!(error = %err, "flush failed; data stays in the head and WAL, retrying later");
            }
        }
    }

    /// Holds off publication while a query lists blocks and reads the head.
    pub async fn read_gate(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.publish_gate.read().await
    }

    /// How many partitions flushes have dropped after publishing their blocks. A query reads
    /// it before listing blocks and again under [`Head::read_gate`]: if it is unchanged, no
    /// partition left the head since the listing began, so every published block the head no
    /// longer holds was listed.
    pub fn publications(&self) -> u64 {
        self.publications.load(Ordering::Acquire)
    }

    /// The exactly-once rule of a query that listed blocks before taking [`Head::read_gate`]
    /// (and found [`Head::publications`] unchanged under it): live partitions, and the flushing
    /// (or lately published) ones whose block is not in `listed`. Each row is then read from
    /// the listing or from here, never both, never neither.
    pub fn visit_unlisted(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
        listed: &std::collections::HashSet<String>,
        visit: impl FnMut(&Partition),
    ) {
        // Not the lately published ones: this replica's own listing, taken after they left the
        // head, holds their blocks (or the compacted block that replaced them).
        self.visit_where(tenant, from_ms, until_ms, Some(listed), false, visit);
    }

    /// Calls `visit` with every live or flushing partition of `tenant` whose bucket overlaps
    /// `[from, until)`. Call under [`Head::read_gate`].
    pub fn visit(&self, tenant: &Tenant, from_ms: i64, until_ms: i64, visit: impl FnMut(&Partition)) {
        self.visit_where(tenant, from_ms, until_ms, None, false, visit);
    }

    /// For a peer's query: the partitions of `tenant` overlapping the window that the peer does
    /// not read from storage. Live ones always; flushing and lately published ones unless their
    /// block is in `listed` (the blocks the peer listed before asking). A partition moves between
    /// these lists only under their write locks, all held here for reading, so the peer gets
    /// every row exactly once: from its listing or from here.
    pub fn snapshot_for_peer(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
        listed: &std::collections::HashSet<String>,
        visit: impl FnMut(&Partition),
    ) {
        self.visit_where(tenant, from_ms, until_ms, Some(listed), true, visit);
    }

    /// Live and flushing partitions of `tenant` overlapping the window, with `with_published`
    /// also the lately published ones; with `listed`, only those flushing or published whose
    /// block is not listed.
    fn visit_where(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
        listed: Option<&std::collections::HashSet<String>>,
        with_published: bool,
        mut visit: impl FnMut(&Partition),
    ) {
        let bucket_ms = self.bucket_ms();
        let window = crate::model::TimeWindow::new(from_ms, until_ms);
        let overlaps = |start: i64| window.overlaps_bucket(start, bucket_ms);
        let wanted = |part: &Flushing| {
            &part.tenant == tenant
                && overlaps(part.bucket_start_ms)
                && listed.is_none_or(|listed| {
                    part.uploaded
                        .lock()
                        .as_ref()
                        .is_none_or(|meta| !listed.contains(&meta.id))
                })
        };
        // Held across the lists so a concurrent flush cannot move a partition out of sight
        // (lock order live → flushing → published, as in `flush`).
        let live = self.live.read();
        let flushing = self.flushing.read();
        let published = self.published.read();
        let grace = self.config.published_grace;
        let lately_published = published
            .iter()
            .filter(|(at, _)| with_published && at.elapsed() < grace)
            .map(|(_, part)| part);
        for part in flushing.iter().chain(lately_published) {
            if wanted(part) {
                visit(&part.partition);
            }
        }
        if let Some(buckets) = live.get(tenant) {
            for (&start, partition) in buckets.read().iter() {
                if overlaps(start) {
                    visit(partition);
                }
            }
        }
    }

    /// Tenants with data in the head.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut tenants: Vec<Tenant> = self.live.read().keys().cloned().collect();
        tenants.extend(self.flushing.read().iter().map(|part| part.tenant.clone()));
        tenants.sort();
        tenants.dedup();
        tenants
    }

    /// Estimated bytes held by live partitions.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// Estimated bytes not in object storage yet: live partitions and those a flush cut but
    /// has not published (all of them while flushes fail).
    pub fn unflushed_bytes(&self) -> usize {
        self.live_bytes()
            .saturating_add(self.flushing_bytes.load(Ordering::Relaxed))
    }
}

fn log_published(meta: &BlockMeta) {
    tracing::info!(
        tenant = %meta.tenant,
        bucket = meta.bucket_start_ms,
        block = %meta.id,
        samples = meta.samples,
        bytes = meta.size_bytes,
        "published block"
    );
}

/// What tests elsewhere in the crate need of a head: one on a fresh directory.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::storage::StorageConfig;

    /// A data directory with filesystem blocks, removed when dropped.
    pub(crate) struct TempStore {
        pub dir: tempfile::TempDir,
        pub storage: Storage,
    }

    impl TempStore {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let storage = Storage::from_config(&StorageConfig::default(), dir.path()).unwrap();
            Self { dir, storage }
        }

        /// A head on this directory with the default config (again, after a simulated crash).
        pub async fn open(&self) -> Arc<Head> {
            self.open_with(HeadConfig::default()).await
        }

        pub async fn open_with(&self, config: HeadConfig) -> Arc<Head> {
            let head = Head::open(
                config,
                self.storage.clone(),
                &self.dir.path().join("wal"),
                &DecodeLimits::default(),
            )
            .await
            .unwrap();
            Arc::new(head)
        }
    }

    /// A file of the shared corpus.
    pub(crate) fn corpus_file(name: &str) -> bytes::Bytes {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/corpus/files")
            .join(name);
        bytes::Bytes::from(std::fs::read(path).unwrap())
    }
}

#[cfg(test)]
mod tests {
    //! A crash at each step of a flush, played by dropping the head after that step and opening
    //! its directory again: every acknowledged profile must be counted exactly once.

    use super::*;
    use crate::ingest::Ingester;
    use crate::model::Selector;
    use crate::query::{Querier, SelectParams};

    /// 16 CPU samples, 160 ms in all (MANIFEST.tsv).
    const CORPUS_FILE: &str = "ddnotes_cpu-profiler-labels.pprof";
    const CPU_NANOS: i64 = 160_000_000;
    const AT_MS: i64 = 1_700_000_000_000;

    use super::testing::TempStore as Store;

    /// Crash tests' helpers over a [`Store`].
    trait CrashStore {
        async fn push(&self, head: &Arc<Head>, times: i64);
        async fn seen(&self, head: &Arc<Head>) -> (i64, usize);
    }

    impl CrashStore for Store {
        /// Pushes the corpus file `times` times, one millisecond apart.
        async fn push(&self, head: &Arc<Head>, times: i64) {
            let raw = super::testing::corpus_file(CORPUS_FILE);
            let ingester = Ingester::new(head.clone(), DecodeLimits::default());
            for offset in 0..times {
                let labels = Labels::new([("service_name".to_string(), "crash".to_string())]).unwrap();
                ingester
                    .push_pprof(&tenant(), labels, raw.clone(), Some(AT_MS + offset))
                    .await
                    .unwrap();
            }
        }

        /// CPU time the query API reports, and how many blocks are visible.
        async fn seen(&self, head: &Arc<Head>) -> (i64, usize) {
            let params = SelectParams {
                tenant: tenant(),
                profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
                selector: Selector::parse(r#"{service_name="crash"}"#).unwrap(),
                from_ms: AT_MS - 1,
                until_ms: AT_MS + 1000,
            };
            let querier = Querier::new(head.clone(), self.storage.clone());
            let total = querier.select_merge(&params).await.unwrap().total();
            let blocks = block::list(&self.storage, &tenant(), i64::MIN, i64::MAX)
                .await
                .unwrap()
                .len();
            (total, blocks)
        }
    }

    fn tenant() -> Tenant {
        Tenant::parse("crash").unwrap()
    }

    #[tokio::test]
    async fn a_crash_before_the_commit_replays_the_log() {
        let store = Store::new();
        let head = store.open().await;
        store.push(&head, 2).await;
        let wal = head.wal.as_ref().unwrap();
        head.cut(wal).await.unwrap().unwrap();
        // Half the uploads made it; nothing was committed.
        let part = head.flushing.read()[0].clone();
        block::upload(
            &store.storage,
            &part.tenant,
            part.bucket_start_ms,
            head.bucket_ms(),
            &part.partition,
        )
        .await
        .unwrap();
        drop((part, head));

        let head = store.open().await;
        assert_eq!(store.seen(&head).await, (2 * CPU_NANOS, 0));
        head.flush().await.unwrap();
        assert_eq!(store.seen(&head).await, (2 * CPU_NANOS, 1));
    }

    #[tokio::test]
    async fn a_crash_after_the_commit_finishes_the_flush() {
        let store = Store::new();
        let head = store.open().await;
        store.push(&head, 3).await;
        let wal = head.wal.as_ref().unwrap();
        let sealed = head.cut(wal).await.unwrap().unwrap();
        head.upload_and_commit(wal, sealed).await.unwrap();
        drop(head);
        assert!(FlushCommit::read(&store.dir.path().join("wal")).unwrap().is_some());

        // The restart publishes the committed block and does not replay its records.
        let head = store.open().await;
        assert_eq!(store.seen(&head).await, (3 * CPU_NANOS, 1));
        assert!(FlushCommit::read(&store.dir.path().join("wal")).unwrap().is_none());
        assert_eq!(head.live_bytes(), 0);

        // A read-only copy of a directory with a commit skips the committed segments.
        let wal_dir = store.dir.path().join("wal");
        store.push(&head, 1).await;
        let wal = head.wal.as_ref().unwrap();
        let sealed = head.cut(wal).await.unwrap().unwrap();
        head.upload_and_commit(wal, sealed).await.unwrap();
        let copy = Head::open_read_only(
            HeadConfig::default(),
            store.storage.clone(),
            &wal_dir,
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(copy.live_bytes(), 0);
    }

    #[tokio::test]
    async fn a_commit_whose_data_was_swept_is_replayed_instead() {
        let store = Store::new();
        let head = store.open().await;
        store.push(&head, 3).await;
        let wal = head.wal.as_ref().unwrap();
        let sealed = head.cut(wal).await.unwrap().unwrap();
        let uploaded = head.upload_and_commit(wal, sealed).await.unwrap();
        drop(head);
        // The replica stayed down past the compactor's grace for unpublished data.
        store.storage.delete(&uploaded[0].1.data_key()).await.unwrap();

        let head = store.open().await;
        assert!(FlushCommit::read(&store.dir.path().join("wal")).unwrap().is_none());
        assert_eq!(store.seen(&head).await, (3 * CPU_NANOS, 0));
        head.flush().await.unwrap();
        assert_eq!(store.seen(&head).await, (3 * CPU_NANOS, 1));
    }

    #[tokio::test]
    async fn a_complete_flush_leaves_no_commit_and_nothing_to_replay() {
        let store = Store::new();
        let head = store.open().await;
        store.push(&head, 2).await;
        assert_eq!(head.flush().await.unwrap().blocks, 1);
        drop(head);
        assert!(FlushCommit::read(&store.dir.path().join("wal")).unwrap().is_none());
        let head = store.open().await;
        assert_eq!(head.live_bytes(), 0);
        assert_eq!(store.seen(&head).await, (2 * CPU_NANOS, 1));
    }

    /// Records that cannot be replayed (not a record; a profile the current limits refuse; a
    /// series whose labels break the rules) are moved to the quarantine directory and counted,
    /// and start-up goes on with every other record.
    #[tokio::test]
    async fn unreplayable_records_are_quarantined_and_start_up_goes_on() {
        let store = Store::new();
        let head = store.open().await;
        store.push(&head, 2).await;
        drop(head);
        let wal_dir = store.dir.path().join("wal");
        let good = WalRecord::decode(Wal::read_only(&wal_dir).unwrap().records[0].payload.as_slice()).unwrap();
        let bad_series = WalRecord {
            series: vec![WalSeries {
                labels: vec![crate::proto::types::v1::LabelPair {
                    name: "a b".into(),
                    value: "x".into(),
                }],
                ..good.series[0].clone()
            }],
            ..good.clone()
        };
        let bad_profile = WalRecord {
            raw_profile: bytes::Bytes::from_static(b"not a profile"),
            ..good.clone()
        };
        // Delta values for a sample type the profile does not have, or not one per sample.
        let bad_values = WalRecord {
            column_values: Some(crate::proto::pyrite::v1::WalColumnValues {
                columns: vec![9],
                values: Vec::new(),
            }),
            ..good.clone()
        };
        let misshapen_values = WalRecord {
            column_values: Some(crate::proto::pyrite::v1::WalColumnValues {
                columns: vec![0],
                values: vec![1, 2, 3],
            }),
            ..good.clone()
        };
        {
            let (wal, _) = Wal::open(
                &wal_dir,
                wal::DeferredWrites {
                    sync_interval: Duration::from_secs(1),
                    max_queued_bytes: 1 << 20,
                    max_wal_bytes: 0,
                },
            )
            .unwrap();
            for record in [
                b"garbage".to_vec(),
                bad_series.encode_to_vec(),
                bad_profile.encode_to_vec(),
                bad_values.encode_to_vec(),
                misshapen_values.encode_to_vec(),
            ] {
                wal.append(record).await.unwrap();
            }
        }
        let before = crate::integrity::WAL_QUARANTINED_RECORDS.get();
        let head = store.open().await;
        assert_eq!(store.seen(&head).await, (2 * CPU_NANOS, 0));
        assert!(crate::integrity::WAL_QUARANTINED_RECORDS.get() >= before + 5);
        let quarantined = std::fs::read_dir(wal_dir.join(QUARANTINE_DIR))
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|ext| ext == "record")
            })
            .count();
        assert_eq!(quarantined, 5);
    }
}
