//! Recording rules end to end, against a real Prometheus: `pyrite serve` scrapes the Go program
//! in `../shared/gotarget` (2 s CPU profiles every 3 s), evaluates a provisioned rule (the CPU
//! of `service_name="checkout"`) and one upserted through settings.v1.RecordingRulesService
//! (the CPU of the samples whose stack holds `main.cpuHashLoop`), and remote-writes them every
//! 2 s to Debian's `prometheus` (`--web.enable-remote-write-receiver`). The series must appear
//! in Prometheus within two evaluation intervals of the first evaluated profile, and once the
//! Go program is stopped (so nothing is ingested any more and the last interval has been
//! sent), their sums over the whole test equal Pyrite's own flame graph: its total and the
//! value of the stacks holding `main.cpuHashLoop`, exactly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, free_port};
use serde_json::{Value, json};

const TENANT: &str = "rules-test";
const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
const FUNCTION: &str = "main.cpuHashLoop";
const EVALUATION_INTERVAL_S: u64 = 2;

/// Kills its child on drop, so a failing assertion leaves no process behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `go build` of ../shared/gotarget (as tests/scrape.rs builds it), into its own directory.
fn start_gotarget(port: u16) -> Process {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = root.join("target/gotarget-rules/gotarget");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(root.join("../shared/gotarget"))
        .status()
        .expect("go is needed to build ../shared/gotarget");
    assert!(status.success(), "building gotarget failed");
    let child = Command::new(binary)
        .args(["-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting gotarget");
    let process = Process(child);
    wait_for("gotarget", Duration::from_secs(20), || {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/workload"))
            .ok()
            .filter(|response| response.status().is_success())
    });
    process
}

/// Debian's Prometheus (scripts/install-deps.sh installs it) with the remote-write receiver.
fn start_prometheus(dir: &Path, port: u16) -> Process {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let binary = std::env::var_os("PYRITE_PROMETHEUS").map_or_else(|| PathBuf::from("prometheus"), PathBuf::from);
    let child = Command::new(&binary)
        .arg("--web.enable-remote-write-receiver")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("starting {} (apt-get install prometheus): {err}", binary.display()));
    let process = Process(child);
    wait_for("prometheus ready", Duration::from_secs(30), || {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/-/ready"))
            .ok()
            .filter(|response| response.status().is_success())
    });
    process
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One connect call of RecordingRulesService in JSON: (HTTP status, body).
fn rules_call(server: &Server, method: &str, body: Value) -> (u16, Value) {
    let response = client()
        .post(format!("{}/settings.v1.RecordingRulesService/{method}", server.url))
        .header("Content-Type", "application/json")
        .header("X-Scope-OrgID", TENANT)
        .body(body.to_string())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// A sample of Pyrite's `/metrics`.
fn pyrite_metric(server: &Server, line_start: &str) -> Option<f64> {
    let text = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit_once(' '))
        .and_then(|(_, value)| value.parse().ok())
}

/// The result vector of a Prometheus instant query: (labels, value).
fn prometheus_query(port: u16, query: &str) -> Vec<(Value, f64)> {
    let mut url = url::Url::parse(&format!("http://127.0.0.1:{port}/api/v1/query")).unwrap();
    url.query_pairs_mut().append_pair("query", query);
    let response: Value = client().get(url).send().unwrap().json().unwrap();
    assert_eq!(response["status"], "success", "{query}: {response}");
    response["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let value = series["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (series["metric"].clone(), value)
        })
        .collect()
}

