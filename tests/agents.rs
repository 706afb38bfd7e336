//! Real Pyroscope agents against a real `pyrite serve`: the Python agent `pyroscope-io`
//! (push.v1), the Rust crate `pyroscope` (push.v1) and `@pyroscope/nodejs` (`/ingest`).
//! Each profiles a small program of ours that burns CPU in functions named `pyrite_probe_*`;
//! the test then finds those names in the merged flame graph through the query API.
//!
//! What they need is installed by `scripts/install-deps.sh`: a venv with `pyroscope-io` in
//! `target/agents/venv`, `tests/agents/node/node_modules` (`npm ci`) and the Rust agent built
//! into `target/agents/rust` (built here too, if it is missing or stale).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

/// The functions every probe program burns CPU in.
const PROBES: [&str; 2] = ["pyrite_probe_fibonacci", "pyrite_probe_busy_loop"];
/// How long each probe program runs; agents are set to upload every 2 s and flush at exit.
const PROBE_SECONDS: &str = "6";
/// Bound on an agent run (install, start-up, burn, final upload) on a loaded 2-core machine.
const AGENT_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on waiting for an agent's profiles to show up in queries after it exited.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn agents_dir() -> PathBuf {
    root().join("target/agents")
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Runs an agent program to completion (bounded), echoing its output; panics on failure.
fn run_agent(what: &str, mut command: Command) {
    let started = Instant::now();
    let mut child: Child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: cannot start {command:?}: {err}"));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > AGENT_TIMEOUT {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {AGENT_TIMEOUT:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("[{what}] exit {status}\n[{what}] stdout: {stdout}\n[{what}] stderr: {stderr}");
    assert!(status.success(), "{what} failed ({status}): {stderr}");
}

/// The profile type IDs the tenant has, as Grafana lists them (`ProfileTypes`).
fn profile_types(server: &Server, tenant: &str) -> Vec<Value> {
    let response = client()
        .post(format!("{}/querier.v1.QuerierService/ProfileTypes", server.url))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", tenant)
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().unwrap();
    body["profileTypes"].as_array().cloned().unwrap_or_default()
}

