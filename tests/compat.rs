//! Pyroscope wire compatibility proven with the OFFICIAL Go clients: starts `pyrite serve`
//! (twice: defaults, and one with a 1 MiB body limit) and runs the Go module `tests/compat`
//! against it (`go test`, with `PYRITE_URL` / `PYRITE_SMALL_BODY_URL`). That module pushes real
//! corpus profiles with `pushv1connect` and calls every querier RPC Grafana and the Pyroscope
//! UI use through `querierv1connect` (and settings.v1 through `settingsv1connect`), checking
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
    std::fs::write(&config, "api:\n  max_body_bytes: 1048576\n").unwrap();
    let small = Server::start_with_config(&small_data.path().join("data"), Some(&config));

    let output = Command::new("go")
        .args(["test", "-count=1", "-v", "./..."])
        .current_dir(root.join("tests/compat"))
        .env("PYRITE_URL", &server.url)
        .env("PYRITE_SMALL_BODY_URL", &small.url)
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
        "TestSettings",
    ] {
        assert!(
            stdout.contains(&format!("--- PASS: {name} ")),
            "{name} did not pass:\n{stdout}"
        );
    }
}
