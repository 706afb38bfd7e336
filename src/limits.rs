//! Per-tenant limits: defaults from the main config (`tenant_limits`), overridden per tenant by a
//! Mimir-shaped runtime file (`runtime_config.file`, `overrides: {tenant: {...}}`) that is re-read
//! when it changes, without a restart. Owns the ingestion rate limiter: one token bucket per
//! tenant, so a tenant over its rate is refused (429) while every other tenant goes on as before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use crate::model::Tenant;

/// What one tenant may do. Names follow Mimir's overrides (with Pyroscope's as aliases where
/// they mean the same), so an existing overrides file carries over.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Profile samples per second, sustained; 0: unlimited.
    pub ingestion_rate: f64,
    /// Samples accepted at once above the sustained rate; a profile with more samples than
    /// this is always refused. A sample weighs one per started 64 frames of its stack (see
    /// [`crate::pprof::sample_weight`]).
    pub ingestion_burst_size: f64,
    /// Profile bytes per second, as sent (gzipped or not), in MiB (Pyroscope's name), charged
    /// before a request's profiles are decoded, so decoding work is bounded per tenant too;
    /// 0: unlimited.
    pub ingestion_rate_mb: f64,
    /// MiB accepted at once; a request carrying more profile bytes can never be accepted and
    /// is refused with 400. The default equals `api.max_body_bytes`' default (64 MiB).
    pub ingestion_burst_size_mb: f64,
    /// Distinct series (label set × profile type) in the head, which holds everything since the
    /// last flush; 0: unlimited.
    #[serde(alias = "max_global_series_per_tenant")]
    pub max_global_series_per_user: usize,
    /// Blocks whose time range ended longer ago than this are deleted; 0: kept forever.
    #[serde(with = "humantime_serde")]
    pub compactor_blocks_retention_period: Duration,
    /// Longest time range one query may read (Pyroscope's name); 0: any.
    #[serde(with = "humantime_serde")]
    pub max_query_length: Duration,
    /// How far back queries see: earlier parts of a range are left out; 0: all of it.
    #[serde(with = "humantime_serde")]
    pub max_query_lookback: Duration,
    /// Profiles stamped further in the past are refused (400); 0: any age. Off by default, so
    /// `pyrite push` can import an incident profile captured days ago (Pyroscope: 1h).
    #[serde(with = "humantime_serde")]
    pub reject_older_than: Duration,
    /// Profiles stamped further in the future are refused (400): a client with a wrong clock
    /// would otherwise write into buckets no window asks for yet; 0: any time.
    #[serde(with = "humantime_serde")]
    pub reject_newer_than: Duration,
    /// Recording rules the tenant may keep through `settings.v1.RecordingRulesService`
    /// (Pyroscope's default: 25); rules from the config file are not counted. Each rule is
    /// evaluated on every profile of the tenant, so this bounds ingest overhead too.
    pub max_recording_rules: usize,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            ingestion_rate: 500_000.0,
            ingestion_burst_size: 5_000_000.0,
            ingestion_rate_mb: 4.0,
            ingestion_burst_size_mb: 64.0,
            max_global_series_per_user: 100_000,
            compactor_blocks_retention_period: Duration::ZERO,
            max_query_length: Duration::ZERO,
            max_query_lookback: Duration::ZERO,
            reject_older_than: Duration::ZERO,
            reject_newer_than: Duration::from_secs(600),
            max_recording_rules: 25,
        }
    }
}

impl TenantLimits {
    /// The times a profile ingested at `now_ms` may carry, as `[from, until]` in ms.
    pub fn ingestion_window(&self, now_ms: i64) -> (i64, i64) {
        let from = match self.reject_older_than {
            age if age.is_zero() => i64::MIN,
            age => now_ms.saturating_sub(crate::model::duration_ms(age)),
        };
        let until = match self.reject_newer_than {
            ahead if ahead.is_zero() => i64::MAX,
            ahead => now_ms.saturating_add(crate::model::duration_ms(ahead)),
        };
        (from, until)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.ingestion_rate >= 0.0 && self.ingestion_rate.is_finite()) {
            return Err("ingestion_rate must be a number of samples per second, 0 or more".into());
        }
        if self.ingestion_rate > 0.0 && !(self.ingestion_burst_size >= 1.0 && self.ingestion_burst_size.is_finite()) {
            return Err("ingestion_burst_size must be at least 1 when ingestion_rate is set".into());
        }
        if !(self.ingestion_rate_mb >= 0.0 && self.ingestion_rate_mb.is_finite()) {
            return Err("ingestion_rate_mb must be a number of MiB per second, 0 or more".into());
        }
        if self.ingestion_rate_mb > 0.0
            && !(self.ingestion_burst_size_mb > 0.0 && self.ingestion_burst_size_mb.is_finite())
        {
            return Err("ingestion_burst_size_mb must be positive when ingestion_rate_mb is set".into());
        }
        Ok(())
    }
}

