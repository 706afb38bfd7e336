//! `adhocprofiles.v1` and the status services in process (`server::build` + tower `oneshot`):
//! every corpus file Go's pprof reads is uploaded as Grafana's Profiles Drilldown uploads it
//! (JSON, base64), and each of its types read back with Get totals what `go tool pprof`
//! counts (MANIFEST.tsv); oversized and garbage uploads are refused with a clear 400, unknown
//! ids are 404, tenants do not see each other's uploads, and uploads outlive a restart until
//! retention deletes them (while block retention and the compactor leave them alone).

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use prost::Message;
use pyrite::config::Config;
use pyrite::proto::adhocprofiles::v1 as adhoc;
use serde_json::{Value, json};
use tower::ServiceExt;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

async fn build(dir: &std::path::Path, yaml: &str) -> pyrite::server::Built {
    let mut config = Config::parse(yaml).unwrap();
    config.data_dir = dir.to_path_buf();
    config.scrape_configs.clear();
    pyrite::server::build(&config).await.unwrap()
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", String::from_utf8_lossy(&self.body));
        self.json()
    }

    fn assert_error(&self, status: u16, code: &str, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", String::from_utf8_lossy(&self.body));
        let error = self.json();
        assert_eq!(error["code"], code, "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle:?} not in {error}");
    }
}

async fn call(router: &Router, tenant: &str, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
    let request = Request::post(path)
        .header("content-type", content_type)
        .header("x-scope-orgid", tenant)
        .body(Body::from(body))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, body }
}

async fn rpc(router: &Router, tenant: &str, method: &str, body: Value) -> Answer {
    let path = format!("/adhocprofiles.v1.AdHocProfileService/{method}");
    call(router, tenant, &path, "application/json", body.to_string().into_bytes()).await
}

/// An upload as the Drilldown app sends it: the file name and the file's bytes in base64.
async fn upload(router: &Router, tenant: &str, name: &str, bytes: &[u8]) -> Answer {
    rpc(
        router,
        tenant,
        "Upload",
        json!({"name": name, "profile": BASE64.encode(bytes)}),
    )
    .await
}

async fn list(router: &Router, tenant: &str) -> Vec<Value> {
    let listed = rpc(router, tenant, "List", json!({})).await.ok();
    listed["profiles"].as_array().cloned().unwrap_or_default()
}

fn flamebearer(answer: &Value) -> Value {
    serde_json::from_str(answer["flamebearerProfile"].as_str().unwrap()).unwrap()
}

/// The root's total as the levels draw it, and `numTicks`: both must be the profile's total.
fn ticks(flamebearer: &Value) -> i64 {
    let num_ticks = flamebearer["flamebearer"]["numTicks"].as_i64().unwrap();
    let root = &flamebearer["flamebearer"]["levels"][0];
    if num_ticks != 0 {
        assert_eq!(root[1].as_i64().unwrap(), num_ticks, "root level {root}");
    }
    num_ticks
}

