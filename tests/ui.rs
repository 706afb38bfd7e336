//! The web UI: its embedded files over HTTP (content types, cache headers, gzip, ETags, open
//! with API tokens on), and the whole UI in a real browser — headless Debian Chromium driven by
//! playwright-core (`tests/ui/scenario.mjs`) against a real `pyrite serve` holding corpus
//! profiles. The UI must be built (`make ui`) before cargo builds the binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, pyrite};

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
/// Totals from the corpus MANIFEST (`go tool pprof` figures).
const GOTARGET_CPU_NS: i64 = 3_900_000_000;
const FIB_CPU_NS: i64 = 29_740_000_000;

fn push(server: &Server, tenant: &str, service: &str, at: &str, file: &str) {
    let path = common::corpus_dir().join("files").join(file);
    pyrite(&[
        "push",
        "--url",
        &server.url,
        "--tenant",
        tenant,
        "--name",
        service,
        "--at",
        at,
        path.to_str().unwrap(),
    ]);
}

/// `../shared/gotarget`, a real Go service with net/http/pprof, scraped by the server.
struct GoTarget(Child);

impl GoTarget {
    fn start(address: &str) -> GoTarget {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let binary = root.join("target/gotarget/gotarget");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(root.join("../shared/gotarget"))
            .status()
            .expect("go is needed to build ../shared/gotarget");
        assert!(status.success(), "building gotarget failed");
        let child = Command::new(binary)
            .args(["-listen", address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting gotarget");
        GoTarget(child)
    }
}

impl Drop for GoTarget {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

fn assert_ui_built() {
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("ui/dist/index.html")
            .is_file(),
        "the web UI is not built: run `make ui`, then the tests again (build.rs embeds ui/dist)"
    );
}

#[test]
fn ui_files_are_served_from_the_binary_with_types_and_cache_headers_even_with_tokens_on() {
    assert_ui_built();
    let data = tempfile::tempdir().unwrap();
    let tokens = data.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        "tokens:\n  - name: reader\n    bearer_token: token-of-the-ui-test-01\n    read: [web]\n",
    )
    .unwrap();
    let config = data.path().join("pyrite.yaml");
    std::fs::write(
        &config,
        format!("scrape_configs: []\nauth:\n  tokens_file: {}\n", tokens.display()),
    )
    .unwrap();
    let server = Server::start_with_config(&data.path().join("data"), Some(&config));
    let client = reqwest::blocking::Client::builder().no_gzip().build().unwrap();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = client.get(format!("{}{path}", server.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().unwrap()
    };

    // The page loads without a token, and names its bundle.
    let page = get("/", &[]);
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let etag = page.headers()["etag"].to_str().unwrap().to_string();
    let html = page.text().unwrap();
    assert!(html.contains("grafanaBootData"), "{html}");
    let bundle = html
        .split('"')
        .find(|part| part.starts_with("/assets/index-") && part.ends_with(".js"))
        .expect("index.html names its entry bundle")
        .to_string();
    assert_eq!(get("/", &[("if-none-match", &etag)]).status(), 304);

    // The bundle: JavaScript, immutable, gzip to whoever accepts it, identical once unzipped.
    let plain = get(&bundle, &[]);
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(plain.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().unwrap();
    let zipped = get(&bundle, &[("accept-encoding", "gzip")]);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["vary"], "accept-encoding");
    let zipped = zipped.bytes().unwrap();
    assert!(
        zipped.len() * 2 < plain.len(),
        "{} gzipped vs {} raw",
        zipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut unzipped).unwrap();
    assert!(unzipped == plain, "the gzip copy is the same file");

    // @grafana/ui's icons, at Grafana's own path.
    let icon = get("/public/build/img/icons/unicons/search.svg", &[]);
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    common::assert_well_formed_xml(&icon.bytes().unwrap());
    assert_eq!(get("/assets/no-such-bundle.js", &[]).status(), 404);

    // The API behind the page still wants the token.
    let query = |token: Option<&str>| {
        let mut request = client
            .post(format!("{}/querier.v1.QuerierService/ProfileTypes", server.url))
            .header("content-type", "application/json")
            .header("x-scope-orgid", "web")
            .body("{}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap().status().as_u16()
    };
    assert_eq!(query(None), 401);
    assert_eq!(query(Some("token-of-the-ui-test-01")), 200);
}

/// Folded lines of `/api/v1/render` for `service` over `[from, until)`.
fn folded(server: &Server, tenant: &str, service: &str, from: i64, until: i64) -> Vec<(String, i64)> {
    let text = reqwest::blocking::Client::new()
        .get(format!(
            "{}/api/v1/render?query={{service_name=\"{service}\"}}&type={CPU}&from={from}&until={until}&format=folded",
            server.url
        ))
        .header("X-Scope-OrgID", tenant)
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .map(|line| {
            let (stack, count) = line.rsplit_once(' ').unwrap();
            (stack.to_string(), count.parse().unwrap())
        })
        .collect()
}

fn number(value: &serde_json::Value) -> i64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}")) as i64
}

/// A percentage cell of the top table ("12.5 %", "+760 %") as a number.
fn percent(cell: &serde_json::Value) -> f64 {
    let text = cell.as_str().unwrap();
    text.trim_end_matches('%')
        .trim()
        .trim_start_matches('+')
        .parse()
        .unwrap_or_else(|_| panic!("{text}"))
}

#[test]
fn ui_in_a_browser_finds_searches_sandwiches_narrows_compares_exports_and_switches_tenants() {
    assert_ui_built();
    assert!(
        ui_dir().join("node_modules/playwright-core").is_dir(),
        "run scripts/install-deps.sh (npm ci in tests/ui)"
    );
    let data = tempfile::tempdir().unwrap();
    // "live": gotarget, scraped every 2 s as tenant web.
    let target_address = format!("127.0.0.1:{}", common::free_port());
    let _target = GoTarget::start(&target_address);
    let config = data.path().join("pyrite.yaml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs:\n  - job_name: live\n    tenant: web\n    scrape_interval: 2s\n    scrape_timeout: 2s\n    profiles: [process_cpu]\n    static_configs:\n      - targets: [\"{target_address}\"]\n        labels: {{ service_name: live }}\n"
        ),
    )
    .unwrap();
    let server = Server::start_with_config(&data.path().join("data"), Some(&config));
    // "shop": a Go service hashing (sha256) five minutes ago; 50 and 45 minutes ago the same
    // profile next to a large fib one, so sha256's share of the older window is much smaller.
    push(&server, "web", "shop", "now-5m", "gotarget__cpu_5s.pb.gz");
    push(&server, "web", "shop", "now-50m", "gotarget__cpu_5s.pb.gz");
    push(&server, "web", "shop", "now-45m", "parca_fib.pb.gz");
    push(
        &server,
        "web",
        "checkout",
        "now-10m",
        "pyroscope__og_convert_pprof_cpu.pb.gz",
    );