/// Bytes in the MiB of `ingestion_rate_mb` and `ingestion_burst_size_mb`.
pub const MIB: f64 = 1024.0 * 1024.0;

/// Where the overrides file is and how often it is checked for changes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// YAML with `overrides: {<tenant>: {<limit>: value}}`; none: every tenant has the defaults.
    pub file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            file: None,
            period: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("overrides file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Why a profile was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "tenant {tenant} is over its ingestion rate of {rate} samples/s (burst {burst}): \
         {samples} samples refused, retry later"
    )]
    Rate {
        tenant: String,
        rate: f64,
        burst: f64,
        samples: usize,
    },
    #[error(
        "tenant {tenant} is over its ingestion rate of {rate_mb} MiB/s (burst {burst_mb} MiB): \
         {bytes} bytes of profiles refused, retry later"
    )]
    Bytes {
        tenant: String,
        rate_mb: f64,
        burst_mb: f64,
        bytes: usize,
    },
    #[error("tenant {tenant} has reached its limit of {limit} series; a new series was refused")]
    Series { tenant: String, limit: usize },
}

impl Refusal {
    /// Short reason for metrics: `rate_limited` or `series_limit`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Rate { .. } | Self::Bytes { .. } => "rate_limited",
            Self::Series { .. } => "series_limit",
        }
    }
}

/// The overrides file. `overrides` is required (`overrides: {}` when there are none), so a file
/// cut off before it, or empty, is refused like a malformed one and the last good one stays:
/// a half-written save must not drop every tenant's limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverridesFile {
    /// Required, and not null: a file cut after `overrides:` must not lift every override.
    overrides: Option<HashMap<String, Option<PartialLimits>>>,
}

/// A tenant's entry in the overrides file: what it names replaces the default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct PartialLimits {
    ingestion_rate: Option<f64>,
    ingestion_burst_size: Option<f64>,
    ingestion_rate_mb: Option<f64>,
    ingestion_burst_size_mb: Option<f64>,
    #[serde(alias = "max_global_series_per_tenant")]
    max_global_series_per_user: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    compactor_blocks_retention_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_query_length: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_query_lookback: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    reject_older_than: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    reject_newer_than: Option<Duration>,
    max_recording_rules: Option<usize>,
}

impl PartialLimits {
    fn over(&self, defaults: &TenantLimits) -> TenantLimits {
        TenantLimits {
            ingestion_rate: self.ingestion_rate.unwrap_or(defaults.ingestion_rate),
            ingestion_burst_size: self.ingestion_burst_size.unwrap_or(defaults.ingestion_burst_size),
            ingestion_rate_mb: self.ingestion_rate_mb.unwrap_or(defaults.ingestion_rate_mb),
            ingestion_burst_size_mb: self.ingestion_burst_size_mb.unwrap_or(defaults.ingestion_burst_size_mb),
            max_global_series_per_user: self
                .max_global_series_per_user
                .unwrap_or(defaults.max_global_series_per_user),
            compactor_blocks_retention_period: self
                .compactor_blocks_retention_period
                .unwrap_or(defaults.compactor_blocks_retention_period),
            max_query_length: self.max_query_length.unwrap_or(defaults.max_query_length),
            max_query_lookback: self.max_query_lookback.unwrap_or(defaults.max_query_lookback),
            reject_older_than: self.reject_older_than.unwrap_or(defaults.reject_older_than),
            reject_newer_than: self.reject_newer_than.unwrap_or(defaults.reject_newer_than),
            max_recording_rules: self.max_recording_rules.unwrap_or(defaults.max_recording_rules),
        }
    }
}

