//! Pyrite: a continuous profiling server. pprof in, deduplicated blocks in object storage,
//! merged flame graphs out.
//!
//! Data path, one module per stage (imports point down this list, never up):
//! `api` → `ingest` / `query` → `head` → `block` → `storage` → `symbols` → `pprof` → `model`.
//! `render` turns a [`model::FlameTree`] into every output format. `limits` (per-tenant limits
//! and their overrides file) imports only `model`; `ingest` enforces them and `retention`
//! deletes blocks past a tenant's retention period. `compactor` merges a bucket's blocks.
//! `heartbeat` reports the background work (flushes, compaction, retention) to `/metrics`;
//! `settings` keeps per-tenant UI settings beside the blocks; `integrity` counts damaged data
//! (WAL records, block parts) that readers set aside instead of failing.

pub mod api;
pub mod auth;
pub mod block;
pub mod cli;
pub mod cluster;
pub mod compactor;
pub mod config;
pub mod head;
pub mod heartbeat;
pub mod ingest;
pub mod integrity;
pub mod limits;
pub mod model;
pub mod pprof;
pub mod proto;
pub mod query;
pub mod reload;
pub mod render;
pub mod retention;
pub mod scrape;
pub mod server;
pub mod settings;
pub mod storage;
pub mod symbols;

/// mimalloc instead of glibc's malloc, for the server and for every test and benchmark that
/// links this library (so benchmarks measure what the server runs): a scraper decodes thousands
/// of small profiles a minute, and glibc's fastbin consolidation on each larger allocation was
/// a fifth of its CPU (BENCHMARKS.md, "Scraping").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
