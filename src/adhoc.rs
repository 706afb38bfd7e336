//! Ad-hoc profiles (Pyroscope's `adhocprofiles.v1`): a profile file a person uploads to look
//! at once, outside any series. This module owns their storage and their decoding into flame
//! trees; the API renders the trees (`render::flamebearer`).
//!
//! Each upload is one object, `<tenant>/adhoc/<id>`, holding the uploaded bytes as they came
//! (gzip'd or plain pprof, or folded text), beside the tenant's block buckets. The id is a
//! UUIDv7 (its first 48 bits are the upload time in ms), `-`, and the file name reduced to
//! `[A-Za-z0-9._-]`, as Pyroscope names them (ULID-name), so listing a tenant's uploads is one
//! LIST with no reads. The block catalog, the compactor's unpublished-data sweep and block
//! retention only look at numeric bucket directories, so they never see `adhoc/`; uploads older
//! than `adhoc.retention` are deleted by [`sweep`] (run by the server every
//! `adhoc.sweep_interval`).
//!
//! Decoding takes the ingest path's decoder and limits (`pprof::decode` under the server's
//! `limits`, or `ingest::parse_folded`), and frames are named through a [`SymbolTable`] as the
//! query path names them, so an uploaded profile draws as the same profile pushed would.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::heartbeat::Heartbeat;
use crate::model::{FlameTree, ProfileType, Tenant, duration_ms};
use crate::pprof::{DecodeError, DecodeLimits, Profile};
use crate::storage::{Storage, StorageError};
use crate::symbols::SymbolTable;

/// Longest kept file name (in the id); longer names are cut.
pub const MAX_NAME_LENGTH: usize = 128;
/// Name given to an upload that names none.
const DEFAULT_NAME: &str = "profile";
/// Length of a hyphenated UUID, the head of every id.
const UUID_LENGTH: usize = 36;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdhocConfig {
    /// Largest uploaded profile, in bytes after base64 decoding (as the file was on disk,
    /// compressed or not). Checked against the request's body before it is read: a body
    /// longer than this in base64 plus a little JSON is refused unread.
    pub max_profile_bytes: usize,
    /// Uploads one tenant may keep at once; past it an upload is refused (429) until
    /// retention deletes old ones.
    pub max_profiles_per_tenant: usize,
    /// Bytes of uploads one tenant may keep at once, as `max_profiles_per_tenant`.
    pub max_bytes_per_tenant: u64,
    /// Uploads older than this are deleted; 0 keeps them forever.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often uploads are checked against `retention`.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for AdhocConfig {
    fn default() -> Self {
        Self {
            max_profile_bytes: 32 << 20,
            max_profiles_per_tenant: 1000,
            max_bytes_per_tenant: 2 << 30,
            retention: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

impl AdhocConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_profile_bytes == 0 || self.max_profiles_per_tenant == 0 || self.max_bytes_per_tenant == 0 {
            return Err(
                "adhoc.max_profile_bytes, max_profiles_per_tenant and max_bytes_per_tenant must be positive".into(),
            );
        }
        if self.sweep_interval.is_zero() {
            return Err("adhoc.sweep_interval must be positive".into());
        }
        Ok(())
    }

    /// Largest request body an upload of `max_profile_bytes` may take: its base64 length plus
    /// room for the file name and the JSON or protobuf around them.
    pub fn max_upload_body_bytes(&self) -> usize {
        self.max_profile_bytes
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(64 << 10)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdhocError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the profile is {bytes} bytes, more than adhoc.max_profile_bytes ({limit})")]
    TooLarge { bytes: usize, limit: usize },
    #[error("the profile is not valid base64: {0}")]
    Base64(String),
    #[error("the profile is empty")]
    Empty,
    #[error("not a pprof profile ({pprof}) nor folded stacks ({folded})")]
    Undecodable {
        pprof: DecodeError,
        folded: crate::ingest::FoldedError,
    },
    #[error("not a pprof profile: {0}")]
    Pprof(#[source] DecodeError),
    #[error("no ad-hoc profile with id {0:?}")]
    NotFound(String),
    #[error("profile {id:?} has no profile type {wanted:?}; it has {have:?}")]
    UnknownType {
        id: String,
        wanted: String,
        have: Vec<String>,
    },
    #[error(
        "tenant keeps {limit} ad-hoc profiles already (adhoc.max_profiles_per_tenant); older ones expire after adhoc.retention"
    )]
    TooMany { limit: usize },
    #[error("tenant keeps {stored} bytes of ad-hoc profiles; this one would pass adhoc.max_bytes_per_tenant ({limit})")]
    TenantFull { stored: u64, limit: u64 },
}

impl crate::error::Classify for AdhocError {
    fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            Self::Storage(err) => crate::error::Classify::class(err),
            Self::NotFound(_) | Self::UnknownType { .. } => ErrorClass::NotFound,
            // The tenant's store frees up as retention deletes old uploads.
            Self::TooMany { .. } | Self::TenantFull { .. } => ErrorClass::Limited,
            // An oversized or undecodable profile stays so: the client must not send it again.
            Self::TooLarge { .. } | Self::Base64(_) | Self::Empty | Self::Undecodable { .. } | Self::Pprof(_) => {
                ErrorClass::Client
            }
        }
    }
}

