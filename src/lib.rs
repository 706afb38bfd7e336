//! Pyrite: a continuous profiling server. pprof in, deduplicated blocks in object storage,
//! merged flame graphs out.
//!
//! The data path, as the modules have it (each imports only modules below it on its path):
//!
//! ```text
//! write: api (push.v1, /ingest) ─┐
//!        scrape (pull targets) ──┴→ ingest (limits, deltas) → pprof (decode) → head (WAL, partitions)
//!                                    → block (encode, flush, catalog) → storage (filesystem or S3)
//!
//! read:  api (querier.v1, /pyroscope/*, /api/v1/render) ─┐
//!        cli (pyrite export) ───────────────────────────┴→ params (tenant, window, type, selector, nodes)
//!        → export (a window: query, then render)
//!        → query (a Snapshot: listed blocks, head partitions, peers' heads via cluster → merge → FlameTree)
//!             → block / symbols → storage
//!        → render (a finished model::FlameTree → flame graph levels, flamebearer, SVG, folded, pprof)
//! ```
//!
//! Beside the paths: `server` builds the router and the background work from a `config` and
//! serves it; `compactor` merges a bucket's blocks and `retention` deletes old ones; `limits`
//! holds per-tenant limits and their overrides file (`reload` watches files); `auth` checks
//! tokens and the cluster secret; `settings` keeps per-tenant UI settings and `adhoc` uploaded
//! profiles beside the blocks; `rules` keeps recording rules there too, evaluates them on what `ingest` accepted and sends
//! the results by Prometheus remote write;
//! `heartbeat` reports background work to `/metrics`; `integrity` counts damaged data readers
//! set aside. Every module's error type says its [`ErrorClass`] (`error`), and `api::error`
//! alone turns a class into a connect code and an HTTP status. `model` is the shared
//! vocabulary (tenants, labels, profile types, selectors, times) and imports nothing above it.
//!
//! The library's public surface is the modules declared `pub` below (the stages, `api` for its
//! Connect protocol layer, `scrape` for its config types) and the `pub use` list; the rest is
//! `pub(crate)`.

pub(crate) mod adhoc;
pub mod api;
pub(crate) mod auth;
pub mod block;
pub mod cli;
pub(crate) mod cluster;
pub mod compactor;
pub mod config;
pub(crate) mod error;
pub(crate) mod export;
pub mod head;
pub(crate) mod heartbeat;
pub mod ingest;
pub(crate) mod integrity;
pub(crate) mod limits;
pub mod model;
pub(crate) mod params;
pub mod pprof;
pub mod proto;
pub mod query;
pub(crate) mod reload;
pub mod render;
pub(crate) mod retention;
pub(crate) mod rules;
pub mod scrape;
pub mod server;
pub(crate) mod settings;
pub mod storage;
pub mod symbols;

pub use error::{Classify, ErrorClass};
pub use export::{ExportError, ExportRequest, export_window};
pub use params::{NodeLimits, ParamsError, RenderWindow};

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
