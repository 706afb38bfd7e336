//! Retention: deletes the blocks of every tenant whose last sample is older than the tenant's
//! `compactor_blocks_retention_period`. Every replica may sweep the shared bucket: deletes are
//! idempotent, and a block loses its meta before its data, so a listing never offers a block
//! whose data is gone.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::block::{self, BlockError, Catalog, Listing};
use crate::heartbeat::Heartbeat;
use crate::limits::Limits;
use crate::model::duration_ms;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often the blocks are checked against every tenant's retention period.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_secs(600),
        }
    }
}

/// What one sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepStats {
    pub tenants: usize,
    pub blocks: usize,
}

/// Deletes every expired block as of `now_ms`.
pub async fn sweep(catalog: &Catalog, limits: &Limits, now_ms: i64) -> Result<SweepStats, BlockError> {
    let storage = catalog.storage();
    let mut stats = SweepStats::default();
    for tenant in block::list_tenants(storage).await? {
        let retention = limits.for_tenant(&tenant).compactor_blocks_retention_period;
        if retention.is_zero() {
            continue;
        }
        let cutoff_ms = now_ms.saturating_sub(duration_ms(retention));
        let mut deleted = 0;
        // Replaced blocks too: left behind, they would show again once their replacement went.
        let Listing { visible, replaced, .. } = catalog.list(&tenant, i64::MIN, cutoff_ms).await?;
        for meta in visible.iter().chain(&replaced) {
            if meta.max_time_ms >= cutoff_ms {
                continue;
            }
            block::delete(storage, meta).await?;
            tracing::info!(%tenant, block = %meta.id, max_time_ms = meta.max_time_ms, "deleted a block past retention");
            deleted += 1;
        }
        if deleted > 0 {
            stats.tenants += 1;
            stats.blocks += deleted;
        }
    }
    Ok(stats)
}

/// Sweeps every `config.sweep_interval` until the task is dropped.
pub async fn run(catalog: Catalog, limits: Arc<Limits>, config: RetentionConfig, heartbeat: Heartbeat) {
    let mut ticks = tokio::time::interval(config.sweep_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = sweep(&catalog, &limits, crate::now_ms()).await;
        heartbeat.record(&outcome);
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "retention sweep failed; retrying at the next one");
        }
    }
}
