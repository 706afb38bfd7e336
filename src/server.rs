//! The server: [`build`] wires a config into the API's router and the background work beside it
//! (flushes, compaction, retention, file watches), with no socket, so tests can call the router
//! in process; [`serve`] runs a router under hyper-util's auto (HTTP/1.1 and h2c) connection
//! builder with the limits `axum::serve` does not offer — a cap on open connections, hyper's
//! header read timeout, an idle timeout, a deadline for request bodies — and a graceful
//! shutdown that waits for open requests a bounded time, so the head can still be flushed after.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower_service::Service;

/// A server built from its config, not serving yet.
pub struct Built {
    /// Every route of `pyrite serve`.
    pub router: Router,
    pub state: crate::api::SharedState,
    pub head: Arc<crate::head::Head>,
    /// Shared with the scraper, which ingests through the same path as pushes.
    pub ingester: Arc<crate::ingest::Ingester>,
    pub peers: Option<Arc<crate::cluster::Peers>>,
    /// Registered on the server's `/metrics`, for the scraper started once the address is known.
    pub scrape_metrics: crate::scrape::ScrapeMetrics,
    pub background: Background,
}

/// The tasks that run beside the router; stopped (aborted) at shutdown, before the last flush.
#[derive(Default)]
pub struct Background {
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Background {
    fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(task).abort_handle());
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Builds the server `config` describes: opens storage and the head (replaying its WAL),
/// loads limits and tokens, and starts the background work. The data directory must exist
/// and be this process's (see `cli::lock_data_dir`).
pub async fn build(config: &crate::config::Config) -> anyhow::Result<Built> {
    use crate::api::{self, AppState, Metrics};
    use crate::heartbeat::Heartbeat;

    config.validate()?;
    let storage = crate::storage::Storage::from_config(&config.storage, &config.data_dir)?;
    let peers = crate::cluster::Peers::from_config(&config.cluster)
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
    let mut head_config = config.head.clone();
    if peers.is_some() {
        // Peers read a flushed partition here until they see its block.
        head_config.published_grace = config.cluster.published_grace;
    }
    let head =
        Arc::new(crate::head::Head::open(head_config, storage.clone(), &config.wal_dir(), &config.limits).await?);
    let tenant_limits = Arc::new(crate::limits::Limits::load(
        config.tenant_limits.clone(),
        config.runtime_config.clone(),
    )?);
    let mut background = Background::default();
    background.spawn(tenant_limits.clone().watch());
    let tokens = crate::auth::Tokens::load(&config.auth)?;
    if let Some(tokens) = &tokens {
        background.spawn(tokens.clone().watch());
    }
    let mut metrics = Metrics::default();
    let scrape_metrics = crate::scrape::ScrapeMetrics::register(metrics.registry_mut());
    let flush_heartbeat = Heartbeat::register(metrics.registry_mut(), "head_flush", "Head flushes to storage");
    let settings = crate::settings::SettingsStore::new(storage.clone());
    let adhoc = crate::adhoc::AdhocStore::new(storage.clone(), config.adhoc.clone());
    background.spawn(crate::adhoc::run(
        adhoc.clone(),
        Heartbeat::register(
            metrics.registry_mut(),
            "adhoc_retention",
            "Ad-hoc profile retention sweeps",
        ),
    ));
    let rules_store = crate::rules::RulesStore::new(storage.clone());
    // What one reader of the bucket learns of its blocks, the others need not list again.
    let catalog = crate::block::Catalog::new(storage, crate::model::duration_ms(config.head.bucket_duration));
    background.spawn(crate::retention::run(
        catalog.clone(),
        tenant_limits.clone(),
        config.retention.clone(),
        Heartbeat::register(metrics.registry_mut(), "retention", "Retention sweeps"),
    ));
    // One replica of a cluster compacts; the others would only race it. Only a compacting
    // process exports the compactor's heartbeat, so an alert on it means something.
    let compacts = config.compactor.enabled && peers.as_ref().is_none_or(|peers| peers.owns("compactor"));
    if compacts {
        background.spawn(crate::compactor::run(
            catalog.clone(),
            config.compactor.clone(),
            Heartbeat::register(metrics.registry_mut(), "compactor", "Compaction passes"),
        ));
    }
    let rule_metrics = crate::rules::RuleMetrics::register(metrics.registry_mut());
    let recorder = Arc::new(crate::rules::Recorder::new(
        rules_store,
        config.recording_rules.clone(),
        tenant_limits.clone(),
        peers.as_ref().map(|peers| peers.me()),
        rule_metrics.clone(),
    ));
    if let (Some(remote_write), Some(queue)) = (&config.recording_rules.remote_write, recorder.queue()) {
        let sender = crate::rules::remote_write::Sender::new(remote_write.clone())?;
        background.spawn(sender.run(queue, rule_metrics));
        background.spawn(recorder.clone().run());
    }
    let ingester = Arc::new(
        crate::ingest::Ingester::new(head.clone(), config.limits.clone())
            .with_tenant_limits(tenant_limits.clone())
            .with_recorder(recorder.clone()),
    );
    let querier = crate::query::Querier::with_catalog(head.clone(), catalog)
        .with_tenant_limits(tenant_limits)
        .with_max_tree_nodes(config.api.max_query_tree_nodes)
        .with_cache_bytes(config.api.index_cache_bytes, config.api.symbol_cache_bytes);
    let state = Arc::new(AppState {
        ingester: ingester.clone(),
        querier: match &peers {
            Some(peers) => querier.with_peers(peers.clone()),
            None => querier,
        },
        config: config.api.clone(),
        metrics,
        settings,
        adhoc,
        recording_rules: recorder,
        pool: api::pool::Pool::new(&config.api),
        auth: crate::auth::ApiAuth {
            cluster_secret: peers.as_ref().map(|peers| peers.secret().clone()),
            tokens,
        },
    });
    background.spawn(head.clone().run_flusher(flush_heartbeat));
    Ok(Built {
        router: api::router(state.clone()),
        state,
        head,
        ingester,
        peers,
        scrape_metrics,
        background,
    })
}

/// Limits of the HTTP server (the `server:` section).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Connections open at once. Past it the server stops accepting: new connections wait in
    /// the kernel's accept queue until one closes (no file descriptor or memory is spent on
    /// them, and a client retrying a refused connection would only add load).
    pub max_connections: usize,
    /// Time for a request's headers to arrive, counted from the moment the connection waits
    /// for them: its accept, or the end of the previous response. So for HTTP/1.1 it is also
    /// the keep-alive idle timeout (hyper's `header_read_timeout`); a connection that sends no
    /// first request within it is closed too.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 connections,
    /// whose streams hyper does not time out; for HTTP/1.1, `header_read_timeout` usually
    /// closes an idle connection first).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time for a whole request body to arrive, from the request's headers. A body trickled
    /// slower is cut (408) and its memory freed: at least `max_body_bytes / body_timeout` per
    /// second is needed for the largest body.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// At shutdown, how long open requests may run before their connections are dropped and
    /// the head is flushed.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return Err("server.max_connections must be positive".into());
        }
        if self.header_read_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.body_timeout.is_zero()
            || self.shutdown_grace.is_zero()
        {
            return Err(
                "server.header_read_timeout, idle_timeout, body_timeout and shutdown_grace must be positive".into(),
            );
        }
        Ok(())
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets open
/// requests finish within `shutdown_grace` and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let router = router.layer(axum::middleware::from_fn_with_state(config.body_timeout, body_deadline));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // The permit first: at the cap, connections wait in the accept queue.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and the like: back off instead of spinning on the error.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            router: router.clone(),
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            closing: closing_rx.clone(),
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            tracing::trace!(%remote, "connection closed");
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection returns its permit when it ends.
    let all = u32::try_from(config.max_connections).expect("validated against Semaphore::MAX_PERMITS");
    if tokio::time::timeout(config.shutdown_grace, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = config.max_connections - connections.available_permits(),
            "connections still open after server.shutdown_grace; dropping them"
        );
    }
    Ok(())
}

