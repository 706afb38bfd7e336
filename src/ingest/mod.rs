//! Ingest: turns what clients send (pprof over push.v1 or `/ingest`, folded text) into series
//! of one tenant, validates it, and hands it to the head. Transport-free: `api` owns HTTP.

pub mod delta;
mod folded;
mod name;
pub mod otlp;

pub use folded::{FoldedError, FoldedProfile, parse_folded};
pub use name::{IngestName, parse_ingest_name};

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::head::{ColumnValues, Durability, Head, HeadError, SeriesSpec, SeriesSpecError};
use crate::limits::{Limits, Refusal};
use crate::model::{
    LABEL_DELTA, LABEL_NAME, LABEL_PROFILE_TYPE, LABEL_SERVICE_NAME, LabelError, Labels, MAX_TIME_MS, ProfileType,
    Tenant,
};
use crate::pprof::{self, DecodeError, DecodeLimits};
use crate::proto::google::v1::Profile;

/// Service name given to series that name none, as Pyroscope's distributor does.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid profile: {0}")]
    Decode(#[from] DecodeError),
    #[error("invalid labels: {0}")]
    Labels(#[from] LabelError),
    #[error("invalid profile name {0:?}: it must be non-empty and may not contain ':' or control characters")]
    Name(String),
    #[error("invalid series: {0}")]
    Series(#[from] SeriesSpecError),
    #[error("storing profile: {0}")]
    Head(#[from] HeadError),
    #[error(
        "profile time {time_ms} ms is outside the tenant's ingestion window [{from_ms}, {until_ms}] \
         (reject_older_than / reject_newer_than): not_in_ingestion_window"
    )]
    OutOfWindow { time_ms: i64, from_ms: i64, until_ms: i64 },
    /// The tenant is over one of its limits: a 429, to be retried later.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// More profile bytes than the tenant's whole byte burst: never accepted, a 400.
    #[error(
        "{bytes} bytes of profiles are more than tenant {tenant}'s ingestion_burst_size_mb \
         ({burst_mb} MiB): never accepted, send fewer or smaller profiles"
    )]
    OverBurst {
        tenant: String,
        bytes: usize,
        burst_mb: f64,
    },
    /// A push.v1 request's profiles would take more than `max_request_decoded_bytes`.
    #[error(
        "the request's profiles would take more than max_request_decoded_bytes ({limit} bytes) \
         once decoded: send them in several requests"
    )]
    RequestTooLarge { limit: usize },
}

impl IngestError {
    /// Whether the client sent something wrong (a 4xx), as opposed to a server fault.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Head(_))
    }

    /// Refused for now, nothing stored: over a tenant limit, or the head is full of data it
    /// cannot flush. The same profile may be sent again later.
    pub fn is_temporary_refusal(&self) -> bool {
        match self {
            Self::Refused(_) | Self::Head(HeadError::Full { .. }) => true,
            Self::Head(HeadError::Wal(err)) => err.is_temporary(),
            _ => false,
        }
    }

    /// The `outcome` label of a profile refused with this error.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Refused(refusal) => refusal.reason(),
            Self::OutOfWindow { .. } => "not_in_ingestion_window",
            Self::Head(HeadError::Full { .. }) => "head_full",
            Self::Head(HeadError::Wal(crate::head::WalError::Full { .. })) => "wal_full",
            Self::Head(HeadError::Wal(_)) => "wal_error",
            Self::Head(_) => "error",
            Self::OverBurst { .. } | Self::RequestTooLarge { .. } => "too_large",
            _ => "invalid",
        }
    }
}

impl crate::error::Classify for IngestError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            Self::Refused(_) => ErrorClass::Limited,
            Self::Head(err) => crate::error::Classify::class(err),
            Self::Decode(_)
            | Self::Labels(_)
            | Self::Name(_)
            | Self::Series(_)
            | Self::OutOfWindow { .. }
            | Self::OverBurst { .. }
            | Self::RequestTooLarge { .. } => ErrorClass::Client,
        }
    }
}

/// What one accepted profile added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    pub series: usize,
    pub samples: usize,
    pub time_ms: i64,
}

