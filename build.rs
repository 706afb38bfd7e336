//! Compiles `proto/` into prost types plus proto3-JSON serde impls (pbjson) at build time,
//! with `protox` so that no system `protoc` is needed; and lists the built web UI (`ui/dist`,
//! made by `make ui`) as `include_bytes!` statics so the binary serves it (`src/api/ui.rs`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &[
    "google/v1/profile.proto",
    "types/v1/types.proto",
    "push/v1/push.proto",
    "querier/v1/querier.proto",
    "settings/v1/setting.proto",
    "settings/v1/recording_rules.proto",
    "prometheus/remote.proto",
    "pyrite/v1/block.proto",
    "adhocprofiles/v1/adhocprofiles.proto",
    "capabilities/v1/feature_flags.proto",
    "status/v1/status.proto",
    "version/v1/version.proto",
    // OTLP profiles, copied from the opentelemetry-proto 0.33.1 crate (the schema its types and
    // gRPC service are built from): compiled here only for their proto3-JSON impls, which
    // OTLP/HTTP JSON needs and the crate's own serde derive does not follow (see src/api/otlp.rs).
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/profiles/v1development/profiles.proto",
    "opentelemetry/proto/collector/profiles/v1development/profiles_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("descriptor.bin");
    embed_ui(&out_dir)?;

    let file_descriptors = protox::compile(PROTOS, ["proto"])?;
    let encoded = prost::Message::encode_to_vec(&file_descriptors);
    std::fs::write(&descriptor_path, &encoded)?;

    let mut config = prost_build::Config::new();
    config
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .bytes(["."])
        .compile_protos(PROTOS, &["proto"])?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .ignore_unknown_fields()
        .build(&[
            ".google.v1",
            ".types.v1",
            ".push.v1",
            ".querier.v1",
            ".settings.v1",
            ".adhocprofiles.v1",
            ".capabilities.v1",
            ".status.v1",
            ".version.v1",
            ".opentelemetry",
        ])?;
    Ok(())
}

/// Writes `$OUT_DIR/ui_assets.rs`: one `Asset` per file of `ui/dist` (with its `.gz` sibling when
/// the UI build made one). A clone where the UI was never built gets an empty list, and the
/// server says how to build it. Generated here rather than with an embedding crate: it is a
/// directory walk and `include_bytes!`, and the ETags come for free.
fn embed_ui(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let dist = Path::new("ui/dist");
    let mut files = Vec::new();
    // Absolute paths, unlike cargo's usual relative ones: a target directory shared by two
    // checkouts (tests/first_run.rs builds a clone into this tree's target) keeps one build
    // script output for both, and a path of the other checkout that is gone (or never existed)
    // makes cargo run this again instead of compiling `include_bytes!` of files that are gone.
    if dist.join("index.html").is_file() {
        // Every UI build rewrites index.html (it names the hashed bundles).
        println!(
            "cargo:rerun-if-changed={}",
            std::fs::canonicalize(dist.join("index.html"))?.display()
        );
        list_files(dist, &mut files)?;
    } else {
        // Picks up the first `make ui` (it creates ui/dist).
        println!("cargo:rerun-if-changed={}", std::fs::canonicalize("ui")?.display());
    }
    files.sort();
    let mut code = String::from("pub static UI_ASSETS: &[Asset] = &[\n");
    for file in &files {
        if file.extension().is_some_and(|extension| extension == "gz") {
            continue;
        }
        let url = format!(
            "/{}",
            file.strip_prefix(dist)?.to_str().ok_or("non-UTF-8 UI file name")?
        );
        let absolute = std::fs::canonicalize(file)?;
        let body = std::fs::read(file)?;
        let gzip = PathBuf::from(format!("{}.gz", file.display()));
        let gzip = if gzip.is_file() {
            format!("Some(include_bytes!({:?}))", std::fs::canonicalize(&gzip)?)
        } else {
            "None".to_string()
        };
        writeln!(
            code,
            "    Asset {{ path: {url:?}, body: include_bytes!({absolute:?}), gzip: {gzip}, etag: \"\\\"{:016x}\\\"\" }},",
            fnv1a(&body)
        )?;
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("ui_assets.rs"), code)?;
    Ok(())
}

fn list_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// 64-bit FNV-1a: an ETag only has to change when the bytes do.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
