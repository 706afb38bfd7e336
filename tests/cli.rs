//! The `pyrite` command line as a user runs it: the real binary against a real `pyrite serve`.
//! `push` stores files as they are (a Go heap profile keeps its allocations; `--cumulative`
//! turns a series of snapshots into deltas), empty sample types land under the fallback name,
//! `export` writes to stdout with `--output -` and fails loudly when nothing matched, a
//! selector without braces is named as such, every flag has a help line, and the server's
//! logs carry no line per self-profile and no colour codes when they go to a pipe.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Server, folded_total, pyrite, pyrite_binary, querier};
use serde_json::json;

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn corpus_file(name: &str) -> PathBuf {
    common::corpus_dir().join("files").join(name)
}

/// Runs the CLI without asserting anything about the outcome.
fn run_pyrite(args: &[&str], cwd: &Path) -> Output {
    Command::new(pyrite_binary())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running pyrite")
}

/// The whole-history total of one profile type of one service (querier.v1
/// SelectMergeStacktraces, from the epoch to an hour ahead: corpus files keep their own times).
fn total(server: &Server, tenant: &str, profile_type: &str, service: &str) -> i64 {
    let (status, body) = querier(
        server,
        tenant,
        "SelectMergeStacktraces",
        json!({
            "profileTypeID": profile_type,
            "labelSelector": format!("{{service_name=\"{service}\"}}"),
            "start": "1",
            "end": (pyrite::now_ms() + 3_600_000).to_string(),
        }),
    );
    assert_eq!(status, 200, "{body}");
    body["flamegraph"]["total"]
        .as_str()
        .map_or(0, |total| total.parse().unwrap())
}

