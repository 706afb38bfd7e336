//! Per-target heartbeats: a dead collector is a silent outage unless something says so.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub job: String,
    pub instance: String,
    pub profile: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub job: String,
    pub instance: String,
    pub profile: String,
    pub reason: String,
}

/// `pyrite_scrape_*` series, one set per target and profile.
#[derive(Debug, Clone, Default)]
pub struct ScrapeMetrics {
    pub up: Family<TargetLabels, Gauge>,
    pub last_success: Family<TargetLabels, Gauge<f64, AtomicU64>>,
    pub duration: Family<TargetLabels, Gauge<f64, AtomicU64>>,
    pub samples: Family<TargetLabels, Gauge>,
    pub failures: Family<FailureLabels, Counter>,
    pub targets: Gauge,
}

impl ScrapeMetrics {
    /// Registers the families (the registry adds the `pyrite_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "scrape_up",
            "1 if the last scrape of the target's profile succeeded, 0 if it failed",
            metrics.up.clone(),
        );
        registry.register(
            "scrape_last_success_timestamp_seconds",
            "Unix time of the last successful scrape of the target's profile",
            metrics.last_success.clone(),
        );
        registry.register(
            "scrape_duration_seconds",
            "Duration of the last scrape of the target's profile",
            metrics.duration.clone(),
        );
        registry.register(
            "scrape_samples",
            "Samples stored by the last successful scrape of the target's profile",
            metrics.samples.clone(),
        );
        registry.register("scrape_failures", "Failed scrapes, by reason", metrics.failures.clone());
        registry.register(
            "scrape_targets",
            "Target profiles being scraped",
            metrics.targets.clone(),
        );
        metrics
    }

    /// Drops a removed target's series, so a gone target does not read as up (or down) forever.
    pub fn forget(&self, labels: &TargetLabels) {
        self.up.remove(labels);
        self.last_success.remove(labels);
        self.duration.remove(labels);
        self.samples.remove(labels);
    }
}