/// Parses an overrides file's text into complete limits per tenant.
fn parse_overrides(text: &str, defaults: &TenantLimits) -> Result<HashMap<Tenant, TenantLimits>, String> {
    if text.trim().is_empty() {
        return Err("the file is empty (with no overrides, write `overrides: {}`)".into());
    }
    let file: OverridesFile = serde_yaml::from_str(text).map_err(|err| err.to_string())?;
    let Some(overrides) = file.overrides else {
        return Err("no `overrides:` entries (half-written?); write `overrides: {}` for none".into());
    };
    let mut limits = HashMap::new();
    for (tenant, partial) in overrides {
        // `tenant:` with nothing after it is where a half-written file may end.
        let partial = partial.ok_or_else(|| format!("tenant {tenant:?} names no limits"))?;
        let tenant = Tenant::parse(&tenant).map_err(|err| format!("tenant {tenant:?}: {err}"))?;
        let complete = partial.over(defaults);
        complete.validate().map_err(|err| format!("tenant {tenant}: {err}"))?;
        limits.insert(tenant, complete);
    }
    Ok(limits)
}

struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

/// The limits in force, and the rate limiter's state.
pub struct Limits {
    defaults: TenantLimits,
    runtime: RuntimeConfig,
    overrides: RwLock<Arc<HashMap<Tenant, TenantLimits>>>,
    /// The overrides file and the version of it in force.
    file: Option<crate::reload::WatchedFile>,
    buckets: Mutex<HashMap<Tenant, TokenBucket>>,
    /// The same for profile bytes (`ingestion_rate_mb`).
    byte_buckets: Mutex<HashMap<Tenant, TokenBucket>>,
}

impl Limits {
    /// Defaults for every tenant, nothing overridden, no file.
    pub fn unlimited() -> Self {
        Self::new(
            TenantLimits {
                ingestion_rate: 0.0,
                ingestion_rate_mb: 0.0,
                max_global_series_per_user: 0,
                ..TenantLimits::default()
            },
            RuntimeConfig::default(),
        )
    }

    fn new(defaults: TenantLimits, runtime: RuntimeConfig) -> Self {
        Self {
            defaults,
            file: runtime.file.clone().map(crate::reload::WatchedFile::new),
            runtime,
            overrides: RwLock::new(Arc::new(HashMap::new())),
            buckets: Mutex::new(HashMap::new()),
            byte_buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Limits from the main config; reads the overrides file once, so a broken file stops the
    /// start with a clear error instead of running on defaults.
    pub fn load(defaults: TenantLimits, runtime: RuntimeConfig) -> Result<Self, LimitsError> {
        let limits = Self::new(defaults, runtime);
        limits.reload()?;
        Ok(limits)
    }

    pub fn for_tenant(&self, tenant: &Tenant) -> TenantLimits {
        self.overrides
            .read()
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    /// Tenants the overrides file names.
    pub fn overridden_tenants(&self) -> Vec<Tenant> {
        self.overrides.read().keys().cloned().collect()
    }

    /// Re-reads the overrides file if its modification time or size changed; true if it was
    /// read. A file that does not parse, is empty or changes while read keeps the limits in force.
    pub fn reload(&self) -> Result<bool, LimitsError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let error = |reason: String| LimitsError::File {
            path: file.path().to_path_buf(),
            reason,
        };
        let Some((text, stamp)) = file.read_if_changed().map_err(error)? else {
            return Ok(false);
        };
        let overrides = parse_overrides(&text, &self.defaults).map_err(error)?;
        *self.overrides.write() = Arc::new(overrides);
        file.taken(stamp);
        Ok(true)
    }

    /// Re-reads the overrides file every `runtime_config.period` until the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let Some(path) = self.runtime.file.clone() else {
            return;
        };
        let mut ticks = tokio::time::interval(self.runtime.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(file = %path.display(), "reloaded per-tenant overrides"),
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "keeping the per-tenant overrides in force"),
            }
        }
    }

    /// Takes `samples` from the tenant's token bucket, or refuses them all (taking nothing);
    /// `limits` are the tenant's, as [`Limits::for_tenant`] gave them to the caller.
    pub fn admit(&self, tenant: &Tenant, limits: &TenantLimits, samples: usize) -> Result<(), Refusal> {
        self.admit_with(tenant, limits, samples, Instant::now())
    }

    fn admit_with(&self, tenant: &Tenant, limits: &TenantLimits, samples: usize, now: Instant) -> Result<(), Refusal> {
        let (rate, burst) = (limits.ingestion_rate, limits.ingestion_burst_size);
        if take(&self.buckets, tenant, rate, burst, samples as f64, now) {
            Ok(())
        } else {
            Err(Refusal::Rate {
                tenant: tenant.to_string(),
                rate,
                burst,
                samples,
            })
        }
    }

    /// Takes `bytes` of profiles from the tenant's byte bucket (`ingestion_rate_mb`), or
    /// refuses them all (taking nothing). The caller refuses a request larger than the whole
    /// burst itself (it never fits: a 400, not a 429).
    pub fn admit_bytes(&self, tenant: &Tenant, limits: &TenantLimits, bytes: usize) -> Result<(), Refusal> {
        let (rate_mb, burst_mb) = (limits.ingestion_rate_mb, limits.ingestion_burst_size_mb);
        if take(
            &self.byte_buckets,
            tenant,
            rate_mb * MIB,
            burst_mb * MIB,
            bytes as f64,
            Instant::now(),
        ) {
            Ok(())
        } else {
            Err(Refusal::Bytes {
                tenant: tenant.to_string(),
                rate_mb,
                burst_mb,
                bytes,
            })
        }
    }

    /// Gives back `bytes` taken by [`Limits::admit_bytes`] for profiles that were then refused
    /// for now (429/503, nothing stored), so the client's retry is not charged twice.
    pub fn refund_bytes(&self, tenant: &Tenant, limits: &TenantLimits, bytes: usize) {
        if limits.ingestion_rate_mb <= 0.0 {
            return;
        }
        if let Some(bucket) = self.byte_buckets.lock().get_mut(tenant) {
            bucket.tokens = (bucket.tokens + bytes as f64).min(limits.ingestion_burst_size_mb * MIB);
        }
    }

    pub fn overrides_file(&self) -> Option<&Path> {
        self.runtime.file.as_deref()
    }
}

