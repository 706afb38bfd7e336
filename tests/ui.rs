//! The web UI in a real browser: headless Debian Chromium driven by playwright-core
//! (`tests/ui/check.mjs`) against a real `pyrite serve` holding a real Go CPU profile.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, pyrite};

#[test]
fn ui_shows_the_flame_graph_and_top_table_of_a_pushed_profile() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let file = common::corpus_dir().join("files/gotarget__cpu_5s.pb.gz");
    pyrite(&[
        "push",
        "--url",
        &server.url,
        "--tenant",
        "web",
        "--name",
        "shop",
        "--at",
        "now-5m",
        file.to_str().unwrap(),
    ]);

    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    assert!(
        ui_dir.join("node_modules/playwright-core").is_dir(),
        "run scripts/install-deps.sh (npm ci in tests/ui)"
    );
    let screenshot = data.path().join("ui.png");
    let seen = browser_check(&ui_dir, &[&server.url, "web", "shop", screenshot.to_str().unwrap()]);

    assert_eq!(seen["errors"], serde_json::json!([]), "no script errors in the page");
    assert_eq!(
        seen["type"], "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
        "CPU time is picked by default"
    );
    let rows = seen["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|row| row[0].as_str().unwrap()).collect();
    // The program burns most CPU in sha256 under cpuHashLoop: a sha256 block function leads.
    assert!(names[0].contains("sha256"), "top self function: {names:?}");
    let frames: Vec<&str> = seen["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        frames.iter().any(|f| f.starts_with("main.cpuHashLoop")),
        "flame graph frames: {frames:?}"
    );
    assert!(
        seen["status"].as_str().unwrap().contains("3,900,000,000"),
        "{}",
        seen["status"]
    );
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a real screenshot was taken"
    );
    // The timeline (SelectSeries over the window) sums to the flame graph's total.
    let timeline = &seen["timeline"];
    assert!(timeline["points"].as_u64().unwrap() > 100, "{timeline}");
    assert_eq!(timeline["total"].as_f64(), Some(3_900_000_000.0), "{timeline}");

    // Dragging across the timeline picks that window: the inputs hold its ms, and the flame
    // graph of the new window still holds the profile pushed five minutes ago.
    let dragged = &seen["dragged"];
    let ms = |field: &str| dragged[field].as_str().unwrap().parse::<i64>().unwrap();
    let (from, until) = (ms("from"), ms("until"));
    let span = until - from;
    assert!((59 * 60_000..=3_600_000).contains(&span), "dragged window of {span} ms");
    assert!(from >= timeline["from"].as_i64().unwrap() && until <= timeline["until"].as_i64().unwrap());
    assert_eq!(
        dragged["timeline"]["from"].as_i64(),
        Some(from),
        "the timeline follows the window"
    );
    assert!(
        dragged["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().starts_with("main.cpuHashLoop")),
        "{dragged}"
    );
    assert!(
        dragged["status"].as_str().unwrap().contains("3,900,000,000"),
        "{dragged}"
    );

    // Against a baseline hour holding another program's CPU profile: the differential view.
    let baseline = common::corpus_dir().join("files/ddnotes_pprof.samples.cpu.001.pb.gz");
    pyrite(&[
        "push",
        "--url",
        &server.url,
        "--tenant",
        "web",
        "--name",
        "shop",
        "--at",
        "now-90m",
        baseline.to_str().unwrap(),
    ]);
    let diff_screenshot = data.path().join("diff.png");
    let seen = browser_check(
        &ui_dir,
        &[
            &server.url,
            "web",
            "shop",
            diff_screenshot.to_str().unwrap(),
            "now-2h",
            "now-1h",
        ],
    );
    assert_eq!(seen["errors"], serde_json::json!([]));
    assert_eq!(
        seen["headings"],
        serde_json::json!(["Function", "Baseline self", "Self", "Change"])
    );
    let rows = seen["rows"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|row| row[0].as_str().unwrap().contains(name)).cloned();
    // The window's hash loop is all new; the baseline program's functions are all gone.
    let grew = row("sha256").expect("sha256 in the diff table");
    assert_eq!(grew[1], "0", "{grew:?}");
    assert!(grew[3].as_str().unwrap().starts_with('+'), "{grew:?}");
    let shrank = rows.iter().find(|row| row[2] == "0").expect("a baseline-only function");
    assert!(shrank[3].as_str().unwrap().starts_with('-'), "{shrank:?}");
    assert!(
        seen["status"].as_str().unwrap().contains("against 380,000,000"),
        "{}",
        seen["status"]
    );
    let frames = seen["frames"].as_array().unwrap();
    assert!(
        frames
            .iter()
            .any(|f| f.as_str().unwrap().starts_with("main.cpuHashLoop")),
        "{frames:?}"
    );

    // The same diff over HTTP, as folded text: each column sums to its window's total.
    let folded = reqwest::blocking::Client::new()
        .get(format!(
            "{}/api/v1/render-diff?query={{service_name=\"shop\"}}&from=now-1h&until=now&baseline_from=now-2h&baseline_until=now-1h&format=folded",
            server.url
        ))
        .header("X-Scope-OrgID", "web")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let (mut before, mut after) = (0i64, 0i64);
    for line in folded.lines() {
        let mut fields = line.rsplitn(3, ' ');
        after += fields.next().unwrap().parse::<i64>().unwrap();
        before += fields.next().unwrap().parse::<i64>().unwrap();
    }
    assert_eq!((before, after), (380_000_000, 3_900_000_000));
}

/// Runs `tests/ui/check.mjs` with `args` in headless Chromium; what the page showed, as JSON.
fn browser_check(ui_dir: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new("node")
        .arg(ui_dir.join("check.mjs"))
        .args(args)
        .output()
        .expect("running node");
    assert!(
        output.status.success(),
        "browser check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
