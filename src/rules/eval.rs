//! Evaluating recording rules on what this replica ingests. After `ingest` stores a profile it
//! calls [`Recorder::observe`]: each rule of the tenant whose profile type and matchers match
//! one of the profile's series adds that series' total (or, with a function filter, the total
//! of the samples whose stack holds the function) to the rule's group. Every
//! `evaluation_interval` the groups are queued for remote write as one sample each, stamped
//! with the end of the interval, and start again from zero.
//!
//! So a recorded series is a gauge of *per-interval sums*, as Pyroscope's exporter sends them
//! (one sample per rule and group for the profiles of one block, not a counter):
//! `sum_over_time(m[5m])` is the total over five minutes, `sum_over_time(m[5m]) / 300` the
//! average per second (CPU nanoseconds per second for a CPU rule), and the ratio of two rules
//! a share. Values are in the profile type's unit, unconverted (nanoseconds, bytes, counts).
//!
//! Not counted: profiles replayed from the WAL at startup (they were evaluated when first
//! ingested; what had not been sent yet is lost, at most one interval); what is accumulated
//! when the process stops. A function filter sees the whole profile, also frames beyond
//! `max_stack_depth` that the stored stacks cut.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use super::remote_write::RuleMetrics;
use super::remote_write::{Batch, Queue};
use super::{RecordingRulesConfig, Rule, RuleError, RulesStore};
use crate::head::SeriesSpec;
use crate::model::Tenant;
use crate::proto::google::v1::Profile;
use crate::proto::prometheus::{Label, Sample, TimeSeries};
use crate::proto::settings::v1 as proto;

/// How long the first profile of a tenant waits for its rules to be read.
const FIRST_LOAD_TIMEOUT: Duration = Duration::from_secs(2);

struct Cached {
    rules: Arc<Vec<Rule>>,
    loaded: Instant,
    refreshing: bool,
}

/// Values of one interval: tenant → series labels (sorted) → sum.
#[derive(Default)]
struct Pending {
    groups: HashMap<Tenant, HashMap<Vec<(String, String)>, f64>>,
    series: usize,
}

/// A process's recording rules: the API's view of them (stored plus provisioned) and their
/// evaluation on ingest.
pub struct Recorder {
    store: RulesStore,
    config: RecordingRulesConfig,
    /// Labels added to every series (the config's, plus `pyrite_replica` in a cluster).
    external_labels: Vec<(String, String)>,
    provisioned: HashMap<Tenant, Vec<proto::RecordingRule>>,
    cache: Mutex<HashMap<Tenant, Cached>>,
    pending: Mutex<Pending>,
    /// None without `remote_write`: nothing is evaluated.
    queue: Option<Arc<Queue>>,
    metrics: RuleMetrics,
    /// `max_recording_rules` per tenant.
    limits: Arc<crate::limits::Limits>,
}

impl Recorder {
    /// `replica`: this replica's name when it is one of several.
    pub fn new(
        store: RulesStore,
        config: RecordingRulesConfig,
        limits: Arc<crate::limits::Limits>,
        replica: Option<&str>,
        metrics: RuleMetrics,
    ) -> Self {
        let mut external_labels: BTreeMap<String, String> = config.external_labels.clone();
        if let Some(replica) = replica {
            external_labels
                .entry("pyrite_replica".to_string())
                .or_insert_with(|| replica.to_string());
        }
        let provisioned = config
            .rules
            .iter()
            .filter_map(|(tenant, rules)| {
                Some((
                    Tenant::parse(tenant).ok()?,
                    rules.iter().map(super::StaticRule::to_proto).collect(),
                ))
            })
            .map(|(tenant, mut rules): (Tenant, Vec<proto::RecordingRule>)| {
                for rule in &mut rules {
                    rule.profile_type = super::profile_type_of(rule);
                }
                (tenant, rules)
            })
            .collect();
        let queue = config
            .remote_write
            .as_ref()
            .map(|remote_write| Arc::new(Queue::new(remote_write.max_queued_samples, metrics.clone())));
        Self {
            store,
            external_labels: external_labels.into_iter().collect(),
            config,
            provisioned,
            cache: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
            queue,
            metrics,
            limits,
        }
    }

    pub fn queue(&self) -> Option<Arc<Queue>> {
        self.queue.clone()
    }

    pub fn metrics(&self) -> &RuleMetrics {
        &self.metrics
    }

    // ---- the API's view

