//! Flame-graph queries: the matching rows of the window merged by function name into one
//! [`FlameTree`], whole or cut to `max_nodes` while it is built (the algorithm is
//! [`super::forest`]'s). Block partitions are turned into forests on the rayon pool while
//! later blocks load; head partitions where the head lends them.

use std::sync::Arc;

use super::forest::{self, BlockSymbols, StackForest};
use super::{Deadline, FlameTree, Querier, QueryError, Resolution, RowFilter, SelectParams, Source};
use crate::block::Series;
use crate::model::{Labels, ProfileType};
use crate::symbols::SymbolTable;

impl Querier {
    /// The merged flame tree of the matching series in the window.
    pub async fn select_merge(&self, params: &SelectParams) -> Result<FlameTree, QueryError> {
        self.merge(params, None).await
    }

    /// [`Querier::select_merge`] cut to its `max_nodes` heaviest nodes (and those as heavy as
    /// the last of them), the rest under one `other` child per parent
    /// ([`crate::model::FlameNode::other`]); every kept node's total and self value are those of
    /// the whole tree, and the cut costs about the nodes kept rather than the whole tree.
    /// Renderers asked for the same (or a smaller) `max_nodes` draw the same graph from it as
    /// from the whole tree.
    pub async fn select_merge_truncated(
        &self,
        params: &SelectParams,
        max_nodes: usize,
    ) -> Result<FlameTree, QueryError> {
        self.merge_cut(params, None, Some(max_nodes.max(1))).await
    }

    /// The merge of the rows `filter` keeps (one profile, some spans: see [`RowFilter`]), whole
    /// or cut to `max_nodes` as [`Querier::select_merge_truncated`]; empty when it keeps nothing.
    pub async fn select_merge_filtered(
        &self,
        params: &SelectParams,
        filter: &RowFilter,
        max_nodes: Option<usize>,
    ) -> Result<FlameTree, QueryError> {
        if filter.is_empty() {
            return Ok(FlameTree::new());
        }
        self.merge_cut(params, Some(filter), max_nodes.map(|cut| cut.max(1)))
            .await
    }

    pub(super) async fn merge(
        &self,
        params: &SelectParams,
        filter: Option<&RowFilter>,
    ) -> Result<FlameTree, QueryError> {
        self.merge_cut(params, filter, None).await
    }

    /// The two sides of a diff, each cut to `max_nodes` while merged and both keeping every
    /// node either side keeps (the union cut), so a diff renderer asked for the same (or a
    /// smaller) `max_nodes` draws the same graph from them as from the whole trees.
    pub async fn select_merge_pair_truncated(
        &self,
        left: &SelectParams,
        right: &SelectParams,
        max_nodes: usize,
    ) -> Result<(FlameTree, FlameTree), QueryError> {
        let cut = Some(max_nodes.max(1));
        let left_forests = self.forests(left, None).await?;
        let right_forests = self.forests(right, None).await?;
        let (Some(left_forests), Some(right_forests)) = (left_forests, right_forests) else {
            return Ok((FlameTree::new(), FlameTree::new()));
        };
        let expand = |forests: &[StackForest], guide: Option<&FlameTree>| {
            forest::expand(forests, cut, guide, self.max_tree_nodes)?.ok_or_else(deadline_passed)
        };
        let (left_alone, right_alone) = (expand(&left_forests, None)?, expand(&right_forests, None)?);
        Ok((
            expand(&left_forests, Some(&right_alone))?,
            expand(&right_forests, Some(&left_alone))?,
        ))
    }

    async fn merge_cut(
        &self,
        params: &SelectParams,
        filter: Option<&RowFilter>,
        cut: Option<usize>,
    ) -> Result<FlameTree, QueryError> {
        let Some(forests) = self.forests(params, filter).await? else {
            return Ok(FlameTree::new());
        };
        forest::expand(&forests, cut, None, self.max_tree_nodes)?.ok_or_else(deadline_passed)
    }

