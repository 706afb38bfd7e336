//! Heatmaps (querier.v1 `SelectHeatmap`): how the profiles (or spans) of a window spread over
//! time and value. x is the `SelectSeries` step rule ([`super::step_point`]: slot `T` holds
//! `(T − step, T]`, the first also `start − step`), y is [`Y_BUCKETS`] equal value ranges from
//! the smallest to the largest point of the whole answer (every series shares them, as in
//! Pyroscope's `RangeHeatmap`), and a cell counts the points in its slot and range, with the
//! heaviest of them as its exemplar.
//!
//! A point is one profile ([`HeatmapKind::Individual`]: the sum of its rows, read from the
//! per-profile totals, no rows needed) or one span of one profile ([`HeatmapKind::Span`]: the
//! sum of the profile's rows carrying that span id; rows without one are not points). Every
//! point of the window lands in exactly one cell, so the counts of a series add up to its
//! points and [`HeatmapSeries::total`] (the sum of their values) is the `SelectSeries` sum of
//! the same window, restricted to span rows for spans.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Querier, QueryError, Resolution, SelectParams, Ticker, step_point};
use crate::model::{Labels, ProfileId, ProfileType, series_fingerprint};

/// Value ranges of a heatmap's y axis (Pyroscope's `DefaultYAxisBuckets`).
pub const Y_BUCKETS: usize = 20;

/// What one heatmap point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeatmapKind {
    /// One point per profile, its total.
    Individual,
    /// One point per span of a profile, the total of the span's rows.
    Span,
}

/// One profile, or one span of one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapPoint {
    /// The profile (its series and time).
    pub profile: ProfileId,
    /// The span id; 0 for [`HeatmapKind::Individual`].
    pub span_id: u64,
    pub value: i64,
    /// The stored series' labels.
    pub labels: Arc<Labels>,
}

/// One count of points in a slot and value range, with the heaviest of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cell {
    pub count: u32,
    pub exemplar: Option<HeatmapPoint>,
}

/// The cells of one time slot, one per y range.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapSlot {
    /// The slot's right edge (ms): it holds `(timestamp − step, timestamp]`.
    pub timestamp_ms: i64,
    pub cells: Vec<Cell>,
}

/// One `group_by` label set's slots (only those with points, by time).
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapSeries {
    pub labels: Labels,
    /// Sum of the values of its points.
    pub total: i64,
    /// Number of its points.
    pub points: u64,
    pub slots: Vec<HeatmapSlot>,
}

/// A heatmap: the lower bound of each y range (shared by all series) and the series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Heatmap {
    pub y_min: Vec<i64>,
    pub series: Vec<HeatmapSeries>,
}

/// A point while the answer is gathered: its group, its place in time and its value.
struct Gathered {
    group: usize,
    slot: i64,
    profile: ProfileId,
    span_id: u64,
    value: i64,
    labels: Arc<Labels>,
}

