//! One YAML file configures a Pyrite process; every field has a default that runs on a laptop,
//! so an empty file (or none) is a valid config. Unknown keys are refused, so a typo is an
//! error rather than a silently ignored setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cluster::ClusterConfig;
use crate::compactor::CompactorConfig;
use crate::head::HeadConfig;
use crate::limits::{RuntimeConfig, TenantLimits};
use crate::pprof::DecodeLimits;
use crate::retention::RetentionConfig;
use crate::scrape::ScrapeConfig;
use crate::storage::StorageConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing config {path}: {source}")]
    Parse { path: PathBuf, source: serde_yaml::Error },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory for the write-ahead log and, by default, the blocks.
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    pub head: HeadConfig,
    /// Limits applied while decoding every incoming profile.
    pub limits: DecodeLimits,
    pub api: ApiConfig,
    /// HTTP server limits: connections, header, idle and body timeouts.
    pub server: crate::server::ServerConfig,
    /// Limits of every tenant the overrides file does not name (Mimir's `limits`).
    pub tenant_limits: TenantLimits,
    /// The per-tenant overrides file, re-read when it changes (Mimir's `runtime_config`).
    pub runtime_config: RuntimeConfig,
    pub retention: RetentionConfig,
    pub compactor: CompactorConfig,
    /// Several replicas on one bucket; none by default.
    pub cluster: ClusterConfig,
    /// API token authentication; off by default.
    pub auth: crate::auth::AuthConfig,
    /// Uploaded ad-hoc profiles (`adhocprofiles.v1`): size, per-tenant caps, retention.
    pub adhoc: crate::adhoc::AdhocConfig,
    /// Targets Pyrite pulls profiles from. Default: itself (`/debug/pprof/profile` at the listen
    /// address); `scrape_configs: []` turns scraping off.
    pub scrape_configs: Vec<ScrapeConfig>,
    /// Recording rules and the Prometheus remote write their series go to; off by default.
    pub recording_rules: crate::rules::RecordingRulesConfig,
    /// OTLP profiles ingest; gRPC and OTLP/HTTP are always served on `listen` too.
    pub otlp: OtlpConfig,
}

/// OTLP profiles ingest (`api::otlp`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// A second address serving the same routes, for collectors configured with OTLP's
    /// conventional gRPC port (e.g. `127.0.0.1:4317`). Off by default.
    pub grpc_listen_address: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:4040".parse().expect("valid address"),
            data_dir: PathBuf::from("./data"),
            storage: StorageConfig::default(),
            head: HeadConfig::default(),
            limits: DecodeLimits::default(),
            api: ApiConfig::default(),
            server: crate::server::ServerConfig::default(),
            tenant_limits: TenantLimits::default(),
            runtime_config: RuntimeConfig::default(),
            retention: RetentionConfig::default(),
            compactor: CompactorConfig::default(),
            cluster: ClusterConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            adhoc: crate::adhoc::AdhocConfig::default(),
            scrape_configs: vec![ScrapeConfig::self_scrape()],
            recording_rules: crate::rules::RecordingRulesConfig::default(),
            otlp: OtlpConfig::default(),
        }
    }
}

/// Limits and defaults of the HTTP API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted (compressed size), as Pyroscope's `ingestion_body_limit`.
    pub max_body_bytes: usize,
    /// Without `X-Scope-OrgID`, answer 401 instead of using tenant `anonymous`.
    pub require_tenant_header: bool,
    /// Flame graph nodes returned when a query names no `max_nodes`.
    pub default_max_nodes: usize,
    /// Largest `max_nodes` a query may ask for.
    pub max_nodes_limit: usize,
    /// A read (querier.v1, render, peer head) running longer answers `deadline_exceeded`.
    #[serde(with = "humantime_serde")]
    pub query_timeout: std::time::Duration,
    /// Largest body of a read (querier.v1, render, peer head); pushes use `max_body_bytes`.
    pub max_query_body_bytes: usize,
    /// Reads running at once on the blocking pool (the peer head route is not counted).
    pub max_concurrent_queries: usize,
    /// How long a read waits for a turn before it is answered 503 `unavailable`.
    #[serde(with = "humantime_serde")]
    pub query_queue_timeout: std::time::Duration,
    /// Pushed profiles decoded at once on the blocking pool (others wait their turn).
    pub max_concurrent_decodes: usize,
    /// The memory budget of one flame graph query: nodes its merged tree may grow to before it
    /// is refused with 400 (narrow the selector or window), before `max_nodes` cuts the answer.
    pub max_query_tree_nodes: usize,
    /// Bytes of decoded block indexes the querier keeps (least used evicted first).
    pub index_cache_bytes: u64,
    /// Bytes of decoded block symbol tables the querier keeps (least used evicted first): a
    /// repeated query over more blocks than fit reads and decodes them again.
    pub symbol_cache_bytes: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
            require_tenant_header: false,
            default_max_nodes: 8192,
            max_nodes_limit: 1 << 20,
            query_timeout: std::time::Duration::from_secs(120),
            max_query_body_bytes: 4 * 1024 * 1024,
            max_concurrent_queries: 8,
            query_queue_timeout: std::time::Duration::from_secs(1),
            max_concurrent_decodes: std::thread::available_parallelism().map_or(4, |n| n.get()),
            max_query_tree_nodes: crate::query::DEFAULT_MAX_TREE_NODES,
            index_cache_bytes: crate::query::DEFAULT_INDEX_CACHE_BYTES,
            symbol_cache_bytes: crate::query::DEFAULT_SYMBOL_CACHE_BYTES,
        }
    }
}

