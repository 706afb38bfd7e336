//! Time series queries: the matching rows summed per `group_by` label set and step, by the
//! legacy timeline's rule and by Pyroscope's `SelectSeries` rule.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Aggregation, HeatmapPoint, Querier, QueryError, Resolution, SelectParams, Ticker, TimeSeries};
use crate::model::{Labels, ProfileId, ProfileType, series_fingerprint};
use crate::symbols::SymbolTable;

/// One point being summed: per profile time, the total of the group's profiles at that time
/// (one profile for averages), and the heaviest single profile (of one series) seen.
#[derive(Default)]
struct PointSum {
    profiles: BTreeMap<i64, f64>,
    heaviest: Option<HeatmapPoint>,
}

impl PointSum {
    fn add(&mut self, time: i64, value: i64, series: (u64, &Arc<Labels>)) {
        *self.profiles.entry(time).or_default() += value as f64;
        // Heaviest first; among equals the earliest, then the lowest series fingerprint, so the
        // answer does not depend on the order partitions were read in.
        let heavier = self.heaviest.as_ref().is_none_or(|best| {
            (value, std::cmp::Reverse(time), std::cmp::Reverse(series.0))
                > (
                    best.value,
                    std::cmp::Reverse(best.profile.time_ms),
                    std::cmp::Reverse(best.profile.series),
                )
        });
        if heavier {
            self.heaviest = Some(HeatmapPoint {
                profile: ProfileId {
                    series: series.0,
                    time_ms: time,
                },
                span_id: 0,
                value,
                labels: series.1.clone(),
            });
        }
    }
}

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
        let mut groups: BTreeMap<Labels, BTreeMap<i64, PointSum>> = BTreeMap::new();
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
                    let this_series = (series_fingerprint(&series.labels), &Arc::new(series.labels.clone()));
                    if call_site.is_empty() {
                        for (&time, &total) in series.profiles.times.iter().zip(&series.profiles.totals) {
                            if ticker.expired(1) {
                                return;
                            }
                            if window.contains(time)
                                && let Some(point) = bucket(time)
                            {
                                points.entry(point).or_default().add(time, total, this_series);
                            }
                        }
                        continue;
                    }
                    // Rows: each profile's rows under the call site summed first (its rows need
                    // not be adjacent), so a profile is one candidate exemplar.
                    let mut profiles: BTreeMap<(i64, i64), i64> = BTreeMap::new();
                    for ((&time, &value), &stack) in series.times.iter().zip(&series.values).zip(&series.stacks) {
                        if ticker.expired(1) {
                            return;
                        }
                        if window.contains(time)
                            && let Some(point) = bucket(time)
                            && under_call_site(stack)
                        {
                            let sum = profiles.entry((point, time)).or_default();
                            *sum = sum.saturating_add(value);
                        }
                    }
                    for ((point, time), total) in profiles {
                        points.entry(point).or_default().add(time, total, this_series);
                    }
                }
            },
        )
        .await?;
        Ok(groups
            .into_iter()
            .map(|(labels, steps)| {
                let (points, exemplars) = steps
                    .into_iter()
                    .filter_map(|(step, point)| {
                        let sum: f64 = point.profiles.values().sum();
                        let value = match aggregation {
                            Aggregation::Sum => sum,
                            Aggregation::Average => sum / point.profiles.len() as f64,
                        };
                        Some(((step, value), point.heaviest?))
                    })
                    .unzip();
                TimeSeries {
                    labels,
                    points,
                    exemplars,
                }
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

#[cfg(test)]
mod exemplar_tests {
    use super::*;
    use crate::head::testing::{TempStore, corpus_file};
    use crate::ingest::Ingester;
    use crate::model::{Selector, Tenant};
    use crate::pprof::DecodeLimits;
    use crate::query::RowFilter;

    const T: i64 = 1_700_000_000_000;
    const CPU_TOTAL: i64 = 3_900_000_000;

    /// Each point's exemplar is its heaviest profile of one series (two pushes of one series at
    /// one millisecond are one profile), the same before and after a flush, and its id opens
    /// exactly that profile.
    #[tokio::test]
    async fn each_point_names_its_heaviest_profile_and_the_id_opens_it() {
        let store = TempStore::new();
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), DecodeLimits::default());
        let tenant = Tenant::parse("exemplars").unwrap();
        let labels = |service: &str| Labels::new([("service_name".to_string(), service.to_string())]).unwrap();
        for (service, at) in [
            ("a", T + 10_000),
            ("a", T + 20_000),
            ("a", T + 20_000),
            ("b", T + 30_000),
        ] {
            ingester
                .push_pprof(
                    &tenant,
                    labels(service),
                    corpus_file("gotarget__cpu_5s.pb.gz"),
                    Some(at),
                )
                .await
                .unwrap();
        }
        let querier = Querier::new(head.clone(), store.storage.clone());
        let params = SelectParams {
            tenant: tenant.clone(),
            profile_type: ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap(),
            selector: Selector::parse("{}").unwrap(),
            from_ms: 0,
            until_ms: i64::MAX,
        };
        let (start, end, step) = (T + 60_000, T + 120_000, 60_000);
        let heaviest = |group_by: Vec<String>| {
            let (querier, params) = (&querier, &params);
            async move {
                let answer = querier
                    .select_series_range(params, start, end, step, &group_by, Aggregation::Sum, &[])
                    .await
                    .unwrap();
                answer
                    .iter()
                    .map(|series| {
                        assert_eq!(series.points.len(), series.exemplars.len());
                        let exemplar = &series.exemplars[0];
                        assert_eq!(
                            exemplar.profile,
                            ProfileId::new(&exemplar.labels, exemplar.profile.time_ms)
                        );
                        let service = exemplar.labels.get("service_name").unwrap_or_default().to_string();
                        ((exemplar.profile.time_ms, exemplar.value, service), exemplar.profile)
                    })
                    .collect::<Vec<_>>()
            }
        };
        let found = |answer: Vec<((i64, i64, String), ProfileId)>| {
            answer.into_iter().map(|(found, _)| found).collect::<Vec<_>>()
        };
        let expected_all = vec![(T + 20_000, 2 * CPU_TOTAL, "a".to_string())];
        let expected_by_service = vec![
            (T + 20_000, 2 * CPU_TOTAL, "a".to_string()),
            (T + 30_000, CPU_TOTAL, "b".to_string()),
        ];
        let by_service = || vec!["service_name".to_string()];
        let in_head = heaviest(Vec::new()).await;
        let a_at_20 = in_head[0].1;
        assert_eq!(found(in_head), expected_all);
        assert_eq!(found(heaviest(by_service()).await), expected_by_service);
        head.flush().await.unwrap();
        let in_blocks = heaviest(Vec::new()).await;
        assert_eq!(in_blocks[0].1, a_at_20, "from blocks as from the head");
        assert_eq!(found(in_blocks), expected_all);
        assert_eq!(found(heaviest(by_service()).await), expected_by_service);

        let opened = querier
            .select_merge_filtered(&params, &RowFilter::profiles(&[a_at_20]), None)
            .await
            .unwrap();
        assert_eq!(
            opened.total(),
            2 * CPU_TOTAL,
            "the exemplar's id opens that profile alone"
        );
    }
}
