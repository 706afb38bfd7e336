//! Blocks written by earlier versions stay readable: `testdata/blocks-v1/` is a bucket (local
//! directory layout) written once by the format-1 writer (uncompressed sections, commit ad6371c)
//! through the real ingest → head → flush path. Every later reader must read it with the totals
//! Go's pprof tool reads from the same corpus files (MANIFEST.tsv), as flame graphs and as
//! time series.
//!
//! Regenerate (only with the format-1 writer checked out):
//! `PYRITE_WRITE_BLOCK_FIXTURE=1 cargo test --test block_format -- --ignored write_v1_fixture`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use pyrite::head::{Head, HeadConfig};
use pyrite::ingest::Ingester;
use pyrite::model::{Labels, ProfileType, Selector, Tenant};
use pyrite::pprof::DecodeLimits;
use pyrite::query::{Aggregation, Querier, SelectParams};
use pyrite::storage::{Storage, StorageConfig};

/// Start of the fixture's hour; profile `n` of a file is at `AT_MS + n` minutes.
const AT_MS: i64 = 1_700_000_000_000 / 3_600_000 * 3_600_000;
const TENANT: &str = "fixture";
/// Corpus files in the fixture and how many profiles of each (a minute apart).
const FILES: [(&str, i64); 4] = [
    ("gotarget__cpu_5s.pb.gz", 3),
    ("gotarget__heap_t1.pb.gz", 2),
    ("gotarget__goroutine.pb.gz", 1),
    ("pyroscope__pprof_single_group_with_optional_span_id.pb.gz", 1),
];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/blocks-v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

async fn open(data: &Path) -> (Arc<Head>, Storage) {
    let storage = Storage::from_config(&StorageConfig::default(), data).unwrap();
    let head = Head::open(
        HeadConfig::default(),
        storage.clone(),
        &data.join("wal"),
        &DecodeLimits::default(),
    )
    .await
    .unwrap();
    (Arc::new(head), storage)
}

fn service(file: &str) -> String {
    file.split('.').next().unwrap().to_string()
}

#[tokio::test]
#[ignore = "writes testdata/blocks-v1; run once with the format-1 writer"]
async fn write_v1_fixture() {
    if std::env::var_os("PYRITE_WRITE_BLOCK_FIXTURE").is_none() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (head, _) = open(data.path()).await;
    let ingester = Ingester::new(head.clone(), DecodeLimits::default());
    let tenant = Tenant::parse(TENANT).unwrap();
    let corpus = common::corpus_dir().join("files");
    for (file, count) in FILES {
        let raw = Bytes::from(std::fs::read(corpus.join(file)).unwrap());
        for n in 0..count {
            let labels = Labels::new([("service_name".to_string(), service(file))]).unwrap();
            ingester
                .push_pprof(&tenant, labels, raw.clone(), Some(AT_MS + n * 60_000))
                .await
                .unwrap();
        }
    }
    assert!(head.flush().await.unwrap().blocks >= 1);
    let _ = std::fs::remove_dir_all(fixture_dir());
    copy_dir(&data.path().join("blocks"), &fixture_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_blocks_read_with_the_corpus_totals() {
    let data = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), &data.path().join("blocks"));
    let (head, storage) = open(data.path()).await;
    let tenant = Tenant::parse(TENANT).unwrap();
    let metas = pyrite::block::list(&storage, &tenant, AT_MS, AT_MS + 3_600_000)
        .await
        .unwrap();
    assert_eq!(metas.len(), 1, "the fixture is one flushed block");
    let querier = Querier::new(head, storage);
    let manifest: BTreeMap<String, BTreeMap<String, i64>> = common::corpus()
        .into_iter()
        .filter_map(|file| Some((file.name, file.totals?)))
        .collect();
    let mut checked = 0;
    for (file, count) in FILES {
        let selector = Selector::parse(&format!("{{service_name={:?}}}", service(file))).unwrap();
        let series = querier
            .series_labels(&tenant, std::slice::from_ref(&selector), AT_MS, AT_MS + 3_600_000)
            .await
            .unwrap();
        assert!(!series.is_empty(), "{file}: no series in the fixture");
        for labels in &series {
            let profile_type = ProfileType::parse(labels.get("__profile_type__").unwrap()).unwrap();
            let key = format!("{}/{}", profile_type.sample_type, profile_type.sample_unit);
            let expected = manifest[file][&key];
            let params = SelectParams {
                tenant: tenant.clone(),
                profile_type: profile_type.clone(),
                selector: selector.clone(),
                from_ms: AT_MS,
                until_ms: AT_MS + 3_600_000,
            };
            let tree = querier.select_merge(&params).await.unwrap();
            assert_eq!(tree.total(), expected * count, "{file}: flame graph total of {key}");
            // One point per profile, each the file's total.
            let points = querier
                .select_series(&params, 60_000, &[], Aggregation::Sum)
                .await
                .unwrap();
            assert_eq!(points.len(), 1, "{file} {key}: one series");
            let expected_points: Vec<(i64, f64)> = (0..count).map(|n| (AT_MS + n * 60_000, expected as f64)).collect();
            assert_eq!(points[0].points, expected_points, "{file}: series of {key}");
            // A window cutting the block's series reads rows: the first profile alone.
            let first = SelectParams {
                until_ms: AT_MS + 1,
                ..params.clone()
            };
            assert_eq!(querier.select_merge(&first).await.unwrap().total(), expected);
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} series checked");
}
