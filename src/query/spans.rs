//! Span profiles: the merge of the rows whose span id is one of a set (querier.v1
//! `SelectMergeSpanProfile`).

use std::collections::HashSet;

use super::{FlameTree, Querier, QueryError, RowFilter, SelectParams};

impl Querier {
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
        self.merge(params, Some(&RowFilter::Spans(span_ids.clone()))).await
    }
}
