//! Memory is bounded before it is spent, on a running `pyrite serve`: one push.v1 request of a
//! dozen gzipped profiles that each claim a sample of 60 M location ids, and an `/ingest`
//! folded body with a 33 M-frame line, are refused with 400 while the server's peak RSS
//! (`VmHWM`) stays under [`PEAK_RSS_BOUND`]; the server then still answers `/ready`, takes a
//! profile and renders its flame graph.

mod common;

use std::io::Write;

use common::Server;

/// Peak resident memory the server may reach over the whole test.
///
/// Why 400 MB: before these bounds, each 60 M-id profile peaked at ~0.9 GB while decoding (a
/// 60 MB decompressed buffer, then 480 MB of u64 ids and their vector's regrowth), so the
/// request aborted the process. Now a profile is refused on its sample's length prefix after a
/// few KB of gunzip. What remains is the folded body itself (~66 MB, which the HTTP layer may
/// hold twice while it collects it, and `text.lines()` does not copy), the process's own
/// ~30 MB, and what mimalloc keeps: about 200 MB measured, so 400 MB leaves room for the
/// allocator and still fails long before the old behaviour would.
const PEAK_RSS_BOUND: u64 = 400 << 20;

/// A small valid pprof (one sample type, one function) followed by one sample of `ids`
/// location ids (all 1, packed), gzipped as it streams: ~58 KB for 60 M ids.
fn deep_profile(ids: usize) -> Vec<u8> {
    use prost::Message;
    use pyrite::proto::google::v1::{Function, Line, Location, Profile, ValueType};
    let profile = Profile {
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        location: vec![Location {
            id: 1,
            line: vec![Line {
                function_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        function: vec![Function {
            id: 1,
            name: 3,
            ..Default::default()
        }],
        string_table: ["", "samples", "count", "recurse"].map(String::from).to_vec(),
        ..Default::default()
    };
    let mut header = profile.encode_to_vec();
    let mut packed = vec![0x0a];
    prost::encoding::encode_varint(ids as u64, &mut packed);
    let value = [0x10, 0x01]; // value: 1
    header.push(0x12);
    prost::encoding::encode_varint((packed.len() + ids + value.len()) as u64, &mut header);
    header.extend(&packed);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&header).unwrap();
    let chunk = vec![0x01; 1 << 20];
    let mut left = ids;
    while left > 0 {
        let n = left.min(chunk.len());
        gzip.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    gzip.write_all(&value).unwrap();
    gzip.finish().unwrap()
}

/// `(VmHWM, VmRSS)` of a process in bytes, from `/proc/<pid>/status`.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|line| line.starts_with(name)).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb << 10
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn deep_stacks_are_refused_with_bounded_memory_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pyrite.yaml");
    // No self-scrape: pprof-rs's sample table would add ~100 MB of its own to the peak.
    std::fs::write(&config, "scrape_configs: []\n").unwrap();
    let server = Server::start_with_config(&dir.path().join("data"), Some(&config));
    let pid = server.child.id();
    let (start_peak, _) = memory(pid);

    // A dozen 60 M-id profiles in one push.v1 request.
    let deep = deep_profile(60_000_000);
    assert!(deep.len() < 100 << 10, "{} bytes gzipped", deep.len());
    let (status, _, body) = common::push_v1_profiles(&server, "deep", &[("service_name", "deep")], vec![deep; 12]);
    assert_eq!(status, 400, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["code"], "invalid_argument", "{body}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("series 0 sample 11") && message.contains("max_locations_per_sample"),
        "{message}"
    );
    let (after_push, _) = memory(pid);

    // A folded line of 33 M frames (66 MB, within the default api.max_body_bytes of 64 MiB).
    let mut folded = "f;".repeat(33_000_000);
    folded.push_str("leaf 1\n");
    assert!(folded.len() < 64 << 20);
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/ingest?name=folded&format=folded", server.url))
        .header("X-Scope-OrgID", "folded")
        .body(folded)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("line 1") && text.contains("max_locations_per_sample"),
        "{text}"
    );
    let (peak, rss) = memory(pid);
    eprintln!(
        "VmHWM: {} MiB at start, {} MiB after the push, {} MiB after /ingest (VmRSS {} MiB)",
        start_peak >> 20,
        after_push >> 20,
        peak >> 20,
        rss >> 20
    );
    assert!(
        after_push < start_peak + (64 << 20),
        "the deep push cost {} MiB",
        (after_push - start_peak) >> 20
    );
    assert!(peak < PEAK_RSS_BOUND, "peak RSS {} MiB", peak >> 20);

    // Still serving: ready, takes a profile, renders it.
    let ready = reqwest::blocking::get(format!("{}/ready", server.url)).unwrap();
    assert!(ready.status().is_success());
    let cpu = std::fs::read(common::corpus_dir().join("files/gotarget__cpu_5s.pb.gz")).unwrap();
    let labels = [("service_name", "after"), ("__name__", "process_cpu")];
    let (status, _, body) = common::push_v1(&server, "deep", &labels, cpu);
    assert_eq!(status, 200, "{body}");
    assert!(common::cpu_nanos(&server, "deep", "after") > 0);
    let url = url::Url::parse_with_params(
        &format!("{}/api/v1/render", server.url),
        [
            ("query", r#"{service_name="after"}"#),
            ("type", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"),
            ("from", "1"),
            ("until", "now+1h"),
            ("format", "svg"),
        ],
    )
    .unwrap();
    let svg = reqwest::blocking::Client::new()
        .get(url)
        .header("X-Scope-OrgID", "deep")
        .send()
        .unwrap();
    assert_eq!(svg.status().as_u16(), 200);
    assert!(svg.text().unwrap().contains("<svg"));
}