fn corpus_file(name: &str) -> Vec<u8> {
    std::fs::read(common::corpus_dir().join("files").join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_file_round_trips_with_go_totals() {
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path(), "").await;
    let router = &built.router;
    let mut uploaded = Vec::new();
    for file in common::corpus() {
        let Some(totals) = file.totals else { continue };
        let bytes = std::fs::read(&file.path).unwrap();
        let answer = upload(router, "drilldown", &file.name, &bytes).await.ok();
        let id = answer["id"].as_str().unwrap().to_string();
        assert!(id.ends_with(&format!("-{}", file.name)), "{id}");
        assert!(answer["uploadedAt"].as_str().unwrap().parse::<i64>().unwrap() > 1_700_000_000_000);
        let types: Vec<String> = serde_json::from_value(answer["profileTypes"].clone()).unwrap();
        assert_eq!(types.len(), totals.len(), "{}: {types:?} vs {totals:?}", file.name);
        assert_eq!(answer["profileType"], types[0].as_str());

        // The manifest keys totals by `type/unit`; the unit comes from the file itself.
        let profile = pyrite::pprof::decode(&bytes, &Default::default()).unwrap();
        let key = |index: usize| {
            let value_type = &profile.sample_type[index];
            let string = |i: i64| profile.string_table[i as usize].clone();
            format!("{}/{}", string(value_type.r#type), string(value_type.unit))
        };
        assert_eq!(ticks(&flamebearer(&answer)), totals[&key(0)], "{} upload", file.name);
        for (index, profile_type) in types.iter().enumerate() {
            // `profile_type` as the Drilldown app spells it (snake case).
            let got = rpc(
                router,
                "drilldown",
                "Get",
                json!({"id": id, "profile_type": profile_type}),
            )
            .await
            .ok();
            assert_eq!(got["profileType"], profile_type.as_str());
            assert_eq!(got["name"], file.name.as_str());
            assert_eq!(
                ticks(&flamebearer(&got)),
                totals[&key(index)],
                "{} {profile_type}",
                file.name
            );
        }
        uploaded.push(id);
    }
    assert!(uploaded.len() >= 30, "only {} corpus files uploaded", uploaded.len());
    let listed: Vec<String> = list(router, "drilldown")
        .await
        .iter()
        .map(|meta| meta["id"].as_str().unwrap().to_string())
        .collect();
    let mut want = uploaded.clone();
    want.sort();
    let mut got = listed.clone();
    got.sort();
    assert_eq!(got, want);
    built.background.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_codec_max_nodes_folded_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path(), "").await;
    let router = &built.router;
    let bytes = corpus_file("gotarget__cpu_5s.pb.gz");
    let request = adhoc::AdHocProfilesUploadRequest {
        name: "cpu.pb.gz".into(),
        profile: BASE64.encode(&bytes),
        max_nodes: Some(16),
    };
    let path = "/adhocprofiles.v1.AdHocProfileService/Upload";
    let answer = call(router, "t", path, "application/proto", request.encode_to_vec()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = adhoc::AdHocProfilesGetResponse::decode(answer.body.as_slice()).unwrap();
    assert_eq!(answer.profile_types, ["samples", "cpu"]);
    let graph: Value = serde_json::from_str(&answer.flamebearer_profile).unwrap();
    let names = graph["flamebearer"]["names"].as_array().unwrap().len();
    assert!(names <= 17, "{names} names with max_nodes 16");
    let full = rpc(router, "t", "Get", json!({"id": answer.id, "profileType": "cpu"}))
        .await
        .ok();
    assert!(flamebearer(&full)["flamebearer"]["names"].as_array().unwrap().len() > names);
    assert_eq!(
        ticks(&graph),
        ticks(&flamebearer(
            &rpc(router, "t", "Get", json!({"id": answer.id})).await.ok()
        ))
    );

    let folded = upload(router, "t", "stacks.txt", b"main;work;hash 40\nmain;idle 2\n")
        .await
        .ok();
    assert_eq!(folded["profileTypes"], json!(["samples"]));
    assert_eq!(ticks(&flamebearer(&folded)), 42);

    let right = upload(
        router,
        "t",
        "cpu2.pb.gz",
        &corpus_file("ddnotes_pprof.samples.cpu.001.pb.gz"),
    )
    .await
    .ok();
    let diff = rpc(
        router,
        "t",
        "Diff",
        json!({"leftId": answer.id, "rightId": right["id"], "profileType": "cpu"}),
    )
    .await
    .ok();
    let graph: Value = serde_json::from_str(diff["flamebearerProfile"].as_str().unwrap()).unwrap();
    assert_eq!(graph["metadata"]["format"], "double");
    assert_eq!(graph["leftTicks"].as_i64().unwrap(), ticks(&flamebearer(&full)));
    assert_eq!(graph["rightTicks"].as_i64().unwrap(), 380_000_000);
    built.background.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_and_final() {
    let dir = tempfile::tempdir().unwrap();
    let built = build(
        dir.path(),
        "adhoc:\n  max_profile_bytes: 90000\n  max_profiles_per_tenant: 2\n",
    )
    .await;
    let router = &built.router;
    // Over the body bound (base64 of 90 KB + 64 KiB): refused before the body is read.
    let large = corpus_file("gpprof_large.cpu");
    upload(router, "t", "large.cpu", &large)
        .await
        .assert_error(400, "invalid_argument", "adhoc.max_profile_bytes");
    // A declared length past the drain bound (4 × the body bound): refused on the header alone
    // (this body is 2 bytes), on a connection the client must not reuse.
    let declared = Request::post("/adhocprofiles.v1.AdHocProfileService/Upload")
        .header("content-type", "application/json")
        .header("content-length", "100000000")
        .header("x-scope-orgid", "t")
        .body(Body::from("{}"))
        .unwrap();
    let response = router.clone().oneshot(declared).await.unwrap();
    // The unread body leaves the connection unusable: the client is told not to reuse it.
    assert_eq!(response.headers()["connection"], "close");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, body }.assert_error(400, "invalid_argument", "adhoc.max_profile_bytes");
    // Within the body bound, over the decoded size.
    let heap = corpus_file("pyroscope__og_convert_pprof_heap.pb");
    assert!(heap.len() > 90_000 && heap.len().div_ceil(3) * 4 < 120_000 + 65_536);
    upload(router, "t", "heap", &heap)
        .await
        .assert_error(400, "invalid_argument", "adhoc.max_profile_bytes (90000)");
    // Garbage, bad base64, an empty file.
    upload(router, "t", "x", b"\x00\x01garbage")
        .await
        .assert_error(400, "invalid_argument", "not a pprof profile");
    upload(router, "t", "x", b"\x1f\x8b\x08garbage")
        .await
        .assert_error(400, "invalid_argument", "not a pprof profile");
    rpc(router, "t", "Upload", json!({"name": "x", "profile": "%%%"}))
        .await
        .assert_error(400, "invalid_argument", "base64");
    rpc(router, "t", "Upload", json!({"name": "x", "profile": ""}))
        .await
        .assert_error(400, "invalid_argument", "empty");
    assert!(list(router, "t").await.is_empty(), "a refused upload was stored");

    // Unknown ids and types.
    let small = corpus_file("ddnotes_cpu-profiler-labels.pprof");
    let stored = upload(router, "t", "labels.pprof", &small).await.ok();
    let id = stored["id"].as_str().unwrap();
    rpc(router, "t", "Get", json!({"id": "nope"}))
        .await
        .assert_error(404, "not_found", "nope");
    let missing = format!("{}-other.pprof", &id[..36]);
    rpc(router, "t", "Get", json!({"id": missing}))
        .await
        .assert_error(404, "not_found", "other.pprof");
    rpc(router, "t", "Get", json!({"id": format!("{}-../../x", &id[..36])}))
        .await
        .assert_error(404, "not_found", "");
    rpc(router, "t", "Get", json!({"id": id, "profile_type": "wall"}))
        .await
        .assert_error(404, "not_found", "wall");
    rpc(router, "t", "Get", json!({"id": id, "max_nodes": -1}))
        .await
        .assert_error(400, "invalid_argument", "");

    // Tenants are apart.
    assert!(list(router, "other").await.is_empty());
    rpc(router, "other", "Get", json!({"id": id}))
        .await
        .assert_error(404, "not_found", "");

    // The per-tenant count cap: 429, room comes back as uploads expire.
    upload(router, "t", "b.pprof", &small).await.ok();
    upload(router, "t", "c.pprof", &small).await.assert_error(
        429,
        "resource_exhausted",
        "adhoc.max_profiles_per_tenant",
    );
    upload(router, "other", "c.pprof", &small).await.ok();
    built.background.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_restarts_until_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    // Block retention and the compactor's unpublished-data sweep as eager as they go: neither
    // may touch `<tenant>/adhoc/`.
    let yaml = "adhoc:\n  retention: 48h\ncompactor:\n  interval: 1s\n  min_age: 0s\n  unpublished_grace: 0s\nretention:\n  sweep_interval: 1s\ntenant_limits:\n  compactor_blocks_retention_period: 1s\n";
    let built = build(dir.path(), yaml).await;
    let bytes = corpus_file("ddnotes_memory-profiler.pprof");
    let kept = upload(&built.router, "t", "heap.pprof", &bytes).await.ok();
    let kept_id = kept["id"].as_str().unwrap().to_string();
    let old = upload(&built.router, "t", "old.pprof", &bytes).await.ok();
    let old_id = old["id"].as_str().unwrap().to_string();
    // Everything of the first server is dropped here, its background work stopped.
    let pyrite::server::Built { background, .. } = built;
    background.stop();

    // Backdate one upload by three days: the first 12 hex digits of its id are its time in ms.
    let adhoc_dir = dir.path().join("blocks/t/adhoc");
    let three_days_ago = pyrite::now_ms() - 3 * 24 * 3600 * 1000;
    let hex = format!("{three_days_ago:012x}");
    let backdated = format!("{}-{}{}", &hex[..8], &hex[8..12], &old_id[13..]);
    std::fs::rename(adhoc_dir.join(&old_id), adhoc_dir.join(&backdated)).unwrap();

    // A restart lists both until the first sweep (at start-up) deletes the backdated one.
    let built = build(dir.path(), yaml).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: Vec<String> = list(&built.router, "t")
            .await
            .iter()
            .map(|meta| meta["id"].as_str().unwrap().to_string())
            .collect();
        assert!(ids.contains(&kept_id), "{ids:?}");
        if !ids.contains(&backdated) {
            assert_eq!(ids, std::slice::from_ref(&kept_id));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backdated upload was never deleted: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the block sweeps run a few times, then the kept upload still reads back whole.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = rpc(
        &built.router,
        "t",
        "Get",
        json!({"id": kept_id, "profile_type": "inuse_space"}),
    )
    .await
    .ok();
    assert_eq!(ticks(&flamebearer(&got)), 1_574_224);
    assert!(adhoc_dir.join(&kept_id).is_file());
    built.background.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_version_and_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path(), "").await;
    let router = &built.router;
    let flags = call(
        router,
        "t",
        "/capabilities.v1.FeatureFlagsService/GetFeatureFlags",
        "application/json",
        b"{}".to_vec(),
    )
    .await
    .ok();
    let names: Vec<&str> = flags["featureFlags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|flag| flag["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"functionProjections") && names.contains(&"utf8LabelNames"),
        "{names:?}"
    );
    let version = call(
        router,
        "t",
        "/version.v1.Version/Version",
        "application/json",
        b"{}".to_vec(),
    )
    .await
    .ok();
    assert_eq!(version["QuerierAPI"], "1");
    let info = call(
        router,
        "t",
        "/status.v1.StatusService/GetBuildInfo",
        "application/json",
        b"{}".to_vec(),
    )
    .await
    .ok();
    assert_eq!(info["status"], "success");
    assert_eq!(info["data"]["version"], env!("CARGO_PKG_VERSION"));
    let response = router
        .clone()
        .oneshot(Request::get("/api/v1/status/buildinfo").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body, info);
    call(
        router,
        "t",
        "/status.v1.StatusService/GetConfig",
        "application/json",
        b"{}".to_vec(),
    )
    .await
    .assert_error(501, "unimplemented", "GetConfig");
    built.background.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_credentials_upload_and_read_their_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        "tokens:\n  - { name: grafana, bearer_token: adhoc-reader-token-0001, read: [team-a] }\n",
    )
    .unwrap();
    let built = build(dir.path(), &format!("auth:\n  tokens_file: {}\n", tokens.display())).await;
    let router = &built.router;
    let send = |tenant: &str, path: &str, token: Option<&str>, body: Value| {
        let mut request = Request::post(path)
            .header("content-type", "application/json")
            .header("x-scope-orgid", tenant);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body.to_string())).unwrap();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
            Answer { status, body }
        }
    };
    let token = Some("adhoc-reader-token-0001");
    let profile = BASE64.encode(corpus_file("ddnotes_cpu-profiler-labels.pprof"));
    let upload_path = "/adhocprofiles.v1.AdHocProfileService/Upload";
    let uploaded = send(
        "team-a",
        upload_path,
        token,
        json!({"name": "cpu.pprof", "profile": profile}),
    )
    .await
    .ok();
    let listed = send("team-a", "/adhocprofiles.v1.AdHocProfileService/List", token, json!({}))
        .await
        .ok();
    assert_eq!(listed["profiles"][0]["id"], uploaded["id"]);
    send(
        "team-a",
        "/capabilities.v1.FeatureFlagsService/GetFeatureFlags",
        token,
        json!({}),
    )
    .await
    .ok();
    send("team-a", "/version.v1.Version/Version", token, json!({}))
        .await
        .ok();
    // Another tenant, or no credentials at all.
    let other = send(
        "team-b",
        upload_path,
        token,
        json!({"name": "cpu.pprof", "profile": profile}),
    )
    .await;
    other.assert_error(403, "permission_denied", "");
    let anonymous = send(
        "team-a",
        upload_path,
        None,
        json!({"name": "cpu.pprof", "profile": profile}),
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    built.background.stop();
}
