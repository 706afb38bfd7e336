//! Heavy work off the async worker threads (ARCHITECTURE: "heavy work never holds the async
//! threads"). A read runs whole — parsing its selectors, matching, merging, rendering — on
//! tokio's blocking pool, at most `api.max_concurrent_queries` at once, under a
//! [`Deadline`] its loops check; the async side answers 504 when the deadline passes
//! whatever the work is doing, and cancels it. Decoding pushed profiles runs there too, at
//! most `api.max_concurrent_decodes` at once — all but small pushes, whose decode is bounded
//! to well under the cost of the hop (`INLINE_DECODE_BYTES`). `/ready` and `/metrics` stay on
//! the async threads, which never wait for any of this.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::SharedState;
use super::connect::{self, Code, ConnectError};
use crate::config::ApiConfig;
use crate::pprof::{DecodeError, DecodeLimits, Profile};
use crate::query::Deadline;

/// Decoding that stays on the async threads: a pushed body of at most this many bytes whose
/// profiles decompress and decode to at most this much is decoded where it arrived (about a
/// millisecond at most), anything larger on the pool. Handing a small push to the pool and
/// back cost more than decoding it: two thread wake-ups a push, ~13 % of the server's CPU
/// under the push load of `tools/pushbench` (BENCHMARKS.md "Ingest per core").
pub(super) const INLINE_DECODE_BYTES: usize = 256 << 10;

/// Turns on the blocking pool for reads and for decodes.
pub struct Pool {
    queries: Arc<Semaphore>,
    decodes: Arc<Semaphore>,
    max_queries: usize,
    queue_timeout: Duration,
}

impl Pool {
    pub fn new(config: &ApiConfig) -> Self {
        Self {
            queries: Arc::new(Semaphore::new(config.max_concurrent_queries)),
            decodes: Arc::new(Semaphore::new(config.max_concurrent_decodes)),
            max_queries: config.max_concurrent_queries,
            queue_timeout: config.query_queue_timeout,
        }
    }

    /// Runs `work` (decoding a pushed profile, say) on the blocking pool once one of
    /// `api.max_concurrent_decodes` turns is free; it waits for a turn rather than refusing:
    /// the body is already read, and connections (so bodies) are capped.
    pub async fn decode<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let permit = self.decodes.clone().acquire_owned().await.expect("never closed");
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        });
        match task.await {
            Ok(output) => output,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }

    /// Decodes one pprof within `limits`: where it arrived when it is small (within
    /// `INLINE_DECODE_BYTES`), on the pool otherwise — from the start when the body is
    /// larger, again under the full limits when it decodes larger.
    pub async fn decode_pprof(&self, body: Bytes, limits: &DecodeLimits) -> Result<Profile, DecodeError> {
        if body.len() <= INLINE_DECODE_BYTES {
            match crate::pprof::decode(&body, &limits.capped(INLINE_DECODE_BYTES)) {
                Err(err) if err.is_over_size() => {}
                decoded => return decoded,
            }
        }
        let limits = limits.clone();
        self.decode(move || crate::pprof::decode(&body, &limits)).await
    }

    /// A turn for one read, waiting up to `api.query_queue_timeout`; `None` past it.
    async fn query_turn(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(self.queue_timeout, self.queries.clone().acquire_owned())
            .await
            .ok()
            .map(|permit| permit.expect("never closed"))
    }
}

/// Cancels the read's deadline when its request is dropped: answered 504 already, or its
/// client went away.
struct CancelOnDrop(Deadline);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The route layer of every read: buffers the body (within `api.max_query_body_bytes`),
/// takes a turn (503 `unavailable` past `api.query_queue_timeout`), runs the handler on the
/// blocking pool and answers 504 `deadline_exceeded` at `api.query_timeout`.
///
/// The peer head route takes no turn: the peers asking are bounded by their own
/// `max_concurrent_queries`, and refusing them would leave this replica's head out of their
/// answers.
pub async fn heavy_read(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let timeout = state.config.query_timeout;
    let deadline_at = started + timeout;
    let (parts, body) = request.into_parts();
    // On the async side: a slow body must not hold a turn or a blocking thread.
    let body = match connect::read_body(body, state.config.max_query_body_bytes).await {
        Ok(body) => body,
        Err(err) => return err.into_response(),
    };
    let request = Request::from_parts(parts, Body::from(body));
    let permit = if request.uri().path() == crate::cluster::HEAD_ROUTE {
        None
    } else {
        match state.pool.query_turn().await {
            Some(permit) => Some(permit),
            None => {
                state.metrics.record_query_unanswered("busy");
                return ConnectError::new(
                    Code::Unavailable,
                    format!(
                        "{} queries are running (api.max_concurrent_queries) and none ended within \
                         api.query_queue_timeout ({:?}); retry later",
                        state.pool.max_queries, state.pool.queue_timeout
                    ),
                )
                .into_response();
            }
        }
    };
    let deadline = Deadline::after(deadline_at.saturating_duration_since(Instant::now()));
    let _cancel = CancelOnDrop(deadline.clone());
    let runtime = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        // The handler's awaits (storage reads, peers) still run on the runtime's I/O driver;
        // its CPU work runs here.
        runtime.block_on(deadline.scope(next.run(request)))
    });
    match tokio::time::timeout_at(deadline_at, task).await {
        // A failure at the very deadline is the work stopped by it: answered as such below.
        Ok(Ok(response)) if response.status().is_success() || Instant::now() < deadline_at => response,
        Ok(Err(err)) => {
            tracing::error!(error = %err, "a query panicked");
            ConnectError::internal("the query failed unexpectedly").into_response()
        }
        Ok(Ok(_)) | Err(_) => {
            state.metrics.record_query_unanswered("deadline");
            ConnectError::new(
                Code::DeadlineExceeded,
                format!("the query ran longer than api.query_timeout ({timeout:?})"),
            )
            .into_response()
        }
    }
}
