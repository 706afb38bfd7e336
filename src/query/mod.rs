//! Queries: pick the blocks and head partitions a window touches, then merge the rows of the
//! matching series by function name into one [`FlameTree`] (all of them, or those a
//! [`RowFilter`] keeps: some spans, some profiles), or sum them into time series or heatmaps.
//!
//! Window rule: a row counts when `from_ms <= time < until_ms` (half-open, in ms since the
//! epoch), in blocks and head alike. A profile's time is its collection time.

mod analyze;
pub mod cache;
mod forest;
mod heatmap;
mod labels;
mod merge;
mod series;
mod snapshot;
mod spans;

pub use crate::model::{Deadline, Ticker};
pub use analyze::{QueryAnalysis, ScopeStats};
pub use heatmap::{Cell, Heatmap, HeatmapKind, HeatmapPoint, HeatmapSeries, HeatmapSlot, Y_BUCKETS};
pub use series::step_point;
// The tree moved to `model` (render reads it too); kept here so callers compile.
pub use crate::model::{FlameNode, FlameTree, ROOT_NAME};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::block::{self, BlockError, BlockMeta, Series, SeriesHeader};
use crate::cluster::{HeadRequest, Peers};
use crate::head::Head;
use crate::limits::Limits;
use crate::model::{Labels, ProfileId, ProfileType, Selector, Tenant, TimeWindow, duration_ms, series_fingerprint};
use crate::storage::Storage;
use crate::symbols::SymbolTable;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query window is empty: from ({from_ms}) must be before until ({until_ms})")]
    EmptyWindow { from_ms: i64, until_ms: i64 },
    #[error("step must be at least 1 ms")]
    Step,
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(
        "the query covers {length_ms} ms, more than tenant {tenant}'s max_query_length of {limit_ms} ms: \
         narrow the time range"
    )]
    TooLong {
        tenant: String,
        length_ms: i64,
        limit_ms: i64,
    },
    #[error("the query ran longer than api.query_timeout ({timeout:?})")]
    DeadlineExceeded { timeout: std::time::Duration },
    /// The query's memory budget: its merged tree grew past `api.max_query_tree_nodes`.
    #[error(
        "the query's flame graph has more than {limit} distinct nodes (api.max_query_tree_nodes): \
         narrow the selector or the time range"
    )]
    TooManyNodes { limit: usize },
    /// The same budget for a heatmap: more points (profiles or spans) than it allows.
    #[error(
        "the heatmap has more than {limit} profiles or spans (api.max_query_tree_nodes): \
         narrow the selector or the time range"
    )]
    TooManyPoints { limit: usize },
}

impl From<crate::model::DeadlinePassed> for QueryError {
    fn from(passed: crate::model::DeadlinePassed) -> Self {
        Self::DeadlineExceeded {
            timeout: passed.timeout,
        }
    }
}

impl crate::error::Classify for QueryError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            // Not retryable as is: the query must be narrowed.
            Self::EmptyWindow { .. }
            | Self::Step
            | Self::TooLong { .. }
            | Self::TooManyNodes { .. }
            | Self::TooManyPoints { .. } => ErrorClass::Client,
            Self::Block(err) => crate::error::Classify::class(err),
            Self::DeadlineExceeded { .. } => ErrorClass::Deadline,
        }
    }
}

/// Which series and rows a query reads.
#[derive(Debug, Clone)]
pub struct SelectParams {
    pub tenant: Tenant,
    pub profile_type: ProfileType,
    pub selector: Selector,
    pub from_ms: i64,
    pub until_ms: i64,
}

impl SelectParams {
    fn wants_series(&self, series: &Series) -> bool {
        self.wants(
            &series.labels,
            &series.profile_type,
            series.min_time_ms,
            series.max_time_ms,
        )
    }

    fn wants(&self, labels: &Labels, profile_type: &ProfileType, min_time: i64, max_time: i64) -> bool {
        profile_type == &self.profile_type
            && self.window().overlaps(min_time, max_time)
            && self.selector.matches(labels)
    }

    /// The window of rows this reads.
    pub fn window(&self) -> TimeWindow {
        TimeWindow::new(self.from_ms, self.until_ms)
    }
}

