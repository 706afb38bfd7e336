//! Recording rules: Pyroscope's `settings.v1.RecordingRulesService` and its metrics exporter.
//! A rule turns the profiles a tenant sends into a Prometheus series — the total of one
//! profile type over the series its matchers select, optionally only the samples whose stack
//! holds one function, grouped by some labels — sent by remote write.
//!
//! This module owns what a rule is and how it is checked ([`Rule::compile`]), where rules are
//! kept (`store`: one object per rule beside the tenant's blocks, like `settings`), how a
//! profile is evaluated against them (`eval`, called by `ingest` once a profile is accepted)
//! and the bounded remote-write queue (`remote_write`). It imports `model`, `storage` and the
//! generated protos only.

pub mod eval;
pub mod remote_write;
mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use eval::{Recorder, RuleMetrics};
pub use remote_write::RemoteWriteConfig;
pub use store::RulesStore;

use crate::model::{LABEL_PROFILE_TYPE, MatchOp, ProfileType, Selector, Tenant, valid_label_name};
use crate::proto::settings::v1 as proto;

/// Label naming the rule a series comes from (Pyroscope's `profiles_rule_id`).
pub const LABEL_RULE_ID: &str = "profiles_rule_id";
/// Metric names a rule may take: Pyroscope's prefix, or Pyrite's.
pub const METRIC_PREFIXES: [&str; 2] = ["profiles_recorded_", "pyrite_"];
/// Longest metric name.
pub const MAX_METRIC_NAME_BYTES: usize = 256;
/// Longest rule id; ids are ASCII letters (Pyroscope's rule), generated ones 10 long.
pub const MAX_ID_LENGTH: usize = 64;
/// Matchers, group-by labels and external labels of one rule, each at most this many.
pub const MAX_RULE_ITEMS: usize = 32;
/// Bytes of one rule's matcher text: bounds the regex compilation an upsert may ask for.
pub const MAX_MATCHER_BYTES: usize = 4096;
/// Longest external label value (Pyroscope's `max_label_value_length` default).
pub const MAX_LABEL_VALUE_BYTES: usize = 2048;
/// Longest function name of a stack trace filter.
pub const MAX_FUNCTION_NAME_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("invalid recording rule: {0}")]
    Invalid(String),
    #[error("recording rule {id:?} not found")]
    NotFound { id: String },
    #[error("recording rule {id:?} comes from the config file (provisioned): change it there")]
    Provisioned { id: String },
    #[error(
        "recording rule {id:?} is at generation {stored}, this update read generation {given}: \
         read it again and retry"
    )]
    Conflict { id: String, stored: i64, given: i64 },
    #[error("tenant has {limit} recording rules already (max_recording_rules); delete one first")]
    TooMany { limit: usize },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("recording rule object {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl crate::error::Classify for RuleError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            // Over the count limit is no "retry later": only deleting a rule helps.
            Self::Invalid(_) | Self::Provisioned { .. } | Self::TooMany { .. } => ErrorClass::Client,
            Self::NotFound { .. } => ErrorClass::NotFound,
            Self::Conflict { .. } => ErrorClass::Conflict,
            Self::Storage(err) => crate::error::Classify::class(err),
            Self::Corrupt { .. } => ErrorClass::Internal,
        }
    }
}

/// The `recording_rules:` section of the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingRulesConfig {
    /// Where series go; none: rules can be managed but nothing is evaluated.
    pub remote_write: Option<RemoteWriteConfig>,
    /// How often the accumulated values are sent: each sample is the sum over the profiles
    /// this replica ingested in one interval.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// How long a replica uses the rules it read before reading them again (rules changed
    /// through another replica take up to this long to apply here).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Labels added to every series (e.g. `cluster`). With `cluster.peers`, `pyrite_replica`
    /// is added too (the replica's name) unless set here: replicas evaluate what each ingests,
    /// and their series would otherwise collide in Prometheus.
    pub external_labels: BTreeMap<String, String>,
    /// Distinct series (all tenants) one evaluation interval may produce; past it new series
    /// are dropped and counted (`pyrite_recording_rules_samples_dropped_total{reason="series_limit"}`).
    pub max_series_per_interval: usize,
    /// Rules from the config file, per tenant (provisioned: the API lists but cannot change them).
    pub rules: BTreeMap<String, Vec<StaticRule>>,
}

