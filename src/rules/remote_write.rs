//! Prometheus remote write (protocol 1.0: a snappy-compressed `prompb.WriteRequest`) of the
//! recorded series, from a bounded queue: ingestion only ever pushes to the queue, one task
//! sends. A full queue drops its oldest batches (counted); 5xx, 429 and network errors are
//! retried with exponential backoff until the batch is older than `max_sample_age`; any other
//! 4xx drops the batch (counted as failed: sending it again would be refused again).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prost::Message;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::heartbeat::Heartbeat;
use crate::model::Tenant;
use crate::proto::prometheus::{TimeSeries, WriteRequest};

/// `recording_rules.remote_write`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// e.g. `http://prometheus:9090/api/v1/write` (Prometheus with
    /// `--web.enable-remote-write-receiver`) or Mimir's `/api/v1/push`.
    pub url: String,
    /// Extra headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// File holding a bearer token (read at startup).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Send `X-Scope-OrgID: <tenant>` (each tenant's series to its own Mimir tenant, as
    /// Pyroscope's exporter does) unless `headers` sets it.
    #[serde(default = "yes")]
    pub tenant_header: bool,
    /// Deadline of one request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Samples waiting to be sent, at most; past it the oldest batches are dropped.
    #[serde(default = "default_queue")]
    pub max_queued_samples: usize,
    #[serde(default = "default_min_backoff", with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A batch still unsent this long after it was recorded is dropped (Prometheus refuses
    /// samples far behind its head anyway).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_sample_age: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Read at startup; takes the place of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_queue() -> usize {
    100_000
}
fn default_min_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_age() -> Duration {
    Duration::from_secs(600)
}

impl RemoteWriteConfig {
    pub fn validate(&self) -> Result<(), String> {
        let url = url::Url::parse(&self.url).map_err(|err| format!("recording_rules.remote_write.url: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("recording_rules.remote_write.url must be http or https".into());
        }
        if self.timeout.is_zero() || self.min_backoff.is_zero() || self.max_backoff < self.min_backoff {
            return Err("recording_rules.remote_write: timeout and min_backoff must be positive, max_backoff at least min_backoff".into());
        }
        if self.max_queued_samples == 0 || self.max_sample_age.is_zero() {
            return Err("recording_rules.remote_write: max_queued_samples and max_sample_age must be positive".into());
        }
        if let Some(auth) = &self.basic_auth
            && auth.password.is_some() == auth.password_file.is_some()
        {
            return Err("recording_rules.remote_write.basic_auth needs one of password and password_file".into());
        }
        for name in self.headers.keys() {
            http::HeaderName::try_from(name.as_str())
                .map_err(|_| format!("recording_rules.remote_write.headers: invalid header name {name:?}"))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `queue_full`, `too_old` or `series_limit`.
    pub reason: String,
}

/// What `/metrics` says of the recording rules and their remote write.
#[derive(Clone, Default)]
pub struct RuleMetrics {
    pub samples_sent: Counter,
    /// Refused by the receiver with a 4xx other than 429: dropped, not retried.
    pub samples_failed: Counter,
    pub samples_dropped: Family<DropLabels, Counter>,
    pub retries: Counter,
    pub queued_samples: Gauge<i64>,
    /// Profiles checked against at least one rule.
    pub profiles_evaluated: Counter,
    pub evaluation_seconds: Counter<f64, AtomicU64>,
    pub send: Heartbeat,
}

impl RuleMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            send: Heartbeat::register(registry, "recording_rules_remote_write", "Remote write requests"),
            ..Self::default()
        };
        registry.register(
            "recording_rules_samples_sent",
            "Recorded samples the remote-write receiver accepted",
            metrics.samples_sent.clone(),
        );
        registry.register(
            "recording_rules_samples_failed",
            "Recorded samples the receiver refused with a 4xx (dropped, not retried)",
            metrics.samples_failed.clone(),
        );
        registry.register(
            "recording_rules_samples_dropped",
            "Recorded samples dropped before they were accepted, by reason",
            metrics.samples_dropped.clone(),
        );
        registry.register(
            "recording_rules_remote_write_retries",
            "Remote write requests retried (5xx, 429, network errors)",
            metrics.retries.clone(),
        );
        registry.register(
            "recording_rules_queued_samples",
            "Recorded samples waiting to be sent",
            metrics.queued_samples.clone(),
        );
        registry.register(
            "recording_rules_profiles_evaluated",
            "Ingested profiles evaluated against the tenant's recording rules",
            metrics.profiles_evaluated.clone(),
        );
        registry.register(
            "recording_rules_evaluation_seconds",
            "CPU time ingestion spent evaluating recording rules",
            metrics.evaluation_seconds.clone(),
        );
        metrics
    }

    pub fn dropped(&self, reason: &str, samples: usize) {
        self.samples_dropped
            .get_or_create(&DropLabels {
                reason: reason.to_string(),
            })
            .inc_by(samples as u64);
    }
}

