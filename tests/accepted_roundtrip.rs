//! One rule for what is accepted, as a property: for corpus profiles mutated in the ways real
//! clients and attackers produce (empty or `:`-laden sample types, control characters, string
//! index 0 where a name belongs, duplicate sample types, extreme values, flipped and truncated
//! bytes, odd labels), whatever the edge acknowledges replays from the WAL, flushes into a
//! block, compacts with a second copy and reads back at every stage with the same totals, and
//! those totals are the sums of the values the edge accepted.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use pyrite::compactor::{CompactorConfig, compact_all};
use pyrite::head::{Head, HeadConfig};
use pyrite::ingest::Ingester;
use pyrite::model::{Labels, Selector, Tenant};
use pyrite::pprof::DecodeLimits;
use pyrite::proto::google::v1::Profile;
use pyrite::query::{Querier, SelectParams};
use pyrite::storage::{Storage, StorageConfig};

const AT_MS: i64 = 1_700_000_000_000;

/// What a mutation does to a profile (decoded) or to its encoding.
#[derive(Debug, Clone)]
enum Mutation {
    EmptyString(usize),
    ColonInString(usize),
    ControlCharInString(usize),
    SampleTypeToIndexZero { type_index: usize, unit: bool },
    DuplicateSampleTypes,
    PeriodTypeToIndexZero,
    Value { sample: usize, column: usize, value: i64 },
    EmptyStack(usize),
    FlipByte { position: usize, xor: u8 },
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::EmptyString),
        any::<usize>().prop_map(Mutation::ColonInString),
        any::<usize>().prop_map(Mutation::ControlCharInString),
        (any::<usize>(), any::<bool>())
            .prop_map(|(type_index, unit)| Mutation::SampleTypeToIndexZero { type_index, unit }),
        Just(Mutation::DuplicateSampleTypes),
        Just(Mutation::PeriodTypeToIndexZero),
        (
            any::<usize>(),
            any::<usize>(),
            prop_oneof![
                Just(-1i64),
                Just(0),
                Just(1 << 40),
                Just(i64::MAX / 64),
                Just(-(1 << 40))
            ]
        )
            .prop_map(|(sample, column, value)| Mutation::Value { sample, column, value }),
        any::<usize>().prop_map(Mutation::EmptyStack),
        (any::<usize>(), 1u8..=255).prop_map(|(position, xor)| Mutation::FlipByte { position, xor }),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Label sets as clients send them, odd ones included.
fn labels() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("env".to_string()),
        Just("service.version".to_string()),
        Just("a b".to_string()),
        Just("1st".to_string()),
        Just("__name__".to_string()),
        Just("__delta__".to_string()),
        Just("".to_string()),
    ];
    let value = prop_oneof![
        Just("prod".to_string()),
        Just("with\0nul".to_string()),
        Just("".to_string()),
        Just("a:b".to_string()),
        Just("memory".to_string()),
        Just("ünï".to_string()),
    ];
    proptest::collection::vec((name, value), 0..3)
}

/// Small corpus files Go's reader accepts.
fn base_files() -> Vec<Vec<u8>> {
    common::corpus()
        .into_iter()
        .filter(|file| file.totals.is_some())
        .map(|file| std::fs::read(&file.path).unwrap())
        .filter(|bytes| bytes.len() < 16 << 10)
        .collect()
}

fn apply(mut profile: Profile, mutations: &[Mutation]) -> Vec<u8> {
    let pick = |index: usize, len: usize| if len == 0 { None } else { Some(index % len) };
    let mut byte_mutations = Vec::new();
    for mutation in mutations {
        match mutation {
            Mutation::EmptyString(i) => {
                if let Some(i) = pick(*i, profile.string_table.len()) {
                    profile.string_table[i].clear();
                }
            }
            Mutation::ColonInString(i) => {
                if let Some(i) = pick(*i, profile.string_table.len()) {
                    profile.string_table[i].push_str(":x:");
                }
            }
            Mutation::ControlCharInString(i) => {
                if let Some(i) = pick(*i, profile.string_table.len()) {
                    profile.string_table[i].push('\u{1}');
                }
            }
            Mutation::SampleTypeToIndexZero { type_index, unit } => {
                if let Some(i) = pick(*type_index, profile.sample_type.len()) {
                    if *unit {
                        profile.sample_type[i].unit = 0;
                    } else {
                        profile.sample_type[i].r#type = 0;
                    }
                }
            }
            Mutation::DuplicateSampleTypes => {
                if let Some(first) = profile.sample_type.first().cloned() {
                    profile.sample_type.iter_mut().for_each(|t| *t = first);
                }
            }
            Mutation::PeriodTypeToIndexZero => {
                if let Some(period) = profile.period_type.as_mut() {
                    period.r#type = 0;
                    period.unit = 0;
                }
            }
            Mutation::Value { sample, column, value } => {
                if let Some(s) = pick(*sample, profile.sample.len()) {
                    let values = &mut profile.sample[s].value;
                    if let Some(c) = pick(*column, values.len()) {
                        values[c] = *value;
                    }
                }
            }
            Mutation::EmptyStack(i) => {
                if let Some(i) = pick(*i, profile.sample.len()) {
                    profile.sample[i].location_id.clear();
                }
            }
            other => byte_mutations.push(other.clone()),
        }
    }
    let mut bytes = profile.encode_to_vec();
    for mutation in byte_mutations {
        match mutation {
            Mutation::FlipByte { position, xor } if !bytes.is_empty() => {
                let at = position % bytes.len();
                bytes[at] ^= xor;
            }
            Mutation::Truncate(len) if !bytes.is_empty() => bytes.truncate(len % bytes.len()),
            _ => {}
        }
    }
    bytes
}

