//! Queries: pick the blocks and head partitions a window touches, then merge the rows of the
//! matching series by function name into one [`FlameTree`], or sum them into time series.
//!
//! Window rule: a row counts when `from_ms <= time < until_ms` (half-open, in ms since the
//! epoch), in blocks and head alike. A profile's time is its collection time.

pub mod deadline;
mod tree;

pub use deadline::{Deadline, Ticker};
pub use tree::{FlameNode, FlameTree, ROOT_NAME};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::block::{self, BlockError, BlockMeta, Series, SeriesHeader};
use crate::cluster::{HeadRequest, Peers};
use crate::head::Head;
use crate::limits::Limits;
use crate::model::{Labels, ProfileType, Selector, Tenant, duration_ms};
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
            && min_time < self.until_ms
            && max_time >= self.from_ms
            && self.selector.matches(labels)
    }
}

/// How time series points are combined inside a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    #[default]
    Sum,
    Average,
}

/// What one part of the read path holds for a query (see [`Querier::analyze`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeStats {
    pub blocks: u64,
    pub series: u64,
    pub rows: u64,
    pub index_bytes: u64,
    pub row_bytes: u64,
    pub symbol_bytes: u64,
}

/// The cost of a query before running it: this replica's head and the blocks it would read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryAnalysis {
    pub head: ScopeStats,
    pub blocks: ScopeStats,
    /// Other replicas whose heads the query also asks.
    pub peers: usize,
}

/// One time series: labels and `(timestamp_ms, value)` points, sparse.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
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
    indexes: BlockCache<Vec<SeriesHeader>>,
    symbols: BlockCache<SymbolTable>,
    /// Most nodes a merged flame tree may grow to ([`QueryError::TooManyNodes`] past it).
    max_tree_nodes: usize,
}

/// Default of `api.max_query_tree_nodes`: 16 M nodes, about 1 GiB of tree, above the 3 M-stack
/// profiles (~9 M nodes) Pyroscope's users merge.
pub const DEFAULT_MAX_TREE_NODES: usize = 16 << 20;

/// Blocks a query fetches at once: a cold query over S3 waits for several blocks' round trips
/// together instead of one after another.
const CONCURRENT_BLOCK_READS: usize = 8;

/// Block indexes kept in memory; they are small and immutable.
const MAX_CACHED_INDEXES: usize = 4096;
/// Decoded block symbol tables kept in memory: the part of a block every query needs.
const MAX_CACHED_SYMBOLS: usize = 64;

/// Immutable per-block parts, by block id, dropped wholesale when full (blocks never change,
/// so a stale entry is impossible; only memory is at stake).
struct BlockCache<T> {
    capacity: usize,
    entries: parking_lot::Mutex<HashMap<String, Arc<T>>>,
}