    /// The tenant's rules: provisioned ones first, then the stored ones.
    pub async fn list(&self, tenant: &Tenant) -> Result<Vec<proto::RecordingRule>, RuleError> {
        let mut rules = self.provisioned.get(tenant).cloned().unwrap_or_default();
        rules.extend(self.store.list(tenant).await?);
        Ok(rules)
    }

    pub async fn get(&self, tenant: &Tenant, id: &str) -> Result<proto::RecordingRule, RuleError> {
        if let Some(rule) = self.provisioned_rule(tenant, id) {
            return Ok(rule.clone());
        }
        self.store
            .get(tenant, id)
            .await?
            .ok_or_else(|| RuleError::NotFound { id: id.to_string() })
    }

    /// Stores a rule, within the tenant's `max_recording_rules`.
    pub async fn upsert(
        &self,
        tenant: &Tenant,
        request: proto::UpsertRecordingRuleRequest,
    ) -> Result<proto::RecordingRule, RuleError> {
        if self.provisioned_rule(tenant, request.id.trim()).is_some() {
            return Err(RuleError::Provisioned { id: request.id });
        }
        let max_rules = self.limits.for_tenant(tenant).max_recording_rules;
        let rule = self.store.upsert(tenant, request, max_rules).await?;
        self.cache.lock().remove(tenant);
        Ok(rule)
    }

    pub async fn delete(&self, tenant: &Tenant, id: &str) -> Result<(), RuleError> {
        if self.provisioned_rule(tenant, id).is_some() {
            return Err(RuleError::Provisioned { id: id.to_string() });
        }
        self.store.delete(tenant, id).await?;
        self.cache.lock().remove(tenant);
        Ok(())
    }

    fn provisioned_rule(&self, tenant: &Tenant, id: &str) -> Option<&proto::RecordingRule> {
        self.provisioned.get(tenant)?.iter().find(|rule| rule.id == id)
    }

    // ---- evaluation

    /// The compiled rules of `tenant`: read once, then re-read in the background every
    /// `refresh_interval` (the stale ones are used meanwhile).
    async fn rules_for(self: &Arc<Self>, tenant: &Tenant) -> Arc<Vec<Rule>> {
        {
            let mut cache = self.cache.lock();
            if let Some(cached) = cache.get_mut(tenant) {
                if cached.loaded.elapsed() >= self.config.refresh_interval && !cached.refreshing {
                    cached.refreshing = true;
                    let (recorder, tenant) = (self.clone(), tenant.clone());
                    tokio::spawn(async move {
                        let rules = recorder.load(&tenant).await;
                        recorder.cache_rules(&tenant, rules);
                    });
                }
                return cached.rules.clone();
            }
        }
        let rules = match tokio::time::timeout(FIRST_LOAD_TIMEOUT, self.load(tenant)).await {
            Ok(rules) => rules,
            Err(_) => {
                tracing::warn!(%tenant, "reading recording rules timed out; provisioned rules only until the next refresh");
                self.compile_all(tenant, Vec::new())
            }
        };
        self.cache_rules(tenant, rules)
    }

    fn cache_rules(&self, tenant: &Tenant, rules: Vec<Rule>) -> Arc<Vec<Rule>> {
        let rules = Arc::new(rules);
        self.cache.lock().insert(
            tenant.clone(),
            Cached {
                rules: rules.clone(),
                loaded: Instant::now(),
                refreshing: false,
            },
        );
        rules
    }