/// One accepted connection.
struct Connection {
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    router: Router,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    closing: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, stream: tokio::net::TcpStream) {
        let activity = Arc::new(Activity::new());
        let service = {
            let activity = activity.clone();
            let router = self.router.clone();
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let busy = activity.begin();
                let mut router = router.clone();
                async move {
                    let response = router.call(request.map(Body::new)).await;
                    drop(busy);
                    response
                }
            })
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            let idle_limit = if activity.served() == 0 {
                self.header_read_timeout
            } else {
                self.idle_timeout
            };
            let idle_check = activity.idle_deadline(idle_limit);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                changed = self.closing.changed(), if !closing => {
                    if changed.is_err() || *self.closing.borrow() {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                () = tokio::time::sleep_until(idle_check), if !closing => {
                    if activity.idle_for(idle_limit) {
                        // Gracefully: a response still being written goes out first.
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// Requests in flight on one connection and when it last went idle, for the idle timeout.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    served: AtomicUsize,
    /// Milliseconds after `started` when the last request ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// When the connection will have been idle for `limit` if nothing happens (a request in
    /// flight: check again after `limit`).
    fn idle_deadline(&self, limit: Duration) -> Instant {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Instant::now() + limit;
        }
        self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst)) + limit
    }

    fn idle_for(&self, limit: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.idle_deadline(limit) <= Instant::now()
    }
}

/// A request in flight; its end starts the idle clock again.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(elapsed, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Gives every request body a deadline of `server.body_timeout` from its headers.
async fn body_deadline(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let deadline = Instant::now() + timeout;
    next.run(request.map(|body| Body::new(DeadlineBody::new(body, deadline, timeout))))
        .await
}

/// The error of a body not received within `server.body_timeout`.
#[derive(Debug)]
pub struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within server.body_timeout ({:?})",
            self.0
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl BodyTimeout {
    /// Whether `err` (or what caused it) is a body timeout.
    pub fn is_cause_of(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(err);
        while let Some(err) = current {
            if err.is::<BodyTimeout>() {
                return true;
            }
            current = err.source();
        }
        false
    }
}

/// A body that fails once its deadline passes, however its bytes trickle in.
/// `tower_http::timeout::TimeoutBody` restarts its timer at every frame, so a client sending
/// a byte a second would never trip it; this one has a single deadline for the whole body.
struct DeadlineBody {
    body: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn new(body: Body, deadline: Instant, timeout: Duration) -> Self {
        Self {
            body,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(self.sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(self.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