/// Rows a merge keeps beyond its window and selector: those of some spans, or of some profiles.
#[derive(Debug, Clone)]
pub enum RowFilter {
    /// Rows whose span id is one of these (0, "no span", is never one).
    Spans(HashSet<u64>),
    /// Rows of these profiles ([`ProfileId`]): per series fingerprint, the profile times.
    Profiles(HashMap<u64, HashSet<i64>>),
}

/// What a [`RowFilter`] keeps of one series.
pub(crate) enum KeptRows<'a> {
    All,
    Spans(&'a HashSet<u64>),
    Times(&'a HashSet<i64>),
}

impl KeptRows<'_> {
    /// Whether row `row` (at `time`) of `series` is kept.
    pub(crate) fn keeps(&self, series: &Series, row: usize, time: i64) -> bool {
        match self {
            KeptRows::All => true,
            KeptRows::Spans(ids) => ids.contains(&series.span_id(row)),
            KeptRows::Times(times) => times.contains(&time),
        }
    }
}

impl RowFilter {
    /// The rows of these profiles.
    pub fn profiles(ids: &[ProfileId]) -> Self {
        let mut profiles: HashMap<u64, HashSet<i64>> = HashMap::new();
        for id in ids {
            profiles.entry(id.series).or_default().insert(id.time_ms);
        }
        RowFilter::Profiles(profiles)
    }

    /// Whether the filter keeps nothing at all (then a merge reads nothing).
    pub fn is_empty(&self) -> bool {
        match self {
            RowFilter::Spans(ids) => ids.is_empty(),
            RowFilter::Profiles(profiles) => profiles.is_empty(),
        }
    }

    /// Whether a series with these labels may have kept rows (decided before loading it).
    fn may_keep(&self, labels: &Labels) -> bool {
        match self {
            RowFilter::Spans(_) => true,
            RowFilter::Profiles(profiles) => profiles.contains_key(&series_fingerprint(labels)),
        }
    }

    /// What `filter` keeps of `series`; `None` when nothing.
    pub(crate) fn rows_of<'a>(filter: Option<&'a RowFilter>, series: &Series) -> Option<KeptRows<'a>> {
        match filter {
            None => Some(KeptRows::All),
            Some(RowFilter::Spans(_)) if series.span_ids.is_empty() => None,
            Some(RowFilter::Spans(ids)) => Some(KeptRows::Spans(ids)),
            Some(RowFilter::Profiles(profiles)) => {
                profiles.get(&series_fingerprint(&series.labels)).map(KeptRows::Times)
            }
        }
    }
}

/// How time series points are combined inside a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    #[default]
    Sum,
    Average,
}

/// One time series: labels and `(timestamp_ms, value)` points, sparse, with the heaviest
/// profile of each point (`exemplars[i]` is point `i`'s; Pyroscope's `SelectSeries` exemplar,
/// one per point).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
    pub exemplars: Vec<HeatmapPoint>,
}

/// What a reader of blocks needs of each series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolution {
    /// Every row, with its time and span id.
    Rows,
    /// Only the window's sum per stack: a block series wholly inside the window may be read as
    /// its per-stack totals (one row per stack, at the series' first time).
    SumPerStack,
    /// Only the sum per profile ([`Series::profiles`]): a block series may be read as its
    /// per-profile totals alone, without rows or the block's symbols.
    SumPerProfile,
}

/// Reads head and blocks of one store.
pub struct Querier {
    head: Arc<Head>,
    catalog: block::Catalog,
    tenant_limits: Arc<Limits>,
    /// The other replicas, whose heads every read also covers.
    peers: Option<Arc<Peers>>,
    indexes: cache::BlockCache<Vec<SeriesHeader>>,
    /// Decoded symbol tables with their stack trees' shapes (what a merge sums over).
    symbols: cache::BlockCache<forest::BlockSymbols>,
    /// Most nodes a merged flame tree may grow to ([`QueryError::TooManyNodes`] past it).
    max_tree_nodes: usize,
}

/// Default of `api.max_query_tree_nodes`: 16 M nodes, about 1 GiB of tree, above the 3 M-stack
/// profiles (~9 M nodes) Pyroscope's users merge.
pub const DEFAULT_MAX_TREE_NODES: usize = 16 << 20;

