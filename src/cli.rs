//! The `pyrite` command line: `serve`, `push`, `export`. Flags are pinned: other tools and the
//! README depend on these exact names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use prost::Message;

use crate::api::{self, AppState, Metrics};
use crate::config::Config;
use crate::head::Head;
use crate::heartbeat::Heartbeat;
use crate::ingest::Ingester;
use crate::model::{Labels, ProfileType, Selector, Tenant, parse_time_ms};
use crate::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
use crate::query::{Querier, SelectParams};
use crate::render::{self, ExportFormat};
use crate::storage::Storage;

const DEFAULT_EXPORT_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

#[derive(Debug, Parser)]
#[command(
    name = "pyrite",
    version,
    about = "Continuous profiling server: pprof in, flame graphs out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// YAML config file; every field has a default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address (default 0.0.0.0:4040).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory for the WAL and local blocks (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Push pprof files to a server over push.v1.
    Push {
        #[arg(long)]
        url: String,
        #[arg(long)]
        tenant: Option<String>,
        /// service_name of the pushed series.
        #[arg(long)]
        name: Option<String>,
        /// Extra labels, `k=v,k=v`.
        #[arg(long)]
        labels: Option<String>,
        /// Stamp the profiles with this time instead of their own (RFC 3339, unix s/ms, now-1h).
        #[arg(long)]
        at: Option<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Export a window as SVG, pprof, folded text or flamebearer JSON.
    Export {
        /// Query a running server.
        #[arg(long, conflicts_with = "data_dir", required_unless_present = "data_dir")]
        url: Option<String>,
        /// Read a data directory directly (blocks and WAL), no server needed.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Config file describing storage, for --data-dir with S3 blocks.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: Option<String>,
        /// Label selector, e.g. '{service_name="api"}'.
        #[arg(long, default_value = "{}")]
        query: String,
        /// Profile type ID.
        #[arg(long = "type", default_value = DEFAULT_EXPORT_TYPE)]
        profile_type: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        until: String,
        #[arg(long)]
        format: String,
        #[arg(long)]
        output: PathBuf,
        #[arg(long)]
        max_nodes: Option<usize>,
    },
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let mut config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(data_dir) = data_dir {
                config.data_dir = data_dir;
            }
            serve(config).await
        }
        Command::Push {
            url,
            tenant,
            name,
            labels,
            at,
            files,
        } => {
            push(
                &url,
                tenant.as_deref(),
                name.as_deref(),
                labels.as_deref(),
                at.as_deref(),
                &files,
            )
            .await
        }
        Command::Export {
            url,
            data_dir,
            config,
            tenant,
            query,
            profile_type,
            from,
            until,
            format,
            output,
            max_nodes,
        } => {
            let now = crate::now_ms();
            let from_ms = parse_time_ms(&from, now)?;
            let until_ms = parse_time_ms(&until, now)?;
            if from_ms >= until_ms {
                bail!("--from ({from}) must be before --until ({until})");
            }
            let format: ExportFormat = format.parse().map_err(anyhow::Error::msg)?;
            let tenant = Tenant::parse(tenant.as_deref().unwrap_or(crate::model::DEFAULT_TENANT))?;
            let body = match (url, data_dir) {
                (Some(url), _) => {
                    export_remote(
                        &url,
                        &tenant,
                        &query,
                        &profile_type,
                        from_ms,
                        until_ms,
                        format,
                        max_nodes,
                    )
                    .await?
                }
                (None, Some(data_dir)) => {
                    let mut config = match config {
                        Some(path) => Config::load(&path)?,
                        None => Config::default(),
                    };
                    config.data_dir = data_dir;
                    let profile_type = ProfileType::parse(&profile_type)?;
                    let selector = Selector::parse(&query)?;
                    let params = SelectParams {
                        tenant,
                        profile_type,
                        selector,
                        from_ms,
                        until_ms,
                    };
                    render::export_window(&open_read_only(&config)?, params, query, format, max_nodes).await?
                }
                (None, None) => bail!("give --url or --data-dir"),
            };
            std::fs::write(&output, body).with_context(|| format!("writing {}", output.display()))?;
            Ok(())
        }
    }
}

