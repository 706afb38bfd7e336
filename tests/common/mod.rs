//! Shared test support: the corpus manifest, the Go reference checker, and a real
//! `pyrite serve` process on a free loopback port.
#![allow(dead_code)]

pub mod ceph;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `../shared/corpus`, or `$PYRITE_CORPUS_DIR`. Panics if missing: tests must not skip silently.
pub fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("PYRITE_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "corpus not found at {}",
        dir.display()
    );
    dir
}

/// One row of MANIFEST.tsv.
#[derive(Debug, Clone)]
pub struct CorpusFile {
    pub name: String,
    pub path: PathBuf,
    /// None for files Go's tool rejects.
    pub totals: Option<BTreeMap<String, i64>>,
}

pub fn corpus() -> Vec<CorpusFile> {
    let dir = corpus_dir();
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    manifest
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            let name = columns[0].to_string();
            let totals = (columns[7] != "REJECTED").then(|| {
                columns[8]
                    .split(',')
                    .map(|pair| {
                        let (key, value) = pair.rsplit_once('=').unwrap();
                        (key.to_string(), value.parse::<i64>().unwrap())
                    })
                    .collect()
            });
            CorpusFile {
                path: dir.join("files").join(&name),
                name,
                totals,
            }
        })
        .collect()
}

/// Path of the built Go checker (`tests/gocheck`), building it once if `$PYRITE_GOCHECK` is unset.
pub fn gocheck_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("PYRITE_GOCHECK") {
                return PathBuf::from(path);
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let output = root.join("target/gocheck/gocheck");
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&output)
                .arg(".")
                .current_dir(root.join("tests/gocheck"))
                .status()
                .expect("go is needed to build tests/gocheck");
            assert!(status.success(), "building tests/gocheck failed");
            output
        })
        .clone()
}

/// What Go's `profile.Parse` + `CheckValid` make of a file.
#[derive(Debug, serde::Deserialize)]
pub struct GoCheck {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub sample_types: Vec<String>,
    #[serde(default)]
    pub totals: Vec<i64>,
    #[serde(default)]
    pub functions: Vec<String>,
}

pub fn gocheck(files: &[PathBuf]) -> Vec<GoCheck> {
    let output = Command::new(gocheck_binary())
        .args(files)
        .output()
        .expect("running gocheck");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Path of the `pyrite` binary cargo built for these tests.
pub fn pyrite_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pyrite"))
}

/// A `pyrite serve` child process.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub port: u16,
    /// Everything the server wrote to stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts a server on `data_dir` and waits for `/ready`.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with_config(data_dir, None)
    }

    pub fn start_with_config(data_dir: &Path, config: Option<&Path>) -> Server {
        Self::start_on(data_dir, config, free_port())
    }

    /// As [`Server::start_with_config`], on a port chosen beforehand (peers name each other).
    pub fn start_on(data_dir: &Path, config: Option<&Path>, port: u16) -> Server {
        Self::start_with_env(data_dir, config, port, &[])
    }

    /// As [`Server::start_on`], with extra environment variables (`RUST_LOG` among them).
    pub fn start_with_env(data_dir: &Path, config: Option<&Path>, port: u16, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(pyrite_binary());
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.env("RUST_LOG", "warn");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pyrite serve");
        // Drain stderr so the child never blocks on a full pipe; echo it for failing tests.
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[pyrite] {line}");
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            port,
            log,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::blocking::Client::new();
        while Instant::now() < deadline {
            if let Ok(response) = client.get(format!("{}/ready", self.url)).send()
                && response.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pyrite serve did not become ready");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: a graceful stop that flushes the head.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 100 ms until it holds; fails the test after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs the `pyrite` CLI and asserts success; returns stdout.
pub fn pyrite(args: &[&str]) -> String {
    let output = Command::new(pyrite_binary())
        .args(args)
        .output()
        .expect("running pyrite");
    assert!(
        output.status.success(),
        "pyrite {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Calls a querier.v1 RPC with the connect JSON codec; returns the status and the JSON body.
pub fn querier(server: &Server, tenant: &str, method: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/querier.v1.QuerierService/{method}", server.url))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", tenant)
        .body(body.to_string())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(serde_json::Value::Null))
}

/// The merged CPU flame graph (`SelectMergeStacktraces`, process_cpu nanoseconds) of one
/// service of `tenant` over `[start, end]` ms: the status and the JSON body.
pub fn select_cpu(server: &Server, tenant: &str, service: &str, start: i64, end: i64) -> (u16, serde_json::Value) {
    querier(
        server,
        tenant,
        "SelectMergeStacktraces",
        serde_json::json!({
            "profileTypeID": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
            "labelSelector": format!("{{service_name=\"{service}\"}}"),
            "start": start, "end": end,
        }),
    )
}

/// The CPU nanoseconds of one service of `tenant` in all of its history (up to an hour ahead).
pub fn cpu_nanos(server: &Server, tenant: &str, service: &str) -> i64 {
    let (status, body) = select_cpu(server, tenant, service, 1, pyrite::now_ms() + 3_600_000);
    assert_eq!(status, 200, "{body}");
    body["flamegraph"]["total"].as_str().unwrap_or("0").parse().unwrap()
}

/// Sum of the values of folded-stack text (`a;b;c 12` lines).
pub fn folded_total(text: &str) -> i64 {
    text.lines()
        .map(|line| line.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap())
        .sum()
}

/// Pushes one profile with push.v1 (binary protobuf); returns the status, content type and body.
pub fn push_v1(server: &Server, tenant: &str, labels: &[(&str, &str)], raw_profile: Vec<u8>) -> (u16, String, String) {
    push_v1_profiles(server, tenant, labels, vec![raw_profile])
}

/// One push.v1 request carrying `raw_profiles` as samples of one series.
pub fn push_v1_profiles(
    server: &Server,
    tenant: &str,
    labels: &[(&str, &str)],
    raw_profiles: Vec<Vec<u8>>,
) -> (u16, String, String) {
    use prost::Message;
    use pyrite::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
    let request = PushRequest {
        series: vec![RawProfileSeries {
            labels: labels
                .iter()
                .map(|(name, value)| pyrite::proto::types::v1::LabelPair {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            samples: raw_profiles
                .into_iter()
                .map(|raw_profile| RawSample {
                    raw_profile: raw_profile.into(),
                    id: String::new(),
                })
                .collect(),
            annotations: Vec::new(),
        }],
    };
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/push.v1.PusherService/Push", server.url))
        .header("Content-Type", "application/proto")
        .header("X-Scope-OrgID", tenant)
        .body(request.encode_to_vec())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().unwrap())
}

/// Parses `svg` as XML, panicking where it is not well-formed; the text it holds.
pub fn assert_well_formed_xml(svg: &[u8]) -> String {
    let mut reader = quick_xml::Reader::from_reader(svg);
    let mut buffer = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event_into(&mut buffer) {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Text(t)) => text.push_str(&String::from_utf8_lossy(t.as_ref())),
            Ok(_) => {}
            Err(err) => panic!("SVG is not well-formed XML at {}: {err}", reader.buffer_position()),
        }
        buffer.clear();
    }
    text
}
