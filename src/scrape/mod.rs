//! Scraping of Go `net/http/pprof` endpoints: Pyrite pulls profiles on a schedule, with no agent
//! in between. A scraped profile takes the path of a pushed one ([`Ingester::push_scraped`]:
//! the same ingest, without waiting for the WAL's fsync, as nobody waits for an
//! acknowledgement); cumulative profiles (allocations, mutex, block) are turned into deltas per
//! target first ([`crate::ingest::delta`]).
//!
//! Every (target, profile) pair runs on its own task and timer, offset by a stable hash of the
//! target so that many targets do not fire at once; one scrape of a pair is in flight at most,
//! a slow target only delays itself, and every scrape has a deadline and a body size cap.
//! Discovery (static, files, Kubernetes pods) runs per job and reconciles the set of tasks.

pub mod config;
pub mod discovery;
pub mod metrics;
pub mod relabel;

pub use config::{FileSdConfig, KubernetesSdConfig, ProfileEndpoint, ProfileSpec, ScrapeConfig, StaticConfig};
pub use metrics::ScrapeMetrics;
pub use relabel::{RelabelAction, RelabelConfig, Relabeler};

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::ingest::Ingester;
use crate::ingest::delta::{CumulativeDelta, cumulative_indices};
use crate::model::{LABEL_NAME, LABEL_SERVICE_NAME, Labels, Tenant};
use discovery::{ADDRESS, FileDiscovery, PROFILE, PROFILE_PATH, PodDiscovery, SCHEME, TargetLabels};

/// How long a job waits after a pod change before planning its targets again.
const POD_CHANGE_SETTLE: Duration = Duration::from_secs(1);

async fn sleep_or_pending(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// What every scrape task shares.
struct Shared {
    ingester: Arc<Ingester>,
    metrics: ScrapeMetrics,
    client: reqwest::Client,
}

/// The running scrapers; dropping it (or [`stop`](Self::stop)) stops every task.
///
/// Scrapes run on their own single-threaded runtime, on one thread: a thousand small scrapes a
/// minute stop bouncing between the API's worker threads (an eighth of the scraper's CPU in the
/// 200-target benchmark, BENCHMARKS.md), and a burst of decoding never delays a query or a push.
pub struct ScrapeManager {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScrapeManager {
    /// Starts one discovery loop per job. `self_address` is where this server listens: the
    /// default self-scrape job targets it.
    /// With `peers`, this replica scrapes only the targets it owns among them (every replica
    /// still scrapes itself).
    pub fn start(
        configs: Vec<ScrapeConfig>,
        self_address: SocketAddr,
        ingester: Arc<Ingester>,
        metrics: ScrapeMetrics,
        peers: Option<Arc<crate::cluster::Peers>>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("pyrite/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let shared = Arc::new(Shared {
            ingester,
            metrics,
            client,
        });
        let mut jobs = Vec::new();
        for mut config in configs {
            config.validate().map_err(anyhow::Error::msg)?;
            if config.scrape_self {
                let address = loopback(self_address);
                for group in &mut config.static_configs {
                    group.targets = vec![address.to_string()];
                }
            }
            let mut job = Job::new(config)?;
            if !job.config.scrape_self {
                job.peers = peers.clone();
            }
            jobs.push(job);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pyrite-scrape".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for job in jobs {
                        tokio::spawn(job.run(shared.clone()));
                    }
                    let _ = stopped.await;
                });
                // Cancels every scrape at its next await; a DNS lookup in flight is not waited for.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops every scrape and waits until none is left (so none lands after a final flush).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the scrape thread panicked");
        }
    }
}

impl Drop for ScrapeManager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listen address as a client reaches it: unspecified becomes loopback.
fn loopback(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), address.port()),
        _ => address,
    }
}

struct Job {
    config: ScrapeConfig,
    tenant: Tenant,
    endpoints: Vec<ProfileEndpoint>,
    relabeler: Relabeler,
    /// The cluster this job's targets are split across; `None`: all of them are this replica's.
    peers: Option<Arc<crate::cluster::Peers>>,
}

/// A scrape task's identity: a change of any of it is a different task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TaskKey {
    url: String,
    profile: String,
    labels: Vec<(String, String)>,
}