/// Blocks a query fetches at once: a cold query over S3 waits for several blocks' round trips
/// together instead of one after another.
const CONCURRENT_BLOCK_READS: usize = 8;

/// Default of `api.index_cache_bytes`: decoded block indexes kept in memory (a week of hourly
/// blocks of thousands of series each fits many times over).
pub const DEFAULT_INDEX_CACHE_BYTES: u64 = 256 << 20;
/// Default of `api.symbol_cache_bytes`: decoded block symbol tables, the part of a block every
/// merge needs; a week of hourly blocks of ordinary services fits.
pub const DEFAULT_SYMBOL_CACHE_BYTES: u64 = 1 << 30;

impl Querier {
    pub fn new(head: Arc<Head>, storage: Storage) -> Self {
        let catalog = block::Catalog::new(storage, duration_ms(head.config().bucket_duration));
        Self::with_catalog(head, catalog)
    }

    /// A querier sharing what `catalog` learned of the store with its other users.
    pub fn with_catalog(head: Arc<Head>, catalog: block::Catalog) -> Self {
        Self {
            head,
            catalog,
            tenant_limits: Arc::new(Limits::unlimited()),
            peers: None,
            indexes: cache::BlockCache::new("index", DEFAULT_INDEX_CACHE_BYTES, 64 << 10),
            symbols: cache::BlockCache::new("symbols", DEFAULT_SYMBOL_CACHE_BYTES, 1 << 20),
            max_tree_nodes: DEFAULT_MAX_TREE_NODES,
        }
    }

    /// The memory budget of one merge, in flame tree nodes (`api.max_query_tree_nodes`).
    pub fn with_max_tree_nodes(mut self, max_tree_nodes: usize) -> Self {
        self.max_tree_nodes = max_tree_nodes.max(1);
        self
    }

    /// Bounds the caches of decoded block indexes and symbol tables (`api.index_cache_bytes`,
    /// `api.symbol_cache_bytes`); what is used least goes first.
    pub fn with_cache_bytes(mut self, index_bytes: u64, symbol_bytes: u64) -> Self {
        self.indexes = cache::BlockCache::new("index", index_bytes, 64 << 10);
        self.symbols = cache::BlockCache::new("symbols", symbol_bytes, 1 << 20);
        self
    }

    /// Enforces per-tenant `max_query_length` and `max_query_lookback` (none by default).
    pub fn with_tenant_limits(mut self, tenant_limits: Arc<Limits>) -> Self {
        self.tenant_limits = tenant_limits;
        self
    }

