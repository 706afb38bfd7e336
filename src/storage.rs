//! Object storage wiring: a local directory by default, any S3 (Ceph RGW, MinIO, AWS) by
//! config, both through `object_store`. Everything above this module sees only [`Storage`].

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("object storage config: {0}")]
    Config(String),
    #[error("creating {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
}

impl crate::error::Classify for StorageError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            // Unreachable or failing: a read may succeed once it is back.
            Self::ObjectStore(_) => crate::error::ErrorClass::Unavailable,
            Self::Config(_) | Self::CreateDir { .. } => crate::error::ErrorClass::Internal,
        }
    }
}

/// Where blocks live.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    /// A directory; relative paths resolve against the data directory.
    Filesystem {
        #[serde(default = "default_blocks_dir")]
        directory: PathBuf,
    },
    /// Any S3-compatible server.
    S3(S3Config),
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self::Filesystem {
            directory: default_blocks_dir(),
        }
    }
}

fn default_blocks_dir() -> PathBuf {
    PathBuf::from("blocks")
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Path-style URLs (`http://host/bucket/key`), as Ceph RGW and MinIO want.
    #[serde(default = "default_true")]
    pub path_style: bool,
    #[serde(default)]
    pub allow_http: bool,
    /// Key prefix inside the bucket, so several deployments can share one bucket.
    #[serde(default)]
    pub prefix: String,
    /// Retries of a failed request (connection refused, 5xx, throttling); 0: none.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt, so a query against an
    /// unreachable bucket answers `unavailable` within about this long instead of hanging.
    #[serde(default = "default_retry_timeout", with = "humantime_serde")]
    pub retry_timeout: std::time::Duration,
    /// One request, from connect to the last byte; a block upload must fit in it.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Objects larger than this (bytes) are uploaded in parts of [`MULTIPART_PART_BYTES`], each
    /// its own request under `request_timeout`, so a 512 MiB compacted block needs no 30 s
    /// single PUT.
    #[serde(default = "default_multipart_threshold")]
    pub multipart_threshold: usize,
}

/// Part size of multipart uploads (S3's minimum is 5 MiB for every part but the last).
pub const MULTIPART_PART_BYTES: usize = 16 * 1024 * 1024;

fn default_multipart_threshold() -> usize {
    64 * 1024 * 1024
}

fn default_max_retries() -> usize {
    10
}

fn default_retry_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn default_request_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_connect_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

fn default_region() -> String {
    "us-east-1".to_string()
}

fn default_true() -> bool {
    true
}

/// The object store Pyrite writes blocks to, with an optional key prefix.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Larger objects go up in parts.
    multipart_threshold: usize,
}

