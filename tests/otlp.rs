//! OTLP profiles ingest proven with the OpenTelemetry Collector's own client
//! (`go.opentelemetry.io/collector/pdata/pprofile/pprofileotlp` v0.165.0): starts `pyrite serve`
//! twice (defaults plus `otlp.grpc_listen_address`, and a 1 MiB `api.max_body_bytes` for the
//! oversized exports) and runs the Go
//! module `tests/otlp` against them. It exports every corpus profile the MANIFEST does not mark
//! REJECTED over gRPC (h2c, gzip), OTLP/HTTP protobuf and OTLP/HTTP JSON, and checks through
//! Pyroscope's official querier client that the flame graph totals equal the totals
//! `github.com/google/pprof/profile` computes, that labels carry the resource attributes, that
//! tenants are separate, and the documented errors. Then the server is killed (no flush) and
//! restarted on its data: the OTLP-ingested profiles come back from the WAL with the same
//! totals. `go` missing is a failure, never a skip.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

/// The tenant and service `tests/otlp` exports `gotarget__cpu_5s.pb.gz` to over gRPC.
const REPLAY_TENANT: &str = "otlp-main";
const REPLAY_SERVICE: &str = "otlp-gotarget__cpu_5s.pb.gz";

#[test]
fn collector_client_against_pyrite_serve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = common::corpus_dir();
    let data = tempfile::tempdir().unwrap();
    // The optional second listener (OTLP's conventional gRPC port, here a free one).
    let otlp_address = format!("127.0.0.1:{}", common::free_port());
    let main_config = data.path().join("pyrite.yaml");
    std::fs::write(&main_config, format!("otlp:\n  grpc_listen_address: {otlp_address}\n")).unwrap();
    let mut server = Server::start_with_config(&data.path().join("data"), Some(&main_config));

    let small_data = tempfile::tempdir().unwrap();
    let config = small_data.path().join("pyrite.yaml");
    std::fs::write(&config, "scrape_configs: []\napi:\n  max_body_bytes: 1048576\n").unwrap();
    let small = Server::start_with_config(&small_data.path().join("data"), Some(&config));

    let output = Command::new("go")
        .args(["test", "-count=1", "-v", "./..."])
        .current_dir(root.join("tests/otlp"))
        .env("PYRITE_URL", &server.url)
        .env("PYRITE_SMALL_BODY_URL", &small.url)
        .env("PYRITE_OTLP_GRPC_URL", format!("http://{otlp_address}"))
        .env("PYRITE_CORPUS_DIR", &corpus)
        .output()
        .expect("`go` is needed for tests/otlp (Go 1.26+ on PATH)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "go test in tests/otlp failed:\n{stdout}\n{stderr}"
    );
    for name in ["TestCorpusTotals", "TestTenantsAreSeparate", "TestErrors"] {
        assert!(
            stdout.contains(&format!("--- PASS: {name} ")),
            "{name} did not pass:\n{stdout}"
        );
    }

    // What the edge accepted over OTLP, the WAL replays: kill without a flush, restart.
    let before = common::cpu_nanos(&server, REPLAY_TENANT, REPLAY_SERVICE);
    assert!(before > 0, "no CPU profile for {REPLAY_SERVICE}");
    server.kill();
    let restarted = Server::start(&data.path().join("data"));
    let after = common::cpu_nanos(&restarted, REPLAY_TENANT, REPLAY_SERVICE);
    assert_eq!(after, before, "the OTLP-ingested profile did not replay from the WAL");
    let log = restarted.log.lock().unwrap().clone();
    assert!(
        !log.contains("quarantin"),
        "a WAL record was quarantined on replay:\n{log}"
    );
}
