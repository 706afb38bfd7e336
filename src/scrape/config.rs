//! `scrape_configs:` of the main config file, in the spirit of Prometheus and Alloy's
//! `pyroscope.scrape`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::relabel::RelabelConfig;

/// One scrape job: a set of targets (static, file or Kubernetes discovery), the profiles pulled
/// from each, and the tenant the data lands in.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    /// X-Scope-OrgID the data lands in.
    pub tenant: String,
    #[serde(with = "humantime_serde")]
    pub scrape_interval: Duration,
    /// Deadline of one scrape; CPU profiles get `cpu_seconds` more.
    #[serde(with = "humantime_serde")]
    pub scrape_timeout: Duration,
    /// `http` or `https`, unless a target sets `__scheme__`.
    pub scheme: String,
    pub static_configs: Vec<StaticConfig>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub kubernetes_sd_configs: Vec<KubernetesSdConfig>,
    /// Prometheus-style relabeling of discovered targets (`keep`, `drop`, `replace`, `labelmap`).
    pub relabel_configs: Vec<RelabelConfig>,
    /// Profiles pulled from every target: a known name (`process_cpu`, `memory`, `goroutine`,
    /// `mutex`, `block`, `fgprof`, `godeltaprof_memory`, `godeltaprof_mutex`,
    /// `godeltaprof_block`) or a map overriding `path`/`params`/`delta`, or defining a custom one.
    pub profiles: Vec<ProfileSpec>,
    /// `seconds` of CPU profiles; default: `scrape_interval` − 1 s, as Alloy.
    pub cpu_seconds: Option<u64>,
    /// Internal: the default job's target is this server's own listen address.
    #[serde(skip)]
    pub scrape_self: bool,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            job_name: String::new(),
            tenant: crate::model::DEFAULT_TENANT.to_string(),
            scrape_interval: Duration::from_secs(15),
            scrape_timeout: Duration::from_secs(10),
            scheme: "http".into(),
            static_configs: Vec::new(),
            file_sd_configs: Vec::new(),
            kubernetes_sd_configs: Vec::new(),
            relabel_configs: Vec::new(),
            profiles: ["process_cpu", "memory", "goroutine", "mutex", "block"]
                .into_iter()
                .map(|name| ProfileSpec::Name(name.to_string()))
                .collect(),
            cpu_seconds: None,
            scrape_self: false,
        }
    }
}

impl ScrapeConfig {
    /// The default config's job: Pyrite scraping its own `/debug/pprof/profile`, so a newcomer
    /// sees a flame graph a minute after starting it. CPU only (the Rust process serves no Go
    /// heap/mutex endpoints), 5 s profiles every 15 s: short enough not to hold up a shutdown.
    pub fn self_scrape() -> Self {
        Self {
            job_name: "pyrite".into(),
            profiles: vec![ProfileSpec::Name("process_cpu".into())],
            cpu_seconds: Some(5),
            static_configs: vec![StaticConfig {
                targets: vec!["localhost:4040".into()],
                labels: BTreeMap::from([("service_name".to_string(), "pyrite".to_string())]),
            }],
            scrape_self: true,
            ..Self::default()
        }
    }

    /// `seconds` of a CPU profile.
    pub fn cpu_seconds(&self) -> u64 {
        self.cpu_seconds
            .unwrap_or_else(|| self.scrape_interval.as_secs().saturating_sub(1).max(1))
    }

    pub fn validate(&self) -> Result<(), String> {
        let job = &self.job_name;
        if job.is_empty() {
            return Err("scrape_configs: job_name is required".into());
        }
        if self.scrape_interval < Duration::from_secs(1) {
            return Err(format!("scrape_configs {job}: scrape_interval must be at least 1s"));
        }
        if self.scrape_timeout.is_zero() {
            return Err(format!("scrape_configs {job}: scrape_timeout must be positive"));
        }
        if !matches!(self.scheme.as_str(), "http" | "https") {
            return Err(format!("scrape_configs {job}: scheme must be http or https"));
        }
        crate::model::Tenant::parse(&self.tenant).map_err(|err| format!("scrape_configs {job}: tenant: {err}"))?;
        let endpoints = self.endpoints()?;
        if endpoints.is_empty() {
            return Err(format!("scrape_configs {job}: no profiles"));
        }
        if endpoints.iter().any(|e| e.seconds) {
            let seconds = self.cpu_seconds();
            if seconds == 0 || Duration::from_secs(seconds) >= self.scrape_interval {
                return Err(format!(
                    "scrape_configs {job}: cpu_seconds ({seconds}) must be at least 1 and less than scrape_interval"
                ));
            }
        }
        for file_sd in &self.file_sd_configs {
            if file_sd.files.is_empty() || file_sd.refresh_interval.is_zero() {
                return Err(format!(
                    "scrape_configs {job}: file_sd_configs need files and a positive refresh_interval"
                ));
            }
        }
        for kubernetes in &self.kubernetes_sd_configs {
            if kubernetes.role != "pod" {
                return Err(format!("scrape_configs {job}: kubernetes_sd_configs role must be pod"));
            }
            if kubernetes.api_server.is_some() && kubernetes.kubeconfig_file.is_some() {
                return Err(format!(
                    "scrape_configs {job}: kubernetes_sd_configs take api_server or kubeconfig_file, not both"
                ));
            }
            if let Some(url) = &kubernetes.api_server {
                url.parse::<http::Uri>()
                    .map_err(|err| format!("scrape_configs {job}: kubernetes_sd_configs api_server {url:?}: {err}"))?;
            }
        }
        for rule in &self.relabel_configs {
            rule.validate()
                .map_err(|err| format!("scrape_configs {job}: relabel_configs: {err}"))?;
        }
        Ok(())
    }