impl Storage {
    /// Builds the configured store; `data_dir` anchors a relative filesystem directory.
    pub fn from_config(config: &StorageConfig, data_dir: &std::path::Path) -> Result<Self, StorageError> {
        match config {
            StorageConfig::Filesystem { directory } => {
                let directory = data_dir.join(directory);
                std::fs::create_dir_all(&directory).map_err(|source| StorageError::CreateDir {
                    path: directory.clone(),
                    source,
                })?;
                let store =
                    object_store::local::LocalFileSystem::new_with_prefix(&directory)?.with_automatic_cleanup(true);
                Ok(Self {
                    store: Arc::new(store),
                    prefix: String::new(),
                    multipart_threshold: usize::MAX,
                })
            }
            StorageConfig::S3(s3) => {
                if s3.bucket.is_empty() {
                    return Err(StorageError::Config("s3.bucket is required".into()));
                }
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_retry(object_store::RetryConfig {
                        backoff: object_store::BackoffConfig::default(),
                        max_retries: s3.max_retries,
                        retry_timeout: s3.retry_timeout,
                    })
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_timeout(s3.request_timeout)
                            .with_connect_timeout(s3.connect_timeout)
                            .with_allow_http(s3.allow_http),
                    );
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let prefix = s3.prefix.trim_matches('/').to_string();
                Ok(Self {
                    store: Arc::new(builder.build()?),
                    prefix,
                    multipart_threshold: s3.multipart_threshold.max(1),
                })
            }
        }
    }

    /// A store over any `object_store` implementation (tests use the in-memory one).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            prefix: String::new(),
            multipart_threshold: usize::MAX,
        }
    }

    /// Uploads objects larger than `bytes` in parts.
    pub fn with_multipart_threshold(mut self, bytes: usize) -> Self {
        self.multipart_threshold = bytes.max(1);
        self
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn key<'a>(&self, path: &'a Path) -> &'a str {
        let raw = path.as_ref();
        if self.prefix.is_empty() {
            raw
        } else {
            raw.strip_prefix(self.prefix.as_str())
                .map(|rest| rest.trim_start_matches('/'))
                .unwrap_or(raw)
        }
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        if data.len() > self.multipart_threshold {
            return self.put_in_parts(key, data).await;
        }
        self.store.put(&self.path(key), PutPayload::from_bytes(data)).await?;
        Ok(())
    }

    /// A multipart upload; the object appears whole when the last part is in, or not at all.
    async fn put_in_parts(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let upload = self.store.put_multipart(&self.path(key)).await?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
        writer.put(data);
        writer.finish().await?;
        Ok(())
    }

    /// Writes `key` only if no object has that key (a create-only put: RGW and S3 honour
    /// `If-None-Match: *`); false if one already existed. A multipart upload cannot be
    /// create-only: for objects past the multipart threshold the check is a HEAD first, which
    /// is enough where racing writers write the same bytes (compacted blocks).
    pub async fn put_new(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        if data.len() > self.multipart_threshold {
            if self.exists(key).await? {
                return Ok(false);
            }
            self.put_in_parts(key, data).await?;
            return Ok(true);
        }
        let options = object_store::PutOptions::from(object_store::PutMode::Create);
        match self
            .store
            .put_opts(&self.path(key), PutPayload::from_bytes(data), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        Ok(self.store.get(&self.path(key)).await?.bytes().await?)
    }

    /// An object, or `None` if no object has that key (deleted meanwhile, never written).
    pub async fn get_if_exists(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        match self.get(key).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        Ok(self.store.get_range(&self.path(key), range).await?)
    }

    /// Whether an object has this key.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Several ranges of one object; ranges close together are fetched in one request.
    pub async fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, StorageError> {
        Ok(self.store.get_ranges(&self.path(key), ranges).await?)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// The "directories" directly under `prefix` (without trailing slash), e.g. a tenant's buckets.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let listing = self.store.list_with_delimiter(Some(&self.path(prefix))).await?;
        Ok(listing
            .common_prefixes
            .iter()
            .map(|path| self.key(path).rsplit('/').next().unwrap_or_default().to_string())
            .collect())
    }

    /// Every object under `prefix`, recursively.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<StoredObject>, StorageError> {
        let objects: Vec<_> = self.store.list(Some(&self.path(prefix))).try_collect().await?;
        Ok(objects
            .iter()
            .map(|object| StoredObject {
                key: self.key(&object.location).to_string(),
                last_modified_ms: object.last_modified.timestamp_millis(),
                size: object.size,
            })
            .collect())
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub key: String,
    pub last_modified_ms: i64,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filesystem_round_trip_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_config(&StorageConfig::default(), dir.path()).unwrap();
        storage
            .put("t1/1000/a/data", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        storage
            .put("t1/2000/b/meta.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(
            storage.get_range("t1/1000/a/data", 2..5).await.unwrap(),
            Bytes::from_static(b"234")
        );
        let mut dirs = storage.list_dirs("t1").await.unwrap();
        dirs.sort();
        assert_eq!(dirs, ["1000", "2000"]);
        let before_put = crate::now_ms() - 60_000;
        let listed = storage.list_objects("t1/2000").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "t1/2000/b/meta.json");
        assert_eq!(listed[0].size, 2);
        assert!(listed[0].last_modified_ms >= before_put, "{listed:?}");
        assert!(storage.exists("t1/1000/a/data").await.unwrap());
        storage.delete("t1/1000/a/data").await.unwrap();
        storage.delete("t1/1000/a/data").await.unwrap();
        assert!(!storage.exists("t1/1000/a/data").await.unwrap());
        assert!(storage.list_objects("t1/1000").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn large_objects_go_up_in_parts_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_config(&StorageConfig::default(), dir.path())
            .unwrap()
            .with_multipart_threshold(1024);
        let data: Bytes = (0..MULTIPART_PART_BYTES + 4096).map(|i| (i % 251) as u8).collect();
        storage.put("t/1/big/data", data.clone()).await.unwrap();
        assert_eq!(storage.get("t/1/big/data").await.unwrap(), data);
        assert!(!storage.put_new("t/1/big/data", data.clone()).await.unwrap(), "exists");
        assert!(storage.put_new("t/1/other/data", data.clone()).await.unwrap());
        assert_eq!(
            storage
                .get_range(
                    "t/1/other/data",
                    MULTIPART_PART_BYTES as u64 - 2..MULTIPART_PART_BYTES as u64 + 2
                )
                .await
                .unwrap(),
            data.slice(MULTIPART_PART_BYTES - 2..MULTIPART_PART_BYTES + 2)
        );
    }
}