/// Whether a profile's samples still have to be taken from its tenant's ingestion rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Checked as the profile is ingested.
    Pending,
    /// Taken already, with the rest of its request ([`Ingester::admit_request`]).
    Granted,
}

/// How a profile reaches [`Ingester::ingest`].
struct Delivery<'a> {
    /// Overrides the profile's own time.
    time_ms: Option<i64>,
    durability: Durability,
    admission: Admission,
    /// Replaces some of the profile's values (a cumulative profile stored as a delta).
    column_values: Option<&'a ColumnValues>,
}

impl Delivery<'_> {
    /// A pushed profile: its client waits for the WAL's fsync.
    fn pushed(time_ms: Option<i64>, admission: Admission) -> Self {
        Self {
            time_ms,
            durability: Durability::Acknowledged,
            admission,
            column_values: None,
        }
    }
}

/// Pushed series whose cumulative memory profiles are turned into deltas on the server, at
/// most this many at once. Past it the states are dropped wholesale and every series primes
/// again (one profile each without alloc_* values) — a bound on memory, since a state holds a
/// key per distinct stack of its last profile.
pub const MAX_DELTA_SERIES: usize = 1024;

/// Validates profiles and appends them to the head.
pub struct Ingester {
    head: Arc<Head>,
    limits: DecodeLimits,
    tenant_limits: Arc<Limits>,
    /// Per tenant and pushed series labels: the previous cumulative profile (see
    /// [`Ingester::push_series`]).
    deltas: parking_lot::Mutex<HashMap<(Tenant, Labels), delta::CumulativeDelta>>,
    /// Recording rules, evaluated on every profile once it is stored.
    recorder: Option<Arc<crate::rules::Recorder>>,
}

impl Ingester {
    pub fn new(head: Arc<Head>, limits: DecodeLimits) -> Self {
        Self {
            head,
            limits,
            tenant_limits: Arc::new(Limits::unlimited()),
            deltas: parking_lot::Mutex::new(HashMap::new()),
            recorder: None,
        }
    }