    /// Provisioned and stored rules; a storage failure leaves the provisioned ones (logged).
    async fn load(&self, tenant: &Tenant) -> Vec<Rule> {
        let stored = match self.store.list(tenant).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(%tenant, error = %err, "reading recording rules failed; provisioned rules only until the next refresh");
                Vec::new()
            }
        };
        self.compile_all(tenant, stored)
    }

    fn compile_all(&self, tenant: &Tenant, stored: Vec<proto::RecordingRule>) -> Vec<Rule> {
        let provisioned = self.provisioned.get(tenant).into_iter().flatten();
        provisioned
            .chain(stored.iter())
            .filter_map(|rule| match Rule::compile(rule) {
                Ok(compiled) => Some(compiled),
                Err(err) => {
                    tracing::warn!(%tenant, id = %rule.id, error = %err, "skipping a stored recording rule");
                    None
                }
            })
            .collect()
    }

    /// Adds an ingested profile, split into `series`, to the tenant's rules. Never fails.
    pub async fn observe(self: &Arc<Self>, tenant: &Tenant, series: &[SeriesSpec], profile: &Profile) {
        if self.queue.is_none() {
            return;
        }
        let rules = self.rules_for(tenant).await;
        if rules.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut values: Vec<(&Rule, usize, f64)> = Vec::new();
        evaluate(&rules, series, profile, |rule, series_index, value| {
            values.push((rule, series_index, value));
        });
        if values.is_empty() {
            return;
        }
        self.metrics.profiles_evaluated.inc();
        let keyed: Vec<(Vec<(String, String)>, f64)> = values
            .into_iter()
            .map(|(rule, series_index, value)| {
                tracing::trace!(%tenant, rule = %rule.id, value, "recorded");
                (self.series_labels(rule, &series[series_index]), value)
            })
            .collect();
        let mut pending = self.pending.lock();
        let pending = &mut *pending;
        let groups = pending.groups.entry(tenant.clone()).or_default();
        for (labels, value) in keyed {
            if let Some(sum) = groups.get_mut(&labels) {
                *sum += value;
            } else if pending.series < self.config.max_series_per_interval {
                groups.insert(labels, value);
                pending.series += 1;
            } else {
                self.metrics.dropped("series_limit", 1);
            }
        }
        self.metrics.evaluation_seconds.inc_by(started.elapsed().as_secs_f64());
    }

    /// The exported labels of a rule's group for one series: the external labels, overridden
    /// by the rule's own (`__name__`, `profiles_rule_id`, its external labels), then the
    /// group-by labels the series has (as Pyroscope's exporter sets them).
    fn series_labels(&self, rule: &Rule, series: &SeriesSpec) -> Vec<(String, String)> {
        let mut labels: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, value) in self.external_labels.iter().chain(&rule.labels) {
            labels.insert(name, value);
        }
        for name in &rule.group_by {
            if let Some(value) = series.labels.get(name).filter(|value| !value.is_empty()) {
                labels.insert(name, value);
            }
        }
        labels
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// Queues what the interval accumulated, stamped `now_ms`.
    pub fn emit(&self, now_ms: i64) {
        let Some(queue) = &self.queue else { return };
        let groups = std::mem::take(&mut *self.pending.lock()).groups;
        for (tenant, groups) in groups {
            let series = groups
                .into_iter()
                .map(|(labels, value)| TimeSeries {
                    labels: labels.into_iter().map(|(name, value)| Label { name, value }).collect(),
                    samples: vec![Sample {
                        value,
                        timestamp: now_ms,
                    }],
                })
                .collect();
            queue.push(Batch {
                tenant,
                series,
                recorded: Instant::now(),
            });
        }
    }

    /// Emits every `evaluation_interval` until aborted.
    pub async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.evaluation_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            self.emit(crate::now_ms());
        }
    }
}

/// Calls `emit(rule, series index, value)` for every rule matching one of `series` (the
/// profile's split): the series' total, or the total of the samples whose stack holds the
/// rule's function. Function names are compared once per function of the profile; each
/// location gets a bit mask of the filtered functions it holds, and a sample's mask is the OR
/// of its locations' (a recursive function counts its sample once).
pub fn evaluate<'r>(
    rules: &'r [Rule],
    series: &[SeriesSpec],
    profile: &Profile,
    mut emit: impl FnMut(&'r Rule, usize, f64),
) {
    let mut matched: Vec<(&Rule, usize)> = Vec::new();
    for (index, spec) in series.iter().enumerate() {
        let mut profile_type = None;
        for rule in rules {
            let id = profile_type.get_or_insert_with(|| spec.profile_type.id());
            if rule.profile_type == *id && rule.selector.matches(&spec.labels) {
                matched.push((rule, index));
            }
        }
    }
    if matched.is_empty() {
        return;
    }
    let columns = profile.sample_type.len();
    let mut totals = vec![0i128; columns];
    for sample in &profile.sample {
        for (total, value) in totals.iter_mut().zip(&sample.value) {
            *total += i128::from(*value);
        }
    }
    let mut functions: Vec<&str> = Vec::new();
    for (rule, _) in &matched {
        if let Some(name) = rule.function_name.as_deref()
            && !functions.contains(&name)
        {
            functions.push(name);
        }
    }
    // function_totals[f][column]
    let mut function_totals = vec![vec![0i128; columns]; functions.len()];
    for (chunk_index, chunk) in functions.chunks(64).enumerate() {
        let base = chunk_index * 64;
        add_function_totals(profile, chunk, &mut function_totals[base..base + chunk.len()]);
    }
    for (rule, index) in matched {
        let column = series[index].value_index;
        let total = match rule.function_name.as_deref() {
            None => totals.get(column).copied().unwrap_or(0),
            Some(name) => {
                let position = functions.iter().position(|f| *f == name).expect("collected above");
                function_totals[position].get(column).copied().unwrap_or(0)
            }
        };
        emit(rule, index, total as f64);
    }
}

