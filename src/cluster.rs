//! Several replicas on one bucket. Each replica has its own head (what it was pushed or scraped
//! since its last flush) and they share the blocks, so a query asks every peer for the head data
//! it cannot read from storage ([`Peers::heads`], answered by `Head::snapshot_for_peer`), and
//! work that must happen once is split by rendezvous hashing over the replica names
//! ([`Peers::owns`]): each scrape target is scraped by one replica, and one replica compacts.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{CLUSTER_SECRET_HEADER, ClusterSecret};
use crate::block::{self, BlockError, Partition};
use crate::model::Tenant;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's name among `peers`; default: `$HOSTNAME` (a StatefulSet pod's name).
    pub replica: Option<String>,
    /// Every replica, this one included: name → `host:port` of its HTTP API. Empty: one replica.
    pub peers: BTreeMap<String, String>,
    /// File holding the secret the replicas send each other on `/internal/v1/head` (which
    /// serves any tenant's head data); default: `$PYRITE_CLUSTER_SECRET`. Required with `peers`.
    pub secret_file: Option<PathBuf>,
    /// How long a flushed partition stays readable by peers after its block is published:
    /// longer than a peer takes from listing blocks to asking for heads.
    #[serde(with = "humantime_serde")]
    pub published_grace: Duration,
    /// Deadline of one peer's answer; a peer that misses it is left out of the query (logged).
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            replica: None,
            peers: BTreeMap::new(),
            secret_file: None,
            published_grace: Duration::from_secs(60),
            peer_timeout: Duration::from_secs(10),
        }
    }
}

impl ClusterConfig {
    /// This replica's name: the configured one, else `$HOSTNAME`.
    pub fn replica_name(&self) -> Option<String> {
        self.replica
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|name| !name.is_empty())
    }

    /// What can be checked without the environment (the replica name may come from it).
    pub fn validate(&self) -> Result<(), String> {
        for (name, address) in &self.peers {
            reqwest::Url::parse(&format!("http://{address}"))
                .map_err(|err| format!("cluster.peers {name}: {address:?}: {err}"))?;
        }
        if self.published_grace.is_zero() || self.peer_timeout.is_zero() {
            return Err("cluster.published_grace and cluster.peer_timeout must be positive".into());
        }
        Ok(())
    }

    /// This replica's name, which must be one of `peers`.
    fn me(&self) -> Result<String, String> {
        let Some(replica) = self.replica_name() else {
            return Err("cluster.replica is required with cluster.peers (or set HOSTNAME)".into());
        };
        if !self.peers.contains_key(&replica) {
            return Err(format!("cluster.replica {replica:?} is not one of cluster.peers"));
        }
        Ok(replica)
    }
}

/// What a replica asks a peer for: head data of one tenant and window, series matching any of
/// `selectors` (all if none) and of `profile_type` (any if none), except partitions whose block
/// the asking replica has listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadRequest {
    pub tenant: String,
    pub from_ms: i64,
    pub until_ms: i64,
    #[serde(default)]
    pub selectors: Vec<String>,
    #[serde(default)]
    pub profile_type: Option<String>,
    #[serde(default)]
    pub listed_blocks: Vec<String>,
}

impl HeadRequest {
    pub fn listed(&self) -> HashSet<String> {
        self.listed_blocks.iter().cloned().collect()
    }
}

/// The internal route peers answer [`HeadRequest`]s on.
pub const HEAD_ROUTE: &str = "/internal/v1/head";