impl Querier {
    /// The heatmap of the matching series over `[start − step, end]` (Pyroscope's
    /// `SelectSeries` window; `params`' own window is ignored), per `group_by` label set,
    /// `limit` keeping the series with the largest totals. Refused past the query's memory
    /// budget (`api.max_query_tree_nodes` points).
    #[allow(clippy::too_many_arguments)]
    pub async fn select_heatmap(
        &self,
        params: &SelectParams,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        group_by: &[String],
        kind: HeatmapKind,
        limit: Option<usize>,
    ) -> Result<Heatmap, QueryError> {
        if step_ms < 1 {
            return Err(QueryError::Step);
        }
        let params = SelectParams {
            from_ms: start_ms.saturating_sub(step_ms),
            until_ms: end_ms.saturating_add(1),
            ..params.clone()
        };
        let Some(params) = self.within_limits(&params)? else {
            return Ok(Heatmap::default());
        };
        let params = &params;
        let window = params.window();
        let budget = self.max_tree_nodes;
        let mut groups: BTreeMap<Labels, usize> = BTreeMap::new();
        let mut points: Vec<Gathered> = Vec::new();
        let mut over_budget = false;
        let wants = |l: &Labels, p: &ProfileType, min: i64, max: i64| params.wants(l, p, min, max);
        self.visit_partitions(
            &params.tenant,
            params.from_ms,
            params.until_ms,
            &params.selector,
            &params.profile_type,
            match kind {
                HeatmapKind::Individual => Resolution::SumPerProfile,
                HeatmapKind::Span => Resolution::Rows,
            },
            wants,
            |_, all_series| {
                let mut ticker = Ticker::new();
                for series in all_series {
                    if over_budget || ticker.expired(1 + params.selector.matchers.len()) {
                        return;
                    }
                    if !params.wants_series(series) || (kind == HeatmapKind::Span && series.span_ids.is_empty()) {
                        continue;
                    }
                    let next = groups.len();
                    let group = *groups.entry(series.labels.project(group_by)).or_insert(next);
                    let labels = Arc::new(series.labels.clone());
                    let fingerprint = series_fingerprint(&series.labels);
                    let mut add = |time: i64, span_id: u64, value: i64| {
                        if let Some(slot) = step_point(start_ms, end_ms, step_ms, time) {
                            points.push(Gathered {
                                group,
                                slot,
                                profile: ProfileId {
                                    series: fingerprint,
                                    time_ms: time,
                                },
                                span_id,
                                value,
                                labels: labels.clone(),
                            });
                        }
                    };
                    match kind {
                        HeatmapKind::Individual => {
                            for (&time, &total) in series.profiles.times.iter().zip(&series.profiles.totals) {
                                if ticker.expired(1) {
                                    return;
                                }
                                if window.contains(time) {
                                    add(time, 0, total);
                                }
                            }
                        }
                        HeatmapKind::Span => {
                            // Rows of one profile and span summed; rows come in time order.
                            let mut spans: BTreeMap<(i64, u64), i64> = BTreeMap::new();
                            for (row, (&time, &value)) in series.times.iter().zip(&series.values).enumerate() {
                                if ticker.expired(1) {
                                    return;
                                }
                                let span = series.span_id(row);
                                if span != 0 && window.contains(time) {
                                    let sum = spans.entry((time, span)).or_default();
                                    *sum = sum.saturating_add(value);
                                }
                                if spans.len() > budget {
                                    over_budget = true;
                                    return;
                                }
                            }
                            for ((time, span), value) in spans {
                                add(time, span, value);
                            }
                        }
                    }
                    if points.len() > budget {
                        over_budget = true;
                        return;
                    }
                }
            },
        )
        .await?;
        if over_budget {
            return Err(QueryError::TooManyPoints { limit: budget });
        }
        Ok(build(groups, points, limit))
    }
}

/// Cells of the gathered points: one point per profile (and span) even where partitions
/// overlap (two blocks of one hour holding one millisecond of a series), series cut to
/// `limit` by total, then the shared y ranges over what is left.
fn build(groups: BTreeMap<Labels, usize>, mut points: Vec<Gathered>, limit: Option<usize>) -> Heatmap {
    points.sort_unstable_by_key(|p| (p.group, p.slot, p.profile, p.span_id));
    points.dedup_by(|later, kept| {
        let same = (later.group, later.profile, later.span_id) == (kept.group, kept.profile, kept.span_id);
        if same {
            kept.value = kept.value.saturating_add(later.value);
        }
        same
    });
    let mut totals = vec![(0i64, 0u64); groups.len()];
    for point in &points {
        let (total, count) = &mut totals[point.group];
        *total = total.saturating_add(point.value);
        *count += 1;
    }
    let mut kept: Vec<(Labels, usize)> = groups.into_iter().filter(|&(_, g)| totals[g].1 > 0).collect();
    if let Some(limit) = limit {
        kept.sort_by(|a, b| totals[b.1].0.cmp(&totals[a.1].0).then_with(|| a.0.cmp(&b.0)));
        kept.truncate(limit);
        kept.sort();
    }
    let mut wanted = vec![false; totals.len()];
    for (_, group) in &kept {
        wanted[*group] = true;
    }
    points.retain(|point| wanted[point.group]);
    let (Some(min), Some(max)) = (
        points.iter().map(|p| p.value).min(),
        points.iter().map(|p| p.value).max(),
    ) else {
        return Heatmap::default();
    };
    let y_min = y_ranges(min, max);
    // Points are sorted by group and slot: each series' slots are one run.
    let mut by_group: Vec<Vec<HeatmapSlot>> = vec![Vec::new(); totals.len()];
    for point in points {
        let slots = &mut by_group[point.group];
        if slots.last().is_none_or(|slot| slot.timestamp_ms != point.slot) {
            slots.push(HeatmapSlot {
                timestamp_ms: point.slot,
                cells: vec![Cell::default(); Y_BUCKETS],
            });
        }
        let slot = slots.last_mut().expect("pushed above");
        let cell = &mut slot.cells[y_range(&y_min, point.value)];
        cell.count += 1;
        // The heaviest point; of equal ones the first in (series, time, span) order.
        if cell.exemplar.as_ref().is_none_or(|e| point.value > e.value) {
            cell.exemplar = Some(HeatmapPoint {
                profile: point.profile,
                span_id: point.span_id,
                value: point.value,
                labels: point.labels,
            });
        }
    }
    Heatmap {
        y_min,
        series: kept
            .into_iter()
            .map(|(labels, group)| HeatmapSeries {
                labels,
                total: totals[group].0,
                points: totals[group].1,
                slots: std::mem::take(&mut by_group[group]),
            })
            .collect(),
    }
}

