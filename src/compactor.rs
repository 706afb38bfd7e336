//! Compaction: merges the blocks of one tenant and time bucket into one, once the bucket is
//! past its last flush. A flush writes a block per bucket every few minutes, so an hour holds a
//! dozen blocks; merged, a query opens one index and one symbol table instead of twelve, and
//! stacks shared between flushes are stored once.
//!
//! Crash-safe without locks: the merged block's id derives from its sources' ids and merging the
//! same sources gives the same bytes, so two compactors of the same blocks (or a compaction
//! retried after a crash) make one block; its meta names
//! the sources, which [`Catalog::list`] hides from then on. The sources are deleted a pass later,
//! `delete_delay` after the merged block appeared, so a query that listed them just before
//! still finds their data. Run one compactor per bucket (`compactor.enabled` on one replica):
//! two compactors listing different sets of the same bucket at the same moment are resolved by
//! [`Catalog::list`], but only sets that contain one another resolve without loss.

use std::time::Duration;

use serde::Deserialize;

use crate::block::{self, BlockError, BlockMeta, Catalog, Listing, Partition};
use crate::heartbeat::Heartbeat;
use crate::model::duration_ms;
use crate::storage::Storage;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompactorConfig {
    /// Whether this process compacts; with several replicas on one bucket, turn it on in one.
    pub enabled: bool,
    /// How often buckets are checked.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A bucket is compacted once it ended at least this long ago, so the head's last flush of
    /// it (every `head.flush_interval`) is in.
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
    /// How long replaced blocks stay after the merged block is published: longer than any
    /// query that listed them before runs.
    #[serde(with = "humantime_serde")]
    pub delete_delay: Duration,
    /// Largest merged data object; blocks are merged in groups up to this size, as merging
    /// holds them in memory.
    pub max_block_bytes: u64,
    /// A block data object with no meta this long after it was written was left by a flush or
    /// compaction that stopped before publishing, and is deleted. Far longer than any upload
    /// takes; a replica that was down longer replays its WAL instead of publishing it.
    #[serde(with = "humantime_serde")]
    pub unpublished_grace: Duration,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(300),
            min_age: Duration::from_secs(900),
            delete_delay: Duration::from_secs(300),
            max_block_bytes: 512 * 1024 * 1024,
            unpublished_grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    /// Blocks written.
    pub compacted: usize,
    /// Replaced blocks deleted.
    pub deleted: usize,
    /// Data objects deleted that were never published.
    pub unpublished_deleted: usize,
}

/// Compacts every bucket of every tenant that ended `config.min_age` before `now_ms`.
pub async fn compact_all(
    catalog: &Catalog,
    config: &CompactorConfig,
    now_ms: i64,
) -> Result<CompactionStats, BlockError> {
    let storage = catalog.storage();
    let mut stats = CompactionStats::default();
    for tenant in block::list_tenants(storage).await? {
        let Listing {
            visible,
            replaced,
            unpublished,
        } = catalog.list(&tenant, i64::MIN, i64::MAX).await?;
        let unpublished_cutoff_ms = now_ms.saturating_sub(duration_ms(config.unpublished_grace));
        for object in unpublished {
            if object.last_modified_ms <= unpublished_cutoff_ms {
                storage.delete(&object.key).await?;
                tracing::info!(key = %object.key, bytes = object.size, "deleted block data that was never published");
                stats.unpublished_deleted += 1;
            }
        }
        // Replaced blocks go once their replacement is older than the delete delay.
        let replaced_at: std::collections::HashMap<&str, i64> = visible
            .iter()
            .flat_map(|meta| meta.compacted_from.iter().map(|id| (id.as_str(), meta.created_at_ms)))
            .collect();
        for meta in &replaced {
            let since = replaced_at.get(meta.id.as_str()).copied().unwrap_or(meta.created_at_ms);
            if since <= now_ms.saturating_sub(duration_ms(config.delete_delay)) {
                block::delete(storage, meta).await?;
                stats.deleted += 1;
            }
        }
        let min_age_ms = duration_ms(config.min_age);
        let mut buckets: std::collections::BTreeMap<i64, Vec<BlockMeta>> = Default::default();
        for meta in visible {
            if meta.bucket_start_ms.saturating_add(meta.bucket_duration_ms) <= now_ms.saturating_sub(min_age_ms) {
                buckets.entry(meta.bucket_start_ms).or_default().push(meta);
            }
        }
        for metas in buckets.into_values() {
            for group in groups(metas, config.max_block_bytes) {
                let outcome = compact(storage, &group).await?;
                stats.compacted += outcome.compacted;
                stats.deleted += outcome.deleted;
            }
        }
    }
    Ok(stats)
}

