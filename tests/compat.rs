//! Pyroscope wire compatibility proven with the OFFICIAL Go clients: starts `pyrite serve`
//! (three times: defaults, one with a 1 MiB body limit, one with API tokens) and runs the Go module `tests/compat`
//! against it (`go test`, with `PYRITE_URL` / `PYRITE_SMALL_BODY_URL` / `PYRITE_AUTH_URL`). That module pushes real
//! corpus profiles with `pushv1connect` and calls every querier RPC Grafana and the Pyroscope
//! UI use through `querierv1connect` (and settings.v1, adhocprofiles.v1, capabilities.v1, status.v1
//! and version.v1 through their connect clients), checking
//! answers against totals computed with `github.com/google/pprof/profile`. `go` missing is a failure, never a skip.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

#[test]
fn official_go_clients_against_pyrite_serve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = common::corpus_dir();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());

    let small_data = tempfile::tempdir().unwrap();
    let config = small_data.path().join("pyrite.yaml");
    // adhoc_test.go's oversized upload is refused by this server's 256 KiB ad-hoc limit.
    std::fs::write(
        &config,
        "api:\n  max_body_bytes: 1048576\nadhoc:\n  max_profile_bytes: 262144\n",
    )
    .unwrap();
    let small = Server::start_with_config(&small_data.path().join("data"), Some(&config));

    // Tokens on: the credentials `auth_test.go` uses.
    let auth_data = tempfile::tempdir().unwrap();
    let tokens = auth_data.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        "tokens:\n  - { name: writer, bearer_token: compat-writer-token-0001, write: [compat-auth] }\n  \
         - { basic_auth: { username: grafana, password: compat-grafana-password-01 }, read: [compat-auth] }\n",
    )
    .unwrap();
    let auth_config = auth_data.path().join("pyrite.yaml");
    std::fs::write(
        &auth_config,
        format!("scrape_configs: []\nauth:\n  tokens_file: {}\n", tokens.display()),
    )
    .unwrap();
    let authed = Server::start_with_config(&auth_data.path().join("data"), Some(&auth_config));

    let output = Command::new("go")
        .args(["test", "-count=1", "-v", "./..."])
        .current_dir(root.join("tests/compat"))
        .env("PYRITE_URL", &server.url)
        .env("PYRITE_SMALL_BODY_URL", &small.url)
        .env("PYRITE_AUTH_URL", &authed.url)
        .env("PYRITE_CORPUS_DIR", &corpus)
        .output()
        .expect("`go` is needed for tests/compat (Go 1.26+ on PATH)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "go test in tests/compat failed:\n{stdout}\n{stderr}"
    );
    // Every Go test ran (a compile error or a filtered run would show fewer).
    for name in [
        "TestCPUProfileThroughEveryQuerierRPC",
        "TestSelectSeriesBucketing",
        "TestDiff",
        "TestQuerierErrorsAndHealthCheck",
        "TestPushShapes",
        "TestPushErrors",
        "TestMemoryDeltas",
        "TestSelectMergeSpanProfile",
        "TestSelectHeatmap",
        "TestSelectSeriesExemplars",
        "TestSettings",
        "TestTokenAuth",
    ] {
        assert!(
            stdout.contains(&format!("--- PASS: {name} ")),
            "{name} did not pass:\n{stdout}"
        );
    }
}