/// One tenant's samples of one evaluation.
pub struct Batch {
    pub tenant: Tenant,
    pub series: Vec<TimeSeries>,
    pub recorded: Instant,
}

/// The bounded queue between evaluation and the sender.
pub struct Queue {
    batches: Mutex<VecDeque<Batch>>,
    samples: Mutex<usize>,
    notify: Notify,
    max_samples: usize,
    metrics: RuleMetrics,
}

impl Queue {
    pub fn new(max_samples: usize, metrics: RuleMetrics) -> Self {
        Self {
            batches: Mutex::new(VecDeque::new()),
            samples: Mutex::new(0),
            notify: Notify::new(),
            max_samples,
            metrics,
        }
    }

    /// Queues a batch, dropping the oldest ones while it would not fit (never blocks).
    pub fn push(&self, mut batch: Batch) {
        if batch.series.is_empty() {
            return;
        }
        if batch.series.len() > self.max_samples {
            self.metrics
                .dropped("queue_full", batch.series.len() - self.max_samples);
            batch.series.truncate(self.max_samples);
        }
        let mut batches = self.batches.lock();
        let mut queued = self.samples.lock();
        while *queued + batch.series.len() > self.max_samples {
            let Some(oldest) = batches.pop_front() else { break };
            *queued -= oldest.series.len();
            self.metrics.dropped("queue_full", oldest.series.len());
        }
        *queued += batch.series.len();
        batches.push_back(batch);
        self.metrics.queued_samples.set(*queued as i64);
        drop((batches, queued));
        self.notify.notify_one();
    }

    pub(crate) async fn next(&self) -> Batch {
        loop {
            let notified = self.notify.notified();
            if let Some(batch) = self.batches.lock().pop_front() {
                let mut queued = self.samples.lock();
                *queued -= batch.series.len();
                self.metrics.queued_samples.set(*queued as i64);
                return batch;
            }
            notified.await;
        }
    }
}

/// Why one request failed.
enum SendError {
    /// Worth retrying (5xx, 429, connection errors), after at least this long.
    Retry { after: Option<Duration>, reason: String },
    /// The receiver refused the data itself.
    Refused { status: u16, body: String },
}

/// Sends what the queue holds, one batch at a time, until the task is aborted.
pub struct Sender {
    client: reqwest::Client,
    config: RemoteWriteConfig,
    headers: reqwest::header::HeaderMap,
}

