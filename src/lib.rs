//! Pyrite: a continuous profiling server. pprof in, deduplicated blocks in object storage,
//! merged flame graphs out.
//!
//! Data path, one module per stage (imports point down this list, never up):
//! `api` → `ingest` / `query` → `head` → `block` → `storage` → `symbols` → `pprof` → `model`.
//! `render` turns a [`query::FlameTree`] into every output format.

pub mod api;
pub mod block;
pub mod cli;
pub mod config;
pub mod head;
pub mod ingest;
pub mod model;
pub mod pprof;
pub mod proto;
pub mod query;
pub mod render;
pub mod scrape;
pub mod storage;
pub mod symbols;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