/// Runs the server until SIGINT/SIGTERM, then flushes the head.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    // Held until the process exits: taken before the WAL is opened, so a second server on this
    // directory never replays or writes the first one's log.
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    let storage = Storage::from_config(&config.storage, &config.data_dir)?;
    let peers = crate::cluster::Peers::from_config(&config.cluster)
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
    let mut head_config = config.head.clone();
    if peers.is_some() {
        // Peers read a flushed partition here until they see its block.
        head_config.published_grace = config.cluster.published_grace;
    }
    let head = Arc::new(Head::open(head_config, storage.clone(), &config.wal_dir(), &config.limits).await?);
    let tenant_limits = Arc::new(crate::limits::Limits::load(
        config.tenant_limits.clone(),
        config.runtime_config.clone(),
    )?);
    let overrides_watch = tokio::spawn(tenant_limits.clone().watch());
    let tokens = crate::auth::Tokens::load(&config.auth)?;
    let tokens_watch = tokens.clone().map(|tokens| tokio::spawn(tokens.watch()));
    let mut metrics = Metrics::default();
    let scrape_metrics = crate::scrape::ScrapeMetrics::register(metrics.registry_mut());
    let flush_heartbeat = Heartbeat::register(metrics.registry_mut(), "head_flush", "Head flushes to storage");
    // What one reader of the bucket learns of its blocks, the others need not list again.
    let settings = crate::settings::SettingsStore::new(storage.clone());
    let catalog = crate::block::Catalog::new(storage, crate::model::duration_ms(config.head.bucket_duration));
    let retention = tokio::spawn(crate::retention::run(
        catalog.clone(),
        tenant_limits.clone(),
        config.retention.clone(),
        Heartbeat::register(metrics.registry_mut(), "retention", "Retention sweeps"),
    ));
    // One replica of a cluster compacts; the others would only race it. Only a compacting
    // process exports the compactor's heartbeat, so an alert on it means something.
    let compacts = config.compactor.enabled && peers.as_ref().is_none_or(|peers| peers.owns("compactor"));
    let compactor = compacts.then(|| {
        tokio::spawn(crate::compactor::run(
            catalog.clone(),
            config.compactor.clone(),
            Heartbeat::register(metrics.registry_mut(), "compactor", "Compaction passes"),
        ))
    });
    let ingester =
        Arc::new(Ingester::new(head.clone(), config.limits.clone()).with_tenant_limits(tenant_limits.clone()));
    let state = Arc::new(AppState {
        ingester: ingester.clone(),
        querier: {
            let querier = Querier::with_catalog(head.clone(), catalog)
                .with_tenant_limits(tenant_limits.clone())
                .with_max_tree_nodes(config.api.max_query_tree_nodes)
                .with_cache_bytes(config.api.index_cache_bytes, config.api.symbol_cache_bytes);
            match &peers {
                Some(peers) => querier.with_peers(peers.clone()),
                None => querier,
            }
        },
        config: config.api.clone(),
        metrics,
        settings,
        pool: api::pool::Pool::new(&config.api),
        auth: crate::auth::ApiAuth {
            cluster_secret: peers.as_ref().map(|peers| peers.secret().clone()),
            tokens,
        },
    });
    let flusher = tokio::spawn(head.clone().run_flusher(flush_heartbeat));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %config.data_dir.display(), "pyrite is serving");
    // Scrapes ingest through the same Ingester as pushes; the self-scrape job follows `address`.
    let mut scraper =
        crate::scrape::ScrapeManager::start(config.scrape_configs.clone(), address, ingester, scrape_metrics, peers)?;
    crate::server::serve(listener, api::router(state), &config.server, async move {
        shutdown_signal().await;
        scraper.stop();
        api::debug_pprof::begin_shutdown();
    })
    .await?;
    flusher.abort();
    overrides_watch.abort();
    if let Some(tokens_watch) = tokens_watch {
        tokens_watch.abort();
    }
    retention.abort();
    if let Some(compactor) = compactor {
        compactor.abort();
    }
    tracing::info!("shutting down: flushing the head");
    head.flush().await?;
    Ok(())
}

/// The lock file of a data directory, holding the PID of the process that has it.
pub const LOCK_FILE: &str = "pyrite.lock";

/// Takes the data directory's exclusive lock (`flock` on [`LOCK_FILE`], released by the kernel
/// when the process ends, however it ends) and writes this process's PID into it. A directory
/// another process holds is an error naming that process.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown" } else { holder };
            bail!(
                "data directory {} is in use by another pyrite process (PID {holder}); \
                 one process per data directory",
                data_dir.display()
            );
        }
        Err(std::fs::TryLockError::Error(err)) => {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(file)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}