impl Default for RecordingRulesConfig {
    fn default() -> Self {
        Self {
            remote_write: None,
            evaluation_interval: Duration::from_secs(15),
            refresh_interval: Duration::from_secs(30),
            external_labels: BTreeMap::new(),
            max_series_per_interval: 100_000,
            rules: BTreeMap::new(),
        }
    }
}

/// One rule written in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticRule {
    pub id: String,
    pub metric_name: String,
    pub matchers: Vec<String>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Only samples whose stack holds this function.
    #[serde(default)]
    pub function_name: Option<String>,
}

impl StaticRule {
    pub fn to_proto(&self) -> proto::RecordingRule {
        proto::RecordingRule {
            id: self.id.clone(),
            metric_name: self.metric_name.clone(),
            profile_type: String::new(),
            matchers: self.matchers.clone(),
            group_by: self.group_by.clone(),
            external_labels: self
                .external_labels
                .iter()
                .map(|(name, value)| crate::proto::types::v1::LabelPair {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            generation: 1,
            stacktrace_filter: self.function_name.as_ref().map(|name| function_filter(name)),
            provisioned: true,
        }
    }
}

/// The stack trace filter of a rule on `function_name`.
pub fn function_filter(function_name: &str) -> proto::StacktraceFilter {
    proto::StacktraceFilter {
        function_name: Some(proto::StacktraceFilterFunctionName {
            function_name: function_name.to_string(),
            metric_type: proto::MetricType::Total as i32,
        }),
    }
}

impl RecordingRulesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.evaluation_interval < Duration::from_secs(1) || self.refresh_interval.is_zero() {
            return Err("recording_rules.evaluation_interval must be at least 1s and refresh_interval positive".into());
        }
        if self.max_series_per_interval == 0 {
            return Err("recording_rules.max_series_per_interval must be positive".into());
        }
        for (name, value) in &self.external_labels {
            check_label(name, value).map_err(|err| format!("recording_rules.external_labels: {err}"))?;
        }
        if let Some(remote_write) = &self.remote_write {
            remote_write.validate()?;
        }
        for (tenant, rules) in &self.rules {
            Tenant::parse(tenant).map_err(|err| format!("recording_rules.rules: tenant {tenant:?}: {err}"))?;
            let mut ids = std::collections::BTreeSet::new();
            for rule in rules {
                Rule::compile(&rule.to_proto()).map_err(|err| format!("recording_rules.rules.{tenant}: {err}"))?;
                if !ids.insert(rule.id.as_str()) {
                    return Err(format!(
                        "recording_rules.rules.{tenant}: id {:?} is used twice",
                        rule.id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A checked rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    /// The profile type ID the rule's `__profile_type__` matcher names.
    pub profile_type: String,
    pub selector: Selector,
    pub group_by: Vec<String>,
    /// `__name__`, `profiles_rule_id` and the rule's external labels, sorted by name.
    pub labels: Vec<(String, String)>,
    pub function_name: Option<String>,
}

impl Rule {
    /// Checks a rule as stored or upserted (Pyroscope's validation, plus bounds): a valid metric
    /// name with one of [`METRIC_PREFIXES`], matchers that parse and name exactly one profile
    /// type with `__profile_type__="…"`, valid group-by and external label names.
    pub fn compile(rule: &proto::RecordingRule) -> Result<Rule, RuleError> {
        let invalid = |message: String| Err(RuleError::Invalid(message));
        check_id(&rule.id)?;
        let name = rule.metric_name.as_str();
        if name.len() > MAX_METRIC_NAME_BYTES || !valid_metric_name(name) {
            return invalid(format!(
                "metric_name {name:?} must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, \
                 at most {MAX_METRIC_NAME_BYTES} bytes)"
            ));
        }
        if !METRIC_PREFIXES
            .iter()
            .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix))
        {
            return invalid(format!(
                "metric_name {name:?} must start with one of {METRIC_PREFIXES:?}, so recorded series \
                 are told apart from every other metric"
            ));
        }
        if rule.matchers.is_empty() || rule.matchers.len() > MAX_RULE_ITEMS {
            return invalid(format!("1 to {MAX_RULE_ITEMS} matchers are needed"));
        }
        if rule.matchers.iter().map(String::len).sum::<usize>() > MAX_MATCHER_BYTES {
            return invalid(format!("matchers take more than {MAX_MATCHER_BYTES} bytes"));
        }
        let mut selector = Selector::default();
        for text in &rule.matchers {
            let parsed = Selector::parse(text).map_err(|err| RuleError::Invalid(format!("matcher {text:?}: {err}")))?;
            selector.matchers.extend(parsed.matchers);
        }
        let mut profile_type: Option<&str> = None;
        for matcher in selector.matchers.iter().filter(|m| m.name == LABEL_PROFILE_TYPE) {
            if matcher.op != MatchOp::Equal {
                return invalid("the __profile_type__ matcher must be an equality (=)".into());
            }
            if profile_type.is_some_and(|earlier| earlier != matcher.value) {
                return invalid("the matchers name two profile types".into());
            }
            profile_type = Some(&matcher.value);
        }
        let Some(profile_type) = profile_type else {
            return invalid(
                "no __profile_type__ matcher, e.g. __profile_type__=\"process_cpu:cpu:nanoseconds:cpu:nanoseconds\""
                    .into(),
            );
        };
        let profile_type = ProfileType::parse(profile_type)
            .map_err(|err| RuleError::Invalid(format!("__profile_type__: {err}")))?
            .id();
        if rule.group_by.len() > MAX_RULE_ITEMS || rule.external_labels.len() > MAX_RULE_ITEMS {
            return invalid(format!("at most {MAX_RULE_ITEMS} group_by and external labels each"));
        }
        for label in &rule.group_by {
            if !valid_prometheus_label(label) || label == LABEL_RULE_ID {
                return invalid(format!(
                    "group_by label {label:?} must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not __…)"
                ));
            }
        }
        let mut labels = vec![
            ("__name__".to_string(), name.to_string()),
            (LABEL_RULE_ID.to_string(), rule.id.clone()),
        ];
        for pair in &rule.external_labels {
            check_label(&pair.name, &pair.value).map_err(RuleError::Invalid)?;
            if rule.group_by.contains(&pair.name) {
                return invalid(format!(
                    "label {:?} is both an external and a group_by label",
                    pair.name
                ));
            }
            if labels.iter().any(|(existing, _)| *existing == pair.name) {
                return invalid(format!("external label {:?} is given twice", pair.name));
            }
            labels.push((pair.name.clone(), pair.value.clone()));
        }
        labels.sort();
        let function_name = match rule
            .stacktrace_filter
            .as_ref()
            .and_then(|filter| filter.function_name.as_ref())
        {
            Some(filter) if filter.function_name.is_empty() => {
                return invalid("stacktrace_filter.function_name is empty".into());
            }
            Some(filter) if filter.function_name.len() > MAX_FUNCTION_NAME_BYTES => {
                return invalid(format!("function_name is longer than {MAX_FUNCTION_NAME_BYTES} bytes"));
            }
            Some(filter) => Some(filter.function_name.clone()),
            None => None,
        };
        let mut group_by = rule.group_by.clone();
        group_by.dedup();
        Ok(Rule {
            id: rule.id.clone(),
            profile_type,
            selector,
            group_by,
            labels,
            function_name,
        })
    }
}

/// The profile type a rule's matchers name ("unknown" when none does), as Pyroscope reports it.
pub fn profile_type_of(rule: &proto::RecordingRule) -> String {
    rule.matchers
        .iter()
        .filter_map(|text| Selector::parse(text).ok())
        .find_map(|selector| selector.equal_value(LABEL_PROFILE_TYPE).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

fn check_id(id: &str) -> Result<(), RuleError> {
    if id.is_empty() || id.len() > MAX_ID_LENGTH || !id.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return Err(RuleError::Invalid(format!(
            "id {id:?} must be 1 to {MAX_ID_LENGTH} ASCII letters"
        )));
    }
    Ok(())
}

/// Prometheus's metric name rule (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_' || first == b':')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b':')
}

/// A label name Prometheus accepts and that is not reserved (`__…`). Pyrite's own label names
/// may hold dots; Prometheus's may not.
fn valid_prometheus_label(name: &str) -> bool {
    valid_label_name(name) && !name.contains('.') && !name.starts_with("__")
}

fn check_label(name: &str, value: &str) -> Result<(), String> {
    if !valid_prometheus_label(name) || name == LABEL_RULE_ID {
        return Err(format!(
            "label name {name:?} must match [a-zA-Z_][a-zA-Z0-9_]* and not be reserved"
        ));
    }
    if value.is_empty() || value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(format!("label {name:?}: the value must be 1 to 2048 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::types::v1::LabelPair;

    pub(crate) fn rule(id: &str, metric: &str, matchers: &[&str]) -> proto::RecordingRule {
        proto::RecordingRule {
            id: id.into(),
            metric_name: metric.into(),
            matchers: matchers.iter().map(|m| m.to_string()).collect(),
            group_by: vec!["service_name".into()],
            ..Default::default()
        }
    }

    const CPU: &str = r#"{__profile_type__="process_cpu:cpu:nanoseconds:cpu:nanoseconds", service_name="a"}"#;

    #[test]
    fn compile_accepts_pyroscopes_rules_and_refuses_bad_ones() {
        let compiled = Rule::compile(&rule("abc", "profiles_recorded_cpu", &[CPU])).unwrap();
        assert_eq!(compiled.profile_type, "process_cpu:cpu:nanoseconds:cpu:nanoseconds");
        assert_eq!(
            compiled.labels,
            [
                ("__name__".to_string(), "profiles_recorded_cpu".to_string()),
                (LABEL_RULE_ID.to_string(), "abc".to_string())
            ]
        );
        Rule::compile(&rule("abc", "pyrite_cpu_total", &[CPU])).unwrap();
        assert_eq!(profile_type_of(&rule("abc", "pyrite_x", &[CPU])), compiled.profile_type);
        assert_eq!(profile_type_of(&rule("abc", "pyrite_x", &["{a=\"b\"}"])), "unknown");

        let refused = |rule: proto::RecordingRule, why: &str| match Rule::compile(&rule) {
            Err(RuleError::Invalid(message)) => assert!(message.contains(why), "{message} (wanted {why})"),
            other => panic!("{why}: {other:?}"),
        };
        refused(rule("ab1", "profiles_recorded_x", &[CPU]), "ASCII letters");
        refused(rule("", "profiles_recorded_x", &[CPU]), "ASCII letters");
        refused(rule("a", "cpu_total", &[CPU]), "must start with");
        refused(rule("a", "profiles_recorded_", &[CPU]), "must start with");
        refused(rule("a", "profiles_recorded-x", &[CPU]), "Prometheus metric name");
        refused(rule("a", "pyrite_x", &[]), "matchers");
        refused(rule("a", "pyrite_x", &["{service_name=\"a\""]), "matcher");
        refused(rule("a", "pyrite_x", &["{service_name=\"a\"}"]), "no __profile_type__");
        refused(
            rule("a", "pyrite_x", &["{__profile_type__=~\"process_cpu.*\"}"]),
            "equality",
        );
        refused(
            rule("a", "pyrite_x", &["{__profile_type__=\"cpu\"}"]),
            "__profile_type__",
        );
        refused(
            rule(
                "a",
                "pyrite_x",
                &[CPU, "{__profile_type__=\"memory:alloc_space:bytes:space:bytes\"}"],
            ),
            "two profile types",
        );
        refused(rule("a", "pyrite_x", &["{x=~\"(\"}"]), "regular expression");
        let mut bad_group = rule("a", "pyrite_x", &[CPU]);
        bad_group.group_by = vec!["service.name".into()];
        refused(bad_group, "group_by label");
        let mut reserved = rule("a", "pyrite_x", &[CPU]);
        reserved.external_labels = vec![LabelPair {
            name: "__name__".into(),
            value: "other".into(),
        }];
        refused(reserved, "label name");
        let mut empty_function = rule("a", "pyrite_x", &[CPU]);
        empty_function.stacktrace_filter = Some(function_filter(""));
        refused(empty_function, "function_name is empty");
        let long = format!("{{a=~\"{}\"}}", "x".repeat(MAX_MATCHER_BYTES));
        refused(rule("a", "pyrite_x", &[&long]), "bytes");
    }
}