    /// Evaluates the tenants' recording rules on every stored profile (pushed or scraped).
    pub(crate) fn with_recorder(mut self, recorder: Arc<crate::rules::Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Enforces per-tenant ingestion rates and series limits (none by default).
    pub fn with_tenant_limits(mut self, tenant_limits: Arc<Limits>) -> Self {
        self.tenant_limits = tenant_limits;
        self
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Ingests one pprof (gzip or raw). `labels` may carry `__name__`; if absent it is derived
    /// from the sample types. `time_ms` overrides the profile's own `time_nanos`.
    pub async fn push_pprof(
        &self,
        tenant: &Tenant,
        labels: Labels,
        raw: Bytes,
        time_ms: Option<i64>,
    ) -> Result<Ingested, IngestError> {
        let profile = pprof::decode(&raw, &self.limits)?;
        self.push_decoded(tenant, labels, raw, &profile, time_ms).await
    }

    /// Ingests one pprof pushed over push.v1 with its series labels, applying Pyroscope v1's
    /// `__delta__` rule (`pkg/phlaredb/head.go`, `delta.go`): unless `__delta__="false"` (what
    /// Alloy sends: it diffs cumulative profiles itself), a Go memory profile
    /// (`__name__="memory"`) holds cumulative `alloc_objects`/`alloc_space`, which are stored as
    /// the difference to the series' previous profile. The first profile of a series (and the
    /// first after a restart, when counts go down) only primes: it is stored without its alloc_*
    /// values, its inuse_* ones kept as is. The stored (and write-ahead-logged) profile is the
    /// delta, so a replay reproduces exactly what was acknowledged.
    pub async fn push_series(&self, tenant: &Tenant, labels: Labels, raw: Bytes) -> Result<Ingested, IngestError> {
        let profile = self.decode(&raw)?;
        self.push_series_decoded(tenant, labels, raw, &profile, Admission::Pending)
            .await
    }

    /// Decodes a pushed profile under this ingester's limits.
    pub fn decode(&self, raw: &[u8]) -> Result<Profile, IngestError> {
        Ok(pprof::decode(raw, &self.limits)?)
    }

    /// Decodes one profile of a request whose other profiles already take `used` of
    /// `max_request_decoded_bytes`: this one may take what is left (and at most
    /// `max_decoded_bytes`), checked while it decodes. Returns it and its decoded size.
    pub fn decode_in_request(&self, raw: &[u8], used: usize) -> Result<(Profile, usize), IngestError> {
        let left = self.limits.max_request_decoded_bytes.saturating_sub(used);
        let limits = DecodeLimits {
            max_decoded_bytes: self.limits.max_decoded_bytes.min(left),
            ..self.limits.clone()
        };
        match pprof::decode(raw, &limits) {
            Ok(profile) => {
                let size = pprof::decoded_size(&profile);
                Ok((profile, size))
            }
            Err(DecodeError::DecodedTooLarge { .. }) if left < self.limits.max_decoded_bytes => {
                Err(IngestError::RequestTooLarge {
                    limit: self.limits.max_request_decoded_bytes,
                })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// [`Ingester::decode_in_request`] short enough for the async threads: the same limits, and
    /// at most `cap` bytes decompressed and decoded. `Ok(None)` when the profile needs more:
    /// the caller then decodes it with [`Ingester::decode_in_request`] on the blocking pool,
    /// which also reports whether it is over a real limit.
    pub fn decode_in_request_capped(
        &self,
        raw: &[u8],
        used: usize,
        cap: usize,
    ) -> Result<Option<(Profile, usize)>, IngestError> {
        let left = self.limits.max_request_decoded_bytes.saturating_sub(used);
        match pprof::decode(raw, &self.limits.capped(cap.min(left))) {
            Ok(profile) => {
                let size = pprof::decoded_size(&profile);
                Ok(Some((profile, size)))
            }
            Err(err) if err.is_over_size() => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Takes `bytes` of profiles from the tenant's byte rate (`ingestion_rate_mb`) before they
    /// are decoded: 429 ([`IngestError::Refused`]) when over it for now, 400
    /// ([`IngestError::OverBurst`]) when more than its whole burst.
    pub fn admit_bytes(&self, tenant: &Tenant, bytes: usize) -> Result<(), IngestError> {
        let limits = self.tenant_limits.for_tenant(tenant);
        if limits.ingestion_rate_mb > 0.0 && bytes as f64 > limits.ingestion_burst_size_mb * crate::limits::MIB {
            return Err(IngestError::OverBurst {
                tenant: tenant.to_string(),
                bytes,
                burst_mb: limits.ingestion_burst_size_mb,
            });
        }
        Ok(self.tenant_limits.admit_bytes(tenant, &limits, bytes)?)
    }

    /// Gives back bytes [`Ingester::admit_bytes`] took for profiles refused for now (429/503),
    /// so their retry is charged once.
    pub fn refund_bytes(&self, tenant: &Tenant, bytes: usize) {
        let limits = self.tenant_limits.for_tenant(tenant);
        self.tenant_limits.refund_bytes(tenant, &limits, bytes);
    }

    /// Takes a whole request's `samples` (weighed by [`pprof::sample_weight`]) from the
    /// tenant's ingestion rate at once, so a request is stored whole or refused whole (a
    /// retried request never stores its first profiles twice). Its profiles then go in with
    /// [`Admission::Granted`].
    pub fn admit_request(&self, tenant: &Tenant, samples: usize) -> Result<(), IngestError> {
        let limits = self.tenant_limits.for_tenant(tenant);
        Ok(self.tenant_limits.admit(tenant, &limits, samples)?)
    }

    /// [`Ingester::push_series`] of a profile the caller decoded with [`Ingester::decode`].
    pub async fn push_series_decoded(
        &self,
        tenant: &Tenant,
        labels: Labels,
        raw: Bytes,
        profile: &Profile,
        admission: Admission,
    ) -> Result<Ingested, IngestError> {
        let already_delta = labels.get(LABEL_DELTA) == Some("false");
        let name = labels
            .get(LABEL_NAME)
            .map_or_else(|| metric_name(profile), str::to_string);
        let cumulative = if already_delta || name != "memory" {
            Vec::new()
        } else {
            delta::cumulative_indices(profile, &name)
                .into_iter()
                .filter(|&index| {
                    let sample_type = &profile.sample_type[index];
                    let type_name = profile.string_table[sample_type.r#type as usize].as_str();
                    type_name == "alloc_objects" || type_name == "alloc_space"
                })
                .collect()
        };
        if cumulative.is_empty() {
            return self
                .ingest(tenant, labels, raw, profile, Delivery::pushed(None, admission))
                .await;
        }
        let mut key_labels = labels.clone();
        key_labels.remove(LABEL_DELTA);
        let key = (tenant.clone(), key_labels);
        let (values, generation) = {
            let mut deltas = self.deltas.lock();
            if !deltas.contains_key(&key) && deltas.len() >= MAX_DELTA_SERIES {
                deltas.clear();
            }
            let state = deltas.entry(key.clone()).or_default();
            let values = state
                .apply_values(profile, &cumulative)
                .unwrap_or_else(|| ColumnValues::zeroed(&cumulative));
            (values, state.generation())
        };
        // The WAL keeps the bytes as sent and the delta's values beside them: nothing is
        // encoded again, and replay applies the same values to the same decoded profile.
        let ingested = self
            .ingest(
                tenant,
                labels,
                raw,
                profile,
                Delivery {
                    column_values: Some(&values),
                    ..Delivery::pushed(None, admission)
                },
            )
            .await;
        if ingested.as_ref().is_err_and(IngestError::is_temporary_refusal) {
            // Refused for now: the next profile's delta covers this window too.
            if let Some(state) = self.deltas.lock().get_mut(&key) {
                state.undo(generation);
            }
        }
        ingested
    }

    /// Series whose cumulative profiles the server currently diffs.
    pub fn delta_series(&self) -> usize {
        self.deltas.lock().len()
    }

    /// Ingests an already decoded profile; `raw` must be its encoding (the WAL keeps it).
    /// Returns once it is fsynced: the caller may acknowledge it.
    pub async fn push_decoded(
        &self,
        tenant: &Tenant,
        labels: Labels,
        raw: Bytes,
        profile: &Profile,
        time_ms: Option<i64>,
    ) -> Result<Ingested, IngestError> {
        self.ingest(
            tenant,
            labels,
            raw,
            profile,
            Delivery::pushed(time_ms, Admission::Pending),
        )
        .await
    }

    /// [`Ingester::push_decoded`] for a scraped profile: nobody waits for an acknowledgement, so
    /// it returns before the WAL's fsync (see [`Durability::Deferred`]). A cumulative profile is
    /// stored as its delta `values` (from [`delta::CumulativeDelta::apply_values`] on
    /// `profile`); `raw` stays the scraped bytes either way.
    pub async fn push_scraped(
        &self,
        tenant: &Tenant,
        labels: Labels,
        raw: Bytes,
        profile: &Profile,
        values: Option<&ColumnValues>,
        time_ms: i64,
    ) -> Result<Ingested, IngestError> {
        self.ingest(
            tenant,
            labels,
            raw,
            profile,
            Delivery {
                time_ms: Some(time_ms),
                durability: Durability::Deferred,
                admission: Admission::Pending,
                column_values: values,
            },
        )
        .await
    }

    async fn ingest(
        &self,
        tenant: &Tenant,
        mut labels: Labels,
        raw: Bytes,
        profile: &Profile,
        delivery: Delivery<'_>,
    ) -> Result<Ingested, IngestError> {
        let Delivery {
            time_ms,
            durability,
            admission,
            column_values,
        } = delivery;
        let name = match labels.remove(LABEL_NAME) {
            Some(name) => name,
            None => metric_name(profile),
        };
        // Pyroscope's default ingestion relabel rule for `__name__=~"godeltaprof_(.*)"` (Alloy's
        // godeltaprof_* targets): the name is `$1` and the profile already holds deltas (so
        // [`Ingester::push_series`] never diffs it: its name is not `memory` there).
        let name = match name.strip_prefix("godeltaprof_") {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => name,
        };
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
            return Err(IngestError::Name(name));
        }
        if labels.get(LABEL_SERVICE_NAME).is_none() {
            labels.set(LABEL_SERVICE_NAME, UNKNOWN_SERVICE);
        }
        // Private labels are the server's to set; `__session_id__` is the one client label kept.
        let private: Vec<String> = labels
            .iter()
            .filter(|(key, _)| key.starts_with("__") && *key != "__session_id__")
            .map(|(key, _)| key.to_string())
            .collect();
        for key in private {
            labels.remove(&key);
        }
        let series = series_specs(&name, &labels, profile)?;
        let time_ms = time_ms.unwrap_or(if profile.time_nanos > 0 {
            profile.time_nanos / 1_000_000
        } else {
            crate::now_ms()
        });
        let limits = self.tenant_limits.for_tenant(tenant);
        let (from_ms, until_ms) = limits.ingestion_window(crate::now_ms());
        let (from_ms, until_ms) = (from_ms.max(-MAX_TIME_MS), until_ms.min(MAX_TIME_MS));
        if time_ms < from_ms || time_ms > until_ms {
            return Err(IngestError::OutOfWindow {
                time_ms,
                from_ms,
                until_ms,
            });
        }
        if !self
            .head
            .within_series_limit(tenant, time_ms, &series, limits.max_global_series_per_user)
        {
            return Err(Refusal::Series {
                tenant: tenant.to_string(),
                limit: limits.max_global_series_per_user,
            }
            .into());
        }
        if admission == Admission::Pending {
            self.tenant_limits
                .admit(tenant, &limits, pprof::sample_weight(profile))?;
        }
        self.head
            .append(tenant, time_ms, raw, profile, column_values, &series, durability)
            .await?;
        // After the append: only what was stored counts, and a rule never refuses a profile.
        if let Some(recorder) = &self.recorder {
            recorder.observe(tenant, &series, profile).await;
        }
        Ok(Ingested {
            series: series.len(),
            samples: column_values.map_or(profile.sample.len(), |values| values.kept_samples(profile)),
            time_ms,
        })
    }
}

/// Sample type given to a pprof sample type whose type string is empty (string index 0), which
/// `go tool pprof` opens and some profilers write: stored as `<name>:unknown:<unit>:…` rather
/// than refused, so what Go's reader accepts, Pyrite stores.
pub const FALLBACK_SAMPLE_TYPE: &str = "unknown";
/// Sample unit given to a sample type whose unit string is empty.
pub const FALLBACK_SAMPLE_UNIT: &str = "unknown";

/// One part of a profile type ID from a string of the profile: `:` (the ID's separator) and
/// control characters become `_`, and an empty part is `fallback` (when the part must not be
/// empty).
fn profile_type_part(text: &str, fallback: Option<&str>) -> String {
    match fallback {
        Some(fallback) if text.is_empty() => fallback.to_string(),
        _ => text
            .chars()
            .map(|c| if c == ':' || c.is_control() { '_' } else { c })
            .collect(),
    }
}

/// The series one pprof is split into, one per sample type: the edge's normalisation of what a
/// profile may name (see [`FALLBACK_SAMPLE_TYPE`]) and the one rule on what is stored. Every
/// series returned passes [`SeriesSpec::new`], which WAL replay and the block reader apply to
/// what they read back, so what is accepted here is accepted by every later stage.
pub fn series_specs(name: &str, labels: &Labels, profile: &Profile) -> Result<Vec<SeriesSpec>, IngestError> {
    let string = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|index| profile.string_table.get(index))
            .map_or("", String::as_str)
    };
    let (period_type, period_unit) = profile
        .period_type
        .as_ref()
        .map_or((String::new(), String::new()), |period| {
            (
                profile_type_part(string(period.r#type), None),
                profile_type_part(string(period.unit), None),
            )
        });
    let mut series: Vec<SeriesSpec> = Vec::with_capacity(profile.sample_type.len());
    for (value_index, sample_type) in profile.sample_type.iter().enumerate() {
        // Pyroscope's default ingestion relabel rule (`pkg/validation/relabeling.go`): CPU
        // time inside a wall profile (@pyroscope/nodejs with collectCpuTime, .NET) is
        // `process_cpu`, so it sits with every other CPU profile.
        let name = if name == "wall" && string(sample_type.r#type) == "cpu" {
            "process_cpu"
        } else {
            name
        };
        let mut profile_type = ProfileType {
            name: name.to_string(),
            sample_type: profile_type_part(string(sample_type.r#type), Some(FALLBACK_SAMPLE_TYPE)),
            sample_unit: profile_type_part(string(sample_type.unit), Some(FALLBACK_SAMPLE_UNIT)),
            period_type: period_type.clone(),
            period_unit: period_unit.clone(),
        };
        // Two sample types of one name (both empty, say) would be one series adding up
        // unrelated values: the later ones are told apart by their position.
        if series.iter().any(|earlier| earlier.profile_type == profile_type) {
            profile_type.sample_type = format!("{}_{value_index}", profile_type.sample_type);
        }
        let mut series_labels = labels.clone();
        series_labels.set(LABEL_NAME, name);
        series_labels.set(LABEL_PROFILE_TYPE, &profile_type.id());
        series_labels.set("__type__", &profile_type.sample_type);
        series_labels.set("__unit__", &profile_type.sample_unit);
        series.push(SeriesSpec::new(series_labels, profile_type, value_index)?);
    }
    Ok(series)
}

/// The profile name Pyroscope derives from a pprof's sample types when the client names none
/// (grafana/pyroscope `pprof.RawProfile.metricName`).
pub fn metric_name(profile: &Profile) -> String {
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|sample_type| profile.string_table[sample_type.r#type as usize].as_str())
        .collect();
    if types.contains(&"wall") {
        return "wall".into();
    }
    for sample_type in &types {
        let display = match *sample_type {
            "samples" => "cpu",
            "goroutine" => "goroutines",
            "contentions" => "mutex_count",
            "delay" => "mutex_duration",
            other => other,
        };
        if display.contains("cpu") {
            return "process_cpu".into();
        }
        if display.contains("alloc_") || display.contains("inuse_") || display == "space" || display == "objects" {
            return "memory".into();
        }
        if display.contains("mutex_") {
            return "mutex".into();
        }
        if display.contains("block_") {
            return "block".into();
        }
        if display.contains("goroutines") {
            return "goroutine".into();
        }
    }
    match types.last() {
        Some(name) if !name.is_empty() => profile_type_part(name, None),
        _ => FALLBACK_SAMPLE_TYPE.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::testing::{TempStore, corpus_file};
    use crate::limits::{RuntimeConfig, TenantLimits};
    use crate::model::Selector;
    use crate::query::{Querier, SelectParams};

    /// alloc_space of a memory series as the query API reports it.
    async fn alloc_space(head: &Arc<Head>, tenant: &Tenant) -> i64 {
        let params = SelectParams {
            tenant: tenant.clone(),
            profile_type: ProfileType::parse("memory:alloc_space:bytes:space:bytes").unwrap(),
            selector: Selector::parse(r#"{service_name="refused"}"#).unwrap(),
            from_ms: 0,
            until_ms: i64::MAX,
        };
        let querier = Querier::new(head.clone(), head.storage().clone());
        querier.select_merge(&params).await.unwrap().total()
    }

    #[tokio::test]
    async fn a_request_shares_one_decoded_size_budget_and_bytes_over_the_burst_never_fit() {
        let store = TempStore::new();
        let raw = corpus_file("gotarget__cpu_5s.pb.gz");
        let size = pprof::decoded_size(&pprof::decode(&raw, &DecodeLimits::default()).unwrap());
        let limits = DecodeLimits {
            max_request_decoded_bytes: size * 2 + size / 2,
            ..DecodeLimits::default()
        };
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), limits);
        let (_, first) = ingester.decode_in_request(&raw, 0).unwrap();
        assert_eq!(first, size);
        ingester.decode_in_request(&raw, size).unwrap();
        let third = ingester.decode_in_request(&raw, size * 2).unwrap_err();
        assert!(matches!(third, IngestError::RequestTooLarge { .. }), "{third}");
        assert_eq!(third.outcome(), "too_large");

        let tenant = Tenant::parse("t").unwrap();
        let tenant_limits = Limits::unlimited();
        let ingester = ingester.with_tenant_limits(Arc::new(tenant_limits));
        ingester.admit_bytes(&tenant, usize::MAX).unwrap();
        let limited = Ingester::new(head, DecodeLimits::default()).with_tenant_limits(Arc::new(
            Limits::load(TenantLimits::default(), RuntimeConfig::default()).unwrap(),
        ));
        let over = limited.admit_bytes(&tenant, 65 << 20).unwrap_err();
        assert!(
            matches!(over, IngestError::OverBurst { .. }) && over.is_client_error(),
            "{over}"
        );
        limited.admit_bytes(&tenant, 1 << 20).unwrap();
    }

    #[tokio::test]
    async fn a_refused_cumulative_push_is_covered_by_the_next_delta() {
        let store = TempStore::new();
        let overrides = store.dir.path().join("overrides.yaml");
        let set_overrides =
            |text: &str, seconds: u64| crate::limits::write_overrides_for_test(&overrides, text, seconds);
        set_overrides("overrides: {}\n", 0);
        let tenant_limits = Arc::new(
            Limits::load(
                TenantLimits::default(),
                RuntimeConfig {
                    file: Some(overrides.clone()),
                    ..RuntimeConfig::default()
                },
            )
            .unwrap(),
        );
        let decode_limits = DecodeLimits::default();
        let head = store.open().await;
        let ingester = Ingester::new(head.clone(), decode_limits.clone()).with_tenant_limits(tenant_limits.clone());
        let tenant = Tenant::parse("t").unwrap();
        let labels = Labels::new([
            ("service_name".to_string(), "refused".to_string()),
            (LABEL_NAME.to_string(), "memory".to_string()),
        ])
        .unwrap();
        let (t0, t1) = (
            corpus_file("gotarget__allocs_t0.pb.gz"),
            corpus_file("gotarget__allocs_t1.pb.gz"),
        );

        ingester.push_series(&tenant, labels.clone(), t0.clone()).await.unwrap();
        assert_eq!(alloc_space(&head, &tenant).await, 0, "the first profile primes");

        set_overrides("overrides:\n  t: { ingestion_rate: 1, ingestion_burst_size: 1 }\n", 5);
        assert!(tenant_limits.reload().unwrap());
        let refused = ingester.push_series(&tenant, labels.clone(), t1.clone()).await;
        assert!(
            matches!(refused, Err(IngestError::Refused(Refusal::Rate { .. }))),
            "{refused:?}"
        );

        set_overrides("overrides: {}\n", 10);
        assert!(tenant_limits.reload().unwrap());
        ingester.push_series(&tenant, labels, t1.clone()).await.unwrap();
        let expected = {
            let (t0, t1) = (
                pprof::decode(&t0, &decode_limits).unwrap(),
                pprof::decode(&t1, &decode_limits).unwrap(),
            );
            let cumulative = delta::cumulative_indices(&t0, "memory");
            let mut state = delta::CumulativeDelta::new();
            state.apply(&t0, &cumulative);
            let delta = state.apply(&t1, &cumulative).unwrap();
            let alloc_space = t1
                .sample_type
                .iter()
                .position(|sample_type| t1.string_table[sample_type.r#type as usize] == "alloc_space")
                .unwrap();
            delta.sample.iter().map(|sample| sample.value[alloc_space]).sum::<i64>()
        };
        assert!(expected > 0);
        assert_eq!(alloc_space(&head, &tenant).await, expected, "t1 - t0, nothing lost");
    }

    /// Every memory value of the `refused` series as the query API reports it.
    async fn memory_totals(head: &Arc<Head>, tenant: &Tenant) -> Vec<i64> {
        let querier = Querier::new(head.clone(), head.storage().clone());
        let mut totals = Vec::new();
        for id in [
            "memory:alloc_objects:count:space:bytes",
            "memory:alloc_space:bytes:space:bytes",
            "memory:inuse_objects:count:space:bytes",
            "memory:inuse_space:bytes:space:bytes",
        ] {
            let params = SelectParams {
                tenant: tenant.clone(),
                profile_type: ProfileType::parse(id).unwrap(),
                selector: Selector::parse(r#"{service_name="refused"}"#).unwrap(),
                from_ms: 0,
                until_ms: i64::MAX,
            };
            totals.push(querier.select_merge(&params).await.unwrap().total());
        }
        totals
    }

    /// A pushed cumulative profile is logged as the bytes the client sent plus the delta's
    /// values (nothing re-encoded), and a replay of that log stores exactly what was accepted.
    #[tokio::test]
    async fn a_delta_is_logged_as_sent_plus_its_values_and_replays_the_same() {
        let store = TempStore::new();
        let tenant = Tenant::parse("t").unwrap();
        let labels = Labels::new([
            ("service_name".to_string(), "refused".to_string()),
            (LABEL_NAME.to_string(), "memory".to_string()),
        ])
        .unwrap();
        let (t0, t1) = (
            corpus_file("gotarget__heap_t0.pb.gz"),
            corpus_file("gotarget__heap_t1.pb.gz"),
        );
        let accepted = {
            let head = store.open().await;
            let ingester = Ingester::new(head.clone(), DecodeLimits::default());
            let primed = ingester.push_series(&tenant, labels.clone(), t0.clone()).await.unwrap();
            let delta = ingester.push_series(&tenant, labels, t1.clone()).await.unwrap();
            // What the delta step makes of t1, built as a profile the old way.
            let limits = DecodeLimits::default();
            let (p0, p1) = (
                pprof::decode(&t0, &limits).unwrap(),
                pprof::decode(&t1, &limits).unwrap(),
            );
            let cumulative = delta::cumulative_indices(&p0, "memory");
            let mut state = delta::CumulativeDelta::new();
            state.apply(&p0, &cumulative);
            let expected = state.apply(&p1, &cumulative).unwrap();
            assert_eq!(delta.samples, expected.sample.len());
            // Priming keeps the samples with an inuse_* value only.
            let kept = p0
                .sample
                .iter()
                .filter(|sample| {
                    sample
                        .value
                        .iter()
                        .enumerate()
                        .any(|(index, &value)| !cumulative.contains(&index) && value != 0)
                })
                .count();
            assert_eq!(primed.samples, kept);
            let totals = memory_totals(&head, &tenant).await;
            let inuse = |profile: &Profile, name: &str| {
                let index = profile
                    .sample_type
                    .iter()
                    .position(|sample_type| profile.string_table[sample_type.r#type as usize] == name)
                    .unwrap();
                profile.sample.iter().map(|sample| sample.value[index]).sum::<i64>()
            };
            assert_eq!(
                totals,
                [
                    inuse(&expected, "alloc_objects"),
                    inuse(&expected, "alloc_space"),
                    inuse(&p0, "inuse_objects") + inuse(&p1, "inuse_objects"),
                    inuse(&p0, "inuse_space") + inuse(&p1, "inuse_space"),
                ]
            );
            assert!(totals[1] > 0);
            totals
        };
        let replay = crate::head::Wal::read_only(&store.dir.path().join("wal")).unwrap();
        let records: Vec<crate::proto::pyrite::v1::WalRecord> = replay
            .records
            .iter()
            .map(|record| prost::Message::decode(record.payload.as_slice()).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        for (record, sent) in records.iter().zip([&t0, &t1]) {
            assert_eq!(&record.raw_profile, sent, "the WAL keeps the bytes as sent");
            assert!(record.column_values.is_some());
        }
        assert!(
            records[0].column_values.as_ref().unwrap().values.is_empty(),
            "priming: all 0"
        );
        let head = store.open().await;
        assert_eq!(memory_totals(&head, &tenant).await, accepted);
    }

    /// Fuzzing (fuzz/, target `folded`; BENCHMARKS.md "Fuzzing"): lines of one stack whose
    /// scaled values sum past i64::MAX overflowed `parse_folded`'s per-stack total (a panic with
    /// overflow checks, a negative total in release). The profile's total is checked now, so
    /// such a body is refused with the line that overflows.
    #[test]
    fn folded_fuzz_crashes_parse() {
        for name in ["overflow-0", "overflow-1", "overflow-2"] {
            let path = format!("{}/testdata/fuzz/folded/{name}", env!("CARGO_MANIFEST_DIR"));
            let body = std::fs::read(path).unwrap();
            match parse_folded(
                &body,
                ("cpu", "nanoseconds"),
                None,
                10_000_000,
                &DecodeLimits::default(),
            ) {
                Err(FoldedError::Overflow { .. }) => {}
                Ok(folded) => assert!(
                    folded.profile.sample.iter().all(|sample| sample.value[0] >= 0),
                    "{name}"
                ),
                Err(err) => panic!("{name}: {err}"),
            }
        }
    }
}