struct Task {
    handle: JoinHandle<()>,
    metric_labels: metrics::TargetLabels,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Job {
    fn new(config: ScrapeConfig) -> anyhow::Result<Self> {
        Ok(Self {
            tenant: Tenant::parse(&config.tenant)?,
            endpoints: config.endpoints().map_err(anyhow::Error::msg)?,
            relabeler: Relabeler::new(&config.relabel_configs).map_err(anyhow::Error::msg)?,
            config,
            peers: None,
        })
    }

    async fn run(self, shared: Arc<Shared>) {
        let mut files: Vec<FileDiscovery> = self
            .config
            .file_sd_configs
            .iter()
            .map(|_| FileDiscovery::default())
            .collect();
        let pods_changed = Arc::new(tokio::sync::Notify::new());
        let pods: Vec<PodDiscovery> = self
            .config
            .kubernetes_sd_configs
            .iter()
            .map(|config| PodDiscovery::start(&self.config.job_name, config, pods_changed.clone()))
            .collect();
        let file_refresh = self.config.file_sd_configs.iter().map(|f| f.refresh_interval).min();
        let mut tasks: BTreeMap<TaskKey, Task> = BTreeMap::new();
        loop {
            let mut discovered = discovery::static_targets(&self.config.static_configs);
            for (file, config) in files.iter_mut().zip(&self.config.file_sd_configs) {
                discovered.extend(file.refresh(config));
            }
            for pods in &pods {
                discovered.extend(pods.targets());
            }
            let wanted = self.plan(discovered);
            tasks.retain(|key, task| {
                let keep = wanted.contains_key(key);
                if !keep {
                    shared.metrics.forget(&task.metric_labels);
                }
                keep
            });
            for (key, target) in wanted {
                if tasks.contains_key(&key) {
                    continue;
                }
                let metric_labels = target.metric_labels.clone();
                let handle = tokio::spawn(target.run(shared.clone()));
                tasks.insert(key, Task { handle, metric_labels });
            }
            shared.metrics.targets.set(tasks.len() as i64);
            tokio::select! {
                _ = sleep_or_pending(file_refresh) => {}
                _ = pods_changed.notified() => {
                    // A rollout changes many pods within moments: plan once for all of them.
                    tokio::time::sleep(POD_CHANGE_SETTLE).await;
                }
            }
        }
    }

    /// Relabels discovered targets and expands them into one scrape target per profile.
    fn plan(&self, discovered: Vec<TargetLabels>) -> BTreeMap<TaskKey, ScrapeTarget> {
        let mut wanted = BTreeMap::new();
        for mut labels in discovered {
            labels
                .entry("job".into())
                .or_insert_with(|| self.config.job_name.clone());
            labels
                .entry(SCHEME.into())
                .or_insert_with(|| self.config.scheme.clone());
            let Some(mut labels) = self.relabeler.apply(labels) else {
                continue;
            };
            let Some(address) = labels.get(ADDRESS).cloned().filter(|a| !a.is_empty()) else {
                continue;
            };
            if let Some(peers) = &self.peers
                && !peers.owns(&format!("{}/{address}", self.config.job_name))
            {
                continue;
            }
            labels.entry("instance".into()).or_insert_with(|| address.clone());
            let only = labels.get(PROFILE).map(|p| {
                if p == "cpu" {
                    "process_cpu".to_string()
                } else {
                    p.clone()
                }
            });
            let endpoints: Vec<ProfileEndpoint> = match &only {
                Some(name) => match self.endpoints.iter().find(|e| &e.name == name) {
                    Some(endpoint) => vec![endpoint.clone()],
                    None => match ProfileSpec::Name(name.clone()).resolve() {
                        Ok(endpoint) => vec![endpoint],
                        Err(err) => {
                            tracing::warn!(job = %self.config.job_name, %address, error = %err, "skipping target");
                            continue;
                        }
                    },
                },
                None => self.endpoints.clone(),
            };
            for mut endpoint in endpoints {
                if let Some(path) = labels.get(PROFILE_PATH) {
                    endpoint.path = path.clone();
                }
                let target = ScrapeTarget::new(&self.config, &self.tenant, &labels, &address, endpoint);
                match target {
                    Ok(target) => {
                        wanted.insert(target.key.clone(), target);
                    }
                    Err(err) => {
                        tracing::warn!(job = %self.config.job_name, %address, error = %err, "skipping target")
                    }
                }
            }
        }
        wanted
    }
}

/// One profile of one target.
struct ScrapeTarget {
    key: TaskKey,
    /// Parsed once: parsing (and IDNA-normalizing) it on every request was measurable.
    url: reqwest::Url,
    tenant: Tenant,
    endpoint: ProfileEndpoint,
    labels: Labels,
    interval: Duration,
    timeout: Duration,
    offset: Duration,
    metric_labels: metrics::TargetLabels,
}

/// FNV-1a: stable across builds and processes (std's hasher is not promised to be).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl ScrapeTarget {
    fn new(
        config: &ScrapeConfig,
        tenant: &Tenant,
        labels: &TargetLabels,
        address: &str,
        endpoint: ProfileEndpoint,
    ) -> Result<Self, String> {
        let scheme = labels.get(SCHEME).map_or("http", String::as_str);
        let mut url = url::Url::parse(&format!("{scheme}://{address}{}", endpoint.path))
            .map_err(|err| format!("invalid target URL: {err}"))?;
        let seconds = config.cpu_seconds();
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in &endpoint.params {
                query.append_pair(key, value);
            }
            if endpoint.seconds {
                query.append_pair("seconds", &seconds.to_string());
            }
        }
        let mut url = url.to_string();
        if url.ends_with('?') {
            url.pop();
        }
        let mut pairs: Vec<(String, String)> = labels
            .iter()
            .filter(|(key, _)| !key.starts_with("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !labels.contains_key(LABEL_SERVICE_NAME) {
            pairs.push((LABEL_SERVICE_NAME.into(), config.job_name.clone()));
        }
        pairs.push((LABEL_NAME.into(), endpoint.metric_name.clone()));
        let stored = Labels::new(pairs.clone()).map_err(|err| err.to_string())?;
        let mut timeout = config.scrape_timeout;
        if endpoint.seconds {
            timeout += Duration::from_secs(seconds);
        }
        let interval = config.scrape_interval;
        let offset = Duration::from_nanos(
            stable_hash(&format!("{}\0{url}", config.job_name)) % interval.as_nanos().max(1) as u64,
        );
        let instance = labels.get("instance").cloned().unwrap_or_else(|| address.to_string());
        pairs.sort();
        Ok(Self {
            key: TaskKey {
                url: url.clone(),
                profile: endpoint.name.clone(),
                labels: pairs,
            },
            metric_labels: metrics::TargetLabels {
                job: config.job_name.clone(),
                instance,
                profile: endpoint.name.clone(),
            },
            url: reqwest::Url::parse(&url).map_err(|err| format!("invalid target URL: {err}"))?,
            tenant: tenant.clone(),
            endpoint,
            labels: stored,
            interval,
            timeout,
            offset,
        })
    }