/// The nonzero totals of every profile type of the tenant, sorted (ids differ by stage only in
/// naming, never in value).
async fn totals(querier: &Querier, tenant: &Tenant) -> Vec<(String, i64)> {
    let mut totals = Vec::new();
    for profile_type in querier.profile_types(tenant, i64::MIN / 4, i64::MAX / 4).await.unwrap() {
        let params = SelectParams {
            tenant: tenant.clone(),
            profile_type: profile_type.clone(),
            selector: Selector::parse("{}").unwrap(),
            from_ms: AT_MS - 3_600_000,
            until_ms: AT_MS + 3_600_000,
        };
        let total = querier.select_merge(&params).await.unwrap().total();
        if total != 0 {
            totals.push((profile_type.id(), total));
        }
    }
    totals.sort();
    totals
}

/// The sums of the accepted profile's value columns, nonzero ones, sorted.
fn expected_sums(raw: &[u8]) -> Vec<i64> {
    let profile = pyrite::pprof::decode(raw, &DecodeLimits::default()).unwrap();
    let mut sums: Vec<i64> = pyrite::pprof::sample_type_totals(&profile)
        .into_iter()
        .map(|(_, _, total)| total)
        .filter(|&total| total != 0)
        .collect();
    sums.sort();
    sums
}

fn sorted_values(totals: &[(String, i64)]) -> Vec<i64> {
    let mut values: Vec<i64> = totals.iter().map(|(_, total)| *total).collect();
    values.sort();
    values
}

struct Store {
    dir: tempfile::TempDir,
    storage: Storage,
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_config(&StorageConfig::default(), dir.path()).unwrap();
        Self { dir, storage }
    }

    async fn head(&self) -> Arc<Head> {
        let head = Head::open(
            HeadConfig::default(),
            self.storage.clone(),
            &self.dir.path().join("wal"),
            &DecodeLimits::default(),
        )
        .await
        .unwrap();
        Arc::new(head)
    }
}

/// Returns whether the edge accepted the profile (the property says nothing about refusals).
async fn round_trip(raw: Vec<u8>, labels: Vec<(String, String)>) -> Result<bool, TestCaseError> {
    let store = Store::new();
    let tenant = Tenant::parse("prop").unwrap();
    let head = store.head().await;
    let Ok(labels) = Labels::new(labels) else {
        return Ok(false);
    };
    let ingester = Ingester::new(head.clone(), DecodeLimits::default());
    let raw = Bytes::from(raw);
    if ingester
        .push_pprof(&tenant, labels.clone(), raw.clone(), Some(AT_MS))
        .await
        .is_err()
    {
        return Ok(false);
    }
    let acknowledged = totals(&Querier::new(head.clone(), store.storage.clone()), &tenant).await;
    prop_assert_eq!(sorted_values(&acknowledged), expected_sums(&raw));

    // A crash before the flush: the WAL replays exactly what was acknowledged.
    drop(ingester);
    drop(head);
    let head = store.head().await;
    prop_assert_eq!(
        &totals(&Querier::new(head.clone(), store.storage.clone()), &tenant).await,
        &acknowledged
    );

    // Flushed: the block reads back the same.
    head.flush().await.unwrap();
    prop_assert_eq!(
        &totals(&Querier::new(head.clone(), store.storage.clone()), &tenant).await,
        &acknowledged
    );

    // A second copy in a second block, then compaction: twice the totals, from one block.
    let ingester = Ingester::new(head.clone(), DecodeLimits::default());
    prop_assert!(ingester.push_pprof(&tenant, labels, raw, Some(AT_MS + 1)).await.is_ok());
    head.flush().await.unwrap();
    let catalog = pyrite::block::Catalog::new(store.storage.clone(), 3_600_000);
    let config = CompactorConfig {
        min_age: std::time::Duration::ZERO,
        delete_delay: std::time::Duration::ZERO,
        ..CompactorConfig::default()
    };
    let stats = compact_all(&catalog, &config, AT_MS + 7_200_000).await.unwrap();
    // A profile whose values are all 0 leaves no rows, so nothing to merge.
    prop_assert_eq!(stats.compacted, usize::from(!acknowledged.is_empty()));
    let doubled: Vec<(String, i64)> = acknowledged.iter().map(|(id, total)| (id.clone(), total * 2)).collect();
    let querier = Querier::new(head.clone(), store.storage.clone());
    prop_assert_eq!(&totals(&querier, &tenant).await, &doubled);
    Ok(true)
}

#[test]
fn whatever_the_edge_acknowledges_replays_flushes_compacts_and_reads_back_the_same() {
    let files = base_files();
    assert!(files.len() >= 20, "{} small corpus files", files.len());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(file in 0..files.len(), mutations in proptest::collection::vec(mutation(), 0..4), labels in labels())| {
        let base = pyrite::pprof::decode(&files[file], &DecodeLimits::default()).unwrap();
        let raw = apply(base, &mutations);
        if runtime.block_on(round_trip(raw, labels))? {
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // The property must have been exercised, not refused away.
    assert!(accepted.into_inner() >= 30, "too few generated profiles were accepted");
}