impl Config {
    /// Reads and validates a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|err| match err {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates YAML text; empty text is the default config.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
                path: PathBuf::new(),
                source,
            })?
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid(message.to_string()));
        if self.head.bucket_duration.as_millis() < 1000 {
            return invalid("head.bucket_duration must be at least 1s");
        }
        if self.head.flush_interval.is_zero() {
            return invalid("head.flush_interval must be positive");
        }
        if self.otlp.grpc_listen_address == Some(self.listen) {
            return invalid("otlp.grpc_listen_address must differ from listen (which serves OTLP already)");
        }
        if self.api.max_body_bytes == 0 || self.limits.max_decompressed_bytes == 0 {
            return invalid("api.max_body_bytes and limits.max_decompressed_bytes must be positive");
        }
        if let StorageConfig::S3(s3) = &self.storage
            && s3.bucket.is_empty()
        {
            return invalid("storage.bucket is required for the s3 backend");
        }
        if self.head.max_unflushed_bytes < self.head.max_head_bytes {
            return invalid("head.max_unflushed_bytes must be at least head.max_head_bytes");
        }
        if self.api.max_query_tree_nodes == 0 {
            return invalid("api.max_query_tree_nodes must be positive");
        }
        if self.api.index_cache_bytes == 0 || self.api.symbol_cache_bytes == 0 {
            return invalid("api.index_cache_bytes and api.symbol_cache_bytes must be positive");
        }
        if self.api.query_timeout.is_zero() {
            return invalid("api.query_timeout must be positive");
        }
        if self.api.max_query_body_bytes == 0
            || self.api.max_concurrent_queries == 0
            || self.api.max_concurrent_decodes == 0
        {
            return invalid(
                "api.max_query_body_bytes, max_concurrent_queries and max_concurrent_decodes must be positive",
            );
        }
        self.server.validate().map_err(ConfigError::Invalid)?;
        if self.api.default_max_nodes == 0 || self.api.default_max_nodes > self.api.max_nodes_limit {
            return invalid("api.default_max_nodes must be between 1 and api.max_nodes_limit");
        }
        self.tenant_limits
            .validate()
            .map_err(|err| ConfigError::Invalid(format!("tenant_limits: {err}")))?;
        if self.runtime_config.period.is_zero()
            || self.retention.sweep_interval.is_zero()
            || self.compactor.interval.is_zero()
        {
            return invalid("runtime_config.period, retention.sweep_interval and compactor.interval must be positive");
        }
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        self.auth.validate().map_err(ConfigError::Invalid)?;
        self.adhoc.validate().map_err(ConfigError::Invalid)?;
        self.recording_rules.validate().map_err(ConfigError::Invalid)?;
        let mut jobs = std::collections::BTreeSet::new();
        for scrape in &self.scrape_configs {
            scrape.validate().map_err(ConfigError::Invalid)?;
            if !jobs.insert(scrape.job_name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "scrape_configs: job_name {:?} is used twice",
                    scrape.job_name
                )));
            }
        }
        Ok(())
    }

    /// Where the write-ahead log lives.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("wal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let config = Config::parse(
            "listen: 127.0.0.1:9999\nhead:\n  bucket_duration: 30m\nstorage:\n  backend: s3\n  bucket: profiles\n  endpoint: http://127.0.0.1:7480\n  allow_http: true\n",
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.head.bucket_duration.as_secs(), 1800);
        assert_eq!(config.head.flush_interval.as_secs(), 300);
        assert!(
            matches!(config.storage, StorageConfig::S3(ref s3) if s3.bucket == "profiles" && s3.path_style
            && s3.max_retries == 10 && s3.retry_timeout.as_secs() == 60 && s3.request_timeout.as_secs() == 30)
        );
    }

    #[test]
    fn shipped_configs_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let example = Config::load(&root.join("deploy/pyrite.example.yaml")).unwrap();
        assert_eq!(example.head, HeadConfig::default());
        assert_eq!(example.tenant_limits, TenantLimits::default());
        assert_eq!(example.compactor, CompactorConfig::default());
        assert_eq!(example.retention, RetentionConfig::default());
        assert_eq!(example.adhoc, crate::adhoc::AdhocConfig::default());
        assert_eq!(example.server, crate::server::ServerConfig::default());
        assert_eq!(example.recording_rules, crate::rules::RecordingRulesConfig::default());
        assert_eq!(example.otlp, OtlpConfig::default());
        let overrides = crate::limits::Limits::load(
            example.tenant_limits.clone(),
            RuntimeConfig {
                file: Some(root.join("deploy/overrides.example.yaml")),
                ..example.runtime_config.clone()
            },
        )
        .unwrap();
        let platform = overrides.for_tenant(&crate::model::Tenant::parse("platform").unwrap());
        assert_eq!(platform.max_global_series_per_user, 5_000_000);
        assert_eq!(
            platform.ingestion_burst_size,
            TenantLimits::default().ingestion_burst_size
        );
        let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/pyrite.yaml")).unwrap();
        let config_map: serde_yaml::Value = serde_yaml::from_str(manifest.split("\n---\n").next().unwrap()).unwrap();
        let embedded = Config::parse(config_map["data"]["pyrite.yaml"].as_str().unwrap()).unwrap();
        assert!(matches!(embedded.storage, StorageConfig::S3(ref s3) if s3.path_style && s3.allow_http));
        // Every replica of the StatefulSet is a peer, under its pod name.
        let stateful_set: serde_yaml::Value = manifest
            .split("\n---\n")
            .map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).unwrap())
            .find(|doc| doc["kind"] == "StatefulSet")
            .unwrap();
        let replicas = stateful_set["spec"]["replicas"].as_u64().unwrap();
        let names: Vec<String> = (0..replicas).map(|i| format!("pyrite-{i}")).collect();
        assert_eq!(embedded.cluster.peers.keys().cloned().collect::<Vec<_>>(), names);
        let headless = stateful_set["spec"]["serviceName"].as_str().unwrap();
        assert!(
            embedded
                .cluster
                .peers
                .values()
                .all(|address| address.contains(headless))
        );
    }

    #[test]
    fn refuses_typos_and_bad_values() {
        assert!(matches!(
            Config::parse("lisen: 1.2.3.4:1"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::parse("head:\n  flush_interval: 0s"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("storage:\n  backend: s3\n  bucket: ''"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("adhoc:\n  max_profile_bytes: 0"),
            Err(ConfigError::Invalid(_))
        ));
        for bad in [
            "recording_rules:\n  remote_write: { url: 'ftp://x/write' }",
            "recording_rules:\n  evaluation_interval: 10ms",
            "recording_rules:\n  external_labels: { __name__: x }",
            "recording_rules:\n  rules:\n    t: [{ id: a, metric_name: cpu, matchers: ['{__profile_type__=\"process_cpu:cpu:nanoseconds:cpu:nanoseconds\"}'] }]",
            "recording_rules:\n  rules:\n    t: [{ id: a, metric_name: pyrite_a, matchers: ['{x=\"y\"}'] }]",
        ] {
            assert!(matches!(Config::parse(bad), Err(ConfigError::Invalid(_))), "{bad}");
        }
        let good = Config::parse(
            "recording_rules:\n  remote_write: { url: 'http://127.0.0.1:9090/api/v1/write' }\n  rules:\n    t: [{ id: a, metric_name: pyrite_a, matchers: ['{__profile_type__=\"process_cpu:cpu:nanoseconds:cpu:nanoseconds\"}'], function_name: main.f }]",
        )
        .unwrap();
        assert_eq!(
            good.recording_rules.rules["t"][0].function_name.as_deref(),
            Some("main.f")
        );
    }
}