/// A querier over a data directory's blocks and WAL, writing nothing.
pub fn open_read_only(config: &Config) -> anyhow::Result<Querier> {
    let storage = Storage::from_config(&config.storage, &config.data_dir)?;
    let head = Head::open_read_only(config.head.clone(), storage.clone(), &config.wal_dir(), &config.limits)?;
    Ok(Querier::new(Arc::new(head), storage))
}

fn parse_label_list(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("label {pair:?} is not k=v"))?;
            Ok((key.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

async fn push(
    url: &str,
    tenant: Option<&str>,
    name: Option<&str>,
    labels: Option<&str>,
    at: Option<&str>,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let mut pairs = parse_label_list(labels.unwrap_or(""))?;
    if let Some(name) = name {
        pairs.push(("service_name".into(), name.to_string()));
    }
    let labels = Labels::new(pairs)?;
    let at_ms = at.map(|text| parse_time_ms(text, crate::now_ms())).transpose()?;
    let client = reqwest::Client::new();
    let endpoint = format!("{}/push.v1.PusherService/Push", url.trim_end_matches('/'));
    for file in files {
        let raw = read_profile(file, at_ms)?;
        let request = PushRequest {
            series: vec![RawProfileSeries {
                labels: labels.to_pairs(),
                samples: vec![RawSample {
                    raw_profile: raw,
                    id: uuid::Uuid::new_v4().to_string(),
                }],
                annotations: vec![],
            }],
        };
        let mut http = client
            .post(&endpoint)
            .header("Content-Type", "application/proto")
            .header("Connect-Protocol-Version", "1")
            .body(request.encode_to_vec());
        if let Some(tenant) = tenant {
            http = http.header("X-Scope-OrgID", tenant);
        }
        let response = with_token(http)
            .send()
            .await
            .with_context(|| format!("pushing {}", file.display()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("pushing {}: {status}: {body}", file.display());
        }
        println!("pushed {}", file.display());
    }
    Ok(())
}

/// Adds `$PYRITE_TOKEN` as a bearer token, for a server with `auth.tokens_file` (an environment
/// variable rather than a flag: command lines are visible to every user of the machine).
fn with_token(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match std::env::var("PYRITE_TOKEN") {
        Ok(token) if !token.is_empty() => request.bearer_auth(token),
        _ => request,
    }
}

/// Reads a pprof file; with `at_ms`, rewrites its time (re-encoded, gzipped).
fn read_profile(path: &Path, at_ms: Option<i64>) -> anyhow::Result<Bytes> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let Some(at_ms) = at_ms else {
        return Ok(Bytes::from(raw));
    };
    let mut profile = crate::pprof::decode(&raw, &crate::pprof::DecodeLimits::default())
        .with_context(|| format!("decoding {}", path.display()))?;
    profile.time_nanos = at_ms.saturating_mul(1_000_000);
    Ok(Bytes::from(crate::pprof::encode_gzip(&profile)))
}

#[allow(clippy::too_many_arguments)]
async fn export_remote(
    url: &str,
    tenant: &Tenant,
    query: &str,
    profile_type: &str,
    from_ms: i64,
    until_ms: i64,
    format: ExportFormat,
    max_nodes: Option<usize>,
) -> anyhow::Result<Vec<u8>> {
    let format_name = match format {
        ExportFormat::Svg => "svg",
        ExportFormat::Pprof => "pprof",
        ExportFormat::Folded => "folded",
        ExportFormat::Json => "json",
    };
    let mut params = vec![
        ("query", query.to_string()),
        ("type", profile_type.to_string()),
        ("from", from_ms.to_string()),
        ("until", until_ms.to_string()),
        ("format", format_name.to_string()),
    ];
    if let Some(max_nodes) = max_nodes {
        params.push(("max-nodes", max_nodes.to_string()));
    }
    let mut endpoint = url::Url::parse(&format!("{}/api/v1/render", url.trim_end_matches('/')))?;
    endpoint.query_pairs_mut().extend_pairs(params);
    let response = with_token(
        reqwest::Client::new()
            .get(endpoint)
            .header("X-Scope-OrgID", tenant.as_str()),
    )
    .send()
    .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("export failed: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body.to_vec())
}