    /// Reads the other replicas' heads too.
    pub fn with_peers(mut self, peers: Arc<Peers>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// The other replicas' head data of a read, after this replica listed `listed` (blocks
    /// and the ones they replace), so each row comes from exactly one place.
    async fn peer_partitions(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
        selectors: &[Selector],
        profile_type: Option<&ProfileType>,
        listed: &[&BlockMeta],
    ) -> Vec<block::Partition> {
        let Some(peers) = &self.peers else {
            return Vec::new();
        };
        let request = HeadRequest {
            tenant: tenant.to_string(),
            from_ms,
            until_ms,
            selectors: selectors.iter().map(ToString::to_string).collect(),
            profile_type: profile_type.map(ProfileType::id),
            listed_blocks: listed.iter().map(|meta| meta.id.clone()).collect(),
        };
        peers.heads(&request).await
    }

    /// `params` with its window cut to what the tenant may read ([`Querier::allowed_window`]),
    /// so rows are filtered by that window too, not only the blocks listed; `None` when
    /// nothing is left.
    fn within_limits(&self, params: &SelectParams) -> Result<Option<SelectParams>, QueryError> {
        if params.from_ms >= params.until_ms {
            return Err(QueryError::EmptyWindow {
                from_ms: params.from_ms,
                until_ms: params.until_ms,
            });
        }
        Ok(self
            .allowed_window(&params.tenant, params.from_ms, params.until_ms)?
            .map(|(from_ms, until_ms)| SelectParams {
                from_ms,
                until_ms,
                ..params.clone()
            }))
    }

    /// The part of `[from, until)` the tenant may read: refused past `max_query_length`, its
    /// start moved up to `max_query_lookback` before now; `None` when nothing is left.
    fn allowed_window(&self, tenant: &Tenant, from_ms: i64, until_ms: i64) -> Result<Option<(i64, i64)>, QueryError> {
        let limits = self.tenant_limits.for_tenant(tenant);
        let from_ms = if limits.max_query_lookback.is_zero() {
            from_ms
        } else {
            from_ms.max(crate::now_ms().saturating_sub(duration_ms(limits.max_query_lookback)))
        };
        if from_ms >= until_ms {
            return Ok(None);
        }
        // From the first to the last readable millisecond: `[start, end]` of a querier.v1 request
        // reads `[start, end + 1)`, and an hour from `start` to `end` is an hour.
        let length_ms = until_ms.saturating_sub(from_ms).saturating_sub(1);
        if !limits.max_query_length.is_zero() && length_ms > duration_ms(limits.max_query_length) {
            return Err(QueryError::TooLong {
                tenant: tenant.to_string(),
                length_ms,
                limit_ms: duration_ms(limits.max_query_length),
            });
        }
        Ok(Some((from_ms, until_ms)))
    }

    /// A block's index; an empty one for a block whose index or symbols cannot be read (counted
    /// and logged once, then remembered), so one damaged block never fails a tenant's reads.
    async fn index(&self, meta: &BlockMeta) -> Result<Arc<Vec<SeriesHeader>>, QueryError> {
        if let Some(index) = self.indexes.get(&meta.id) {
            return Ok(index);
        }
        let index = match block::read_index(self.catalog.storage(), meta).await {
            Ok(index) => Arc::new(index),
            Err(err) if err.is_corrupt() => self.skip_corrupt(meta, "index", &err),
            Err(err) => return Err(err.into()),
        };
        self.indexes.insert(&meta.id, index.clone());
        Ok(index)
    }

    /// A block's symbols, or `None` when they cannot be read (the block is then skipped).
    async fn symbols(&self, meta: &BlockMeta) -> Result<Option<Arc<forest::BlockSymbols>>, QueryError> {
        if let Some(symbols) = self.symbols.get(&meta.id) {
            return Ok(Some(symbols));
        }
        match block::load_symbols(self.catalog.storage(), meta).await {
            Ok(symbols) => {
                let symbols = Arc::new(forest::BlockSymbols::new(symbols));
                self.symbols.insert(&meta.id, symbols.clone());
                Ok(Some(symbols))
            }
            Err(err) if err.is_corrupt() => {
                let empty = self.skip_corrupt(meta, "symbols", &err);
                self.indexes.insert(&meta.id, empty);
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Counts and logs a damaged block part; the empty index that stands in for the block.
    fn skip_corrupt(&self, meta: &BlockMeta, part: &str, err: &BlockError) -> Arc<Vec<SeriesHeader>> {
        crate::integrity::block_corrupt(part);
        tracing::error!(
            tenant = %meta.tenant,
            key = %meta.data_key(),
            part,
            error = %err,
            "block cannot be read; skipped by queries"
        );
        Arc::new(Vec::new())
    }

    /// [`Querier::visit_sources`] for callers that only read each partition in turn.
    #[allow(clippy::too_many_arguments)]
    async fn visit_partitions(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
        selector: &Selector,
        profile_type: &ProfileType,
        resolution: Resolution,
        wants: impl Fn(&Labels, &ProfileType, i64, i64) -> bool,
        mut visit: impl FnMut(&SymbolTable, &[Series]),
    ) -> Result<(), QueryError> {
        self.visit_sources(
            tenant,
            from_ms,
            until_ms,
            selector,
            profile_type,
            resolution,
            wants,
            |source| visit(source.symbols(), source.series()),
        )
        .await
    }

    /// Visits every partition (head and blocks) with series wanted by `wants`, loading from
    /// blocks only the wanted series. The window is the caller's, already within the tenant's
    /// limits ([`Querier::within_limits`]).
    #[allow(clippy::too_many_arguments)]
    async fn visit_sources(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
        selector: &Selector,
        profile_type: &ProfileType,
        resolution: Resolution,
        wants: impl Fn(&Labels, &ProfileType, i64, i64) -> bool,
        mut visit: impl FnMut(Source<'_>),
    ) -> Result<(), QueryError> {
        let snapshot = self
            .snapshot(tenant, from_ms, until_ms, |partition| {
                visit(Source::Head(&partition.symbols, &partition.series))
            })
            .await?;
        let listed = snapshot.listed();
        let peer_heads = self
            .peer_partitions(
                tenant,
                from_ms,
                until_ms,
                std::slice::from_ref(selector),
                Some(profile_type),
                &listed,
            )
            .await;
        // About the work of matching one series.
        let match_cost = 1 + selector.matchers.len();
        let mut ticker = Ticker::new();
        for partition in peer_heads {
            let wanted: Vec<Series> = partition
                .series
                .into_iter()
                .take_while(|_| !ticker.expired(match_cost))
                .filter(|s| wants(&s.labels, &s.profile_type, s.min_time_ms, s.max_time_ms))
                .collect();
            visit(Source::Loaded(Arc::new(partition.symbols), wanted));
        }
        let wants = &wants;
        let metas = snapshot.blocks;
        let no_symbols = &Arc::new(forest::BlockSymbols::new(SymbolTable::default()));
        let loads = futures::stream::iter(metas)
            .map(|meta| async move {
                let index = self.index(&meta).await?;
                let mut ticker = Ticker::new();
                let wanted: Vec<SeriesHeader> = index
                    .iter()
                    .take_while(|_| !ticker.expired(match_cost))
                    .filter(|h| wants(&h.labels, &h.profile_type, h.min_time_ms, h.max_time_ms))
                    .cloned()
                    .collect();
                Deadline::check()?;
                if wanted.is_empty() {
                    return Ok(None);
                }
                let (whole, partial): (Vec<SeriesHeader>, Vec<SeriesHeader>) =
                    wanted.into_iter().partition(|header| match resolution {
                        Resolution::Rows => false,
                        Resolution::SumPerStack => header.totals_cover(from_ms, until_ms),
                        Resolution::SumPerProfile => header.has_profile_totals(),
                    });
                // Per-profile totals name no stacks: a block holding them for every wanted
                // series is read without its symbols.
                let symbols = if partial.is_empty() && resolution == Resolution::SumPerProfile {
                    no_symbols.clone()
                } else {
                    match self.symbols(&meta).await? {
                        Some(symbols) => symbols,
                        None => return Ok(None),
                    }
                };
                let storage = self.catalog.storage();
                let mut series = Vec::with_capacity(partial.len() + whole.len());
                let loaded = async {
                    if !partial.is_empty() {
                        series.extend(block::load_series(storage, &meta, &symbols.table, &partial).await?);
                    }
                    if !whole.is_empty() {
                        series.extend(match resolution {
                            Resolution::SumPerProfile => block::load_series_profiles(storage, &meta, &whole).await?,
                            _ => block::load_series_totals(storage, &meta, &symbols.table, &whole).await?,
                        });
                    }
                    Ok::<_, BlockError>(())
                };
                match loaded.await {
                    Ok(()) => Ok::<_, QueryError>(Some((symbols, series))),
                    Err(err) if err.is_corrupt() => {
                        let empty = self.skip_corrupt(&meta, "rows", &err);
                        self.indexes.insert(&meta.id, empty);
                        Ok(None)
                    }
                    Err(err) => Err(err.into()),
                }
            })
            .buffered(CONCURRENT_BLOCK_READS);
        let mut loads = std::pin::pin!(loads);
        while let Some(loaded) = loads.next().await {
            if let Some((symbols, series)) = loaded? {
                visit(Source::Block(symbols, series));
            }
            Deadline::check()?;
        }
        Ok(Deadline::check()?)
    }
}

/// Frames of one stack a merge keeps (root first; the value goes to the deepest kept frame):
/// ingest's default `max_stack_depth`, so a stack stored deeper (by a version that did not
/// bound folded input) costs a query O(this) memory, not its millions of frames.
pub const MAX_STACK_DEPTH: usize = 4096;

/// One partition a query reads: borrowed from the head (under its locks, for the length of
/// the visit), loaded from a peer, or loaded from a block (with its cached stack tree shape);
/// a merge may hand a loaded one to another thread.
enum Source<'a> {
    Head(&'a SymbolTable, &'a [Series]),
    Loaded(Arc<SymbolTable>, Vec<Series>),
    Block(Arc<forest::BlockSymbols>, Vec<Series>),
}

impl Source<'_> {
    fn symbols(&self) -> &SymbolTable {
        match self {
            Source::Head(symbols, _) => symbols,
            Source::Loaded(symbols, _) => symbols,
            Source::Block(block, _) => &block.table,
        }
    }

    fn series(&self) -> &[Series] {
        match self {
            Source::Head(_, series) => series,
            Source::Loaded(_, series) | Source::Block(_, series) => series,
        }
    }
}

#[cfg(test)]
mod totals_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::head::HeadConfig;
    use crate::head::testing::{TempStore, corpus_file};
    use crate::ingest::Ingester;
    use crate::pprof::DecodeLimits;

    /// Folded stacks as stack → value.
    fn folded(tree: &FlameTree) -> BTreeMap<String, i64> {
        crate::render::folded(tree)
            .lines()
            .map(|line| {
                let (stack, value) = line.rsplit_once(' ').unwrap();
                (stack.to_string(), value.parse().unwrap())
            })
            .collect()
    }

    /// `max_query_lookback` cuts rows inside a block, not only whole blocks: of two profiles
    /// in one block, only the one within the lookback counts.
    #[tokio::test]
    async fn the_lookback_cuts_rows_inside_a_block() {
        let store = TempStore::new();
        let day = HeadConfig {
            bucket_duration: std::time::Duration::from_secs(86_400),
            ..HeadConfig::default()
        };
        let head = store.open_with(day).await;
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        let tenant = Tenant::parse("lookback").unwrap();
        let now = crate::now_ms();
        let day_start = now - now.rem_euclid(86_400_000);
        // Both in today's bucket: one at its start, one now.
        let (old, recent) = (day_start, now);
        for at in [old, recent] {
            let labels = Labels::new([("service_name".to_string(), "whole".to_string())]).unwrap();
            ingester
                .push_pprof(&tenant, labels, corpus_file("gotarget__cpu_5s.pb.gz"), Some(at))
                .await
                .unwrap();
        }
        head.flush().await.unwrap();
        assert_eq!(
            block::list(&store.storage, &tenant, 0, i64::MAX).await.unwrap().len(),
            1
        );
        let lookback_ms = (recent - old) / 2 + 1;
        let limits = crate::limits::Limits::load(
            crate::limits::TenantLimits {
                max_query_lookback: std::time::Duration::from_millis(lookback_ms as u64),
                ..crate::limits::TenantLimits::default()
            },
            crate::limits::RuntimeConfig::default(),
        )
        .unwrap();
        let querier = Querier::new(head.clone(), store.storage.clone()).with_tenant_limits(Arc::new(limits));
        let params = SelectParams {
            tenant: tenant.clone(),
            profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            selector: Selector::parse(r#"{service_name="whole"}"#).unwrap(),
            from_ms: 0,
            until_ms: now + 1,
        };
        let total = querier.select_merge(&params).await.unwrap().total();
        if recent - old > 2 {
            assert_eq!(total, 3_900_000_000, "only the profile within the lookback");
        } else {
            // The test ran in the first milliseconds of a UTC day: both are within it.
            assert_eq!(total, 2 * 3_900_000_000);
        }
        let points: f64 = querier
            .select_series(&params, 60_000, &[], Aggregation::Sum)
            .await
            .unwrap()
            .iter()
            .flat_map(|series| series.points.iter().map(|(_, value)| value))
            .sum();
        assert_eq!(points, total as f64, "time series keep to the same window");
    }

    /// The memory budget of a merge: a tree that would grow past `max_tree_nodes` stops
    /// growing and the query is refused (a 400 at the API), while a budget it fits answers.
    #[tokio::test]
    async fn a_merge_past_its_node_budget_is_refused() {
        const AT_MS: i64 = 1_700_000_000_000;
        let store = TempStore::new();
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        let tenant = Tenant::parse("budget").unwrap();
        let labels = Labels::new([("service_name".to_string(), "b".to_string())]).unwrap();
        ingester
            .push_pprof(&tenant, labels, corpus_file("gotarget__cpu_5s.pb.gz"), Some(AT_MS))
            .await
            .unwrap();
        let params = SelectParams {
            tenant: tenant.clone(),
            profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            selector: Selector::parse("{}").unwrap(),
            from_ms: AT_MS,
            until_ms: AT_MS + 1,
        };
        let nodes = Querier::new(head.clone(), store.storage.clone())
            .select_merge(&params)
            .await
            .unwrap()
            .nodes()
            .len();
        assert!(nodes > 20, "{nodes} nodes");
        let fits = Querier::new(head.clone(), store.storage.clone()).with_max_tree_nodes(nodes);
        assert_eq!(fits.select_merge(&params).await.unwrap().nodes().len(), nodes);
        let tight = Querier::new(head.clone(), store.storage.clone()).with_max_tree_nodes(nodes / 2);
        assert!(matches!(
            tight.select_merge(&params).await,
            Err(QueryError::TooManyNodes { limit }) if limit == nodes / 2
        ));
    }

    #[tokio::test]
    async fn a_window_covering_whole_series_reads_their_totals_and_merges_the_same() {
        const AT_MS: i64 = 1_700_000_000_000;
        let store = TempStore::new();
        let (head, storage) = (store.open().await, store.storage.clone());
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        let raw = corpus_file("gotarget__cpu_5s.pb.gz");
        let tenant = Tenant::parse("totals").unwrap();
        for offset in 0..20 {
            let labels = Labels::new([("service_name".to_string(), "whole".to_string())]).unwrap();
            ingester
                .push_pprof(&tenant, labels, raw.clone(), Some(AT_MS + offset * 1000))
                .await
                .unwrap();
        }
        head.flush().await.unwrap();
        let querier = Querier::new(head.clone(), storage.clone());
        let params = |from_ms: i64, until_ms: i64| SelectParams {
            tenant: tenant.clone(),
            profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            selector: Selector::parse(r#"{service_name="whole"}"#).unwrap(),
            from_ms,
            until_ms,
        };
        let (from_ms, until_ms) = (AT_MS, AT_MS + 20_000);
        let metas = block::list(&storage, &tenant, from_ms, until_ms).await.unwrap();
        let headers = block::read_index(&storage, &metas[0]).await.unwrap();
        assert!(
            headers.iter().all(|header| header.totals_cover(from_ms, until_ms)),
            "20 profiles of the same stacks keep per-stack totals"
        );
        assert!(!headers.iter().any(|header| header.totals_cover(from_ms + 1, until_ms)));

        // The cost preview counts the block's matching series and their rows: 20 profiles of
        // one row per sample with CPU time.
        let profile = crate::pprof::decode(&raw, &DecodeLimits::default()).unwrap();
        let cpu_column = profile
            .sample_type
            .iter()
            .position(|t| profile.string_table[t.r#type as usize] == "cpu")
            .unwrap();
        let rows_per_profile = profile.sample.iter().filter(|s| s.value[cpu_column] != 0).count() as u64;
        let cpu = params(from_ms, until_ms).profile_type;
        let analysis = querier
            .analyze(
                &tenant,
                Some(&cpu),
                &params(from_ms, until_ms).selector,
                from_ms,
                until_ms,
            )
            .await
            .unwrap();
        assert_eq!(
            (analysis.head.series, analysis.blocks.blocks, analysis.blocks.series),
            (0, 1, 1)
        );
        assert_eq!(analysis.blocks.rows, 20 * rows_per_profile);
        assert!(analysis.blocks.row_bytes > 0 && analysis.blocks.symbol_bytes > 0 && analysis.blocks.index_bytes > 0);

        let whole = folded(&querier.select_merge(&params(from_ms, until_ms)).await.unwrap());
        let middle = AT_MS + 10_000;
        let mut halves = folded(&querier.select_merge(&params(from_ms, middle)).await.unwrap());
        for (stack, value) in folded(&querier.select_merge(&params(middle, until_ms)).await.unwrap()) {
            let sum = halves.entry(stack).or_default();
            *sum = sum.saturating_add(value);
        }
        assert!(whole.len() > 10, "{whole:?}");
        assert_eq!(whole, halves);
    }
}

#[cfg(test)]
mod profile_totals_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::head::testing::{TempStore, corpus_file};
    use crate::ingest::Ingester;
    use crate::pprof::DecodeLimits;

    const HOUR_MS: i64 = 3_600_000;
    const T: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;
    const CPU_TOTAL: i64 = 3_900_000_000;

    /// A time series is read from per-profile totals, in the head and in blocks (without their
    /// rows), and answers what the rows say: profiles at one millisecond are one profile, a
    /// window cuts between profiles of one block, and head and blocks add up.
    #[tokio::test]
    async fn series_from_profile_totals_match_the_pushed_profiles() {
        let store = TempStore::new();
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        let tenant = Tenant::parse("profiles").unwrap();
        let push = |at: i64| {
            let labels = Labels::new([("service_name".to_string(), "a".to_string())]).unwrap();
            ingester.push_pprof(&tenant, labels, corpus_file("gotarget__cpu_5s.pb.gz"), Some(at))
        };
        // Two at the same millisecond, one a step later, one in the next hour's bucket.
        let flushed = [T, T + 10_000, T + 10_000, T + 90_000, T + HOUR_MS + 5_000];
        for at in flushed {
            push(at).await.unwrap();
        }
        let querier = Querier::new(head.clone(), store.storage.clone());
        let params = SelectParams {
            tenant: tenant.clone(),
            profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            selector: Selector::parse(r#"{service_name="a"}"#).unwrap(),
            from_ms: 0,
            until_ms: i64::MAX,
        };
        let (start, end, step) = (T + 60_000, T + HOUR_MS + 60_000, 60_000);
        let series = |aggregation| {
            let querier = &querier;
            let params = &params;
            async move {
                let answer = querier
                    .select_series_range(params, start, end, step, &[], aggregation, &[])
                    .await
                    .unwrap();
                assert!(answer.len() <= 1);
                answer
                    .into_iter()
                    .next()
                    .map(|series| series.points)
                    .unwrap_or_default()
            }
        };
        // What the pushes say, by Pyroscope's step rule.
        let expected = |times: &[i64], aggregation| {
            let mut per_time: BTreeMap<i64, i64> = BTreeMap::new();
            for &at in times {
                *per_time.entry(at).or_default() += CPU_TOTAL;
            }
            let mut points: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for (at, total) in per_time {
                if let Some(point) = step_point(start, end, step, at) {
                    points.entry(point).or_default().push(total);
                }
            }
            points
                .into_iter()
                .map(|(point, totals)| {
                    let sum = totals.iter().sum::<i64>() as f64;
                    let value = match aggregation {
                        Aggregation::Sum => sum,
                        Aggregation::Average => sum / totals.len() as f64,
                    };
                    (point, value)
                })
                .collect::<Vec<_>>()
        };
        let in_head = (series(Aggregation::Sum).await, series(Aggregation::Average).await);
        assert_eq!(in_head.0, expected(&flushed, Aggregation::Sum));
        assert_eq!(in_head.1, expected(&flushed, Aggregation::Average));
        // The first point takes `start - step` itself, the rows before it are left out.
        assert_eq!(in_head.0[0], (T + 60_000, (3 * CPU_TOTAL) as f64));

        head.flush().await.unwrap();
        let metas = block::list(&store.storage, &tenant, 0, i64::MAX).await.unwrap();
        assert_eq!(metas.len(), 2);
        for meta in &metas {
            let index = block::read_index(&store.storage, meta).await.unwrap();
            assert!(index.iter().all(SeriesHeader::has_profile_totals));
            let profiles = block::load_series_profiles(&store.storage, meta, &index).await.unwrap();
            assert!(profiles.iter().all(|series| series.times.is_empty()));
        }
        assert_eq!(
            (series(Aggregation::Sum).await, series(Aggregation::Average).await),
            in_head
        );

        // Blocks and head together.
        push(T + HOUR_MS + 30_000).await.unwrap();
        let mut all = flushed.to_vec();
        all.push(T + HOUR_MS + 30_000);
        assert_eq!(series(Aggregation::Sum).await, expected(&all, Aggregation::Sum));
        assert_eq!(series(Aggregation::Average).await, expected(&all, Aggregation::Average));
    }
}