/// What is known of an upload from its id alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadMeta {
    pub id: String,
    pub name: String,
    pub uploaded_at_ms: i64,
    /// Stored bytes (0 where not listed).
    pub bytes: u64,
}

/// A decoded upload: one flame tree per sample type, in the profile's order.
pub struct Decoded {
    /// Profile type names as `adhocprofiles.v1` gives them: each sample type's name, made
    /// unique with `_<index>` where the profile repeats one, `unknown` where it has none.
    pub names: Vec<String>,
    pub types: Vec<ProfileType>,
    pub trees: Vec<FlameTree>,
}

impl Decoded {
    /// The index of `wanted`, or the first type when none is asked for (empty counts as none,
    /// as the Drilldown app sends `profile_type: ""` before a type is picked).
    pub fn select(&self, id: &str, wanted: Option<&str>) -> Result<usize, AdhocError> {
        match wanted.filter(|name| !name.is_empty()) {
            None => Ok(0),
            Some(name) => self
                .names
                .iter()
                .position(|have| have == name)
                .ok_or_else(|| AdhocError::UnknownType {
                    id: id.to_string(),
                    wanted: name.to_string(),
                    have: self.names.clone(),
                }),
        }
    }
}

/// Decodes an uploaded file: pprof (gzip'd or plain) through the ingest decoder and its
/// limits, else folded stacks (`a;b;c 42` lines, sample type `samples`/`count`).
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Decoded, AdhocError> {
    if bytes.is_empty() {
        return Err(AdhocError::Empty);
    }
    let profile = match crate::pprof::decode(bytes, limits) {
        Ok(profile) => profile,
        // Gzip'd input is meant as pprof; text that is not pprof may be folded.
        Err(err) if crate::pprof::is_gzip(bytes) => return Err(AdhocError::Pprof(err)),
        Err(pprof) => match crate::ingest::parse_folded(bytes, ("samples", "count"), None, 1, limits) {
            Ok(folded) => folded.profile,
            Err(folded) => return Err(AdhocError::Undecodable { pprof, folded }),
        },
    };
    Ok(trees(&profile))
}

