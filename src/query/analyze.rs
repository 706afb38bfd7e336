//! The cost of a query before it runs (Profiles Drilldown's preview): what it would read, from
//! the head and from block indexes and metas only.

use super::{Deadline, Querier, QueryError, Ticker};
use crate::block::SeriesHeader;
use crate::model::{Labels, ProfileType, Selector, Tenant, TimeWindow};

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

impl Querier {
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
        let window = TimeWindow::new(from_ms, until_ms);
        let wants = |labels: &Labels, series_type: &ProfileType, min: i64, max: i64| {
            window.overlaps(min, max)
                && profile_type.is_none_or(|wanted| wanted == series_type)
                && selector.matches(labels)
        };
        let head = &mut analysis.head;
        let metas = self
            .snapshot(tenant, from_ms, until_ms, |partition| {
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
            })
            .await?
            .blocks;
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
}
