//! Compiles `proto/` into prost types plus proto3-JSON serde impls (pbjson) at build time,
//! with `protox` so that no system `protoc` is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "google/v1/profile.proto",
    "types/v1/types.proto",
    "push/v1/push.proto",
    "querier/v1/querier.proto",
    "settings/v1/setting.proto",
    "pyrite/v1/block.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("descriptor.bin");

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
        .build(&[".google.v1", ".types.v1", ".push.v1", ".querier.v1", ".settings.v1"])?;
    Ok(())
}