/// The profile type IDs stored in `tenant`.
fn profile_types(server: &Server, tenant: &str) -> Vec<String> {
    let (status, body) = querier(
        server,
        tenant,
        "ProfileTypes",
        json!({"start": "1", "end": (pyrite::now_ms() + 3_600_000).to_string()}),
    );
    assert_eq!(status, 200, "{body}");
    body["profileTypes"]
        .as_array()
        .map(|types| types.iter().map(|t| t["ID"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// `memory:<sample type>:<unit>:<period type>:<period unit>` of a Go heap profile file, its
/// period read from the file itself.
fn memory_type(file: &Path, sample_type: &str, unit: &str) -> String {
    let profile = pyrite::pprof::decode(&std::fs::read(file).unwrap(), &Default::default()).unwrap();
    let string = |index: i64| profile.string_table[index as usize].clone();
    let (period_type, period_unit) = profile
        .period_type
        .as_ref()
        .map_or((String::new(), String::new()), |period| {
            (string(period.r#type), string(period.unit))
        });
    format!("memory:{sample_type}:{unit}:{period_type}:{period_unit}")
}

/// Every corpus file Go's tool reads as a heap profile: MANIFEST.tsv gives it alloc_objects and
/// alloc_space totals.
fn heap_profiles() -> Vec<(common::CorpusFile, i64, i64)> {
    let heaps: Vec<_> = common::corpus()
        .into_iter()
        .filter_map(|file| {
            let totals = file.totals.clone()?;
            let objects = *totals.get("alloc_objects/count")?;
            let space = *totals.get("alloc_space/bytes")?;
            Some((file, objects, space))
        })
        .collect();
    assert!(heaps.len() >= 5, "the corpus holds Go heap profiles: {}", heaps.len());
    heaps
}

#[test]
fn push_stores_every_go_heap_profile_with_its_allocations() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    for (index, (file, alloc_objects, alloc_space)) in heap_profiles().into_iter().enumerate() {
        let service = format!("heap-{index}");
        pyrite(&[
            "push",
            "--url",
            &server.url,
            "--tenant",
            "heaps",
            "--name",
            &service,
            file.path.to_str().unwrap(),
        ]);
        assert_eq!(
            total(
                &server,
                "heaps",
                &memory_type(&file.path, "alloc_space", "bytes"),
                &service
            ),
            alloc_space,
            "{}: alloc_space as MANIFEST.tsv has it",
            file.name
        );
        assert_eq!(
            total(
                &server,
                "heaps",
                &memory_type(&file.path, "alloc_objects", "count"),
                &service
            ),
            alloc_objects,
            "{}: alloc_objects as MANIFEST.tsv has it",
            file.name
        );
    }
}

#[test]
fn push_cumulative_stores_the_difference_between_snapshots() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let manifest: BTreeMap<String, BTreeMap<String, i64>> = common::corpus()
        .into_iter()
        .filter_map(|file| Some((file.name, file.totals?)))
        .collect();
    let alloc_space = |name: &str| manifest[name]["alloc_space/bytes"];
    let (t0, t1) = ("gotarget__heap_t0.pb.gz", "gotarget__heap_t1.pb.gz");
    let files = [corpus_file(t0), corpus_file(t1)];
    let files: Vec<&str> = files.iter().map(|file| file.to_str().unwrap()).collect();
    let alloc_space_type = memory_type(&corpus_file(t0), "alloc_space", "bytes");

    // Two snapshots of one process, 16 s apart: the second counts everything since it started.
    pyrite(
        &[
            &["push", "--url", &server.url, "--name", "snapshots", "--cumulative"],
            &files[..],
        ]
        .concat(),
    );
    assert_eq!(
        total(&server, "anonymous", &alloc_space_type, "snapshots"),
        alloc_space(t1) - alloc_space(t0),
        "the first snapshot primes, the second is stored as what was allocated in between"
    );

    // Without --cumulative each file is what it says.
    pyrite(&[&["push", "--url", &server.url, "--name", "as-is"], &files[..]].concat());
    assert_eq!(
        total(&server, "anonymous", &alloc_space_type, "as-is"),
        alloc_space(t0) + alloc_space(t1)
    );
}

#[test]
fn push_stores_empty_sample_types_under_the_fallback_name() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(corpus_file("gotarget__cpu_5s.pb.gz")).unwrap();
    let profile = pyrite::pprof::decode(&raw, &Default::default()).unwrap();
    let (samples, cpu_nanos) = (390, 3_900_000_000); // MANIFEST.tsv: samples/count, cpu/nanoseconds

    // One sample type without a name or unit (string 0), then none named at all.
    let mut one_unnamed = profile.clone();
    one_unnamed.sample_type[1].r#type = 0;
    one_unnamed.sample_type[1].unit = 0;
    let mut none_named = one_unnamed.clone();
    none_named.sample_type[0].r#type = 0;
    none_named.sample_type[0].unit = 0;
    for (name, profile) in [("one-unnamed", &one_unnamed), ("none-named", &none_named)] {
        let path = dir.path().join(format!("{name}.pb.gz"));
        std::fs::write(&path, pyrite::pprof::encode_gzip(profile)).unwrap();
        // As it is, and re-encoded by --at.
        for (tenant, at) in [(format!("{name}-raw"), None), (format!("{name}-at"), Some("now"))] {
            let mut args = vec!["push", "--url", &server.url, "--tenant", &tenant, "--name", "app"];
            if let Some(at) = at {
                args.extend(["--at", at]);
            }
            args.push(path.to_str().unwrap());
            pyrite(&args);
        }
    }
    for tenant in ["one-unnamed-raw", "one-unnamed-at"] {
        let types = profile_types(&server, tenant);
        assert_eq!(
            types,
            [
                "process_cpu:samples:count:cpu:nanoseconds",
                "process_cpu:unknown:unknown:cpu:nanoseconds"
            ],
            "{tenant}"
        );
        assert_eq!(
            total(&server, tenant, "process_cpu:unknown:unknown:cpu:nanoseconds", "app"),
            cpu_nanos
        );
    }
    for tenant in ["none-named-raw", "none-named-at"] {
        // No name to derive a profile name from either; the second type is told apart by its
        // position.
        let types = profile_types(&server, tenant);
        assert_eq!(
            types,
            [
                "unknown:unknown:unknown:cpu:nanoseconds",
                "unknown:unknown_1:unknown:cpu:nanoseconds"
            ],
            "{tenant}"
        );
        assert_eq!(total(&server, tenant, &types[0], "app"), samples);
        assert_eq!(total(&server, tenant, &types[1], "app"), cpu_nanos);
        // And the CLI reads it back under that name.
        let folded = pyrite(&[
            "export",
            "--url",
            &server.url,
            "--tenant",
            tenant,
            "--type",
            &types[1],
            "--from",
            "1",
            "--until",
            "now+1h",
            "--format",
            "folded",
            "--output",
            "-",
        ]);
        assert_eq!(folded_total(&folded), cpu_nanos);
    }
}

#[test]
fn export_to_stdout_and_an_export_that_matched_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    let cwd = tempfile::tempdir().unwrap();
    let cpu_file = corpus_file("gotarget__cpu_5s.pb.gz");
    pyrite(&[
        "push",
        "--url",
        &server.url,
        "--tenant",
        "shop",
        "--name",
        "checkout",
        "--at",
        "now",
        cpu_file.to_str().unwrap(),
    ]);
    let export = |source: &[&str], query: &str, format: &str, output: &str| {
        let mut args = vec!["export"];
        args.extend(source);
        args.extend([
            "--tenant", "shop", "--query", query, "--type", CPU, "--from", "now-10m", "--until", "now+1m", "--format",
            format, "--output", output,
        ]);
        run_pyrite(&args, cwd.path())
    };
    let remote = ["--url", server.url.as_str()];

    // `--output -`: the export on stdout, no file named "-".
    let output = export(&remote, r#"{service_name="checkout"}"#, "folded", "-");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(folded_total(&String::from_utf8(output.stdout).unwrap()), 3_900_000_000);
    assert!(!cwd.path().join("-").exists());
    let output = export(&remote, r#"{service_name="checkout"}"#, "pprof", "-");
    assert!(output.status.success());
    let exported = pyrite::pprof::decode(&output.stdout, &Default::default()).unwrap();
    assert_eq!(
        exported.sample.iter().map(|sample| sample.value[0]).sum::<i64>(),
        3_900_000_000
    );

    // Every format: a window with data is written, one without fails, says so, writes nothing.
    for format in ["svg", "pprof", "folded", "json"] {
        let file = format!("checkout.{format}");
        let output = export(&remote, r#"{service_name="checkout"}"#, format, &file);
        assert!(
            output.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(std::fs::metadata(cwd.path().join(&file)).unwrap().len() > 0);

        let file = format!("nothing.{format}");
        let output = export(&remote, r#"{service_name="nowhere"}"#, format, &file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{format}: an empty export exits non-zero");
        assert!(
            stderr.contains("nothing matched") && stderr.contains(r#"{service_name="nowhere"}"#),
            "{format}: {stderr}"
        );
        assert!(!cwd.path().join(&file).exists(), "{format}: no file written");
    }

    // The data directory alone, no server, judged alike.
    server.terminate();
    let offline = ["--data-dir", data.path().to_str().unwrap()];
    let output = export(&offline, r#"{service_name="checkout"}"#, "folded", "-");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(folded_total(&String::from_utf8(output.stdout).unwrap()), 3_900_000_000);
    let output = export(&offline, r#"{service_name="nowhere"}"#, "svg", "offline.svg");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing matched"));
    assert!(!cwd.path().join("offline.svg").exists());
}

#[test]
fn a_query_without_braces_is_told_it_needs_them() {
    let cwd = tempfile::tempdir().unwrap();
    for query in [r#"service_name="checkout""#, "checkout", CPU] {
        let output = run_pyrite(
            &[
                "export",
                "--url",
                "http://127.0.0.1:9",
                "--query",
                query,
                "--from",
                "now-1h",
                "--until",
                "now",
                "--format",
                "svg",
                "--output",
                "out.svg",
            ],
            cwd.path(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "a usage error: {stderr}");
        assert!(stderr.contains("--query") && stderr.contains("in braces"), "{stderr}");
        assert!(
            !stderr.contains("profile type ID"),
            "not about the profile type: {stderr}"
        );
    }
    // A selector in braces that does not parse is named too, before any connection.
    let output = run_pyrite(
        &[
            "export",
            "--url",
            "http://127.0.0.1:9",
            "--query",
            "{service_name=}",
            "--from",
            "now-1h",
            "--until",
            "now",
            "--format",
            "svg",
            "--output",
            "out.svg",
        ],
        cwd.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--query"));
}

#[test]
fn every_flag_has_a_help_line() {
    let cwd = tempfile::tempdir().unwrap();
    for subcommand in ["serve", "push", "export"] {
        let output = run_pyrite(&[subcommand, "--help"], cwd.path());
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = help.lines().collect();
        let mut flags = 0;
        let mut section = "";
        for (index, line) in lines.iter().enumerate() {
            if !line.starts_with(' ') {
                section = line.trim_end();
                continue;
            }
            // Items start at the section's indentation; their wrapped text is indented deeper.
            let trimmed = line.trim_start();
            let is_item = match section {
                "Arguments:" => trimmed.starts_with('<') && line.len() - trimmed.len() <= 4,
                "Options:" => trimmed.starts_with('-') && line.len() - trimmed.len() <= 6,
                _ => false,
            };
            if !is_item {
                continue;
            }
            flags += 1;
            // clap writes the text beside the flag (two spaces or more after it) or, when that
            // is too wide, alone on the next line, indented.
            let beside = trimmed.split_once("  ").map_or("", |(_, text)| text.trim());
            let below = lines.get(index + 1).map_or("", |next| next.trim());
            let has_text = !beside.is_empty() || (!below.is_empty() && !below.starts_with('-'));
            assert!(has_text, "pyrite {subcommand}: {trimmed:?} has no help line:\n{help}");
        }
        assert!(flags >= 4, "pyrite {subcommand} --help lists its flags:\n{help}");
        if subcommand == "export" {
            assert!(
                help.contains("[possible values: svg, pprof, folded, json]"),
                "--format lists its values:\n{help}"
            );
        }
        if subcommand == "push" {
            assert!(help.contains("--cumulative"), "{help}");
        }
    }
}

#[test]
fn server_logs_have_no_line_per_self_profile_and_no_colours_in_a_pipe() {
    let data = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = data.path().join("pyrite.yaml");
    // Pyrite scraping itself every 2 s (1 s profiles), so a few seconds hold several profiles.
    std::fs::write(
        &config,
        format!(
            "scrape_configs:\n  - job_name: self\n    scrape_interval: 2s\n    cpu_seconds: 1\n    \
             profiles: [process_cpu]\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(pyrite_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = Vec::new();
        for line in BufReader::new(stderr).split(b'\n') {
            log.push(String::from_utf8_lossy(&line.unwrap()).into_owned());
        }
        log
    });
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let successes = || {
        let Ok(response) = client.get(format!("{url}/metrics")).send() else {
            return 0.0;
        };
        // When the latest self-scrape succeeded: three distinct times are three profiles.
        response
            .text()
            .unwrap_or_default()
            .lines()
            .find(|line| line.starts_with("pyrite_scrape_last_success_timestamp_seconds{"))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut seen = Vec::new();
    common::wait_until("three self-profiles", Duration::from_secs(60), || {
        let last = successes();
        if last > 0.0 && !seen.contains(&last.to_bits()) {
            seen.push(last.to_bits());
        }
        seen.len() >= 3
    });
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    assert!(
        log.iter()
            .any(|line| line.contains("INFO") && line.contains("pyrite is serving")),
        "INFO lines are still shown: {log:#?}"
    );
    let per_profile: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("cpu profiler") || line.contains("CPU profile"))
        .collect();
    assert!(per_profile.is_empty(), "no line per self-profile: {per_profile:#?}");
    assert!(
        log.iter().all(|line| !line.contains('\u{1b}')),
        "no colour codes in a pipe: {log:#?}"
    );
}