/// Lower bounds of [`Y_BUCKETS`] equal ranges from `min` to `max` (a range of one value is
/// widened to `[min, min + 1]`), rounded down to integers.
fn y_ranges(min: i64, max: i64) -> Vec<i64> {
    let max = if max == min { min.saturating_add(1) } else { max };
    let width = (max as f64 - min as f64) / Y_BUCKETS as f64;
    (0..Y_BUCKETS)
        .map(|range| min.saturating_add((range as f64 * width).floor() as i64))
        .collect()
}

/// The y range of `value`: the last one whose lower bound is at most it (the last range
/// holds the maximum itself).
fn y_range(y_min: &[i64], value: i64) -> usize {
    y_min.partition_point(|&bound| bound <= value).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn y_ranges_split_min_to_max_and_every_value_has_one() {
        let y_min = y_ranges(100, 300);
        assert_eq!(y_min.len(), Y_BUCKETS);
        assert_eq!((y_min[0], y_min[1], y_min[19]), (100, 110, 290));
        assert_eq!(y_range(&y_min, 100), 0);
        assert_eq!(y_range(&y_min, 109), 0);
        assert_eq!(y_range(&y_min, 110), 1);
        assert_eq!(y_range(&y_min, 300), 19, "the maximum is in the last range");
        // One value only: every point in one range.
        let one = y_ranges(7, 7);
        assert_eq!(y_range(&one, 7), one.partition_point(|&b| b <= 7) - 1);
        // Narrower than the range count: lower bounds repeat, a value takes the last of them.
        let narrow = y_ranges(0, 5);
        assert_eq!(y_range(&narrow, 0), 3);
        assert_eq!(y_range(&narrow, 5), 19);
    }

    fn gathered(group: usize, slot: i64, time_ms: i64, value: i64) -> Gathered {
        Gathered {
            group,
            slot,
            profile: ProfileId {
                series: group as u64,
                time_ms,
            },
            span_id: 0,
            value,
            labels: Arc::new(Labels::default()),
        }
    }

    #[test]
    fn cells_count_every_point_once_and_limit_keeps_the_heaviest_series() {
        let label = |v: &str| Labels::new([("pod".to_string(), v.to_string())]).unwrap();
        let groups = BTreeMap::from([(label("a"), 0), (label("b"), 1)]);
        let points = || {
            vec![
                gathered(0, 10, 5, 100),
                gathered(0, 10, 6, 300),
                gathered(0, 20, 15, 300),
                // One profile seen in two partitions: one point of their sum.
                gathered(1, 10, 7, 150),
                gathered(1, 10, 7, 150),
                gathered(1, 20, 20, 120),
            ]
        };
        let heatmap = build(groups.clone(), points(), None);
        assert_eq!(heatmap.y_min, y_ranges(100, 300));
        let a = &heatmap.series[0];
        assert_eq!((a.labels.get("pod"), a.total, a.points), (Some("a"), 700, 3));
        assert_eq!(a.slots.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>(), [10, 20]);
        let counts: Vec<u32> = a.slots[0].cells.iter().map(|c| c.count).collect();
        assert_eq!((counts[0], counts[19], counts.iter().sum::<u32>()), (1, 1, 2));
        assert_eq!(a.slots[0].cells[19].exemplar.as_ref().unwrap().profile.time_ms, 6);
        let b = &heatmap.series[1];
        assert_eq!((b.total, b.points), (420, 2));
        let cell = &b.slots[0].cells[y_range(&heatmap.y_min, 300)];
        assert_eq!((cell.count, cell.exemplar.as_ref().unwrap().value), (1, 300));

        let top = build(groups, points(), Some(1));
        assert_eq!(top.series.len(), 1);
        assert_eq!(top.series[0].labels.get("pod"), Some("a"));
        // The y ranges are those of what is left.
        assert_eq!(top.y_min, y_ranges(100, 300));
    }
}
