//! The `pyrite` command line: `serve`, `push`, `export`. Flags are pinned: other tools and the
//! README depend on these exact names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use prost::Message;

use crate::api;
use crate::config::Config;
use crate::export::ExportRequest;
use crate::head::Head;
use crate::model::{LABEL_DELTA, Labels, Selector, parse_time_ms};
use crate::params::{self, RenderWindow};
use crate::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
use crate::query::Querier;
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
    /// Push pprof files to a server over push.v1, stored as they are.
    Push {
        /// The server, e.g. http://localhost:4040 (a token, if it needs one: $PYRITE_TOKEN).
        #[arg(long)]
        url: String,
        /// Tenant the profiles land in (X-Scope-OrgID) [default: the server's, anonymous].
        #[arg(long)]
        tenant: Option<String>,
        /// service_name of the pushed series [default: unknown_service].
        #[arg(long)]
        name: Option<String>,
        /// Extra labels, `k=v,k=v` (names: letters, digits, `_` and `.`).
        #[arg(long)]
        labels: Option<String>,
        /// Stamp the profiles with this time instead of their own: RFC 3339, unix seconds or
        /// milliseconds, or `now`, `now-1h`, `now-15m`.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The files are successive snapshots of cumulative profiles (Go heap/allocs): the
        /// server stores each one's alloc_* as the difference to the one before in the same
        /// series, the first only primes. Without it every file is stored as it is.
        #[arg(long)]
        cumulative: bool,
        /// pprof files, gzipped or not, pushed one by one in this order.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Export a window as SVG, pprof, folded text or flamebearer JSON. A window in which
    /// nothing matched writes nothing and exits non-zero.
    Export {
        /// Query a running server, e.g. http://localhost:4040 (a token: $PYRITE_TOKEN).
        #[arg(long, conflicts_with = "data_dir", required_unless_present = "data_dir")]
        url: Option<String>,
        /// Read a data directory directly (blocks and WAL), no server needed.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Config file describing storage, for --data-dir with S3 blocks.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Tenant to read (X-Scope-OrgID) [default: anonymous].
        #[arg(long)]
        tenant: Option<String>,
        /// Label selector in braces, e.g. '{service_name="api"}', '{env=~"prod|stage"}'; `{}`
        /// selects every series of the type.
        #[arg(long, default_value = "{}", value_name = "SELECTOR", value_parser = selector_arg)]
        query: String,
        /// Profile type ID, `<name>:<sample type>:<unit>:<period type>:<period unit>`, e.g.
        /// memory:alloc_space:bytes:space:bytes (querier.v1 ProfileTypes lists what is stored).
        #[arg(long = "type", default_value = DEFAULT_EXPORT_TYPE, value_name = "PROFILE_TYPE_ID")]
        profile_type: String,
        /// Start of the window (included): RFC 3339, unix seconds or milliseconds, or `now`,
        /// `now-1h`, `now-15m`.
        #[arg(long, value_name = "TIME")]
        from: String,
        /// End of the window (excluded), in the same forms as --from.
        #[arg(long, value_name = "TIME")]
        until: String,
        /// What to write: an SVG flame graph, a gzipped pprof, folded stacks or flamebearer JSON.
        #[arg(long, value_parser = ["svg", "pprof", "folded", "json"])]
        format: String,
        /// File to write, or `-` for standard output.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// At most this many nodes, the smallest merged into "other" [default: the server's
        /// api.default_max_nodes].
        #[arg(long, value_name = "N")]
        max_nodes: Option<usize>,
    },
}

/// Log filter without `RUST_LOG`. pprof-rs logs "starting/stopping cpu profiler" at INFO for
/// every profile, which the self-scrape takes every 15 s: its own news is left to warnings (our
/// DEBUG line in `api::debug_pprof` says the same, with the sample count).
const DEFAULT_LOG_FILTER: &str = "info,pprof=warn";