impl<T> BlockCache<T> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, id: &str) -> Option<Arc<T>> {
        self.entries.lock().get(id).cloned()
    }

    fn insert(&self, id: &str, value: Arc<T>) {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(id.to_string(), value);
    }
}

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
            indexes: BlockCache::new(MAX_CACHED_INDEXES),
            symbols: BlockCache::new(MAX_CACHED_SYMBOLS),
            max_tree_nodes: DEFAULT_MAX_TREE_NODES,
        }
    }

    /// The memory budget of one merge, in flame tree nodes (`api.max_query_tree_nodes`).
    pub fn with_max_tree_nodes(mut self, max_tree_nodes: usize) -> Self {
        self.max_tree_nodes = max_tree_nodes.max(1);
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
    async fn symbols(&self, meta: &BlockMeta) -> Result<Option<Arc<SymbolTable>>, QueryError> {
        if let Some(symbols) = self.symbols.get(&meta.id) {
            return Ok(Some(symbols));
        }
        match block::load_symbols(self.catalog.storage(), meta).await {
            Ok(symbols) => {
                let symbols = Arc::new(symbols);
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

    /// Visits every partition (head and blocks) with series wanted by `wants`, loading from
    /// blocks only the wanted series. The window is the caller's, already within the tenant's
    /// limits ([`Querier::within_limits`]).
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
        let (metas, replaced) = {
            let _gate = self.head.read_gate().await;
            let listed = self.catalog.list(tenant, from_ms, until_ms).await?;
            self.head.visit(tenant, from_ms, until_ms, |partition| {
                visit(&partition.symbols, &partition.series)
            });
            (listed.visible, listed.replaced)
        };
        let listed: Vec<&BlockMeta> = metas.iter().chain(&replaced).collect();
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
        for partition in &peer_heads {
            let wanted: Vec<Series> = partition
                .series
                .iter()
                .take_while(|_| !ticker.expired(match_cost))
                .filter(|s| wants(&s.labels, &s.profile_type, s.min_time_ms, s.max_time_ms))
                .cloned()
                .collect();
            visit(&partition.symbols, &wanted);
        }
        let wants = &wants;
        let no_symbols = &Arc::new(SymbolTable::default());
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
                        series.extend(block::load_series(storage, &meta, &symbols, &partial).await?);
                    }
                    if !whole.is_empty() {
                        series.extend(match resolution {
                            Resolution::SumPerProfile => block::load_series_profiles(storage, &meta, &whole).await?,
                            _ => block::load_series_totals(storage, &meta, &symbols, &whole).await?,
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
                visit(&symbols, &series);
            }
            Deadline::check()?;
        }
        Deadline::check()
    }

    /// The merged flame tree of the matching series in the window.
    pub async fn select_merge(&self, params: &SelectParams) -> Result<FlameTree, QueryError> {
        self.merge(params, None).await
    }

    /// The merged flame tree of the rows whose span id is one of `span_ids` (see
    /// [`block::Series::span_ids`]); empty when none match.
    pub async fn select_merge_spans(
        &self,
        params: &SelectParams,
        span_ids: &HashSet<u64>,
    ) -> Result<FlameTree, QueryError> {
        if span_ids.is_empty() {
            return Ok(FlameTree::new());
        }
        self.merge(params, Some(span_ids)).await
    }

    async fn merge(&self, params: &SelectParams, span_ids: Option<&HashSet<u64>>) -> Result<FlameTree, QueryError> {
        let mut tree = FlameTree::new();
        let Some(params) = self.within_limits(params)? else {
            return Ok(tree);
        };
        let params = &params;
        let max_nodes = self.max_tree_nodes;
        let mut over_budget = false;
        let wants = |l: &Labels, p: &ProfileType, min: i64, max: i64| params.wants(l, p, min, max);
        self.visit_partitions(
            &params.tenant,
            params.from_ms,
            params.until_ms,
            &params.selector,
            &params.profile_type,
            // Span ids live in the rows only.
            if span_ids.is_some() {
                Resolution::Rows
            } else {
                Resolution::SumPerStack
            },
            wants,
            |symbols, series| {
                if !over_budget {
                    over_budget = !merge_partition(symbols, series, params, span_ids, &mut tree, max_nodes);
                }
            },
        )
        .await?;
        if over_budget {
            return Err(QueryError::TooManyNodes { limit: max_nodes });
        }
        Ok(tree)
    }

    /// Time series of the matching series, summed per `group_by` label set and step.
    /// Point `T` covers rows in `[T, T + step)`, `T` aligned to multiples of the step (the
    /// legacy render timeline's rule).
    pub async fn select_series(
        &self,
        params: &SelectParams,
        step_ms: i64,
        group_by: &[String],
        aggregation: Aggregation,
    ) -> Result<Vec<TimeSeries>, QueryError> {
        if step_ms < 1 {
            return Err(QueryError::Step);
        }
        self.series_points(params, group_by, aggregation, &[], |time| {
            Some(time.div_euclid(step_ms) * step_ms)
        })
        .await
    }

    /// Time series by Pyroscope's `SelectSeries` rule (`pkg/model/timeseries/range.go`):
    /// points at `T = start, start + step, …, ≤ end`; point `T` sums the rows with time in
    /// `(T − step, T]`, and the first point also takes `start − step` itself. Rows after the
    /// last point (in `(T_last, end]`) are dropped, as Pyroscope drops them. `params`' own
    /// window is ignored: this reads `[start − step, end]`.
    ///
    /// A non-empty `call_site` (root first) keeps only the rows whose stack starts with it, as
    /// `SelectSeries`' `stack_trace_selector` does.
    #[allow(clippy::too_many_arguments)]
    pub async fn select_series_range(
        &self,
        params: &SelectParams,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        group_by: &[String],
        aggregation: Aggregation,
        call_site: &[String],
    ) -> Result<Vec<TimeSeries>, QueryError> {
        if step_ms < 1 {
            return Err(QueryError::Step);
        }
        let params = SelectParams {
            from_ms: start_ms.saturating_sub(step_ms),
            until_ms: end_ms.saturating_add(1),
            ..params.clone()
        };
        self.series_points(&params, group_by, aggregation, call_site, |time| {
            step_point(start_ms, end_ms, step_ms, time)
        })
        .await
    }

    /// Rows of the matching series in `params`' window, per `group_by` label set and per the
    /// point `bucket` assigns (None: dropped); `aggregation` combines the profiles of a point.
    async fn series_points(
        &self,
        params: &SelectParams,
        group_by: &[String],
        aggregation: Aggregation,
        call_site: &[String],
        bucket: impl Fn(i64) -> Option<i64>,
    ) -> Result<Vec<TimeSeries>, QueryError> {
        // Per group and point: per profile time, the profile's total (for averages).
        let mut groups: BTreeMap<Labels, BTreeMap<i64, BTreeMap<i64, f64>>> = BTreeMap::new();
        let Some(params) = self.within_limits(params)? else {
            return Ok(Vec::new());
        };
        let params = &params;
        let wants = |l: &Labels, p: &ProfileType, min: i64, max: i64| params.wants(l, p, min, max);
        self.visit_partitions(
            &params.tenant,
            params.from_ms,
            params.until_ms,
            &params.selector,
            &params.profile_type,
            // A stack filter needs the rows' stacks; otherwise a profile's total is enough.
            if call_site.is_empty() {
                Resolution::SumPerProfile
            } else {
                Resolution::Rows
            },
            wants,
            |symbols, all_series| {
                // Per stack of this partition: whether it starts with the call site.
                let mut matches: HashMap<u32, bool> = HashMap::new();
                let mut under_call_site = |stack: u32| {
                    call_site.is_empty()
                        || *matches
                            .entry(stack)
                            .or_insert_with(|| stack_starts_with(symbols, stack, call_site))
                };
                let mut ticker = Ticker::new();
                for series in all_series {
                    if ticker.expired(1 + params.selector.matchers.len()) {
                        return;
                    }
                    if !params.wants_series(series) {
                        continue;
                    }
                    let points = groups.entry(series.labels.project(group_by)).or_default();
                    if call_site.is_empty() {
                        for (&time, &total) in series.profiles.times.iter().zip(&series.profiles.totals) {
                            if ticker.expired(1) {
                                return;
                            }
                            if time >= params.from_ms
                                && time < params.until_ms
                                && let Some(point) = bucket(time)
                            {
                                *points.entry(point).or_default().entry(time).or_default() += total as f64;
                            }
                        }
                        continue;
                    }
                    for ((&time, &value), &stack) in series.times.iter().zip(&series.values).zip(&series.stacks) {
                        if ticker.expired(1) {
                            return;
                        }
                        if time >= params.from_ms
                            && time < params.until_ms
                            && let Some(point) = bucket(time)
                            && under_call_site(stack)
                        {
                            *points.entry(point).or_default().entry(time).or_default() += value as f64;
                        }
                    }
                }
            },
        )
        .await?;
        Ok(groups
            .into_iter()
            .map(|(labels, steps)| TimeSeries {
                labels,
                points: steps
                    .into_iter()
                    .map(|(step, profiles)| {
                        let sum: f64 = profiles.values().sum();
                        let value = match aggregation {
                            Aggregation::Sum => sum,
                            Aggregation::Average => sum / profiles.len() as f64,
                        };
                        (step, value)
                    })
                    .collect(),
            })
            .filter(|series| !series.points.is_empty())
            .collect())
    }

    /// What a query of `selector` (and `profile_type`, if given) over `[from, until)` would
    /// read, from indexes and metas only: matching series and their rows in this replica's head
    /// and in the blocks listed, and the bytes of those blocks it would fetch.
    pub async fn analyze(
        &self,
        tenant: &Tenant,
        profile_type: Option<&ProfileType>,
        selector: &Selector,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<QueryAnalysis, QueryError> {
        let mut analysis = QueryAnalysis {
            peers: self.peers.as_ref().map_or(0, |peers| peers.others()),
            ..QueryAnalysis::default()
        };
        if from_ms >= until_ms {
            return Err(QueryError::EmptyWindow { from_ms, until_ms });
        }
        let Some((from_ms, until_ms)) = self.allowed_window(tenant, from_ms, until_ms)? else {
            return Ok(analysis);
        };
        let wants = |labels: &Labels, series_type: &ProfileType, min: i64, max: i64| {
            min < until_ms
                && max >= from_ms
                && profile_type.is_none_or(|wanted| wanted == series_type)
                && selector.matches(labels)
        };
        let metas = {
            let _gate = self.head.read_gate().await;
            let head = &mut analysis.head;
            self.head.visit(tenant, from_ms, until_ms, |partition| {
                for series in &partition.series {
                    if wants(
                        &series.labels,
                        &series.profile_type,
                        series.min_time_ms,
                        series.max_time_ms,
                    ) {
                        head.series += 1;
                        head.rows += series.times.len() as u64;
                    }
                }
            });
            self.catalog.list(tenant, from_ms, until_ms).await?.visible
        };
        let mut ticker = Ticker::new();
        for meta in &metas {
            let index = self.index(meta).await?;
            let matching: Vec<&SeriesHeader> = index
                .iter()
                .take_while(|_| !ticker.expired(1 + selector.matchers.len()))
                .filter(|h| wants(&h.labels, &h.profile_type, h.min_time_ms, h.max_time_ms))
                .collect();
            Deadline::check()?;
            if matching.is_empty() {
                continue;
            }
            let blocks = &mut analysis.blocks;
            blocks.blocks += 1;
            blocks.series += matching.len() as u64;
            blocks.rows += matching.iter().map(|h| h.rows).sum::<u64>();
            blocks.row_bytes += matching.iter().map(|h| h.row_bytes()).sum::<u64>();
            blocks.index_bytes += meta.index_length;
            blocks.symbol_bytes += meta.symbols_length;
        }
        Ok(analysis)
    }

    /// Label sets of series matching any selector (all if none) in the window.
    pub async fn series_labels(
        &self,
        tenant: &Tenant,
        selectors: &[Selector],
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Labels>, QueryError> {
        let matches = |labels: &Labels| selectors.is_empty() || selectors.iter().any(|s| s.matches(labels));
        let mut found: BTreeSet<Labels> = BTreeSet::new();
        let Some((from_ms, until_ms)) = self.allowed_window(tenant, from_ms, until_ms)? else {
            return Ok(Vec::new());
        };
        let (metas, replaced) = {
            let _gate = self.head.read_gate().await;
            self.head.visit(tenant, from_ms, until_ms, |partition| {
                for series in &partition.series {
                    if series.min_time_ms < until_ms && series.max_time_ms >= from_ms && matches(&series.labels) {
                        found.insert(series.labels.clone());
                    }
                }
            });
            let listed = self.catalog.list(tenant, from_ms, until_ms).await?;
            (listed.visible, listed.replaced)
        };
        let match_cost = 1 + selectors.iter().map(|s| s.matchers.len()).sum::<usize>();
        let mut ticker = Ticker::new();
        for meta in &metas {
            for header in self.index(meta).await?.iter() {
                if ticker.expired(match_cost) {
                    break;
                }
                if header.min_time_ms < until_ms && header.max_time_ms >= from_ms && matches(&header.labels) {
                    found.insert(header.labels.clone());
                }
            }
        }
        let listed: Vec<&BlockMeta> = metas.iter().chain(&replaced).collect();
        for partition in self
            .peer_partitions(tenant, from_ms, until_ms, selectors, None, &listed)
            .await
        {
            for series in &partition.series {
                if series.min_time_ms < until_ms && series.max_time_ms >= from_ms && matches(&series.labels) {
                    found.insert(series.labels.clone());
                }
            }
        }
        Deadline::check()?;
        Ok(found.into_iter().collect())
    }

    /// Distinct profile types in the window, sorted by ID.
    pub async fn profile_types(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<ProfileType>, QueryError> {
        let series = self.series_labels(tenant, &[], from_ms, until_ms).await?;
        let ids: BTreeSet<&str> = series
            .iter()
            .filter_map(|labels| labels.get(crate::model::LABEL_PROFILE_TYPE))
            .collect();
        Ok(ids.into_iter().filter_map(|id| ProfileType::parse(id).ok()).collect())
    }

    /// Distinct label names of matching series, sorted.
    pub async fn label_names(
        &self,
        tenant: &Tenant,
        selectors: &[Selector],
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<String>, QueryError> {
        let series = self.series_labels(tenant, selectors, from_ms, until_ms).await?;
        let names: BTreeSet<&str> = series
            .iter()
            .flat_map(|labels| labels.iter().map(|(name, _)| name))
            .collect();
        Ok(names.into_iter().map(str::to_string).collect())
    }

    /// Distinct values of label `name` among matching series, sorted.
    pub async fn label_values(
        &self,
        tenant: &Tenant,
        name: &str,
        selectors: &[Selector],
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<String>, QueryError> {
        let series = self.series_labels(tenant, selectors, from_ms, until_ms).await?;
        let values: BTreeSet<&str> = series.iter().filter_map(|labels| labels.get(name)).collect();
        Ok(values.into_iter().map(str::to_string).collect())
    }
}

impl Querier {
    /// Oldest and newest profile times of the tenant, if it has any data.
    pub async fn time_range(&self, tenant: &Tenant) -> Result<Option<(i64, i64)>, QueryError> {
        let (from_ms, until_ms) = (i64::MIN / 2, i64::MAX / 2);
        let mut range: Option<(i64, i64)> = None;
        let mut widen = |min: i64, max: i64| {
            range = Some(range.map_or((min, max), |(lo, hi)| (lo.min(min), hi.max(max))));
        };
        let (metas, replaced) = {
            let _gate = self.head.read_gate().await;
            self.head.visit(tenant, from_ms, until_ms, |partition| {
                for series in &partition.series {
                    widen(series.min_time_ms, series.max_time_ms);
                }
            });
            let listed = self.catalog.list(tenant, from_ms, until_ms).await?;
            (listed.visible, listed.replaced)
        };
        for meta in &metas {
            widen(meta.min_time_ms, meta.max_time_ms);
        }
        let listed: Vec<&BlockMeta> = metas.iter().chain(&replaced).collect();
        for partition in self
            .peer_partitions(tenant, from_ms, until_ms, &[], None, &listed)
            .await
        {
            for series in &partition.series {
                widen(series.min_time_ms, series.max_time_ms);
            }
        }
        Ok(range)
    }
}

/// Whether the frames of `stack` (root first) start with `call_site`.
fn stack_starts_with(symbols: &SymbolTable, stack: u32, call_site: &[String]) -> bool {
    let mut depth = 0;
    let mut matching = true;
    symbols.visit_stack_frames(stack, |name| {
        if matching && depth < call_site.len() {
            matching = call_site[depth] == name;
            depth += 1;
        }
    });
    matching && depth == call_site.len()
}

/// The `SelectSeries` point a row at `time` belongs to (see [`Querier::select_series_range`]).
pub fn step_point(start_ms: i64, end_ms: i64, step_ms: i64, time: i64) -> Option<i64> {
    if time < start_ms.saturating_sub(step_ms) || time > end_ms {
        return None;
    }
    let after_start = (time - start_ms).max(0);
    let steps = after_start / step_ms + i64::from(after_start % step_ms != 0);
    let point = start_ms + steps * step_ms;
    (point <= end_ms).then_some(point)
}

/// Frames of one stack a merge keeps (root first; the value goes to the deepest kept frame):
/// ingest's default `max_stack_depth`, so a stack stored deeper (by a version that did not
/// bound folded input) costs a query O(this) memory, not its millions of frames.
pub const MAX_STACK_DEPTH: usize = 4096;

/// Adds the in-window rows of the wanted series of one partition to `tree`. Rows are first
/// summed per stack, so each distinct stack is walked once however many samples it has.
/// With `span_ids`, only rows carrying one of those span ids count.
/// Adds one partition's matching rows to `tree`; false once the tree holds more than
/// `max_nodes` nodes (the query's memory budget: it stops there, before growing further).
fn merge_partition(
    symbols: &SymbolTable,
    all_series: &[Series],
    params: &SelectParams,
    span_ids: Option<&HashSet<u64>>,
    tree: &mut FlameTree,
    max_nodes: usize,
) -> bool {
    let mut per_stack: HashMap<u32, i64> = HashMap::new();
    let mut ticker = Ticker::new();
    for series in all_series {
        if ticker.expired(1 + params.selector.matchers.len()) {
            return true;
        }
        if !params.wants_series(series) {
            continue;
        }
        if span_ids.is_some() && series.span_ids.is_empty() {
            continue;
        }
        for (row, ((&time, &stack), &value)) in series.times.iter().zip(&series.stacks).zip(&series.values).enumerate()
        {
            if ticker.expired(1) {
                return true;
            }
            if time >= params.from_ms
                && time < params.until_ms
                && span_ids.is_none_or(|ids| ids.contains(&series.span_id(row)))
            {
                let sum = per_stack.entry(stack).or_default();
                *sum = sum.saturating_add(value);
            }
        }
    }
    let mut names = Vec::new();
    for (stack, value) in per_stack {
        if ticker.expired(1) {
            return true;
        }
        if value == 0 {
            continue;
        }
        names.clear();
        symbols.visit_stack_frames_within(stack, MAX_STACK_DEPTH, |name| names.push(tree.intern(name)));
        tree.insert(&names, value);
        if tree.nodes().len() > max_nodes {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod step_tests {
    use super::step_point;

    #[test]
    fn pyroscope_select_series_points() {
        // start 1000, end 1250, step 100: points 1000, 1100, 1200.
        let point = |t| step_point(1000, 1250, 100, t);
        assert_eq!(point(899), None);
        assert_eq!(point(900), Some(1000)); // start − step belongs to the first point
        assert_eq!(point(1000), Some(1000));
        assert_eq!(point(1001), Some(1100));
        assert_eq!(point(1100), Some(1100)); // (T − step, T]
        assert_eq!(point(1101), Some(1200));
        assert_eq!(point(1200), Some(1200));
        assert_eq!(point(1201), None); // after the last point ≤ end: dropped, as Pyroscope does
        assert_eq!(point(1250), None);
        assert_eq!(point(1251), None);
        // end on a point: it is included.
        assert_eq!(step_point(1000, 1200, 100, 1200), Some(1200));
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