/// Consecutive blocks (by id, so by age) whose data stays under `max_bytes` together; only
/// groups of two or more are worth merging.
fn groups(metas: Vec<BlockMeta>, max_bytes: u64) -> Vec<Vec<BlockMeta>> {
    let mut groups: Vec<Vec<BlockMeta>> = Vec::new();
    let mut size = 0u64;
    for meta in metas {
        match groups.last_mut() {
            Some(group) if size.saturating_add(meta.size_bytes) <= max_bytes => {
                size += meta.size_bytes;
                group.push(meta);
            }
            _ => {
                size = meta.size_bytes;
                groups.push(vec![meta]);
            }
        }
    }
    groups.retain(|group| group.len() > 1);
    groups
}

/// Merges `sources` (blocks of one tenant and bucket) into one block and publishes it; from then
/// on listings hide the sources, which a later pass deletes.
pub async fn compact(storage: &Storage, sources: &[BlockMeta]) -> Result<CompactionStats, BlockError> {
    assert!(
        sources
            .windows(2)
            .all(|pair| pair[0].tenant == pair[1].tenant && pair[0].bucket_start_ms == pair[1].bucket_start_ms),
        "compaction sources must share a tenant and a bucket"
    );
    let mut merged = Partition::default();
    let mut readable = Vec::with_capacity(sources.len());
    for meta in sources {
        match block::load_all(storage, meta).await {
            Ok(partition) => {
                merged.absorb(&partition);
                readable.push(meta.clone());
            }
            // A damaged source stays as it is (queries skip it too); merging around it keeps
            // the damage out of the new block and the rest of the bucket compacted.
            Err(err) if err.is_corrupt() => {
                crate::integrity::COMPACTOR_CORRUPT_SOURCES.inc();
                tracing::error!(
                    tenant = %meta.tenant,
                    key = %meta.data_key(),
                    error = %err,
                    "compaction source cannot be read; left out of the merge"
                );
            }
            Err(err) => return Err(err),
        }
    }
    if readable.len() < 2 {
        return Ok(CompactionStats::default());
    }
    let sources = readable.as_slice();
    let Some(meta) = block::upload_compacted(storage, sources, &merged).await? else {
        return Ok(CompactionStats::default());
    };
    block::publish(storage, &meta).await?;
    tracing::info!(
        tenant = %meta.tenant,
        bucket = meta.bucket_start_ms,
        block = %meta.id,
        sources = sources.len(),
        samples = meta.samples,
        bytes = meta.size_bytes,
        "compacted blocks"
    );
    Ok(CompactionStats {
        compacted: 1,
        ..CompactionStats::default()
    })
}