/// `--query`: a label selector, braces included. Without them the server would read the text
/// as a profile type (Pyroscope's `<type>{selector}` query form) and complain about that.
fn selector_arg(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return Err(
            "a selector is written in braces, e.g. '{service_name=\"api\"}' or '{}' for every series \
             (the profile type goes in --type)"
                .into(),
        );
    }
    Selector::parse(trimmed).map_err(|err| err.to_string())?;
    Ok(trimmed.to_string())
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files, pipes or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            cumulative,
            files,
        } => {
            push(
                &url,
                tenant.as_deref(),
                name.as_deref(),
                labels.as_deref(),
                at.as_deref(),
                cumulative,
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
            let format: ExportFormat = format.parse().map_err(anyhow::Error::msg)?;
            let tenant = params::tenant(tenant.as_deref(), false)?;
            let window = RenderWindow::parse(
                tenant.clone(),
                Some(query.as_str()),
                Some(profile_type.as_str()),
                (Some(from.as_str()), Some(until.as_str())),
                ("--from", "--until"),
                crate::now_ms(),
            )?;
            let request = ExportRequest {
                window,
                format,
                max_nodes,
            };
            let body = match (url, data_dir) {
                (Some(url), _) => export_remote(&url, &request, &profile_type).await?,
                (None, Some(data_dir)) => {
                    let mut config = match config {
                        Some(path) => Config::load(&path)?,
                        None => Config::default(),
                    };
                    config.data_dir = data_dir;
                    crate::export::export_window(&open_read_only(&config)?, &request).await?
                }
                (None, None) => bail!("give --url or --data-dir"),
            };
            if export_is_empty(format, &body)? {
                bail!(
                    "nothing matched: no {profile_type} samples for {query} in tenant {tenant} from {from} until \
                     {until}; {} not written",
                    output.display()
                );
            }
            write_output(&output, &body)
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
    let built = crate::server::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %config.data_dir.display(), "pyrite is serving");
    // Scrapes ingest through the same Ingester as pushes; the self-scrape job follows `address`.
    let mut scraper = crate::scrape::ScrapeManager::start(
        config.scrape_configs.clone(),
        address,
        built.ingester,
        built.scrape_metrics,
        built.peers,
    )?;
    // The optional OTLP listener serves the same router and stops with the main one.
    let (stopping, stop_otlp) = tokio::sync::watch::channel(false);
    let otlp = match config.otlp.grpc_listen_address {
        Some(otlp_address) => {
            let otlp_listener = tokio::net::TcpListener::bind(otlp_address)
                .await
                .with_context(|| format!("listening on {otlp_address} (otlp.grpc_listen_address)"))?;
            tracing::info!(address = %otlp_address, "serving OTLP on its own address too");
            let (router, server_config) = (built.router.clone(), config.server.clone());
            let mut stop_otlp = stop_otlp;
            Some(tokio::spawn(async move {
                crate::server::serve(otlp_listener, router, &server_config, async move {
                    let _ = stop_otlp.wait_for(|stop| *stop).await;
                })
                .await
            }))
        }
        None => None,
    };
    crate::server::serve(listener, built.router, &config.server, async move {
        shutdown_signal().await;
        let _ = stopping.send(true);
        scraper.stop();
        api::debug_pprof::begin_shutdown();
    })
    .await?;
    // Before the sender stops with the other background tasks: the last interval's values.
    built
        .state
        .recording_rules
        .finish(std::time::Duration::from_secs(5))
        .await;
    if let Some(otlp) = otlp {
        otlp.await??;
    }
    built.background.stop();
    tracing::info!("shutting down: flushing the head");
    built.head.flush().await?;
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
    cumulative: bool,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    let mut pairs = parse_label_list(labels.unwrap_or(""))?;
    if let Some(name) = name {
        pairs.push(("service_name".into(), name.to_string()));
    }
    let mut labels = Labels::new(pairs)?;
    if !cumulative {
        // Pyroscope's convention (Alloy sends it): the profile is what to store. Without it the
        // server takes a Go heap profile for the first of a cumulative series and keeps none of
        // its allocations.
        labels.set(LABEL_DELTA, "false");
    }
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

/// Writes an export to `output`, `-` being standard output.
fn write_output(output: &Path, body: &[u8]) -> anyhow::Result<()> {
    if output == Path::new("-") {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(body).context("writing to standard output")?;
        return stdout.flush().context("writing to standard output");
    }
    std::fs::write(output, body).with_context(|| format!("writing {}", output.display()))
}

/// Whether an export holds no sample: its window, selector and type matched nothing. Read from
/// the rendered bytes, so a server's answer and a local export are judged alike.
fn export_is_empty(format: ExportFormat, body: &[u8]) -> anyhow::Result<bool> {
    Ok(match format {
        ExportFormat::Folded => body.iter().all(u8::is_ascii_whitespace),
        ExportFormat::Json => {
            let value: serde_json::Value = serde_json::from_slice(body).context("reading the exported JSON")?;
            value["flamebearer"]["numTicks"].as_i64().unwrap_or(0) == 0
        }
        ExportFormat::Pprof => {
            let profile = crate::pprof::decode(body, &crate::pprof::DecodeLimits::default())
                .context("reading the exported pprof")?;
            profile
                .sample
                .iter()
                .all(|sample| sample.value.iter().all(|&value| value == 0))
        }
        ExportFormat::Svg => body
            .windows(render::EMPTY_SVG_MARKER.len())
            .any(|window| window == render::EMPTY_SVG_MARKER.as_bytes()),
    })
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

/// Asks a running server for the export: the same window, sent as `/api/v1/render` reads it
/// (`type` as given: the server reads it only beside a bare selector).
async fn export_remote(url: &str, request: &ExportRequest, profile_type: &str) -> anyhow::Result<Vec<u8>> {
    let format_name = match request.format {
        ExportFormat::Svg => "svg",
        ExportFormat::Pprof => "pprof",
        ExportFormat::Folded => "folded",
        ExportFormat::Json => "json",
    };
    let window = &request.window;
    let mut params = vec![
        ("query", window.query.clone()),
        ("type", profile_type.to_string()),
        ("from", window.select.from_ms.to_string()),
        ("until", window.select.until_ms.to_string()),
        ("format", format_name.to_string()),
    ];
    if let Some(max_nodes) = request.max_nodes {
        params.push(("max-nodes", max_nodes.to_string()));
    }
    let tenant = &window.select.tenant;
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