/// Adds to `totals[i][column]` the values of the samples whose stack holds `names[i]` (at most
/// 64 names: one bit each).
fn add_function_totals(profile: &Profile, names: &[&str], totals: &mut [Vec<i128>]) {
    debug_assert!(names.len() <= 64);
    let string = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|index| profile.string_table.get(index))
            .map_or("", String::as_str)
    };
    let function_masks: HashMap<u64, u64> = profile
        .function
        .iter()
        .filter_map(|function| {
            let name = string(function.name);
            let mask = names
                .iter()
                .enumerate()
                .filter(|(_, wanted)| **wanted == name)
                .fold(0u64, |mask, (bit, _)| mask | (1 << bit));
            (mask != 0).then_some((function.id, mask))
        })
        .collect();
    if function_masks.is_empty() {
        return;
    }
    // Location ids are usually 1..=n: a dense table then, a map for sparse ids.
    let max_id = profile.location.iter().map(|location| location.id).max().unwrap_or(0);
    let dense = max_id <= (profile.location.len() as u64).saturating_mul(4).saturating_add(1024);
    let mask_of = |location: &crate::proto::google::v1::Location| {
        location
            .line
            .iter()
            .filter_map(|line| function_masks.get(&line.function_id))
            .fold(0u64, |mask, bits| mask | bits)
    };
    let (dense_masks, sparse_masks): (Vec<u64>, HashMap<u64, u64>) = if dense {
        let mut masks = vec![0u64; max_id as usize + 1];
        for location in &profile.location {
            masks[location.id as usize] |= mask_of(location);
        }
        (masks, HashMap::new())
    } else {
        let masks = profile
            .location
            .iter()
            .map(|location| (location.id, mask_of(location)))
            .filter(|(_, mask)| *mask != 0)
            .collect();
        (Vec::new(), masks)
    };
    let location_mask = |id: u64| {
        if dense {
            dense_masks.get(id as usize).copied().unwrap_or(0)
        } else {
            sparse_masks.get(&id).copied().unwrap_or(0)
        }
    };
    for sample in &profile.sample {
        let mask = sample
            .location_id
            .iter()
            .fold(0u64, |mask, &id| mask | location_mask(id));
        let mut bits = mask;
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            for (total, value) in totals[bit].iter_mut().zip(&sample.value) {
                *total += i128::from(*value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::series_specs;
    use crate::model::Labels;
    use crate::pprof::{DecodeLimits, decode};

    const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

    fn corpus_profile(name: &str) -> Profile {
        let raw = crate::head::testing::corpus_file(name);
        decode(&raw, &DecodeLimits::default()).unwrap()
    }

    fn compiled(id: &str, matchers: &str, function: Option<&str>) -> Rule {
        Rule::compile(&proto::RecordingRule {
            id: id.into(),
            metric_name: format!("pyrite_{id}"),
            matchers: vec![matchers.into()],
            group_by: vec!["service_name".into()],
            stacktrace_filter: function.map(super::super::function_filter),
            ..Default::default()
        })
        .unwrap()
    }

    /// What `go tool pprof -top` would say: the value of samples with `function` anywhere on
    /// their stack, by plain string comparison of every frame (the slow, obvious way).
    fn expected_share(profile: &Profile, function: &str, column: usize) -> i128 {
        let name_of = |function_id: u64| {
            let function = profile.function.iter().find(|f| f.id == function_id).unwrap();
            profile.string_table[function.name as usize].as_str()
        };
        profile
            .sample
            .iter()
            .filter(|sample| {
                sample.location_id.iter().any(|id| {
                    let location = profile.location.iter().find(|l| l.id == *id).unwrap();
                    location.line.iter().any(|line| name_of(line.function_id) == function)
                })
            })
            .map(|sample| i128::from(sample.value[column]))
            .sum()
    }

    #[test]
    fn totals_and_function_filters_on_a_corpus_profile() {
        let profile = corpus_profile("gotarget__cpu_5s.pb.gz");
        let labels = Labels::new([("service_name".to_string(), "checkout".to_string())]).unwrap();
        let series = series_specs("process_cpu", &labels, &profile).unwrap();
        let cpu_column = series.iter().find(|s| s.profile_type.id() == CPU).unwrap().value_index;
        let manifest_total: i128 = profile.sample.iter().map(|s| i128::from(s.value[cpu_column])).sum();
        assert!(manifest_total > 0);

        let selector = format!(r#"{{__profile_type__="{CPU}", service_name="checkout"}}"#);
        let rules = vec![
            compiled("total", &selector, None),
            compiled("hash", &selector, Some("main.cpuHashLoop")),
            compiled("sort", &selector, Some("main.cpuSortLoop")),
            compiled("sha", &selector, Some("crypto/sha256.Sum256")),
            compiled("absent", &selector, Some("main.noSuchFunction")),
            compiled(
                "other",
                r#"{__profile_type__="process_cpu:cpu:nanoseconds:cpu:nanoseconds", service_name="x"}"#,
                None,
            ),
            compiled(
                "samples",
                r#"{__profile_type__="process_cpu:samples:count:cpu:nanoseconds"}"#,
                None,
            ),
        ];
        let mut got: BTreeMap<String, f64> = BTreeMap::new();
        evaluate(&rules, &series, &profile, |rule, _, value| {
            assert!(
                got.insert(rule.id.clone(), value).is_none(),
                "{} emitted twice",
                rule.id
            );
        });
        assert_eq!(got["total"], manifest_total as f64);
        for (id, function) in [
            ("hash", "main.cpuHashLoop"),
            ("sort", "main.cpuSortLoop"),
            ("sha", "crypto/sha256.Sum256"),
        ] {
            let expected = expected_share(&profile, function, cpu_column);
            assert_eq!(got[id], expected as f64, "{function}");
        }
        assert!(got["hash"] > 0.0 && got["sort"] > 0.0 && got["hash"] + got["sort"] <= got["total"]);
        assert_eq!(got["absent"], 0.0, "a matching series with no such frame records 0");
        assert!(!got.contains_key("other"), "another service does not match");
        let samples_column = series
            .iter()
            .find(|s| s.profile_type.sample_type == "samples")
            .unwrap()
            .value_index;
        let sample_count: i128 = profile.sample.iter().map(|s| i128::from(s.value[samples_column])).sum();
        assert_eq!(
            got["samples"], sample_count as f64,
            "each sample type is its own series"
        );
    }

    #[test]
    fn sparse_location_ids_and_more_than_64_functions() {
        let mut profile = corpus_profile("gotarget__cpu_5s.pb.gz");
        // Sparse ids: the map path instead of the dense table.
        let shift = 1u64 << 40;
        for location in &mut profile.location {
            location.id += shift;
        }
        for sample in &mut profile.sample {
            for id in &mut sample.location_id {
                *id += shift;
            }
        }
        let labels = Labels::new([("service_name".to_string(), "checkout".to_string())]).unwrap();
        let series = series_specs("process_cpu", &labels, &profile).unwrap();
        let selector = format!(r#"{{__profile_type__="{CPU}"}}"#);
        let mut rules: Vec<Rule> = (0..70)
            .map(|i| {
                let id: String = format!("f{i}")
                    .chars()
                    .map(|c| (b'a' + (c as u8 % 26)) as char)
                    .collect();
                compiled(&format!("x{id}"), &selector, Some(&format!("main.none{i}")))
            })
            .collect();
        rules.push(compiled("hash", &selector, Some("main.cpuHashLoop")));
        let column = series.iter().find(|s| s.profile_type.id() == CPU).unwrap().value_index;
        let mut hash = None;
        evaluate(&rules, &series, &profile, |rule, _, value| {
            if rule.id == "hash" {
                hash = Some(value);
            } else {
                assert_eq!(value, 0.0);
            }
        });
        assert_eq!(
            hash.unwrap(),
            expected_share(&profile, "main.cpuHashLoop", column) as f64
        );
    }

    /// BENCHMARKS.md "Recording rules": the cost of 25 rules (the default max_recording_rules),
    /// 12 of them with a function filter, on a real CPU profile, next to decoding it.
    #[test]
    #[ignore = "a measurement: cargo test --lib rules::eval::tests::evaluation_overhead -- --ignored --nocapture"]
    fn evaluation_overhead() {
        for name in ["gotarget__cpu_5s.pb.gz", "gpprof_large.cpu"] {
            let raw = crate::head::testing::corpus_file(name);
            let profile = decode(&raw, &DecodeLimits::default()).unwrap();
            let labels = Labels::new([("service_name".to_string(), "checkout".to_string())]).unwrap();
            let series = series_specs(&crate::ingest::metric_name(&profile), &labels, &profile).unwrap();
            let profile_type = series[series.len() - 1].profile_type.id();
            let functions: Vec<String> = profile
                .function
                .iter()
                .map(|f| profile.string_table[f.name as usize].clone())
                .collect();
            let selector = format!(r#"{{__profile_type__="{profile_type}", service_name=~"check.*"}}"#);
            let rules: Vec<Rule> = (0..25u8)
                .map(|i| {
                    let id = format!("r{}", (b'a' + i) as char);
                    let function = (i % 2 == 1).then(|| functions[usize::from(i) % functions.len()].as_str());
                    compiled(&id, &selector, function)
                })
                .collect();
            let rounds = 200;
            let started = Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(decode(&raw, &DecodeLimits::default()).unwrap());
            }
            let decoding = started.elapsed() / rounds;
            let started = Instant::now();
            let mut emitted = 0;
            for _ in 0..rounds {
                evaluate(&rules, &series, &profile, |_, _, _| emitted += 1);
            }
            let evaluating = started.elapsed() / rounds;
            assert_eq!(emitted, 25 * rounds as usize);
            println!(
                "{name}: {} samples, {} locations: decode {decoding:?}, 25 rules {evaluating:?} ({:.0}% of decode)",
                profile.sample.len(),
                profile.location.len(),
                100.0 * evaluating.as_secs_f64() / decoding.as_secs_f64()
            );
        }
    }

    #[tokio::test]
    async fn observe_groups_and_emits_per_interval_sums() {
        let storage = crate::storage::Storage::new(Arc::new(object_store::memory::InMemory::new()));
        let config = RecordingRulesConfig {
            remote_write: Some(serde_yaml::from_str("url: http://127.0.0.1:1/api/v1/write").unwrap()),
            external_labels: [("cluster".to_string(), "eu".to_string())].into(),
            max_series_per_interval: 2,
            ..RecordingRulesConfig::default()
        };
        let recorder = Arc::new(Recorder::new(
            RulesStore::new(storage),
            config,
            Arc::new(crate::limits::Limits::unlimited()),
            Some("pyrite-0"),
            RuleMetrics::default(),
        ));
        let tenant = Tenant::parse("t").unwrap();
        recorder
            .upsert(
                &tenant,
                proto::UpsertRecordingRuleRequest {
                    id: "cpu".into(),
                    metric_name: "profiles_recorded_cpu".into(),
                    matchers: vec![format!(r#"{{__profile_type__="{CPU}"}}"#)],
                    group_by: vec!["service_name".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let profile = corpus_profile("gotarget__cpu_5s.pb.gz");
        let column = 1;
        let total: i128 = profile.sample.iter().map(|s| i128::from(s.value[column])).sum();
        for service in ["a", "a", "b", "c"] {
            let labels = Labels::new([("service_name".to_string(), service.to_string())]).unwrap();
            let series = series_specs("process_cpu", &labels, &profile).unwrap();
            assert_eq!(series[column].profile_type.id(), CPU);
            recorder.observe(&tenant, &series, &profile).await;
        }
        recorder.emit(1234);
        let queue = recorder.queue().unwrap();
        let batch = queue.next().await;
        let mut got: Vec<(Vec<(String, String)>, f64)> = batch
            .series
            .into_iter()
            .map(|s| {
                assert_eq!(s.samples[0].timestamp, 1234);
                (
                    s.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                    s.samples[0].value,
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let labels = |service: &str| {
            vec![
                ("__name__".to_string(), "profiles_recorded_cpu".to_string()),
                ("cluster".to_string(), "eu".to_string()),
                ("profiles_rule_id".to_string(), "cpu".to_string()),
                ("pyrite_replica".to_string(), "pyrite-0".to_string()),
                ("service_name".to_string(), service.to_string()),
            ]
        };
        assert_eq!(
            got,
            [(labels("a"), 2.0 * total as f64), (labels("b"), total as f64)],
            "service c is past max_series_per_interval"
        );
        let dropped = recorder
            .metrics()
            .samples_dropped
            .get_or_create(&super::super::remote_write::DropLabels {
                reason: "series_limit".into(),
            })
            .get();
        assert_eq!(dropped, 1);
        recorder.emit(5678);
        assert_eq!(
            recorder.metrics().queued_samples.get(),
            0,
            "an interval starts from zero"
        );
    }
}