    /// Scrapes on this target's own timer until aborted; one scrape in flight at most.
    async fn run(self, shared: Arc<Shared>) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + self.offset, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut delta = CumulativeDelta::new();
        let mut last_failure: Option<String> = None;
        loop {
            ticker.tick().await;
            let started = Instant::now();
            let time_ms = crate::now_ms();
            let outcome = self.scrape(&shared, &mut delta, time_ms).await;
            let metrics = &shared.metrics;
            let labels = &self.metric_labels;
            metrics
                .duration
                .get_or_create(labels)
                .set(started.elapsed().as_secs_f64());
            match outcome {
                Ok(samples) => {
                    metrics.up.get_or_create(labels).set(1);
                    metrics.last_success.get_or_create(labels).set(time_ms as f64 / 1000.0);
                    metrics.samples.get_or_create(labels).set(samples as i64);
                    if last_failure.take().is_some() {
                        tracing::info!(job = %labels.job, instance = %labels.instance, profile = %labels.profile, "scrape recovered");
                    }
                }
                Err(failure) => {
                    metrics.up.get_or_create(labels).set(0);
                    metrics
                        .failures
                        .get_or_create(&metrics::FailureLabels {
                            job: labels.job.clone(),
                            instance: labels.instance.clone(),
                            profile: labels.profile.clone(),
                            reason: failure.reason.to_string(),
                        })
                        .inc();
                    // A failed target may come back as a new process: its next profile only
                    // primes, never a delta against the old process's counts. A refused delta
                    // was undone instead: the target answered, and the next delta covers it.
                    if !failure.refused {
                        delta.reset();
                    }
                    if last_failure.as_deref() != Some(failure.reason) {
                        tracing::warn!(
                            job = %labels.job, instance = %labels.instance, profile = %labels.profile,
                            url = %self.url, reason = failure.reason, error = %failure.message,
                            "scrape failed"
                        );
                    } else {
                        tracing::debug!(url = %self.url, reason = failure.reason, error = %failure.message, "scrape failed again");
                    }
                    last_failure = Some(failure.reason.to_string());
                }
            }
        }
    }

    /// One scrape: fetch, decode, delta if cumulative, ingest. Returns the samples stored.
    async fn scrape(&self, shared: &Shared, delta: &mut CumulativeDelta, time_ms: i64) -> Result<usize, Failure> {
        let limits = shared.ingester.limits();
        // The deadline covers the fetch only: an ingest, once started, is never cancelled
        // half-way (it may be waiting on the WAL's fsync).
        let body = tokio::time::timeout(
            self.timeout,
            fetch(&shared.client, self.url.clone(), limits.max_decompressed_bytes),
        )
        .await
        .map_err(|_| Failure::new("timeout", format!("no complete answer within {:?}", self.timeout)))??;
        let profile = crate::pprof::decode(&body, limits).map_err(|err| Failure::new("decode", err.to_string()))?;
        let cumulative = if self.endpoint.delta {
            cumulative_indices(&profile, &self.endpoint.metric_name)
        } else {
            Vec::new()
        };
        let ingested = if cumulative.is_empty() {
            shared
                .ingester
                .push_scraped(&self.tenant, self.labels.clone(), body, &profile, None, time_ms)
                .await
        } else {
            let Some(values) = delta.apply_values(&profile, &cumulative) else {
                return Ok(0); // primed: the next scrape yields the first delta
            };
            if values.kept_samples(&profile) == 0 {
                return Ok(0);
            }
            let generation = delta.generation();
            let ingested = shared
                .ingester
                .push_scraped(
                    &self.tenant,
                    self.labels.clone(),
                    body,
                    &profile,
                    Some(&values),
                    time_ms,
                )
                .await;
            if ingested
                .as_ref()
                .is_err_and(crate::ingest::IngestError::is_temporary_refusal)
            {
                // The next scrape's delta covers this window too (see the failure branch).
                delta.undo(generation);
            }
            ingested
        };
        ingested.map(|ingested| ingested.samples).map_err(|err| {
            if err.is_temporary_refusal() {
                Failure {
                    refused: true,
                    ..Failure::new(err.outcome(), err.to_string())
                }
            } else {
                Failure::new("ingest", err.to_string())
            }
        })
    }
}

