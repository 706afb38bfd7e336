//! Heartbeats of the background work that keeps stored data healthy (head flushes, compaction,
//! retention): each run counts, a failed one counts twice, and the time of the last success
//! is exported, so an alert can tell stuck work from idle work (`deploy/alerts`).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `pyrite_<task>_runs_total`, `pyrite_<task>_failures_total` and
/// `pyrite_<task>_last_success_timestamp_seconds` of one background task.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    runs: Counter,
    failures: Counter,
    last_success: Gauge<f64, AtomicU64>,
}

impl Heartbeat {
    /// Registers the three series under `task` (the registry adds the `pyrite_` prefix). The
    /// last success starts at now: a process that just started is not behind.
    pub fn register(registry: &mut Registry, task: &str, what: &str) -> Self {
        let heartbeat = Self::default();
        registry.register(format!("{task}_runs"), format!("{what}: runs"), heartbeat.runs.clone());
        registry.register(
            format!("{task}_failures"),
            format!("{what}: runs that failed"),
            heartbeat.failures.clone(),
        );
        registry.register(
            format!("{task}_last_success_timestamp_seconds"),
            format!("{what}: Unix time of the last run that succeeded"),
            heartbeat.last_success.clone(),
        );
        heartbeat.last_success.set(crate::now_ms() as f64 / 1000.0);
        heartbeat
    }

    /// Counts one run and its outcome.
    pub fn record<T, E>(&self, outcome: &Result<T, E>) {
        self.runs.inc();
        match outcome {
            Ok(_) => {
                self.last_success.set(crate::now_ms() as f64 / 1000.0);
            }
            Err(_) => {
                self.failures.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_runs_failures_and_the_last_success() {
        let mut registry = Registry::with_prefix("pyrite");
        let heartbeat = Heartbeat::register(&mut registry, "head_flush", "Head flushes");
        let started = heartbeat.last_success.get();
        assert!(started > 1.7e9, "starts at now: {started}");
        heartbeat.record::<(), &str>(&Err("storage down"));
        assert_eq!(heartbeat.last_success.get(), started, "a failure is no success");
        heartbeat.record::<(), &str>(&Ok(()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("\npyrite_head_flush_runs_total 2\n"), "{text}");
        assert!(text.contains("\npyrite_head_flush_failures_total 1\n"), "{text}");
        assert!(
            text.contains("\npyrite_head_flush_last_success_timestamp_seconds "),
            "{text}"
        );
    }
}