/// Takes `wanted` tokens from `tenant`'s bucket (refilled at `rate` per second up to `burst`),
/// or nothing if there are fewer; a `rate` of 0 or less is no limit.
fn take(
    buckets: &Mutex<HashMap<Tenant, TokenBucket>>,
    tenant: &Tenant,
    rate: f64,
    burst: f64,
    wanted: f64,
    now: Instant,
) -> bool {
    if rate <= 0.0 {
        return true;
    }
    let mut buckets = buckets.lock();
    let bucket = buckets.entry(tenant.clone()).or_insert(TokenBucket {
        tokens: burst,
        updated: now,
    });
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
    bucket.updated = now;
    if wanted > bucket.tokens {
        return false;
    }
    bucket.tokens -= wanted;
    true
}

/// Writes an overrides file stamped `ahead_secs` in the future, so a reload sees a new
/// modification time even within the filesystem's timestamp granularity.
#[cfg(test)]
pub(crate) fn write_overrides_for_test(path: &Path, text: &str, ahead_secs: u64) {
    std::fs::write(path, text).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(ahead_secs))
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Tenant {
        Tenant::parse(name).unwrap()
    }

    impl Limits {
        fn admit_at(&self, tenant: &Tenant, samples: usize, now: Instant) -> Result<(), Refusal> {
            self.admit_with(tenant, &self.for_tenant(tenant), samples, now)
        }
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let defaults = TenantLimits::default();
        let parsed = parse_overrides(
            "overrides:\n  platform: { ingestion_rate: 5, max_global_series_per_user: 7, compactor_blocks_retention_period: 90d }\n  agents: { max_global_series_per_tenant: 3 }\n",
            &defaults,
        )
        .unwrap();
        let platform = &parsed[&tenant("platform")];
        assert_eq!(platform.ingestion_rate, 5.0);
        assert_eq!(platform.ingestion_burst_size, defaults.ingestion_burst_size);
        assert_eq!(platform.max_global_series_per_user, 7);
        assert_eq!(
            platform.compactor_blocks_retention_period,
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parsed[&tenant("agents")].max_global_series_per_user, 3);
        assert!(parse_overrides("overrides: {}", &defaults).unwrap().is_empty());
        // Empty or cut off: refused, so the last good file stays in force.
        for half in [
            "",
            "  \n",
            "# nothing",
            "overrides:",
            "{}",
            "overrides:\n  platform:\n",
            "overrides:\n  platform:\n    ingestion_ra",
        ] {
            assert!(parse_overrides(half, &defaults).is_err(), "{half}");
        }
        assert!(parse_overrides("overrides: { a: { ingestion_rat: 1 } }", &defaults).is_err());
        assert!(parse_overrides("overrides: { 'a/b': {} }", &defaults).is_err());
        assert!(parse_overrides("overrides: { a: { ingestion_rate: -1 } }", &defaults).is_err());
    }

    #[test]
    fn a_tenant_over_its_rate_is_refused_and_the_others_are_not() {
        let limits = Limits::unlimited();
        *limits.overrides.write() = Arc::new(HashMap::from([(
            tenant("small"),
            TenantLimits {
                ingestion_rate: 10.0,
                ingestion_burst_size: 100.0,
                ..TenantLimits::default()
            },
        )]));
        let start = Instant::now();
        limits.admit_at(&tenant("small"), 60, start).unwrap();
        let refused = limits.admit_at(&tenant("small"), 60, start).unwrap_err();
        assert!(matches!(refused, Refusal::Rate { samples: 60, .. }), "{refused}");
        // Nothing was taken by the refusal: 40 are left.
        limits.admit_at(&tenant("small"), 40, start).unwrap();
        // Refilled at 10/s: after 3 s, 30 more.
        assert!(
            limits
                .admit_at(&tenant("small"), 31, start + Duration::from_secs(3))
                .is_err()
        );
        limits
            .admit_at(&tenant("small"), 30, start + Duration::from_secs(3))
            .unwrap();
        // Never more than the burst, however long the pause.
        assert!(
            limits
                .admit_at(&tenant("small"), 101, start + Duration::from_secs(3600))
                .is_err()
        );
        // Another tenant is untouched.
        limits.admit_at(&tenant("other"), 1_000_000, start).unwrap();
    }

    #[test]
    fn bytes_are_taken_before_decoding_and_given_back_for_a_retry() {
        let limits = Limits::unlimited();
        let small = TenantLimits {
            ingestion_rate_mb: 1e-9,
            ingestion_burst_size_mb: 1.0,
            ..TenantLimits::default()
        };
        let t = tenant("t");
        limits.admit_bytes(&t, &small, 600 << 10).unwrap();
        let refused = limits.admit_bytes(&t, &small, 600 << 10).unwrap_err();
        assert!(
            matches!(refused, Refusal::Bytes { bytes, .. } if bytes == 600 << 10),
            "{refused}"
        );
        assert_eq!(refused.reason(), "rate_limited");
        // The first request was then refused for now: its bytes come back, once.
        limits.refund_bytes(&t, &small, 600 << 10);
        limits.refund_bytes(&t, &small, 600 << 10);
        limits.admit_bytes(&t, &small, 1 << 20).unwrap();
        assert!(limits.admit_bytes(&t, &small, 1).is_err(), "never more than the burst");
        // Unlimited by default for `Limits::unlimited`'s tenants.
        limits
            .admit_bytes(
                &t,
                &TenantLimits {
                    ingestion_rate_mb: 0.0,
                    ..small
                },
                usize::MAX,
            )
            .unwrap();
    }

    #[test]
    fn the_file_is_reread_when_it_changes_and_a_broken_one_keeps_the_old_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overrides.yaml");
        std::fs::write(&path, "overrides:\n  a: { ingestion_rate: 1 }\n").unwrap();
        let limits = Limits::load(
            TenantLimits::default(),
            RuntimeConfig {
                file: Some(path.clone()),
                ..RuntimeConfig::default()
            },
        )
        .unwrap();
        assert_eq!(limits.for_tenant(&tenant("a")).ingestion_rate, 1.0);
        assert_eq!(limits.for_tenant(&tenant("b")), TenantLimits::default());
        assert!(!limits.reload().unwrap(), "unchanged");

        let touch = |text: &str, seconds: u64| write_overrides_for_test(&path, text, seconds);
        touch("overrides:\n  a: { ingestion_rate: 2 }\n", 5);
        assert!(limits.reload().unwrap());
        assert_eq!(limits.for_tenant(&tenant("a")).ingestion_rate, 2.0);
        touch("overrides: [", 10);
        assert!(limits.reload().is_err());
        assert_eq!(limits.for_tenant(&tenant("a")).ingestion_rate, 2.0);
        // Empty (an editor truncating before it writes): refused too, the old limits stay.
        touch("", 15);
        assert!(limits.reload().unwrap_err().to_string().contains("empty"));
        assert_eq!(limits.for_tenant(&tenant("a")).ingestion_rate, 2.0);
    }
}