    /// The forest of every partition the window touches, in visiting order; `None` when the
    /// tenant may read nothing of the window.
    async fn forests(
        &self,
        params: &SelectParams,
        filter: Option<&RowFilter>,
    ) -> Result<Option<Vec<StackForest>>, QueryError> {
        let Some(params) = self.within_limits(params)? else {
            return Ok(None);
        };
        let params = Arc::new(params);
        let filter = filter.map(|filter| Arc::new(filter.clone()));
        let wants = |l: &Labels, p: &ProfileType, min: i64, max: i64| {
            params.wants(l, p, min, max) && filter.as_ref().is_none_or(|filter| filter.may_keep(l))
        };
        let mut forests = Forests::new();
        self.visit_sources(
            &params.tenant,
            params.from_ms,
            params.until_ms,
            &params.selector,
            &params.profile_type,
            // Span ids and profile times live in the rows only (per-stack totals have neither).
            if filter.is_some() {
                Resolution::Rows
            } else {
                Resolution::SumPerStack
            },
            wants,
            |source| match source {
                // Borrowed under the head's locks: built here, before they are released.
                Source::Head(symbols, series) => {
                    forests.add(StackForest::from_rows(symbols, series, &params, filter.as_deref()))
                }
                Source::Loaded(symbols, series) => {
                    forests.spawn(Partition::Loaded(symbols), series, params.clone(), filter.clone())
                }
                Source::Block(block, series) => {
                    forests.spawn(Partition::Block(block), series, params.clone(), filter.clone())
                }
            },
        )
        .await?;
        Ok(Some(forests.finish().ok_or_else(deadline_passed)?))
    }
}

/// The error of a merge that stopped early: the deadline passed (sticky, so `check` says so).
fn deadline_passed() -> QueryError {
    match Deadline::check() {
        Err(passed) => passed.into(),
        Ok(()) => QueryError::DeadlineExceeded {
            timeout: std::time::Duration::ZERO,
        },
    }
}

/// What a loaded partition's forest is built over: a peer's symbols (a shape of the query's
/// own), or a block's with its cached shape.
enum Partition {
    Loaded(Arc<SymbolTable>),
    Block(Arc<BlockSymbols>),
}

/// The forests of one merge, built on the rayon pool (one thread per core, shared by every
/// query, so the threads stay bounded however many queries run) while later blocks load; at
/// most [`Forests::max_in_flight`] loaded partitions wait for a thread, so a slow pool holds
/// back loading rather than letting every block's rows pile up.
struct Forests {
    done: Vec<(usize, Option<StackForest>)>,
    sender: std::sync::mpsc::Sender<(usize, std::thread::Result<Option<StackForest>>)>,
    receiver: std::sync::mpsc::Receiver<(usize, std::thread::Result<Option<StackForest>>)>,
    next: usize,
    in_flight: usize,
}

impl Forests {
    fn new() -> Self {
        let (sender, receiver) = std::sync::mpsc::channel();
        Self {
            done: Vec::new(),
            sender,
            receiver,
            next: 0,
            in_flight: 0,
        }
    }

    fn max_in_flight() -> usize {
        2 * rayon::current_num_threads()
    }

    fn add(&mut self, forest: Option<StackForest>) {
        self.done.push((self.next, forest));
        self.next += 1;
    }

    fn spawn(
        &mut self,
        partition: Partition,
        series: Vec<Series>,
        params: Arc<SelectParams>,
        filter: Option<Arc<RowFilter>>,
    ) {
        while self.in_flight >= Self::max_in_flight() {
            self.receive_one();
        }
        let (index, sender, deadline) = (self.next, self.sender.clone(), Deadline::current());
        self.next += 1;
        self.in_flight += 1;
        rayon::spawn(move || {
            let build = || match partition {
                Partition::Loaded(symbols) => StackForest::from_rows(&symbols, &series, &params, filter.as_deref()),
                Partition::Block(block) => StackForest::over_block(block, &series, &params, filter.as_deref()),
            };
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match deadline {
                Some(deadline) => deadline.sync_scope(build),
                None => build(),
            }));
            // The query may be gone (cancelled); then nobody waits for this forest.
            let _ = sender.send((index, built));
        });
    }

    fn receive_one(&mut self) {
        let (index, built) = self.receiver.recv().expect("this holds a sender");
        self.in_flight -= 1;
        match built {
            Ok(forest) => self.done.push((index, forest)),
            // A bug in the merge fails the query as it would have on this thread.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Every forest, in the order the partitions were visited; `None` past the deadline.
    fn finish(mut self) -> Option<Vec<StackForest>> {
        while self.in_flight > 0 {
            self.receive_one();
        }
        self.done.sort_unstable_by_key(|(index, _)| *index);
        self.done.into_iter().map(|(_, forest)| forest).collect()
    }
}