/// One tree per sample type of a validated profile.
fn trees(profile: &Profile) -> Decoded {
    let string = |index: i64| {
        profile
            .string_table
            .get(index as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    let period = profile.period_type.as_ref();
    let mut names: Vec<String> = Vec::with_capacity(profile.sample_type.len());
    let mut types = Vec::with_capacity(profile.sample_type.len());
    for (index, value_type) in profile.sample_type.iter().enumerate() {
        let sample_type = non_empty(string(value_type.r#type));
        let mut name = sample_type.clone();
        if names.contains(&name) {
            name = format!("{name}_{index}");
        }
        names.push(name);
        types.push(ProfileType {
            name: "adhoc".into(),
            sample_type,
            sample_unit: non_empty(string(value_type.unit)),
            period_type: period.map_or_else(String::new, |p| string(p.r#type).to_string()),
            period_unit: period.map_or_else(String::new, |p| string(p.unit).to_string()),
        });
    }

    // Stacks are interned once and named once, whatever the number of sample types.
    let mut table = SymbolTable::default();
    let symbols = table.add_profile(profile);
    let mut stack_values: foldhash::HashMap<u32, Vec<i64>> = foldhash::HashMap::default();
    for sample in &profile.sample {
        let stack = table.add_stack(&symbols, &sample.location_id);
        let values = stack_values.entry(stack).or_insert_with(|| vec![0; types.len()]);
        for (sum, &value) in values.iter_mut().zip(&sample.value) {
            *sum = sum.saturating_add(value);
        }
    }
    let mut trees: Vec<FlameTree> = (0..types.len()).map(|_| FlameTree::new()).collect();
    let mut frames: Vec<u32> = Vec::new();
    let mut stacks: Vec<(u32, Vec<i64>)> = stack_values.into_iter().collect();
    // Hash order would make sibling order (and so the JSON) differ from one Get to the next.
    stacks.sort_unstable_by_key(|(stack, _)| *stack);
    for (stack, values) in stacks {
        for (tree, value) in trees.iter_mut().zip(values) {
            if value == 0 {
                continue;
            }
            frames.clear();
            table.visit_stack_frames(stack, |name| frames.push(tree.intern(name)));
            tree.insert(&frames, value);
        }
    }
    Decoded { names, types, trees }
}

fn non_empty(value: &str) -> String {
    if value.is_empty() {
        "unknown".to_string()
    } else {
        value.to_string()
    }
}

/// A file name as it is kept in an id: `[A-Za-z0-9._-]`, anything else `_`, at most
/// [`MAX_NAME_LENGTH`] bytes, never empty.
pub fn sanitize_name(name: &str) -> String {
    let kept: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_LENGTH)
        .collect();
    if kept.is_empty() {
        DEFAULT_NAME.to_string()
    } else {
        kept
    }
}

/// The id of an upload named `name` at `now_ms`.
fn new_id(name: &str, now_ms: i64) -> String {
    let millis = u64::try_from(now_ms).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(uuid::NoContext, millis / 1000, (millis % 1000) as u32 * 1_000_000);
    format!("{}-{}", uuid::Uuid::new_v7(timestamp).hyphenated(), sanitize_name(name))
}

/// The name and upload time of a well-formed id; `None` for anything else (including every
/// path trick: an id is a UUIDv7, `-`, and a sanitized name).
pub fn parse_id(id: &str) -> Option<UploadMeta> {
    let uuid = uuid::Uuid::try_parse(id.get(..UUID_LENGTH)?).ok()?;
    let name = id.get(UUID_LENGTH..)?.strip_prefix('-')?;
    if name.is_empty() || name.len() > MAX_NAME_LENGTH || sanitize_name(name) != name {
        return None;
    }
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(UploadMeta {
        id: id.to_string(),
        name: name.to_string(),
        uploaded_at_ms: i64::try_from(secs).ok()?.saturating_mul(1000) + i64::from(nanos / 1_000_000),
        bytes: 0,
    })
}

/// The ad-hoc profiles of every tenant, in the block store.
#[derive(Clone)]
pub struct AdhocStore {
    storage: Storage,
    config: AdhocConfig,
}

impl AdhocStore {
    pub fn new(storage: Storage, config: AdhocConfig) -> Self {
        Self { storage, config }
    }

    pub fn config(&self) -> &AdhocConfig {
        &self.config
    }

    fn prefix(tenant: &Tenant) -> String {
        format!("{tenant}/adhoc")
    }

    fn key(tenant: &Tenant, id: &str) -> String {
        format!("{}/{id}", Self::prefix(tenant))
    }

    /// Stores an upload after checking its size and the tenant's caps. It takes the upload's
    /// [`Decoded`] trees (from [`decode`], which the caller runs on its decode pool) so that
    /// nothing is stored that does not decode; returns its id and the trees.
    pub async fn upload(
        &self,
        tenant: &Tenant,
        name: &str,
        profile: Bytes,
        decoded: Decoded,
        now_ms: i64,
    ) -> Result<(UploadMeta, Decoded), AdhocError> {
        if profile.len() > self.config.max_profile_bytes {
            return Err(AdhocError::TooLarge {
                bytes: profile.len(),
                limit: self.config.max_profile_bytes,
            });
        }
        self.check_room(tenant, profile.len()).await?;
        let id = new_id(name, now_ms);
        let bytes = profile.len() as u64;
        self.storage.put(&Self::key(tenant, &id), profile).await?;
        tracing::info!(%tenant, %id, bytes, "stored an ad-hoc profile");
        let mut meta = parse_id(&id).expect("a new id parses");
        meta.bytes = bytes;
        Ok((meta, decoded))
    }

    /// Whether the tenant may keep `bytes` more: refused past `max_profiles_per_tenant` or
    /// `max_bytes_per_tenant`. Checked from one LIST, so replicas racing may each pass a cap by
    /// one upload.
    pub async fn check_room(&self, tenant: &Tenant, bytes: usize) -> Result<(), AdhocError> {
        let stored = self.list(tenant).await?;
        if stored.len() >= self.config.max_profiles_per_tenant {
            return Err(AdhocError::TooMany {
                limit: self.config.max_profiles_per_tenant,
            });
        }
        let stored_bytes: u64 = stored.iter().map(|meta| meta.bytes).sum();
        if stored_bytes.saturating_add(bytes as u64) > self.config.max_bytes_per_tenant {
            return Err(AdhocError::TenantFull {
                stored: stored_bytes,
                limit: self.config.max_bytes_per_tenant,
            });
        }
        Ok(())
    }

    /// An upload's bytes as they were stored.
    pub async fn get(&self, tenant: &Tenant, id: &str) -> Result<(UploadMeta, Bytes), AdhocError> {
        let mut meta = parse_id(id).ok_or_else(|| AdhocError::NotFound(id.to_string()))?;
        let bytes = self
            .storage
            .get_if_exists(&Self::key(tenant, id))
            .await?
            .ok_or_else(|| AdhocError::NotFound(id.to_string()))?;
        meta.bytes = bytes.len() as u64;
        Ok((meta, bytes))
    }

    /// The tenant's uploads, oldest first; objects under `adhoc/` that are no upload are left
    /// out.
    pub async fn list(&self, tenant: &Tenant) -> Result<Vec<UploadMeta>, AdhocError> {
        let prefix = format!("{}/", Self::prefix(tenant));
        let mut uploads: Vec<UploadMeta> = self
            .storage
            .list_objects(&Self::prefix(tenant))
            .await?
            .into_iter()
            .filter_map(|object| {
                let mut meta = parse_id(object.key.strip_prefix(&prefix)?)?;
                meta.bytes = object.size;
                Some(meta)
            })
            .collect();
        uploads.sort_by(|a, b| a.uploaded_at_ms.cmp(&b.uploaded_at_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(uploads)
    }
}

/// What one sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepStats {
    pub deleted: usize,
}

/// Deletes every upload older than `adhoc.retention` as of `now_ms`, of every tenant. Every
/// replica may sweep: deletes are idempotent.
pub async fn sweep(store: &AdhocStore, now_ms: i64) -> Result<SweepStats, AdhocError> {
    let mut stats = SweepStats::default();
    if store.config.retention.is_zero() {
        return Ok(stats);
    }
    let cutoff_ms = now_ms.saturating_sub(duration_ms(store.config.retention));
    let tenants = store.storage.list_dirs("").await?;
    for tenant in tenants.iter().filter_map(|name| Tenant::parse(name).ok()) {
        for meta in store.list(&tenant).await? {
            if meta.uploaded_at_ms >= cutoff_ms {
                continue;
            }
            store.storage.delete(&AdhocStore::key(&tenant, &meta.id)).await?;
            tracing::info!(%tenant, id = %meta.id, uploaded_at_ms = meta.uploaded_at_ms, "deleted an ad-hoc profile past retention");
            stats.deleted += 1;
        }
    }
    Ok(stats)
}

/// Sweeps every `adhoc.sweep_interval` until the task is dropped.
pub async fn run(store: AdhocStore, heartbeat: Heartbeat) {
    let mut ticks = tokio::time::interval(store.config.sweep_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = sweep(&store, crate::now_ms()).await;
        heartbeat.record(&outcome);
        if let Err(err) = outcome {
            tracing::warn!(error = %err, "ad-hoc profile sweep failed; retrying at the next one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_name_and_time() {
        let id = new_id("../../etc/passwd cpu.pb.gz", 1_764_000_000_123);
        let meta = parse_id(&id).unwrap();
        assert_eq!(meta.name, ".._.._etc_passwd_cpu.pb.gz");
        assert_eq!(meta.uploaded_at_ms, 1_764_000_000_123);
        assert!(!id.contains('/'));
        assert_eq!(parse_id(&new_id("", 5)).unwrap().name, DEFAULT_NAME);
        for bad in [
            "",
            "x",
            "not-a-uuid-at-all-not-a-uuid-at-all-x",
            &format!("{}-", &id[..36]),
            &format!("{}-a/b", &id[..36]),
            &format!("{}_x", &id[..36]),
        ] {
            assert!(parse_id(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn decodes_pprof_and_folded() {
        let mut profile = Profile {
            string_table: vec![
                "".into(),
                "cpu".into(),
                "nanoseconds".into(),
                "main".into(),
                "work".into(),
            ],
            sample_type: vec![
                crate::pprof::ValueType { r#type: 1, unit: 2 },
                crate::pprof::ValueType { r#type: 1, unit: 2 },
            ],
            ..Default::default()
        };
        profile.function = vec![
            crate::pprof::Function {
                id: 1,
                name: 3,
                ..Default::default()
            },
            crate::pprof::Function {
                id: 2,
                name: 4,
                ..Default::default()
            },
        ];
        profile.location = (1..=2)
            .map(|id| crate::pprof::Location {
                id,
                line: vec![crate::pprof::Line {
                    function_id: id,
                    line: 1,
                    column: 0,
                }],
                ..Default::default()
            })
            .collect();
        profile.sample = vec![
            crate::pprof::Sample {
                location_id: vec![2, 1],
                value: vec![5, 1],
                label: vec![],
            },
            crate::pprof::Sample {
                location_id: vec![1],
                value: vec![3, 0],
                label: vec![],
            },
        ];
        let decoded = decode(&crate::pprof::encode_gzip(&profile), &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.names, ["cpu", "cpu_1"]);
        assert_eq!(decoded.trees[0].total(), 8);
        assert_eq!(decoded.trees[1].total(), 1);
        assert_eq!(decoded.select("x", Some("cpu_1")).unwrap(), 1);
        assert_eq!(decoded.select("x", Some("")).unwrap(), 0);
        assert!(matches!(
            decoded.select("x", Some("wall")),
            Err(AdhocError::UnknownType { .. })
        ));

        let folded = decode(b"main;work 5\nmain 3\n", &DecodeLimits::default()).unwrap();
        assert_eq!(folded.names, ["samples"]);
        assert_eq!(folded.trees[0].total(), 8);

        assert!(matches!(
            decode(b"\x1f\x8bnope", &DecodeLimits::default()),
            Err(AdhocError::Pprof(_))
        ));
        assert!(matches!(
            decode(b"hello", &DecodeLimits::default()),
            Err(AdhocError::Undecodable { .. })
        ));
        assert!(matches!(decode(b"", &DecodeLimits::default()), Err(AdhocError::Empty)));
    }
}
