//! Pyrite's own Prometheus metrics, served at `/metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::SharedState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    pub tenant: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// Counters and gauges of one process.
pub struct Metrics {
    registry: Registry,
    pub ingested_profiles: Family<IngestLabels, Counter>,
    pub ingested_bytes: Family<IngestLabels, Counter>,
    pub ingested_samples: Family<IngestLabels, Counter>,
    pub head_bytes: Gauge,
    pub head_unflushed_bytes: Gauge,
    pub head_max_unflushed_bytes: Gauge,
    pub wal_bytes: Gauge,
    pub wal_max_bytes: Gauge,
    pub query_seconds: Family<RouteLabels, Histogram>,
    /// Reads answered without a result: `busy` (503 past `api.max_concurrent_queries`),
    /// `deadline` (504 at `api.query_timeout`).
    pub queries_unanswered: Family<ReasonLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pyrite");
        let ingested_profiles = Family::<IngestLabels, Counter>::default();
        let ingested_bytes = Family::<IngestLabels, Counter>::default();
        let ingested_samples = Family::<IngestLabels, Counter>::default();
        let head_bytes = Gauge::default();
        let head_unflushed_bytes = Gauge::default();
        let head_max_unflushed_bytes = Gauge::default();
        let wal_bytes = Gauge::default();
        let wal_max_bytes = Gauge::default();
        let query_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "ingest_profiles",
            "Profiles received, by tenant and outcome",
            ingested_profiles.clone(),
        );
        registry.register(
            "ingest_bytes",
            "Profile bytes received, by tenant and outcome",
            ingested_bytes.clone(),
        );
        registry.register(
            "ingest_samples",
            "Profile samples accepted, by tenant",
            ingested_samples.clone(),
        );
        registry.register(
            "head_bytes",
            "Estimated bytes of unflushed head data",
            head_bytes.clone(),
        );
        registry.register(
            "head_unflushed_bytes",
            "Estimated bytes not in object storage yet: live head data and flushes not published",
            head_unflushed_bytes.clone(),
        );
        registry.register(
            "head_max_unflushed_bytes",
            "head.max_unflushed_bytes: past it, pushes are refused until a flush succeeds",
            head_max_unflushed_bytes.clone(),
        );
        registry.register(
            "wal_bytes",
            "Bytes of write-ahead log segments on disk",
            wal_bytes.clone(),
        );
        registry.register(
            "wal_max_bytes",
            "head.max_wal_bytes: past it, pushes are refused with 503 until a flush frees segments (0: none)",
            wal_max_bytes.clone(),
        );
        crate::integrity::register(&mut registry);
        crate::query::cache::register(&mut registry);
        registry.register(
            "query_duration_seconds",
            "Query latency by route",
            query_seconds.clone(),
        );
        let queries_unanswered = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "queries_unanswered",
            "Reads refused (busy: api.max_concurrent_queries) or cut (deadline: api.query_timeout)",
            queries_unanswered.clone(),
        );
        Self {
            registry,
            ingested_profiles,
            ingested_bytes,
            ingested_samples,
            head_bytes,
            head_unflushed_bytes,
            head_max_unflushed_bytes,
            wal_bytes,
            wal_max_bytes,
            query_seconds,
            queries_unanswered,
        }
    }
}

impl Metrics {
    /// Counts one profile received by `tenant` with `outcome` (`accepted` or a rejection reason).
    pub fn record_ingest(&self, tenant: &str, outcome: &str, bytes: usize, samples: usize) {
        let labels = IngestLabels {
            tenant: tenant.to_string(),
            outcome: outcome.to_string(),
        };
        self.ingested_profiles.get_or_create(&labels).inc();
        self.ingested_bytes.get_or_create(&labels).inc_by(bytes as u64);
        if samples > 0 {
            self.ingested_samples.get_or_create(&labels).inc_by(samples as u64);
        }
    }

    pub fn observe_query(&self, route: &str, seconds: f64) {
        self.query_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Counts a read answered 503 (`busy`) or 504 (`deadline`) by the API's pool.
    pub fn record_query_unanswered(&self, reason: &str) {
        self.queries_unanswered
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The registry, so other modules (the scraper) can register their own metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

pub async fn serve(State(state): State<SharedState>) -> impl IntoResponse {
    // The head's sizes as of this scrape, whatever changed them (pushes, scrapes, flushes).
    let head = state.ingester.head();
    state.metrics.head_bytes.set(head.live_bytes() as i64);
    state.metrics.head_unflushed_bytes.set(head.unflushed_bytes() as i64);
    state
        .metrics
        .head_max_unflushed_bytes
        .set(head.config().max_unflushed_bytes as i64);
    state.metrics.wal_bytes.set(head.wal_bytes() as i64);
    state.metrics.wal_max_bytes.set(head.config().max_wal_bytes as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
