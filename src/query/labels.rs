//! Label queries: series label sets, profile types, label names and values, and the tenant's
//! time range, from the head, block indexes and peers.

use std::collections::BTreeSet;

use super::{Deadline, Querier, QueryError, Ticker};
use crate::model::{Labels, ProfileType, Selector, Tenant, TimeWindow};

impl Querier {
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
        let window = TimeWindow::new(from_ms, until_ms);
        let snapshot = self
            .snapshot(tenant, from_ms, until_ms, |partition| {
                for series in &partition.series {
                    if window.overlaps(series.min_time_ms, series.max_time_ms) && matches(&series.labels) {
                        found.insert(series.labels.clone());
                    }
                }
            })
            .await?;
        let metas = &snapshot.blocks;
        let match_cost = 1 + selectors.iter().map(|s| s.matchers.len()).sum::<usize>();
        let mut ticker = Ticker::new();
        for meta in metas {
            for header in self.index(meta).await?.iter() {
                if ticker.expired(match_cost) {
                    break;
                }
                if window.overlaps(header.min_time_ms, header.max_time_ms) && matches(&header.labels) {
                    found.insert(header.labels.clone());
                }
            }
        }
        for partition in self
            .peer_partitions(tenant, from_ms, until_ms, selectors, None, &snapshot.listed())
            .await
        {
            for series in &partition.series {
                if window.overlaps(series.min_time_ms, series.max_time_ms) && matches(&series.labels) {
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

    /// Oldest and newest profile times of the tenant, if it has any data.
    pub async fn time_range(&self, tenant: &Tenant) -> Result<Option<(i64, i64)>, QueryError> {
        let (from_ms, until_ms) = (i64::MIN / 2, i64::MAX / 2);
        let mut range: Option<(i64, i64)> = None;
        let mut widen = |min: i64, max: i64| {
            range = Some(range.map_or((min, max), |(lo, hi)| (lo.min(min), hi.max(max))));
        };
        let snapshot = self
            .snapshot(tenant, from_ms, until_ms, |partition| {
                for series in &partition.series {
                    widen(series.min_time_ms, series.max_time_ms);
                }
            })
            .await?;
        for meta in &snapshot.blocks {
            widen(meta.min_time_ms, meta.max_time_ms);
        }
        for partition in self
            .peer_partitions(tenant, from_ms, until_ms, &[], None, &snapshot.listed())
            .await
        {
            for series in &partition.series {
                widen(series.min_time_ms, series.max_time_ms);
            }
        }
        Ok(range)
    }
}