/// Encodes partitions as a peer answer: each one a block, prefixed by its length (u64 LE).
pub fn encode_heads(blocks: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for block in blocks {
        out.extend_from_slice(&(block.len() as u64).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// Reads a peer answer back into partitions.
pub fn decode_heads(mut data: &[u8]) -> Result<Vec<Partition>, BlockError> {
    let mut partitions = Vec::new();
    while !data.is_empty() {
        let corrupt = || BlockError::Corrupt {
            key: "(peer answer)".into(),
            reason: "truncated frame".into(),
        };
        let length = data
            .get(..8)
            .map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
            .and_then(|length| usize::try_from(length).ok())
            .ok_or_else(corrupt)?;
        let block = data.get(8..8 + length).ok_or_else(corrupt)?;
        partitions.push(block::decode(block)?);
        data = &data[8 + length..];
    }
    Ok(partitions)
}

/// This replica's view of the others.
pub struct Peers {
    me: String,
    names: Vec<String>,
    others: Vec<(String, reqwest::Url)>,
    client: reqwest::Client,
    secret: ClusterSecret,
}

impl Peers {
    /// `None` for a single replica (no peers configured).
    pub fn from_config(config: &ClusterConfig) -> Result<Option<Self>, String> {
        config.validate()?;
        if config.peers.is_empty() {
            return Ok(None);
        }
        let me = config.me()?;
        let secret = ClusterSecret::load(config.secret_file.as_deref())?.ok_or_else(|| {
            format!(
                "cluster.peers is set but there is no cluster secret: set cluster.secret_file or \
                 ${} (every replica the same); {HEAD_ROUTE} serves any tenant's data and is refused without it",
                crate::auth::CLUSTER_SECRET_ENV
            )
        })?;
        let others = config
            .peers
            .iter()
            .filter(|(name, _)| **name != me)
            .map(|(name, address)| {
                let url =
                    reqwest::Url::parse(&format!("http://{address}{HEAD_ROUTE}")).map_err(|err| err.to_string())?;
                Ok((name.clone(), url))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let client = reqwest::Client::builder()
            .timeout(config.peer_timeout)
            .build()
            .map_err(|err| err.to_string())?;
        Ok(Some(Self {
            me,
            names: config.peers.keys().cloned().collect(),
            others,
            client,
            secret,
        }))
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The secret peers send and expect on [`HEAD_ROUTE`].
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// Whether this replica is the one for `key` (rendezvous hashing: the replica whose hash
    /// with the key is highest), so adding or removing a replica moves only its share.
    /// How many other replicas there are.
    pub fn others(&self) -> usize {
        self.others.len()
    }

    pub fn owns(&self, key: &str) -> bool {
        owner(&self.names, key) == Some(self.me.as_str())
    }

    /// Every other replica's head data for `request`; a peer that fails is left out and logged.
    pub async fn heads(&self, request: &HeadRequest) -> Vec<Partition> {
        let answers = futures::future::join_all(self.others.iter().map(|(name, url)| async move {
            let answer = async {
                let response = self
                    .client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(CLUSTER_SECRET_HEADER, self.secret.header_value())
                    .body(serde_json::to_vec(request).expect("a request serializes"))
                    .send()
                    .await
                    .map_err(|err| err.to_string())?;
                if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                    return Err("401: the peer refused this replica's cluster secret (do the secrets differ?)".into());
                }
                if !response.status().is_success() {
                    return Err(format!("{}", response.status()));
                }
                let body = response.bytes().await.map_err(|err| err.to_string())?;
                decode_heads(&body).map_err(|err| err.to_string())
            }
            .await;
            (name, answer)
        }))
        .await;
        let mut partitions = Vec::new();
        for (name, answer) in answers {
            match answer {
                Ok(found) => partitions.extend(found),
                Err(err) => {
                    tracing::warn!(peer = %name, error = %err, "peer head unavailable; the query leaves it out")
                }
            }
        }
        partitions
    }
}

/// The replica of `names` that owns `key`.
fn owner<'a>(names: &'a [String], key: &str) -> Option<&'a str> {
    names
        .iter()
        .max_by_key(|name| (fnv1a(name.as_bytes(), key.as_bytes()), name.as_str()))
        .map(String::as_str)
}

/// FNV-1a over `a`, a separator and `b`: stable across processes and versions, so every replica
/// computes the same owner.
fn fnv1a(a: &[u8], b: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in a.iter().chain(&[0xff]).chain(b) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys; a final avalanche (splitmix64) spreads them.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The tenant of a peer request, checked.
pub fn request_tenant(request: &HeadRequest) -> Result<Tenant, String> {
    Tenant::parse(&request.tenant).map_err(|err| err.to_string())
}

/// Why a peer's head request was refused: it is malformed (its sender is at fault).
#[derive(Debug, thiserror::Error)]
pub enum HeadRequestError {
    #[error("{0}")]
    Tenant(String),
    #[error(transparent)]
    Selector(#[from] crate::model::SelectorError),
    #[error(transparent)]
    ProfileType(#[from] crate::model::ProfileTypeError),
}

impl crate::error::Classify for HeadRequestError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Client
    }
}

/// This replica's answer to a peer's [`HeadRequest`]: the wanted series of its head's
/// partitions the peer does not read from storage, each partition encoded as a block (see
/// [`Head::snapshot_for_peer`](crate::head::Head::snapshot_for_peer)), framed by
/// [`encode_heads`].
pub fn answer_head_request(head: &crate::head::Head, request: &HeadRequest) -> Result<Vec<u8>, HeadRequestError> {
    let tenant = request_tenant(request).map_err(HeadRequestError::Tenant)?;
    let selectors = request
        .selectors
        .iter()
        .map(|text| crate::model::Selector::parse(text))
        .collect::<Result<Vec<_>, _>>()?;
    let profile_type = request
        .profile_type
        .as_deref()
        .map(crate::model::ProfileType::parse)
        .transpose()?
        .map(|profile_type| profile_type.id());
    let (from_ms, until_ms) = (request.from_ms, request.until_ms);
    let mut blocks = Vec::new();
    head.snapshot_for_peer(&tenant, from_ms, until_ms, &request.listed(), |partition| {
        let wanted: Vec<&block::Series> = partition
            .series
            .iter()
            .filter(|series| {
                crate::model::TimeWindow::new(from_ms, until_ms).overlaps(series.min_time_ms, series.max_time_ms)
                    && profile_type
                        .as_deref()
                        .is_none_or(|id| series.labels.get(crate::model::LABEL_PROFILE_TYPE) == Some(id))
                    && (selectors.is_empty() || selectors.iter().any(|s| s.matches(&series.labels)))
            })
            .collect();
        if !wanted.is_empty() {
            blocks.push(block::encode_parts(&partition.symbols, wanted.into_iter()).data);
        }
    });
    Ok(encode_heads(blocks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_one_owner_and_a_new_replica_takes_only_its_share() {
        let three: Vec<String> = ["pyrite-0", "pyrite-1", "pyrite-2"].map(String::from).to_vec();
        let four: Vec<String> = ["pyrite-0", "pyrite-1", "pyrite-2", "pyrite-3"]
            .map(String::from)
            .to_vec();
        let keys: Vec<String> = (0..3000)
            .map(|i| format!("payments/10.0.{}.{}:6060", i / 256, i % 256))
            .collect();
        let mut share = BTreeMap::new();
        let mut moved = 0;
        for key in &keys {
            let before = owner(&three, key).unwrap();
            *share.entry(before).or_insert(0) += 1;
            let after = owner(&four, key).unwrap();
            if before != after {
                assert_eq!(after, "pyrite-3", "a key only ever moves to the new replica");
                moved += 1;
            }
        }
        // About a third each, and about a quarter moves.
        assert!(share.values().all(|&n| (800..1200).contains(&n)), "{share:?}");
        assert!((550..950).contains(&moved), "{moved}");
    }

    #[test]
    fn config_needs_this_replica_among_its_peers_and_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        let mut config = ClusterConfig {
            replica: Some("a".into()),
            peers: BTreeMap::from([("a".into(), "127.0.0.1:1".into()), ("b".into(), "127.0.0.1:2".into())]),
            secret_file: Some(secret_file.clone()),
            ..ClusterConfig::default()
        };
        assert!(Peers::from_config(&config).is_err(), "the secret file is missing");
        std::fs::write(&secret_file, "too short\n").unwrap();
        assert!(Peers::from_config(&config).is_err());
        std::fs::write(&secret_file, "a-secret-long-enough-for-a-cluster\n").unwrap();
        assert!(
            Peers::from_config(&config)
                .unwrap()
                .is_some_and(|peers| peers.me() == "a")
        );
        config.replica = Some("c".into());
        assert!(Peers::from_config(&config).is_err());
        config.peers.insert("d".into(), "not a host:port:at all".into());
        assert!(config.validate().is_err());
        config.peers.clear();
        assert!(Peers::from_config(&config).unwrap().is_none(), "no peers: one replica");
    }

    #[test]
    fn peer_answers_round_trip_and_truncation_is_an_error() {
        let mut partition = Partition::default();
        let labels = crate::model::Labels::new([("service_name".to_string(), "a".to_string())]).unwrap();
        let cpu = crate::model::ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        partition.push(&labels, &cpu, 5, 0, 42);
        let encoded = encode_heads([block::encode(&partition).data, block::encode(&partition).data]);
        let decoded = decode_heads(&encoded).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[1].series[0].values, vec![42]);
        assert!(decode_heads(&encoded[..encoded.len() - 3]).is_err());
    }
}
