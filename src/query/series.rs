//! Time series queries: the matching rows summed per `group_by` label set and step, by the
//! legacy timeline's rule and by Pyroscope's `SelectSeries` rule.

use std::collections::{BTreeMap, HashMap};

use super::{Aggregation, Querier, QueryError, Resolution, SelectParams, Ticker, TimeSeries};
use crate::model::{Labels, ProfileType};
use crate::symbols::SymbolTable;

impl Querier {
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
        let window = params.window();
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
                            if window.contains(time)
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
                        if window.contains(time)
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
