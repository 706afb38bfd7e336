//! Authentication on a real `pyrite serve`: the peer route behind the cluster secret, API
//! tokens (bearer and basic) mapped to the tenants they may read and write, the tokens file
//! re-read while serving (a broken or empty one keeps the tokens in force), and no credential
//! ever in the server's log.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, free_port};

const CPU_FILE: &str = "ddnotes_cpu-profiler-labels.pprof";
const SECRET: &str = "the-cluster-secret-of-this-test-0001";

const TEAM_A: &str = "token-of-team-a-0001";
const READER_B: &str = "token-reading-b-0001";
/// Stored in the file as its SHA-256 only.
const WRITER_B: &str = "token-writing-b-0001";
const GRAFANA_PASSWORD: &str = "grafana-password-0001";
const LATER: &str = "token-added-later-0001";

fn sha256_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn tokens_file() -> String {
    format!(
        "tokens:
  - name: team-a
    bearer_token: {TEAM_A}
    read: [team-a]
    write: [team-a]
  - name: reader-b
    bearer_token: {READER_B}
    read: [team-b]
  - name: writer-b
    bearer_token_sha256: {}
    write: [team-b]
  - basic_auth: {{ username: grafana, password: {GRAFANA_PASSWORD} }}
    read: [team-a, team-b]
",
        sha256_hex(WRITER_B)
    )
}

/// Writes `text` so that a reload sees a new version even within the mtime granularity.
fn write_later(path: &Path, text: &str, ahead_secs: u64) {
    std::fs::write(path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(ahead_secs))
        .unwrap();
}

enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

fn with_auth(request: reqwest::blocking::RequestBuilder, auth: &Auth) -> reqwest::blocking::RequestBuilder {
    match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.bearer_auth(token),
        Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
    }
}

/// A push.v1 of the CPU corpus file; the status and body.
fn push(server: &Server, tenant: Option<&str>, auth: &Auth) -> (u16, String) {
    use prost::Message;
    use pyrite::proto::push::v1::{PushRequest, RawProfileSeries, RawSample};
    let raw = std::fs::read(common::corpus_dir().join("files").join(CPU_FILE)).unwrap();
    let request = PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![pyrite::proto::types::v1::LabelPair {
                name: "service_name".into(),
                value: "authed".into(),
            }],
            samples: vec![RawSample {
                raw_profile: raw.into(),
                id: String::new(),
            }],
            annotations: Vec::new(),
        }],
    };
    let mut http = reqwest::blocking::Client::new()
        .post(format!("{}/push.v1.PusherService/Push", server.url))
        .header("Content-Type", "application/proto")
        .body(request.encode_to_vec());
    if let Some(tenant) = tenant {
        http = http.header("X-Scope-OrgID", tenant);
    }
    let response = with_auth(http, auth).send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// CPU nanoseconds of service `authed` through querier.v1; the status and the total.
fn read(server: &Server, tenant: Option<&str>, auth: &Auth) -> (u16, serde_json::Value) {
    let body = serde_json::json!({
        "profileTypeID": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
        "labelSelector": "{service_name=\"authed\"}",
        "start": 1, "end": pyrite::now_ms() + 3_600_000,
    });
    let mut http = reqwest::blocking::Client::new()
        .post(format!(
            "{}/querier.v1.QuerierService/SelectMergeStacktraces",
            server.url
        ))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(tenant) = tenant {
        http = http.header("X-Scope-OrgID", tenant);
    }
    let response = with_auth(http, auth).send().unwrap();
    (
        response.status().as_u16(),
        response.json().unwrap_or(serde_json::Value::Null),
    )
}

fn total(answer: &(u16, serde_json::Value)) -> i64 {
    assert_eq!(answer.0, 200, "{}", answer.1);
    answer.1["flamegraph"]["total"].as_str().unwrap_or("0").parse().unwrap()
}

