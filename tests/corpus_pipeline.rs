//! Every corpus profile through decode → head → block in object storage → query → render:
//! per sample type, the merged total equals what Go's own pprof tool reads (MANIFEST.tsv);
//! the exported pprof passes Go's `profile.Parse` + `CheckValid` with the same total; the SVG
//! is well-formed XML naming the heaviest functions.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use pyrite::head::{Head, HeadConfig};
use pyrite::ingest::Ingester;
use pyrite::model::{Labels, Selector, Tenant};
use pyrite::pprof::DecodeLimits;
use pyrite::query::{FlameTree, Querier, SelectParams};
use pyrite::render::{self, ExportContext, ExportFormat};
use pyrite::storage::{Storage, StorageConfig};

/// A fixed time inside one bucket, so every profile lands in blocks of the same bucket.
const AT_MS: i64 = 1_700_000_000_000;

fn heaviest_functions(tree: &FlameTree, count: usize) -> Vec<String> {
    let mut self_by_name: BTreeMap<&str, i64> = BTreeMap::new();
    for node in tree.nodes().iter().skip(1) {
        *self_by_name.entry(tree.name(node.name)).or_default() += node.self_value;
    }
    // Only frames at least 1% wide: inferno leaves out frames too narrow to draw.
    let visible = tree.total() / 100;
    let mut ranked: Vec<(&str, i64)> = self_by_name
        .into_iter()
        .filter(|(_, v)| *v > 0 && *v >= visible)
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(count)
        .map(|(name, _)| name.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_file_round_trips_with_exact_totals() {
    let data = tempfile::tempdir().unwrap();
    let storage = Storage::from_config(&StorageConfig::default(), data.path()).unwrap();
    let limits = DecodeLimits::default();
    let head = Arc::new(
        Head::open(
            HeadConfig::default(),
            storage.clone(),
            &data.path().join("wal"),
            &limits,
        )
        .await
        .unwrap(),
    );
    let ingester = Ingester::new(head.clone(), limits.clone());
    let tenant = Tenant::parse("corpus").unwrap();

    let files: Vec<_> = common::corpus()
        .into_iter()
        .filter(|file| file.totals.is_some())
        .collect();
    assert!(files.len() >= 45, "corpus shrank to {} accepted files", files.len());
    for file in &files {
        let raw = Bytes::from(std::fs::read(&file.path).unwrap());
        let labels = Labels::new([("service_name".to_string(), file.name.clone())]).unwrap();
        ingester
            .push_pprof(&tenant, labels, raw, Some(AT_MS))
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", file.name));
    }
    // Everything goes to blocks, so the query below reads object storage, not memory.
    let flushed = head.flush().await.unwrap();
    assert!(flushed.blocks >= 1);
    assert_eq!(head.live_bytes(), 0);
    let querier = Querier::new(head.clone(), storage);

    let out = tempfile::tempdir().unwrap();
    let mut exported = Vec::new();
    let mut expected_go_totals = Vec::new();
    for file in &files {
        let selector = Selector::parse(&format!("{{service_name={:?}}}", file.name)).unwrap();
        let series = querier
            .series_labels(&tenant, std::slice::from_ref(&selector), AT_MS, AT_MS + 1)
            .await
            .unwrap();
        let mut found: BTreeMap<String, i64> = BTreeMap::new();
        for labels in &series {
            let profile_type = pyrite::model::ProfileType::parse(labels.get("__profile_type__").unwrap()).unwrap();
            let params = SelectParams {
                tenant: tenant.clone(),
                profile_type: profile_type.clone(),
                selector: selector.clone(),
                from_ms: AT_MS,
                until_ms: AT_MS + 1,
            };
            let tree = querier.select_merge(&params).await.unwrap();
            let key = format!("{}/{}", profile_type.sample_type, profile_type.sample_unit);
            found.insert(key.clone(), tree.total());
            if tree.total() == 0 {
                continue;
            }
            // The window is exact: one millisecond later there is nothing.
            let after = SelectParams {
                from_ms: AT_MS + 1,
                until_ms: AT_MS + 2,
                ..params.clone()
            };
            assert_eq!(
                querier.select_merge(&after).await.unwrap().total(),
                0,
                "{}: {key} leaks past the window",
                file.name
            );

            let context = ExportContext {
                profile_type: profile_type.clone(),
                query: format!("{{service_name={:?}}}", file.name),
                from_ms: AT_MS,
                until_ms: AT_MS + 1,
                max_nodes: None,
            };
            let pprof_path = out
                .path()
                .join(format!("{}.{}.pb.gz", file.name, profile_type.sample_type));
            std::fs::write(
                &pprof_path,
                render::export(&tree, ExportFormat::Pprof, &context).unwrap(),
            )
            .unwrap();
            exported.push(pprof_path);
            expected_go_totals.push((file.name.clone(), key.clone(), tree.total()));

            let svg = render::export(&tree, ExportFormat::Svg, &context).unwrap();
            let text = common::assert_well_formed_xml(&svg);
            assert!(
                text.contains(&profile_type.id()),
                "{}: SVG title does not name the query",
                file.name
            );
            let svg_text = String::from_utf8_lossy(&svg);
            for name in heaviest_functions(&tree, 3) {
                let escaped = name
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;");
                assert!(
                    svg_text.contains(&escaped) || text.contains(&name),
                    "{}: SVG does not name heavy function {name:?}",
                    file.name
                );
            }
        }
        let expected = file.totals.as_ref().unwrap();
        for (key, total) in expected {
            // A sample type whose values are all zero leaves no rows, hence no series.
            assert_eq!(
                found.get(key).copied().unwrap_or(0),
                *total,
                "{}: total of {key}",
                file.name
            );
            assert!(
                found.contains_key(key) || *total == 0,
                "{}: no series for {key}",
                file.name
            );
        }
    }

    let checks = common::gocheck(&exported);
    assert_eq!(checks.len(), exported.len());
    for (check, (file, key, total)) in checks.iter().zip(&expected_go_totals) {
        assert!(check.ok, "{file} {key}: Go rejects our pprof: {:?}", check.error);
        assert_eq!(check.totals, vec![*total], "{file} {key}: Go reads another total");
    }
}