impl Sender {
    /// Reads the credential files; fails on unreadable ones or bad header values.
    pub fn new(config: RemoteWriteConfig) -> anyhow::Result<Self> {
        use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
        let mut headers = HeaderMap::new();
        headers.insert("content-encoding", HeaderValue::from_static("snappy"));
        headers.insert("content-type", HeaderValue::from_static("application/x-protobuf"));
        headers.insert("x-prometheus-remote-write-version", HeaderValue::from_static("0.1.0"));
        headers.insert(
            "user-agent",
            HeaderValue::from_static(concat!("pyrite/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &config.headers {
            headers.insert(
                HeaderName::try_from(name.as_str())?,
                HeaderValue::try_from(value.as_str())?,
            );
        }
        let read = |path: &PathBuf| -> anyhow::Result<String> {
            let text =
                std::fs::read_to_string(path).map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        };
        if let Some(auth) = &config.basic_auth {
            use base64::Engine as _;
            let password = match (&auth.password, &auth.password_file) {
                (_, Some(file)) => read(file)?,
                (Some(password), None) => password.clone(),
                (None, None) => String::new(),
            };
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", auth.username));
            let mut value = HeaderValue::try_from(format!("Basic {encoded}"))?;
            value.set_sensitive(true);
            headers.insert("authorization", value);
        }
        if let Some(file) = &config.bearer_token_file {
            let mut value = HeaderValue::try_from(format!("Bearer {}", read(file)?))?;
            value.set_sensitive(true);
            headers.insert("authorization", value);
        }
        let client = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self {
            client,
            config,
            headers,
        })
    }

    pub async fn run(self, queue: Arc<Queue>, metrics: RuleMetrics) {
        loop {
            let batch = queue.next().await;
            self.deliver(batch, &metrics).await;
        }
    }

    async fn deliver(&self, batch: Batch, metrics: &RuleMetrics) {
        let samples = batch.series.len();
        let body = bytes::Bytes::from(encode(batch.series));
        let mut backoff = self.config.min_backoff;
        loop {
            let outcome = self.send(&batch.tenant, body.clone()).await;
            metrics.send.record(&outcome);
            match outcome {
                Ok(()) => {
                    metrics.samples_sent.inc_by(samples as u64);
                    return;
                }
                Err(SendError::Refused { status, body }) => {
                    tracing::warn!(tenant = %batch.tenant, status, %body, samples, "remote write refused recorded samples; dropped");
                    metrics.samples_failed.inc_by(samples as u64);
                    return;
                }
                Err(SendError::Retry { after, reason }) => {
                    if batch.recorded.elapsed() > self.config.max_sample_age {
                        tracing::warn!(tenant = %batch.tenant, %reason, samples, "remote write kept failing; recorded samples dropped as too old");
                        metrics.dropped("too_old", samples);
                        return;
                    }
                    tracing::debug!(tenant = %batch.tenant, %reason, ?backoff, "remote write failed; retrying");
                    metrics.retries.inc();
                    let wait = after
                        .unwrap_or(backoff)
                        .clamp(self.config.min_backoff, self.config.max_backoff);
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    async fn send(&self, tenant: &Tenant, body: bytes::Bytes) -> Result<(), SendError> {
        let mut request = self.client.post(&self.config.url).headers(self.headers.clone());
        if self.config.tenant_header && !self.headers.contains_key("x-scope-orgid") {
            request = request.header("X-Scope-OrgID", tenant.as_str());
        }
        let response = request.body(body).send().await.map_err(|err| SendError::Retry {
            after: None,
            reason: err.to_string(),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut text = response.text().await.unwrap_or_default();
        text.truncate(512);
        if status.is_server_error() || status.as_u16() == 429 {
            Err(SendError::Retry {
                after,
                reason: format!("{status}: {text}"),
            })
        } else {
            Err(SendError::Refused {
                status: status.as_u16(),
                body: text,
            })
        }
    }
}

/// A snappy (block format) `WriteRequest` of `series`.
pub fn encode(series: Vec<TimeSeries>) -> Vec<u8> {
    let request = WriteRequest { timeseries: series };
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy compresses any input below 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::prometheus::{Label, Sample};

    fn batch(n: usize) -> Batch {
        Batch {
            tenant: Tenant::parse("t").unwrap(),
            series: (0..n)
                .map(|i| TimeSeries {
                    labels: vec![Label {
                        name: "__name__".into(),
                        value: format!("pyrite_{i}"),
                    }],
                    samples: vec![Sample {
                        value: i as f64,
                        timestamp: 1,
                    }],
                })
                .collect(),
            recorded: Instant::now(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_batches_and_counts_them() {
        let metrics = RuleMetrics::default();
        let queue = Queue::new(5, metrics.clone());
        queue.push(batch(3));
        queue.push(batch(2));
        assert_eq!(metrics.queued_samples.get(), 5);
        queue.push(batch(4));
        let dropped = |metrics: &RuleMetrics| {
            metrics
                .samples_dropped
                .get_or_create(&DropLabels {
                    reason: "queue_full".into(),
                })
                .get()
        };
        assert_eq!(dropped(&metrics), 5, "both older batches made room");
        assert_eq!(metrics.queued_samples.get(), 4);
        queue.push(batch(7));
        assert_eq!(dropped(&metrics), 5 + 4 + 2, "the old batch and what exceeds the queue");
        assert_eq!(queue.next().await.series.len(), 5);
        assert_eq!(metrics.queued_samples.get(), 0);
    }

    /// The sender against an HTTP receiver that answers 503 twice, then 204; then one that
    /// answers 400: retried until accepted, then dropped and counted without a retry.
    #[tokio::test]
    async fn retries_5xx_and_drops_4xx() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/write",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let seen = seen.clone();
                async move {
                    let call = seen.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(headers["content-encoding"], "snappy");
                    assert_eq!(headers["x-prometheus-remote-write-version"], "0.1.0");
                    assert_eq!(headers["x-scope-orgid"], "t");
                    assert_eq!(headers["authorization"], "Basic dTpw");
                    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                    WriteRequest::decode(raw.as_slice()).unwrap();
                    match call {
                        0 | 1 => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        2 => axum::http::StatusCode::NO_CONTENT,
                        _ => axum::http::StatusCode::BAD_REQUEST,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config: RemoteWriteConfig = serde_yaml::from_str(&format!(
            "url: http://{address}/write\nmin_backoff: 10ms\nmax_backoff: 20ms\nbasic_auth: {{username: u, password: p}}\n"
        ))
        .unwrap();
        config.validate().unwrap();
        let sender = Sender::new(config).unwrap();
        let metrics = RuleMetrics::default();
        sender.deliver(batch(3), &metrics).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!((metrics.samples_sent.get(), metrics.retries.get()), (3, 2));
        sender.deliver(batch(2), &metrics).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4, "a 400 is not retried");
        assert_eq!((metrics.samples_failed.get(), metrics.retries.get()), (2, 2));
    }

    #[test]
    fn encodes_a_snappy_write_request() {
        let encoded = encode(batch(2).series);
        let raw = snap::raw::Decoder::new().decompress_vec(&encoded).unwrap();
        let request = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(request.timeseries.len(), 2);
        assert_eq!(request.timeseries[1].samples[0].value, 1.0);
    }
}