fn peer_request(server: &Server, secret: Option<&str>) -> u16 {
    let mut http = reqwest::blocking::Client::new()
        .post(format!("{}/internal/v1/head", server.url))
        .header("Content-Type", "application/json")
        .body(r#"{"tenant":"team-a","from_ms":0,"until_ms":9999999999999}"#);
    if let Some(secret) = secret {
        http = http.header("X-Pyrite-Cluster-Secret", secret);
    }
    http.send().unwrap().status().as_u16()
}

#[test]
fn the_peer_route_needs_the_cluster_secret() {
    let dir = tempfile::tempdir().unwrap();
    // A one-replica cluster: this process is its only peer.
    let port = free_port();
    let secret_file = dir.path().join("cluster-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let cluster = |secret: &str| {
        format!("scrape_configs: []\ncluster:\n  replica: solo\n  peers: {{ solo: '127.0.0.1:{port}' }}\n{secret}")
    };
    let config = dir.path().join("pyrite.yaml");
    std::fs::write(&config, cluster(&format!("  secret_file: {}\n", secret_file.display()))).unwrap();
    let server = Server::start_with_env(&dir.path().join("data"), Some(&config), port, &[]);
    assert_eq!(peer_request(&server, None), 401);
    assert_eq!(peer_request(&server, Some("the-cluster-secret-of-this-test-0002")), 401);
    assert_eq!(peer_request(&server, Some(&SECRET[..SECRET.len() - 1])), 401);
    assert_eq!(peer_request(&server, Some(SECRET)), 200);
    assert!(!server.log.lock().unwrap().contains(SECRET));
    drop(server);

    // Not a cluster: the route is not served at all.
    let single_dir = tempfile::tempdir().unwrap();
    let single = Server::start(single_dir.path());
    assert_eq!(peer_request(&single, Some(SECRET)), 404);
    drop(single);

    // Peers without a secret: refused at start, naming what is missing.
    std::fs::write(&config, cluster("")).unwrap();
    let output = std::process::Command::new(common::pyrite_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("PYRITE_CLUSTER_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cluster.secret_file") && stderr.contains("PYRITE_CLUSTER_SECRET"),
        "{stderr}"
    );
}

#[test]
fn tokens_decide_who_reads_and_writes_which_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(&tokens, tokens_file()).unwrap();
    let config = dir.path().join("pyrite.yaml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs: []\nauth:\n  tokens_file: {}\n  reload_period: 200ms\n",
            tokens.display()
        ),
    )
    .unwrap();
    // Debug logs of Pyrite and its HTTP stack: whatever they print, no credential is in it.
    let server = Server::start_with_env(
        &dir.path().join("data"),
        Some(&config),
        free_port(),
        &[("RUST_LOG", "debug")],
    );
    let client = reqwest::blocking::Client::new();

    // Without credentials, or unknown ones: 401 with a challenge, on writes and reads.
    let response = client
        .post(format!("{}/querier.v1.QuerierService/ProfileTypes", server.url))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let challenges: Vec<&str> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert!(challenges.iter().any(|c| c.starts_with("Bearer")) && challenges.iter().any(|c| c.starts_with("Basic")));
    assert_eq!(response.json::<serde_json::Value>().unwrap()["code"], "unauthenticated");
    assert_eq!(push(&server, Some("team-a"), &Auth::None).0, 401);
    assert_eq!(
        push(&server, Some("team-a"), &Auth::Bearer("token-of-team-a-0002")).0,
        401
    );
    assert_eq!(
        read(
            &server,
            Some("team-a"),
            &Auth::Basic("grafana", "wrong-password-000001")
        )
        .0,
        401
    );
    assert_eq!(
        read(&server, Some("team-a"), &Auth::Basic("nobody", GRAFANA_PASSWORD)).0,
        401
    );

    // Team A writes and reads A.
    let (status, body) = push(&server, Some("team-a"), &Auth::Bearer(TEAM_A));
    assert_eq!(status, 200, "{body}");
    let one_push = total(&read(&server, Some("team-a"), &Auth::Bearer(TEAM_A)));
    assert!(one_push > 0);
    // ... and nothing of B: 403 permission_denied.
    let (status, body) = read(&server, Some("team-b"), &Auth::Bearer(TEAM_A));
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied")),
        "{body}"
    );
    assert_eq!(push(&server, Some("team-b"), &Auth::Bearer(TEAM_A)).0, 403);
    // Two tenants granted, no header: `anonymous`, which it may not read.
    assert_eq!(read(&server, None, &Auth::Basic("grafana", GRAFANA_PASSWORD)).0, 403);

    // A read-only token cannot push; a write-only token (stored as SHA-256) cannot read.
    let (status, body) = push(&server, Some("team-b"), &Auth::Bearer(READER_B));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission_denied"), "{body}");
    assert_eq!(read(&server, Some("team-b"), &Auth::Bearer(WRITER_B)).0, 403);
    // Without X-Scope-OrgID, a token that may write only B writes B, and one that may read
    // only B reads B.
    assert_eq!(push(&server, None, &Auth::Bearer(WRITER_B)).0, 200);
    assert_eq!(total(&read(&server, None, &Auth::Bearer(READER_B))), one_push);
    // Basic auth (Grafana's data source) reads both.
    assert_eq!(
        total(&read(
            &server,
            Some("team-b"),
            &Auth::Basic("grafana", GRAFANA_PASSWORD)
        )),
        one_push
    );
    assert_eq!(
        total(&read(
            &server,
            Some("team-a"),
            &Auth::Basic("grafana", GRAFANA_PASSWORD)
        )),
        one_push
    );

    // The legacy routes, settings.v1: the same rules.
    let raw = std::fs::read(common::corpus_dir().join("files").join(CPU_FILE)).unwrap();
    let ingest = |auth: &Auth| {
        let request = client
            .post(format!("{}/ingest?name=authed&format=pprof", server.url))
            .header("X-Scope-OrgID", "team-a")
            .body(raw.clone());
        with_auth(request, auth).send().unwrap().status().as_u16()
    };
    assert_eq!(ingest(&Auth::None), 401);
    assert_eq!(ingest(&Auth::Basic("grafana", GRAFANA_PASSWORD)), 403);
    assert_eq!(ingest(&Auth::Bearer(TEAM_A)), 200);
    let render = |auth: &Auth| {
        let request = client
            .get(format!(
                "{}/api/v1/render?query=%7B%7D&from=now-1h&until=now&format=folded",
                server.url
            ))
            .header("X-Scope-OrgID", "team-b");
        with_auth(request, auth).send().unwrap().status().as_u16()
    };
    assert_eq!(render(&Auth::None), 401);
    assert_eq!(render(&Auth::Bearer(TEAM_A)), 403);
    assert_eq!(render(&Auth::Bearer(READER_B)), 200);
    let settings = |method: &str, auth: &Auth| {
        let request = client
            .post(format!("{}/settings.v1.SettingsService/{method}", server.url))
            .header("Content-Type", "application/json")
            .header("X-Scope-OrgID", "team-b")
            .body(match method {
                "Get" => "{}",
                _ => r#"{"setting":{"name":"pluginSettings","value":"{}"}}"#,
            });
        with_auth(request, auth).send().unwrap().status().as_u16()
    };
    assert_eq!(settings("Get", &Auth::Bearer(READER_B)), 200);
    assert_eq!(settings("Set", &Auth::Bearer(READER_B)), 403);
    assert_eq!(settings("Set", &Auth::Bearer(WRITER_B)), 200);

    // The CLI sends $PYRITE_TOKEN.
    let cli_push = |token: &str| {
        std::process::Command::new(common::pyrite_binary())
            .args(["push", "--url", &server.url, "--tenant", "team-a", "--name", "authed"])
            .arg(common::corpus_dir().join("files").join(CPU_FILE))
            .env("PYRITE_TOKEN", token)
            .output()
            .unwrap()
    };
    let refused = cli_push("");
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("401"));
    let pushed = cli_push(TEAM_A);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));

    // Open with tokens on: readiness, metrics, the UI page.
    for open in ["/ready", "/metrics", "/"] {
        let status = client.get(format!("{}{open}", server.url)).send().unwrap().status();
        assert_eq!(status.as_u16(), 200, "{open}");
    }
    // The peer route: not served (no cluster), whatever the token.
    let status = client
        .post(format!("{}/internal/v1/head", server.url))
        .bearer_auth(TEAM_A)
        .body("{}")
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);

    // A new token is valid within the reload period.
    assert_eq!(read(&server, Some("team-a"), &Auth::Bearer(LATER)).0, 401);
    let with_later = format!("{}  - {{ bearer_token: {LATER}, read: [team-a] }}\n", tokens_file());
    write_later(&tokens, &with_later, 5);
    common::wait_until("the new token", Duration::from_secs(5), || {
        read(&server, Some("team-a"), &Auth::Bearer(LATER)).0 == 200
    });
    // An empty file, then a half-written one: refused, the tokens in force stay.
    for (broken, ahead) in [("", 10), (&with_later[..with_later.len() / 2], 15)] {
        write_later(&tokens, broken, ahead);
        let refusals = server
            .log
            .lock()
            .unwrap()
            .matches("keeping the API tokens in force")
            .count();
        common::wait_until("the broken file refused", Duration::from_secs(5), || {
            server
                .log
                .lock()
                .unwrap()
                .matches("keeping the API tokens in force")
                .count()
                > refusals
        });
        assert_eq!(read(&server, Some("team-a"), &Auth::Bearer(LATER)).0, 200);
        assert_eq!(push(&server, Some("team-a"), &Auth::Bearer(TEAM_A)).0, 200);
        assert_eq!(
            read(&server, Some("team-b"), &Auth::Basic("grafana", GRAFANA_PASSWORD)).0,
            200
        );
    }
    // A token taken out is refused within the period.
    write_later(&tokens, &tokens_file(), 20);
    common::wait_until("the token removed", Duration::from_secs(5), || {
        read(&server, Some("team-a"), &Auth::Bearer(LATER)).0 == 401
    });

    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("refused unknown credentials"), "the refusals are logged");
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("grafana:{GRAFANA_PASSWORD}"))
    };
    for secret in [
        TEAM_A,
        READER_B,
        WRITER_B,
        GRAFANA_PASSWORD,
        LATER,
        "token-of-team-a-0002",
        &basic,
    ] {
        assert!(!log.contains(secret), "{secret} is in the server's log");
    }
}
