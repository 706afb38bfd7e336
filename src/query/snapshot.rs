//! One snapshot per query: the blocks it reads (listed before any lock is taken) and the head
//! partitions those blocks do not cover, taken once, so merge, series, labels, analyze and
//! span queries all read head, blocks and peers by one rule.
//!
//! The exactly-once rule, stated here once: a row is read from a listed block, or from a head
//! partition whose block is not listed, or from a peer's head (which leaves out what this
//! listing holds, [`crate::head::Head::snapshot_for_peer`]) — never from two, never from none.
//! A flush publishes a block (meta PUT, no lock) and then, under the head's write gate, drops
//! the partition and counts a publication. A query reads that count, lists (no lock), takes the
//! read gate and reads the count again: unchanged, every partition that left the head since
//! the listing began was still there, and one whose block the listing already holds is skipped
//! ([`crate::head::Head::visit_unlisted`]). Changed, it lists again.

use std::collections::HashSet;

use crate::block::{BlockMeta, Partition};
use crate::model::Tenant;

use super::{Querier, QueryError};

/// Listings a query takes while flushes keep publishing before it falls back to listing under
/// the read gate (a flush publishes one block per partition, milliseconds apart: a retry
/// almost always gets through).
const LISTING_ATTEMPTS: usize = 4;

/// The blocks a query reads; the head partitions were visited when it was taken.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The blocks to read.
    pub blocks: Vec<BlockMeta>,
    /// Blocks a listed compacted block replaces, not deleted yet: not read, but named to
    /// peers so they leave out what those blocks hold too.
    pub replaced: Vec<BlockMeta>,
}

impl Snapshot {
    /// Every block id the listing saw, read or replaced.
    pub fn listed(&self) -> Vec<&BlockMeta> {
        self.blocks.iter().chain(&self.replaced).collect()
    }
}

impl Querier {
    /// Lists `tenant`'s blocks overlapping `[from, until)`, then calls `visit_head` with each
    /// head partition of the window the listing does not cover (under the head's read gate,
    /// which is held only for that in-memory visit).
    pub(crate) async fn snapshot(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
        visit_head: impl FnMut(&Partition),
    ) -> Result<Snapshot, QueryError> {
        self.snapshot_with(tenant, from_ms, until_ms, visit_head, async |_| {})
            .await
    }

    /// [`Querier::snapshot`], calling `after_listing(attempt)` between each listing and the
    /// read gate (tests publish a flush there).
    pub(crate) async fn snapshot_with(
        &self,
        tenant: &Tenant,
        from_ms: i64,
        until_ms: i64,
        mut visit_head: impl FnMut(&Partition),
        mut after_listing: impl AsyncFnMut(usize),
    ) -> Result<Snapshot, QueryError> {
        let head = &self.head;
        for attempt in 0..LISTING_ATTEMPTS {
            let publications = head.publications();
            let listing = self.catalog.list(tenant, from_ms, until_ms).await?;
            after_listing(attempt).await;
            let _gate = head.read_gate().await;
            if head.publications() != publications {
                continue;
            }
            let snapshot = Snapshot {
                blocks: listing.visible,
                replaced: listing.replaced,
            };
            head.visit_unlisted(tenant, from_ms, until_ms, &listed_ids(&snapshot), &mut visit_head);
            return Ok(snapshot);
        }
        tracing::debug!(%tenant, "flushes kept publishing; listing under the read gate");
        let _gate = head.read_gate().await;
        let listing = self.catalog.list(tenant, from_ms, until_ms).await?;
        let snapshot = Snapshot {
            blocks: listing.visible,
            replaced: listing.replaced,
        };
        head.visit_unlisted(tenant, from_ms, until_ms, &listed_ids(&snapshot), visit_head);
        Ok(snapshot)
    }
}

fn listed_ids(snapshot: &Snapshot) -> HashSet<String> {
    snapshot.listed().into_iter().map(|meta| meta.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::head::testing::{TempStore, corpus_file};
    use crate::ingest::Ingester;
    use crate::model::{Labels, ProfileType, Selector};
    use crate::pprof::DecodeLimits;
    use crate::query::SelectParams;

    use super::*;

    /// 16 CPU samples, 160 ms in all (MANIFEST.tsv).
    const FILE: &str = "ddnotes_cpu-profiler-labels.pprof";
    const CPU_NANOS: i64 = 160_000_000;
    const AT_MS: i64 = 1_700_000_000_000;

    async fn push(ingester: &Ingester, tenant: &Tenant, at_ms: i64) {
        let labels = Labels::new([("service_name".to_string(), "snap".to_string())]).unwrap();
        ingester
            .push_pprof(tenant, labels, corpus_file(FILE), Some(at_ms))
            .await
            .unwrap();
    }

    /// A flush that publishes between a query's listing and its head visit: the query lists
    /// again, and the rows count once.
    #[tokio::test]
    async fn a_flush_between_listing_and_head_visit_counts_rows_once() {
        let store = TempStore::new();
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        let tenant = Tenant::parse("snap").unwrap();
        push(&ingester, &tenant, AT_MS).await;
        let querier = Querier::new(head.clone(), store.storage.clone());
        let mut head_rows = 0usize;
        let mut attempts = Vec::new();
        let snapshot = querier
            .snapshot_with(
                &tenant,
                AT_MS,
                AT_MS + 1,
                |partition| head_rows += partition.sample_count(),
                async |attempt| {
                    attempts.push(attempt);
                    if attempt == 0 {
                        head.flush().await.unwrap();
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!(attempts, [0, 1], "listed again after the flush published");
        assert_eq!((snapshot.blocks.len(), head_rows), (1, 0), "read from the block alone");
    }

    /// Queries racing flushes, over and over: every answer holds every profile pushed before
    /// it exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_racing_flushes_see_each_row_once() {
        let store = TempStore::new();
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        let tenant = Tenant::parse("race").unwrap();
        let querier = Arc::new(Querier::new(head.clone(), store.storage.clone()));
        let params = SelectParams {
            tenant: tenant.clone(),
            profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            selector: Selector::parse("{}").unwrap(),
            from_ms: AT_MS,
            until_ms: AT_MS + 1_000,
        };
        for pushed in 1..=30i64 {
            push(&ingester, &tenant, AT_MS + pushed).await;
            let flush = tokio::spawn({
                let head = head.clone();
                async move { head.flush().await.unwrap() }
            });
            let queries: Vec<_> = (0..3)
                .map(|_| {
                    let (querier, params) = (querier.clone(), params.clone());
                    tokio::spawn(async move { querier.select_merge(&params).await.unwrap().total() })
                })
                .collect();
            for query in queries {
                assert_eq!(query.await.unwrap(), pushed * CPU_NANOS, "after {pushed} pushes");
            }
            flush.await.unwrap();
        }
    }
}