/// The merged flame graph of the last minutes as folded lines `(stack, value)`.
fn folded(server: &Server, tenant: &str, service: &str, profile_type: &str) -> Vec<(String, i64)> {
    let query = format!("{{service_name=\"{service}\"}}");
    let url = url::Url::parse_with_params(
        &format!("{}/api/v1/render", server.url),
        [
            ("query", query.as_str()),
            ("type", profile_type),
            ("from", "now-5m"),
            ("until", "now+1m"),
            ("format", "folded"),
        ],
    )
    .unwrap();
    let response = client().get(url).header("X-Scope-OrgID", tenant).send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    assert_eq!(status, 200, "render {profile_type}: {text}");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (stack, value) = line.rsplit_once(' ').unwrap();
            (stack.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// What the flame graph of one profile type says about the probe functions.
#[derive(Debug)]
struct Found {
    profile_type: String,
    total: i64,
    /// Per probe: the value of all stacks with that function in them.
    probe_values: Vec<i64>,
}

impl Found {
    fn share(&self, index: usize) -> f64 {
        self.probe_values[index] as f64 / self.total as f64
    }
}

/// Polls (bounded) until one of the tenant's time-valued profile types (unit nanoseconds: CPU
/// or wall time, as the agent chose) shows every probe function; returns all that do.
fn wait_for_probes(server: &Server, tenant: &str, service: &str) -> Vec<Found> {
    let deadline = Instant::now() + QUERY_TIMEOUT;
    loop {
        let types = profile_types(server, tenant);
        let mut found = Vec::new();
        for profile_type in &types {
            if profile_type["sampleUnit"] != "nanoseconds" {
                continue;
            }
            let id = profile_type["ID"].as_str().unwrap().to_string();
            let lines = folded(server, tenant, service, &id);
            let total: i64 = lines.iter().map(|(_, value)| value).sum();
            let probe_values: Vec<i64> = PROBES
                .iter()
                .map(|probe| {
                    lines
                        .iter()
                        .filter(|(stack, _)| stack.split(';').any(|frame| frame.contains(probe)))
                        .map(|(_, value)| value)
                        .sum()
                })
                .collect();
            if total > 0 && probe_values.iter().all(|&value| value > 0) {
                found.push(Found {
                    profile_type: id,
                    total,
                    probe_values,
                });
            }
        }
        if !found.is_empty() {
            return found;
        }
        if Instant::now() > deadline {
            panic!("no profile type of tenant {tenant} shows {PROBES:?} after {QUERY_TIMEOUT:?}; types: {types:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Asserts the probes hold a non-trivial share of the flame graph: a probe program spends
/// nearly all its time in them, so together they must be well over a tenth of it, and each
/// (fibonacci is the smaller, ~10-20% here) over 2%.
fn assert_probe_shares(agent: &str, found: &[Found]) {
    for found in found {
        let shares: Vec<f64> = (0..PROBES.len()).map(|index| found.share(index)).collect();
        eprintln!(
            "[{agent}] {}: total {}, probe shares {shares:?}",
            found.profile_type, found.total
        );
    }
    let best = found
        .iter()
        .map(|found| {
            (
                found,
                found.probe_values.iter().sum::<i64>() as f64 / found.total as f64,
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(
        best.1 >= 0.1,
        "{agent}: the probe functions hold only {:.3} of {}",
        best.1,
        best.0.profile_type
    );
    for (index, probe) in PROBES.iter().enumerate() {
        assert!(
            best.0.share(index) >= 0.02,
            "{agent}: {probe} holds only {:.3} of {}",
            best.0.share(index),
            best.0.profile_type
        );
    }
}

fn label_values(server: &Server, tenant: &str, name: &str) -> Value {
    let response = client()
        .post(format!("{}/querier.v1.QuerierService/LabelValues", server.url))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", tenant)
        .body(json!({"name": name}).to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json::<Value>().unwrap()["names"].clone()
}

fn python_agent() -> PathBuf {
    let python = std::env::var_os("PYRITE_AGENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| agents_dir().join("venv/bin/python"));
    assert!(
        python.is_file(),
        "{} not found: run scripts/install-deps.sh (it makes a venv with pyroscope-io)",
        python.display()
    );
    python
}

#[test]
fn python_agent_pyroscope_io_pushes_its_cpu_profile() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (tenant, app) = ("team-python", "pyrite-probe-python");
    let mut command = Command::new(python_agent());
    command
        .arg(root().join("tests/agents/python/probe.py"))
        .args([server.url.as_str(), app, tenant, PROBE_SECONDS]);
    run_agent("pyroscope-io", command);

    let found = wait_for_probes(&server, tenant, app);
    assert!(
        found
            .iter()
            .any(|found| found.profile_type.starts_with("process_cpu:cpu:")),
        "pyroscope-io sends CPU time: {found:?}"
    );
    assert_probe_shares("pyroscope-io", &found);
    assert_eq!(label_values(&server, tenant, "agent"), json!(["python"]));
}

/// Builds `tests/agents/rust-agent` (a no-op when it is up to date) and returns the binary.
fn rust_agent() -> PathBuf {
    let target = agents_dir().join("rust");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--quiet", "--manifest-path"])
        .arg(root().join("tests/agents/rust-agent/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("running cargo to build tests/agents/rust-agent");
    assert!(status.success(), "building tests/agents/rust-agent failed");
    target.join("release/pyrite-rust-agent")
}

#[test]
fn rust_agent_pyroscope_crate_pushes_its_cpu_profile() {
    let agent = rust_agent();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (tenant, app) = ("team-rust", "pyrite-probe-rust");
    let mut command = Command::new(agent);
    command.args([server.url.as_str(), app, tenant, PROBE_SECONDS]);
    run_agent("pyroscope (Rust)", command);

    let found = wait_for_probes(&server, tenant, app);
    assert!(
        found
            .iter()
            .any(|found| found.profile_type.starts_with("process_cpu:cpu:")),
        "the pprof-rs backend sends CPU time: {found:?}"
    );
    assert_probe_shares("pyroscope (Rust)", &found);
    assert_eq!(label_values(&server, tenant, "agent"), json!(["rust"]));
}

#[test]
fn node_agent_pyroscope_nodejs_ingests_its_wall_and_cpu_profiles() {
    let node_dir = root().join("tests/agents/node");
    assert!(
        node_dir.join("node_modules/@pyroscope/nodejs/package.json").is_file(),
        "@pyroscope/nodejs not installed: run scripts/install-deps.sh (npm ci in tests/agents/node)"
    );
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let (tenant, app) = ("team-node", "pyrite-probe-node");
    let mut command = Command::new("node");
    command
        .arg(node_dir.join("probe.js"))
        .args([server.url.as_str(), app, tenant, PROBE_SECONDS])
        .current_dir(&node_dir)
        .env("DEBUG", "pyroscope");
    run_agent("@pyroscope/nodejs", command);

    let found = wait_for_probes(&server, tenant, app);
    assert!(
        found.iter().any(|found| found.profile_type.starts_with("wall:wall:")),
        "@pyroscope/nodejs sends wall time: {found:?}"
    );
    // Its CPU time (collectCpuTime) is `process_cpu`, as Pyroscope's default relabel rule has it.
    assert!(
        found
            .iter()
            .any(|found| found.profile_type == "process_cpu:cpu:nanoseconds:wall:nanoseconds"),
        "@pyroscope/nodejs CPU time is process_cpu: {found:?}"
    );
    assert_probe_shares("@pyroscope/nodejs", &found);
    assert_eq!(label_values(&server, tenant, "agent"), json!(["node"]));
    assert_eq!(label_values(&server, tenant, "pyroscope_spy"), json!(["nodespy"]));
}