#[derive(Debug)]
struct Failure {
    /// Short class, the `reason` label of `pyrite_scrape_failures_total`.
    reason: &'static str,
    message: String,
    /// Refused for now (a tenant limit, a full head): the target answered.
    refused: bool,
}

impl Failure {
    fn new(reason: &'static str, message: String) -> Self {
        Self {
            reason,
            message,
            refused: false,
        }
    }
}

/// GETs a profile, refusing non-200 answers, HTML and bodies over `limit` bytes (checked while
/// streaming, so a huge body costs at most `limit` bytes of memory).
async fn fetch(client: &reqwest::Client, url: reqwest::Url, limit: usize) -> Result<Bytes, Failure> {
    let mut response = client.get(url).send().await.map_err(|err| {
        let reason = if err.is_connect() { "connect" } else { "request" };
        Failure::new(reason, format!("{err:#}"))
    })?;
    let status = response.status();
    if !status.is_success() {
        let snippet = response
            .chunk()
            .await
            .ok()
            .flatten()
            .map(|chunk| {
                String::from_utf8_lossy(&chunk[..chunk.len().min(200)])
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        return Err(Failure::new("http_status", format!("HTTP {status}: {snippet}")));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("text/html") {
        return Err(Failure::new(
            "not_pprof",
            format!("answered {content_type}, not a pprof profile (is this a pprof endpoint?)"),
        ));
    }
    if let Some(length) = response.content_length()
        && length > limit as u64
    {
        return Err(Failure::new(
            "too_large",
            format!("body of {length} bytes is over the limit of {limit}"),
        ));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| Failure::new("request", format!("reading body: {err:#}")))?
    {
        if body.len() + chunk.len() > limit {
            return Err(Failure::new(
                "too_large",
                format!("body is over the limit of {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Every (job, target, profile) URL a config would scrape, for `--check`-style tooling and tests.
pub fn planned_urls(config: &ScrapeConfig, discovered: Vec<TargetLabels>) -> anyhow::Result<Vec<(String, Labels)>> {
    let job = Job::new(config.clone())?;
    Ok(job
        .plan(discovered)
        .into_values()
        .map(|target| (target.key.url, target.labels))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_labels_and_offsets() {
        let config: ScrapeConfig = serde_yaml::from_str(
            r#"
job_name: payments
scrape_interval: 15s
static_configs:
  - targets: ["10.0.0.5:6060"]
    labels: { env: prod }
  - targets: ["payments-1:6060"]
    labels: { service_name: payments }
profiles:
  - process_cpu
  - memory
  - { name: goroutine, params: { debug: "0" } }
  - { name: custom_heap, path: /custom/heap, metric_name: memory }
relabel_configs:
  - source_labels: [__address__]
    regex: "payments-1:.*"
    target_label: zone
    replacement: eu
"#,
        )
        .unwrap();
        config.validate().unwrap();
        let planned = planned_urls(&config, discovery::static_targets(&config.static_configs)).unwrap();
        let urls: Vec<&str> = planned.iter().map(|(url, _)| url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://10.0.0.5:6060/custom/heap",
                "http://10.0.0.5:6060/debug/pprof/allocs",
                "http://10.0.0.5:6060/debug/pprof/goroutine?debug=0",
                "http://10.0.0.5:6060/debug/pprof/profile?seconds=14",
                "http://payments-1:6060/custom/heap",
                "http://payments-1:6060/debug/pprof/allocs",
                "http://payments-1:6060/debug/pprof/goroutine?debug=0",
                "http://payments-1:6060/debug/pprof/profile?seconds=14",
            ]
        );
        let (_, first) = &planned[3];
        assert_eq!(first.get("service_name"), Some("payments"), "job name by default");
        assert_eq!(first.get("job"), Some("payments"));
        assert_eq!(first.get("instance"), Some("10.0.0.5:6060"));
        assert_eq!(first.get("env"), Some("prod"));
        assert_eq!(first.get("__name__"), Some("process_cpu"));
        assert!(first.iter().all(|(k, _)| k == "__name__" || !k.starts_with("__")));
        let (_, second) = &planned[4];
        assert_eq!(second.get("zone"), Some("eu"));
        assert_eq!(second.get("__name__"), Some("memory"));

        // Offsets: stable and spread.
        let job = Job::new(config.clone()).unwrap();
        let offsets: Vec<Duration> = job
            .plan(discovery::static_targets(&config.static_configs))
            .values()
            .map(|t| t.offset)
            .collect();
        let again: Vec<Duration> = job
            .plan(discovery::static_targets(&config.static_configs))
            .values()
            .map(|t| t.offset)
            .collect();
        assert_eq!(offsets, again);
        assert!(offsets.iter().all(|o| *o < Duration::from_secs(15)));
        let mut distinct = offsets.clone();
        distinct.dedup();
        assert!(distinct.len() > 1);
    }

    #[test]
    fn spread_of_500_targets() {
        let interval = Duration::from_secs(15);
        let mut per_second = [0usize; 15];
        for i in 0..500 {
            let offset = stable_hash(&format!(
                "job\0http://10.0.{}.{}:6060/debug/pprof/profile",
                i / 256,
                i % 256
            )) % interval.as_nanos() as u64;
            per_second[(offset / 1_000_000_000) as usize] += 1;
        }
        // 33 per second on average; no second carries a large fraction of them.
        assert!(per_second.iter().all(|&n| n < 80), "{per_second:?}");
    }

    #[test]
    fn config_validation() {
        let bad = |yaml: &str| {
            serde_yaml::from_str::<ScrapeConfig>(yaml)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate())
        };
        assert!(bad("job_name: a\nscrape_interval: 5s\ncpu_seconds: 5").is_err());
        assert!(bad("job_name: a\nprofiles: [nonsense]").is_err());
        assert!(bad("scrape_interval: 5s").is_err(), "job_name required");
        assert!(bad("job_name: a\nstatic_configs: [{targets: [x]}]\nunknown: 1").is_err());
        assert!(bad("job_name: a\nscrape_interval: 2s").is_ok());
        assert!(bad("job_name: a\ntenant: 'no/slash'").is_err());
        let kubernetes = |entry: &str| bad(&format!("job_name: a\nkubernetes_sd_configs: [{entry}]"));
        assert!(kubernetes("{role: pod, namespaces: [shop]}").is_ok());
        assert!(kubernetes("{role: node}").is_err());
        assert!(kubernetes("{api_server: 'http://a b'}").is_err());
        assert!(kubernetes("{api_server: 'http://127.0.0.1:8001', kubeconfig_file: /k}").is_err());
        assert!(
            kubernetes("{refresh_interval: 30s}").is_err(),
            "a watch has no refresh interval"
        );
    }

    #[test]
    fn loopback_of_listen_addresses() {
        assert_eq!(loopback("0.0.0.0:4040".parse().unwrap()).to_string(), "127.0.0.1:4040");
        assert_eq!(loopback("[::]:4040".parse().unwrap()).to_string(), "[::1]:4040");
        assert_eq!(loopback("10.1.2.3:9".parse().unwrap()).to_string(), "10.1.2.3:9");
    }
}