/// Pyrite's flame graph of the whole test as folded stacks: (total, value of the stacks
/// with a `FUNCTION` frame).
fn flame_graph_totals(server: &Server) -> (i64, i64) {
    let now = pyrite::now_ms();
    let mut url = url::Url::parse(&format!("{}/api/v1/render", server.url)).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("query", r#"{service_name="checkout"}"#.to_string()),
        ("type", CPU.to_string()),
        ("from", (now - 600_000).to_string()),
        ("until", (now + 60_000).to_string()),
        ("format", "folded".to_string()),
        ("max_nodes", "1048576".to_string()),
    ]);
    let response = client().get(url).header("X-Scope-OrgID", TENANT).send().unwrap();
    assert!(response.status().is_success(), "render: {}", response.status());
    let (mut total, mut function) = (0, 0);
    for line in response.text().unwrap().lines() {
        let (stack, value) = line.rsplit_once(' ').unwrap();
        let value: i64 = value.parse().unwrap();
        total += value;
        if stack.split(';').any(|frame| frame == FUNCTION) {
            function += value;
        }
    }
    (total, function)
}

#[test]
fn rules_reach_a_real_prometheus_and_match_the_flame_graph() {
    let dir = tempfile::tempdir().unwrap();
    let prometheus_port = free_port();
    let _prometheus = start_prometheus(dir.path(), prometheus_port);
    let target_port = free_port();
    let mut target = start_gotarget(target_port);
    let config = dir.path().join("pyrite.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
scrape_configs:
  - job_name: gotarget
    tenant: {TENANT}
    scrape_interval: 3s
    scrape_timeout: 5s
    cpu_seconds: 2
    profiles: [process_cpu]
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
        labels: {{ service_name: checkout }}
recording_rules:
  evaluation_interval: {EVALUATION_INTERVAL_S}s
  external_labels: {{ origin: pyrite_test }}
  remote_write:
    url: http://127.0.0.1:{prometheus_port}/api/v1/write
  rules:
    {TENANT}:
      - id: checkoutcpu
        metric_name: pyrite_recorded_cpu_nanoseconds
        matchers: ['{{__profile_type__="{CPU}", service_name="checkout"}}']
        group_by: [service_name, job]
"#
        ),
    )
    .unwrap();
    let server = Server::start_with_config(&dir.path().join("data"), Some(&config));

    // The function rule through the API, before the first 2 s profile can arrive.
    let (status, upserted) = rules_call(
        &server,
        "UpsertRecordingRule",
        json!({
            "metricName": "profiles_recorded_hash_cpu_nanoseconds",
            "matchers": [format!(r#"{{__profile_type__="{CPU}"}}"#), r#"{service_name="checkout"}"#],
            "groupBy": ["service_name"],
            "stacktraceFilter": {"functionName": {"functionName": FUNCTION}},
        }),
    );
    assert_eq!(status, 200, "{upserted}");
    let rule = &upserted["rule"];
    let id = rule["id"].as_str().unwrap().to_string();
    assert_eq!(rule["profileType"], CPU);
    assert_eq!(rule["generation"], "1", "int64 is a string in proto3 JSON");

    // The API: both rules listed, the provisioned one marked; refusals say why.
    let (_, listed) = rules_call(&server, "ListRecordingRules", json!({}));
    let rules = listed["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{listed}");
    assert_eq!(rules[0]["id"], "checkoutcpu");
    assert_eq!(rules[0]["provisioned"], true);
    assert_eq!(rules[1]["id"], id.as_str());
    let (status, got) = rules_call(&server, "GetRecordingRule", json!({"id": id}));
    assert_eq!(
        (status, &got["rule"]["metricName"]),
        (200, &json!("profiles_recorded_hash_cpu_nanoseconds"))
    );
    let stale = json!({"id": id, "generation": "7", "metricName": "profiles_recorded_x",
                       "matchers": [format!(r#"{{__profile_type__="{CPU}"}}"#)]});
    let (status, body) = rules_call(&server, "UpsertRecordingRule", stale);
    assert_eq!((status, body["code"].as_str()), (409, Some("aborted")), "{body}");
    let (status, body) = rules_call(
        &server,
        "UpsertRecordingRule",
        json!({"metricName": "cpu", "matchers": [format!(r#"{{__profile_type__="{CPU}"}}"#)]}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("must start with"), "{body}");
    let (status, body) = rules_call(&server, "DeleteRecordingRule", json!({"id": "checkoutcpu"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = rules_call(&server, "GetRecordingRule", json!({"id": "nosuchrule"}));
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");

    // The first evaluated profile, then the series in Prometheus within two intervals (plus
    // the polling steps and Prometheus's own append).
    let evaluated = "pyrite_recording_rules_profiles_evaluated_total ";
    wait_for("the first evaluated profile", Duration::from_secs(30), || {
        pyrite_metric(&server, evaluated).filter(|count| *count >= 1.0)
    });
    let first_profile = Instant::now();
    let appeared = wait_for("both series in Prometheus", Duration::from_secs(20), || {
        let total = prometheus_query(prometheus_port, "pyrite_recorded_cpu_nanoseconds");
        let function = prometheus_query(prometheus_port, "profiles_recorded_hash_cpu_nanoseconds");
        (!total.is_empty() && !function.is_empty()).then_some((total, function))
    });
    let delay = first_profile.elapsed();
    assert!(
        delay <= Duration::from_secs(2 * EVALUATION_INTERVAL_S) + Duration::from_millis(500),
        "series appeared {delay:?} after the first profile"
    );
    let labels = &appeared.0[0].0;
    assert_eq!(labels["service_name"], "checkout");
    assert_eq!(labels["job"], "gotarget");
    assert_eq!(labels["origin"], "pyrite_test");
    assert_eq!(labels["profiles_rule_id"], "checkoutcpu");
    assert_eq!(appeared.1[0].0["profiles_rule_id"], id.as_str());

    // A few more profiles, then stop the program: no more ingestion, and after two intervals
    // everything ingested has been sent.
    wait_for("four evaluated profiles", Duration::from_secs(30), || {
        pyrite_metric(&server, evaluated).filter(|count| *count >= 4.0)
    });
    let _ = target.0.kill();
    let _ = target.0.wait();
    let settled = wait_for("the last interval sent", Duration::from_secs(30), || {
        let count = pyrite_metric(&server, evaluated)?;
        std::thread::sleep(Duration::from_secs(2 * EVALUATION_INTERVAL_S + 1));
        let queued = pyrite_metric(&server, "pyrite_recording_rules_queued_samples ")?;
        (pyrite_metric(&server, evaluated)? == count && queued == 0.0).then_some(count)
    });
    let sent = pyrite_metric(&server, "pyrite_recording_rules_samples_sent_total ").unwrap();
    assert!(sent >= 2.0, "samples sent: {sent}");
    assert_eq!(
        pyrite_metric(&server, "pyrite_recording_rules_samples_failed_total "),
        Some(0.0)
    );

    // The sums over the test equal the flame graph exactly: both count every profile ingested
    // (none arrives any more), and both add integer nanoseconds (exact in a float64 here).
    let window = "[10m]";
    let recorded_total: f64 = prometheus_query(
        prometheus_port,
        &format!("sum(sum_over_time(pyrite_recorded_cpu_nanoseconds{{service_name=\"checkout\"}}{window}))"),
    )[0]
    .1;
    let recorded_function: f64 = prometheus_query(
        prometheus_port,
        &format!("sum(sum_over_time(profiles_recorded_hash_cpu_nanoseconds{window}))"),
    )[0]
    .1;
    let (total, function) = flame_graph_totals(&server);
    assert!(
        total > 0 && function > 0,
        "flame graph: {total} total, {function} in {FUNCTION}"
    );
    assert_eq!(recorded_total, total as f64, "total CPU of {settled} profiles");
    assert_eq!(recorded_function, function as f64, "CPU of {FUNCTION}");
    let share = recorded_function / recorded_total;
    assert!(share > 0.2 && share < 1.0, "{FUNCTION} share {share:.3}");
}