    /// The endpoints scraped from each target, defaults resolved.
    pub fn endpoints(&self) -> Result<Vec<ProfileEndpoint>, String> {
        let mut endpoints: Vec<ProfileEndpoint> = Vec::new();
        for spec in &self.profiles {
            let endpoint = spec
                .resolve()
                .map_err(|err| format!("scrape_configs {}: {err}", self.job_name))?;
            if endpoints.iter().any(|e| e.name == endpoint.name) {
                return Err(format!(
                    "scrape_configs {}: profile {} listed twice",
                    self.job_name, endpoint.name
                ));
            }
            endpoints.push(endpoint);
        }
        Ok(endpoints)
    }
}

/// A profile entry of `profiles:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ProfileSpec {
    Name(String),
    Custom(CustomProfile),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomProfile {
    pub name: String,
    pub path: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The endpoint samples for `seconds` (as `/debug/pprof/profile`).
    pub seconds: Option<bool>,
    /// Profile name stored as `__name__` (default: `name`, or the known name's).
    pub metric_name: Option<String>,
}

/// What is fetched for one profile of a target.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileEndpoint {
    /// Name in config and in the `profile` label of the scrape metrics.
    pub name: String,
    /// `__name__` of the stored series.
    pub metric_name: String,
    pub path: String,
    pub params: BTreeMap<String, String>,
    /// Adds `seconds=<cpu_seconds>` and extends the timeout by as much.
    pub seconds: bool,
    /// Whether Pyrite computes deltas of its cumulative sample types.
    pub delta: bool,
}

/// Alloy's `profiling_config` defaults (SPEC.md §7, PYROSCOPE-COMPAT.md §6).
fn known(name: &str) -> Option<ProfileEndpoint> {
    let (metric_name, path, seconds, delta) = match name {
        "process_cpu" => ("process_cpu", "/debug/pprof/profile", true, false),
        "memory" => ("memory", "/debug/pprof/allocs", false, true),
        "goroutine" => ("goroutine", "/debug/pprof/goroutine", false, false),
        "mutex" => ("mutex", "/debug/pprof/mutex", false, true),
        "block" => ("block", "/debug/pprof/block", false, true),
        "fgprof" => ("fgprof", "/debug/fgprof", true, false),
        // godeltaprof already serves deltas.
        "godeltaprof_memory" => ("memory", "/debug/pprof/delta_heap", false, false),
        "godeltaprof_mutex" => ("mutex", "/debug/pprof/delta_mutex", false, false),
        "godeltaprof_block" => ("block", "/debug/pprof/delta_block", false, false),
        _ => return None,
    };
    Some(ProfileEndpoint {
        name: name.to_string(),
        metric_name: metric_name.to_string(),
        path: path.to_string(),
        params: BTreeMap::new(),
        seconds,
        delta,
    })
}

impl ProfileSpec {
    pub fn resolve(&self) -> Result<ProfileEndpoint, String> {
        match self {
            Self::Name(name) => known(name).ok_or_else(|| format!("unknown profile {name:?} (give a path)")),
            Self::Custom(custom) => {
                let mut endpoint = match known(&custom.name) {
                    Some(endpoint) => endpoint,
                    None => ProfileEndpoint {
                        name: custom.name.clone(),
                        metric_name: custom.name.clone(),
                        path: custom
                            .path
                            .clone()
                            .ok_or_else(|| format!("custom profile {:?} needs a path", custom.name))?,
                        params: BTreeMap::new(),
                        seconds: false,
                        delta: false,
                    },
                };
                if let Some(path) = &custom.path {
                    endpoint.path = path.clone();
                }
                if !endpoint.path.starts_with('/') {
                    return Err(format!("profile {}: path must start with /", custom.name));
                }
                endpoint.params.extend(custom.params.clone());
                if let Some(seconds) = custom.seconds {
                    endpoint.seconds = seconds;
                }
                if let Some(metric_name) = &custom.metric_name {
                    endpoint.metric_name = metric_name.clone();
                }
                if endpoint.metric_name.is_empty() || endpoint.metric_name.contains(':') {
                    return Err(format!("profile {}: invalid name", custom.name));
                }
                Ok(endpoint)
            }
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Files of target groups (`[{targets: [...], labels: {...}}]`, YAML or JSON), re-read when
/// their modification time changes (polled every `refresh_interval`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileSdConfig {
    /// Paths; the last component may hold `*` and `?` wildcards.
    pub files: Vec<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for FileSdConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            refresh_interval: Duration::from_secs(30),
        }
    }
}

/// Pods of a cluster opting in by `profiles.grafana.com/<profile>.scrape: "true"` annotations,
/// watched (not polled) through the API server.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesSdConfig {
    pub role: String,
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    /// API server reached without credentials (e.g. `kubectl proxy`'s `http://127.0.0.1:8001`).
    pub api_server: Option<String>,
    /// Cluster and credentials from this kubeconfig (its current context).
    pub kubeconfig_file: Option<PathBuf>,
    /// Only pods matching this label selector (`app=cart,tier!=batch`), filtered by the API
    /// server.
    pub label_selector: Option<String>,
    /// Only pods matching this field selector, e.g. `spec.nodeName=node-a` to split a cluster
    /// between Pyrite replicas node by node.
    pub field_selector: Option<String>,
}

impl Default for KubernetesSdConfig {
    fn default() -> Self {
        Self {
            role: "pod".into(),
            namespaces: Vec::new(),
            api_server: None,
            kubeconfig_file: None,
            label_selector: None,
            field_selector: None,
        }
    }
}