    common::wait_until("a scraped CPU profile of gotarget", Duration::from_secs(60), || {
        common::cpu_nanos(&server, "web", "live") > 0
    });

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let downloads = data.path().join("downloads");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::create_dir_all(&downloads).unwrap();
    println!("screenshots of each state: {}", shots.display());
    let output = Command::new("node")
        .arg(ui_dir().join("scenario.mjs"))
        .args([
            &server.url,
            "web",
            "shop",
            shots.to_str().unwrap(),
            downloads.to_str().unwrap(),
        ])
        .output()
        .expect("running node");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "no console or page errors, every step done"
    );

    // Landing: both services, each with its time series; CPU types grouped by profile name.
    let cards = seen["landing"].as_array().unwrap();
    let services: Vec<&str> = cards.iter().map(|card| card["service"].as_str().unwrap()).collect();
    assert_eq!(services, ["checkout", "live", "shop"], "{cards:?}");
    assert!(cards.iter().all(|card| number(&card["points"]) >= 1), "{cards:?}");
    assert!(
        seen["types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|group| group["name"] == "process_cpu"
                && group["options"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|o| o == "process_cpu · cpu (nanoseconds)")),
        "{}",
        seen["types"]
    );

    // Last 15 minutes of shop: the hash loop's profile alone, top functions with units.
    let flame = &seen["flame"];
    assert_eq!(number(&flame["total"]), GOTARGET_CPU_NS, "{flame}");
    let rows = flame["rows"].as_array().unwrap();
    assert_eq!(rows[0], serde_json::json!(["", "Symbol", "Self", "Total"]), "{rows:?}");
    assert!(
        rows[1][1].as_str().unwrap().contains("sha256"),
        "top self function: {rows:?}"
    );
    for row in &rows[1..] {
        let self_cell = row[2].as_str().unwrap();
        assert!(
            self_cell.ends_with(" s")
                || self_cell.ends_with(" ms")
                || self_cell.ends_with(" µs")
                || self_cell.ends_with(" ns"),
            "{row:?}"
        );
    }
    let timeline = &seen["flameTimeline"];
    let timeline_sum: f64 = timeline["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert_eq!(timeline_sum as i64, GOTARGET_CPU_NS, "{timeline}");
    assert!(
        timeline["axis"][0].as_str().unwrap().ends_with(" s"),
        "value axis in seconds: {timeline}"
    );

    // Search: the share of the total under sha256 frames, as the folded stacks say.
    let (from, end) = (number(&flame["from"]), number(&flame["end"]));
    let stacks = folded(&server, "web", "shop", from, end + 1);
    let all: i64 = stacks.iter().map(|(_, count)| count).sum();
    let matched: i64 = stacks
        .iter()
        .filter(|(stack, _)| stack.contains("sha256"))
        .map(|(_, count)| count)
        .sum();
    assert_eq!(all, GOTARGET_CPU_NS);
    let expected = format!("{:.2}%", matched as f64 * 100.0 / all as f64);
    let search = &seen["search"];
    assert!(
        search["matchShare"].as_str().unwrap().contains(&expected),
        "{expected} in {search}"
    );
    let matched_rows = &search["rows"].as_array().unwrap()[1..];
    assert!(
        !matched_rows.is_empty()
            && matched_rows
                .iter()
                .all(|row| row[1].as_str().unwrap().contains("sha256")),
        "{search}"
    );
    assert!(search["url"].as_str().unwrap().contains("search=sha256"), "{search}");

    // The copied URL: same window, search, share and table in a fresh page.
    let copied = &seen["copied"];
    for field in ["total", "search", "matchShare", "rows"] {
        assert_eq!(copied[field], search[field], "{field}: {copied} vs {search}");
    }

    // Sandwich view of the top function: its callers and callees, two flame graphs.
    let sandwich = &seen["sandwich"];
    assert!(seen["sandwichFunction"].as_str().unwrap().contains("sha256"), "{seen}");
    assert_eq!(sandwich["sandwich"], true, "{sandwich}");
    assert_eq!(number(&sandwich["canvases"]), 2, "{sandwich}");

    // Exports: named after service and window; the SVG parses, pprof passes go tool pprof,
    // the folded text sums to the window's total.
    let exports = &seen["exports"];
    for format in ["svg", "pprof", "folded"] {
        assert!(
            exports[format]["name"].as_str().unwrap().starts_with("shop_"),
            "{exports}"
        );
    }
    let svg = std::fs::read(exports["svg"]["path"].as_str().unwrap()).unwrap();
    assert!(
        common::assert_well_formed_xml(&svg).contains("sha256"),
        "the SVG holds the window's frames"
    );
    let raw = Command::new("go")
        .args(["tool", "pprof", "-raw", exports["pprof"]["path"].as_str().unwrap()])
        .output()
        .expect("go tool pprof");
    assert!(
        raw.status.success(),
        "go tool pprof -raw: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert!(String::from_utf8_lossy(&raw.stdout).contains("sha256"));
    let folded_text = std::fs::read_to_string(exports["folded"]["path"].as_str().unwrap()).unwrap();
    assert_eq!(common::folded_total(&folded_text), GOTARGET_CPU_NS);

    // The last hour holds all three shop profiles; a drag over its last quarter narrows the
    // window, and the flame graph's total is the sum of the timeline points inside it.
    let hour = &seen["hour"];
    assert_eq!(number(&hour["total"]), 2 * GOTARGET_CPU_NS + FIB_CPU_NS, "{hour}");
    let dragged = &seen["dragged"];
    let (from, end) = (number(&dragged["from"]), number(&dragged["end"]));
    let hour_timeline = &seen["hourTimeline"];
    let step = number(&hour_timeline["step"]);
    let inside: f64 = hour_timeline["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| (from + step - 1..=end).contains(&number(&p[0])))
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert!(end - from < 20 * 60_000, "narrowed to {} ms", end - from);
    assert_eq!(number(&dragged["total"]), inside as i64, "{dragged} vs {hour_timeline}");
    assert_eq!(number(&dragged["total"]), GOTARGET_CPU_NS, "{dragged}");

    // Comparison of a long baseline (both older profiles) with a short recent window: sha256
    // spends the same 3.9 s in both, but its share grew, and the table says so.
    let diff = &seen["diff"];
    assert_eq!(number(&diff["left"]), GOTARGET_CPU_NS + FIB_CPU_NS, "{diff}");
    assert_eq!(number(&diff["right"]), GOTARGET_CPU_NS, "{diff}");
    let share = diff["matchShare"].as_str().unwrap();
    assert!(
        share.contains("of the baseline") && share.contains("of the comparison"),
        "{share}"
    );
    let rows = diff["rows"].as_array().unwrap();
    assert_eq!(
        rows[0],
        serde_json::json!(["", "Symbol", "Baseline", "Comparison", "Diff"]),
        "{rows:?}"
    );
    let grown = rows
        .iter()
        .find(|row| row[1].as_str().unwrap().contains("sha256"))
        .unwrap_or_else(|| panic!("sha256 in the diff table: {rows:?}"));
    assert!(percent(&grown[3]) > percent(&grown[2]), "{grown:?}");
    assert!(
        grown[4].as_str().unwrap().starts_with('+') || percent(&grown[4]) > 0.0,
        "{grown:?}"
    );
    let fib = rows
        .iter()
        .find(|row| row[1].as_str().unwrap().contains("fib.Fibonacci"))
        .unwrap_or_else(|| panic!("Fibonacci in the diff table: {rows:?}"));
    assert_eq!(fib[4], "removed", "{fib:?}");

    // Another tenant: no types, no services, and a sentence saying why.
    let other = &seen["otherTenant"];
    assert_eq!(other["types"], serde_json::json!([]), "{other}");
    assert_eq!(other["services"], serde_json::json!([]), "{other}");
    assert!(other["message"].as_str().unwrap().contains("nobody-here"), "{other}");
    assert!(
        std::fs::read_dir(&shots).unwrap().count() >= 9,
        "a screenshot of each state"
    );
}