/// Compacts every `config.interval` until the task is dropped.
pub async fn run(catalog: Catalog, config: CompactorConfig, heartbeat: Heartbeat) {
    if !config.enabled {
        return;
    }
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = compact_all(&catalog, &config, crate::now_ms()).await;
        heartbeat.record(&outcome);
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "compaction failed; retrying at the next pass");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::head::Head;
    use crate::head::testing::{TempStore, corpus_file};
    use crate::ingest::Ingester;
    use crate::model::{Labels, Selector, Tenant};
    use crate::pprof::DecodeLimits;
    use crate::query::{Querier, SelectParams};

    const AT_MS: i64 = 1_700_000_000_000;
    /// Profiles of several kinds (CPU, heap, block, goroutine), so symbols of different blocks
    /// overlap in part.
    const FILES: [&str; 4] = [
        "gotarget__cpu_5s.pb.gz",
        "gotarget__heap_t1.pb.gz",
        "gotarget__block_t1.pb.gz",
        "gotarget__goroutine.pb.gz",
    ];

    struct Fixture {
        _store: TempStore,
        storage: Storage,
        head: Arc<Head>,
    }

    /// Three flushes of the same bucket: three blocks, each with every file, at different times.
    async fn three_blocks() -> Fixture {
        let store = TempStore::new();
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        for flush in 0..3i64 {
            for (index, file) in FILES.iter().enumerate() {
                let service = format!("service-{}", (index + flush as usize) % 3);
                let labels = Labels::new([("service_name".to_string(), service)]).unwrap();
                ingester
                    .push_pprof(&tenant(), labels, corpus_file(file), Some(AT_MS + flush * 60_000))
                    .await
                    .unwrap();
            }
            head.flush().await.unwrap();
        }
        Fixture {
            storage: store.storage.clone(),
            _store: store,
            head,
        }
    }

    impl Fixture {
        /// A catalog that has learned nothing yet, as a restarted compactor's.
        fn catalog(&self) -> Catalog {
            Catalog::new(self.storage.clone(), 0)
        }
    }

    fn tenant() -> Tenant {
        Tenant::parse("compact").unwrap()
    }

    /// Every profile type's merged stacks, as folded text, per service and overall.
    async fn everything(fixture: &Fixture) -> BTreeMap<String, String> {
        let querier = Querier::new(fixture.head.clone(), fixture.storage.clone());
        let mut seen = BTreeMap::new();
        for profile_type in querier
            .profile_types(&tenant(), AT_MS, AT_MS + 3_600_000)
            .await
            .unwrap()
        {
            for selector in ["{}", "{service_name=\"service-1\"}"] {
                let params = SelectParams {
                    tenant: tenant(),
                    profile_type: profile_type.clone(),
                    selector: Selector::parse(selector).unwrap(),
                    from_ms: AT_MS,
                    until_ms: AT_MS + 3_600_000,
                };
                let tree = querier.select_merge(&params).await.unwrap();
                seen.insert(
                    format!("{} {selector}", profile_type.id()),
                    crate::render::folded(&tree),
                );
            }
        }
        seen
    }

    fn now_config() -> CompactorConfig {
        CompactorConfig {
            min_age: Duration::ZERO,
            delete_delay: Duration::ZERO,
            ..CompactorConfig::default()
        }
    }

    async fn blocks(fixture: &Fixture) -> (Vec<BlockMeta>, Vec<BlockMeta>) {
        let listing = fixture.catalog().list(&tenant(), i64::MIN, i64::MAX).await.unwrap();
        (listing.visible, listing.replaced)
    }

    /// CPU time of every service in `[from, until)`.
    async fn cpu_total(fixture: &Fixture, from_ms: i64, until_ms: i64) -> i64 {
        let querier = Querier::new(fixture.head.clone(), fixture.storage.clone());
        let params = SelectParams {
            tenant: tenant(),
            profile_type: crate::model::ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            selector: Selector::parse("{}").unwrap(),
            from_ms,
            until_ms,
        };
        querier.select_merge(&params).await.unwrap().total()
    }

    /// A block whose symbols are damaged is skipped by queries (the tenant's other blocks keep
    /// answering) and left out of compaction, which merges the others around it.
    #[tokio::test]
    async fn a_corrupt_block_is_skipped_by_queries_and_never_merged() {
        let fixture = three_blocks().await;
        let per_flush = [
            cpu_total(&fixture, AT_MS, AT_MS + 60_000).await,
            cpu_total(&fixture, AT_MS + 60_000, AT_MS + 120_000).await,
            cpu_total(&fixture, AT_MS + 120_000, AT_MS + 180_000).await,
        ];
        assert!(per_flush.iter().all(|&total| total > 0), "{per_flush:?}");
        let (visible, _) = blocks(&fixture).await;
        let damaged = visible
            .iter()
            .find(|meta| meta.min_time_ms >= AT_MS + 60_000 && meta.max_time_ms < AT_MS + 120_000)
            .unwrap()
            .clone();
        let mut data = fixture.storage.get(&damaged.data_key()).await.unwrap().to_vec();
        data[..damaged.symbols_length as usize].fill(0xff);
        fixture.storage.put(&damaged.data_key(), data.into()).await.unwrap();

        let corrupt_before = crate::integrity::BLOCK_CORRUPT
            .get_or_create(&crate::integrity::CorruptLabels { part: "symbols".into() })
            .get();
        let readable = per_flush[0] + per_flush[2];
        assert_eq!(cpu_total(&fixture, AT_MS, AT_MS + 3_600_000).await, readable);
        assert!(
            crate::integrity::BLOCK_CORRUPT
                .get_or_create(&crate::integrity::CorruptLabels { part: "symbols".into() })
                .get()
                > corrupt_before
        );

        let skipped_before = crate::integrity::COMPACTOR_CORRUPT_SOURCES.get();
        let stats = compact_all(&fixture.catalog(), &now_config(), crate::now_ms())
            .await
            .unwrap();
        assert_eq!(stats.compacted, 1);
        assert!(crate::integrity::COMPACTOR_CORRUPT_SOURCES.get() > skipped_before);
        let (visible, _) = blocks(&fixture).await;
        assert_eq!(visible.len(), 2, "the merged block and the damaged one");
        assert!(visible.iter().any(|meta| meta.id == damaged.id));
        let merged = visible.iter().find(|meta| meta.id != damaged.id).unwrap();
        assert!(!merged.compacted_from.contains(&damaged.id));
        assert_eq!(cpu_total(&fixture, AT_MS, AT_MS + 3_600_000).await, readable);
    }

    #[tokio::test]
    async fn compaction_keeps_every_stack_and_value() {
        let fixture = three_blocks().await;
        let before = everything(&fixture).await;
        assert!(before.len() >= 8 && before.values().all(|folded| !folded.is_empty()));
        let (visible, _) = blocks(&fixture).await;
        assert_eq!(visible.len(), 3);
        let samples: u64 = visible.iter().map(|meta| meta.samples).sum();
        let bytes: u64 = visible.iter().map(|meta| meta.size_bytes).sum();

        // A bucket that has not ended min_age ago is left alone.
        let stats = compact_all(&fixture.catalog(), &CompactorConfig::default(), AT_MS)
            .await
            .unwrap();
        assert_eq!(stats, CompactionStats::default());

        let stats = compact_all(&fixture.catalog(), &now_config(), crate::now_ms())
            .await
            .unwrap();
        assert_eq!(
            stats,
            CompactionStats {
                compacted: 1,
                ..CompactionStats::default()
            }
        );
        let (visible, replaced) = blocks(&fixture).await;
        assert_eq!(visible.len(), 1);
        assert_eq!(visible[0].compacted_from.len(), 3);
        assert_eq!(visible[0].samples, samples);
        assert!(
            visible[0].size_bytes < bytes * 2 / 3,
            "symbols shared by the blocks are stored once"
        );
        assert_eq!(replaced.len(), 3, "sources stay, hidden, until the next pass");
        assert_eq!(everything(&fixture).await, before);

        let stats = compact_all(&fixture.catalog(), &now_config(), crate::now_ms())
            .await
            .unwrap();
        assert_eq!(
            stats,
            CompactionStats {
                deleted: 3,
                ..CompactionStats::default()
            }
        );
        assert_eq!(blocks(&fixture).await.1.len(), 0);
        assert_eq!(everything(&fixture).await, before);
    }

    #[tokio::test]
    async fn racing_or_interrupted_compactions_make_one_block() {
        let fixture = three_blocks().await;
        let before = everything(&fixture).await;
        let (sources, _) = blocks(&fixture).await;

        // A compaction stopped after its data object: the next pass publishes the same block.
        let mut merged = Partition::default();
        for meta in &sources {
            merged.absorb(&block::load_all(&fixture.storage, meta).await.unwrap());
        }
        let orphan = block::upload_compacted(&fixture.storage, &sources, &merged)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(blocks(&fixture).await.0.len(), 3, "no meta, not visible");

        // Two compactors of the same blocks at once.
        let (first, second) = tokio::join!(compact(&fixture.storage, &sources), compact(&fixture.storage, &sources));
        assert_eq!(first.unwrap().compacted + second.unwrap().compacted, 2);
        let (visible, replaced) = blocks(&fixture).await;
        assert_eq!(visible.len(), 1);
        assert_eq!(visible[0].id, orphan.id);
        assert_eq!(replaced.len(), 3);
        assert_eq!(everything(&fixture).await, before);
    }

    #[tokio::test]
    async fn data_never_published_is_deleted_after_the_grace() {
        let fixture = three_blocks().await;
        let before = everything(&fixture).await;
        let (sources, _) = blocks(&fixture).await;
        // A flush that stopped after uploading: data, no meta.
        let partition = block::load_all(&fixture.storage, &sources[0]).await.unwrap();
        let stray = block::upload(
            &fixture.storage,
            &tenant(),
            sources[0].bucket_start_ms,
            3_600_000,
            &partition,
        )
        .await
        .unwrap();
        let keep_for_now = CompactorConfig {
            min_age: Duration::from_secs(10 * 365 * 24 * 3600),
            ..CompactorConfig::default()
        };
        let stats = compact_all(&fixture.catalog(), &keep_for_now, crate::now_ms())
            .await
            .unwrap();
        assert_eq!(stats, CompactionStats::default());
        assert!(fixture.storage.exists(&stray.data_key()).await.unwrap());

        let past_grace = CompactorConfig {
            unpublished_grace: Duration::ZERO,
            ..keep_for_now
        };
        let stats = compact_all(&fixture.catalog(), &past_grace, crate::now_ms())
            .await
            .unwrap();
        assert_eq!(stats.unpublished_deleted, 1);
        assert!(!fixture.storage.exists(&stray.data_key()).await.unwrap());
        assert_eq!(blocks(&fixture).await.0.len(), 3, "published blocks stay");
        assert_eq!(everything(&fixture).await, before);
    }

    #[test]
    fn a_listing_prefers_the_compaction_with_more_sources() {
        let meta = |id: &str, sources: &[&str]| BlockMeta {
            id: id.into(),
            tenant: "t".into(),
            bucket_start_ms: 0,
            bucket_duration_ms: 1,
            min_time_ms: 0,
            max_time_ms: 0,
            series: 0,
            samples: 0,
            size_bytes: 0,
            symbols_length: 0,
            index_offset: 0,
            index_length: 0,
            profile_types: Vec::new(),
            created_at_ms: 0,
            compacted_from: sources.iter().map(|s| s.to_string()).collect(),
            format_version: crate::block::FORMAT_VERSION,
            symbols_raw_length: 0,
            index_raw_length: 0,
        };
        let listed = vec![
            meta("1-a", &[]),
            meta("2-b", &[]),
            meta("3-c", &[]),
            meta("4-x", &["1-a", "2-b"]),
            meta("5-y", &["1-a", "2-b", "3-c"]),
            meta("6-d", &[]),
        ];
        let (visible, replaced) = block::split_replaced_for_test(listed);
        let ids = |metas: &[BlockMeta]| metas.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&visible), ["5-y", "6-d"]);
        assert_eq!(ids(&replaced), ["1-a", "2-b", "3-c", "4-x"]);
    }
}
