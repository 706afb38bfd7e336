//! The querier's caches of immutable block parts (decoded indexes and symbol tables), bounded
//! by bytes and evicting what is least used, with their hits and misses on `/metrics`
//! (`pyrite_query_cache_{hits,misses}_total{cache}`).
//!
//! Blocks never change, so an entry can never be stale; only memory is at stake. Eviction is
//! quick_cache's (CLOCK-Pro: an entry read again outlives one read once, so a scan over old
//! blocks does not flush what recent queries keep reading). Sizes are estimates of the decoded
//! structures, not exact heap use.

use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::forest::BlockSymbols;
use crate::block::SeriesHeader;
use crate::symbols::SymbolTable;

/// Which cache a count is of: `index` or `symbols`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: String,
}

static HITS: LazyLock<Family<CacheLabels, Counter>> = LazyLock::new(Family::default);
static MISSES: LazyLock<Family<CacheLabels, Counter>> = LazyLock::new(Family::default);

/// Registers the hit and miss counters of every querier's caches.
pub fn register(registry: &mut Registry) {
    registry.register(
        "query_cache_hits",
        "Block indexes and symbol tables a query found decoded in memory, by cache",
        HITS.clone(),
    );
    registry.register(
        "query_cache_misses",
        "Block indexes and symbol tables a query had to read and decode, by cache",
        MISSES.clone(),
    );
}

/// What a cached value costs in memory, about.
pub trait Weigh {
    fn weigh(&self) -> u64;
}

impl Weigh for SymbolTable {
    fn weigh(&self) -> u64 {
        self.estimated_bytes() as u64
    }
}

impl Weigh for BlockSymbols {
    fn weigh(&self) -> u64 {
        (self.table.estimated_bytes() + self.shape.estimated_bytes()) as u64
    }
}

impl Weigh for Vec<SeriesHeader> {
    fn weigh(&self) -> u64 {
        let labels: usize = self
            .iter()
            .map(|header| {
                header
                    .labels
                    .iter()
                    .map(|(name, value)| name.len() + value.len() + 48)
                    .sum::<usize>()
            })
            .sum();
        (labels + self.len() * std::mem::size_of::<SeriesHeader>()) as u64
    }
}

#[derive(Clone)]
struct ByWeight;

impl<T: Weigh> quick_cache::Weighter<String, Arc<T>> for ByWeight {
    fn weight(&self, key: &String, value: &Arc<T>) -> u64 {
        // Never 0: quick_cache never evicts entries of weight 0.
        (key.len() as u64 + value.weigh()).max(1)
    }
}

/// Block id → decoded part, at most `max_bytes` of them (estimated).
pub struct BlockCache<T: Weigh> {
    name: CacheLabels,
    entries: quick_cache::sync::Cache<String, Arc<T>, ByWeight>,
}

impl<T: Weigh> BlockCache<T> {
    /// `typical_bytes` sizes the table up front (quick_cache wants an estimate of the count).
    pub fn new(name: &str, max_bytes: u64, typical_bytes: u64) -> Self {
        let max_bytes = max_bytes.max(1);
        let items = (max_bytes / typical_bytes.max(1)).clamp(16, 1 << 20) as usize;
        Self {
            name: CacheLabels {
                cache: name.to_string(),
            },
            entries: quick_cache::sync::Cache::with_options(
                // One shard: quick_cache splits the weight capacity between its shards and never
                // keeps an entry heavier than one shard's part, and one block of millions of
                // stacks is a large part of the cache (lookups are per block, not per row).
                quick_cache::OptionsBuilder::new()
                    .estimated_items_capacity(items)
                    .weight_capacity(max_bytes)
                    .shards(1)
                    .build()
                    .expect("capacities are positive"),
                ByWeight,
                Default::default(),
                Default::default(),
            ),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        let found = self.entries.get(id);
        let counters = if found.is_some() { &HITS } else { &MISSES };
        counters.get_or_create(&self.name).inc();
        found
    }

    pub fn insert(&self, id: &str, value: Arc<T>) {
        self.entries.insert(id.to_string(), value);
    }

    /// Estimated bytes held.
    pub fn weight(&self) -> u64 {
        self.entries.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sized(u64);

    impl Weigh for Sized {
        fn weigh(&self) -> u64 {
            self.0
        }
    }

    /// Bounded by bytes, and an entry read again survives a scan of entries read once.
    #[test]
    fn keeps_within_its_bytes_and_keeps_what_is_read_again() {
        let cache: BlockCache<Sized> = BlockCache::new("test", 100_000, 1_000);
        cache.insert("hot", Arc::new(Sized(1_000)));
        for round in 0..50 {
            assert!(cache.get("hot").is_some(), "hot entry evicted in round {round}");
            for cold in 0..20 {
                cache.insert(&format!("cold-{round}-{cold}"), Arc::new(Sized(1_000)));
            }
            assert!(cache.weight() <= 100_000, "{} bytes", cache.weight());
        }
        // One entry of most of the cache is kept (not refused for exceeding a shard's part).
        cache.insert("big", Arc::new(Sized(60_000)));
        assert!(cache.get("big").is_some());
        // A value larger than the whole cache is not kept.
        cache.insert("huge", Arc::new(Sized(1_000_000)));
        assert!(cache.get("huge").is_none());
        assert!(cache.get("hot").is_some());
    }
}
