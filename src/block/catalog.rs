//! Which blocks a store holds, as one process has learned it.
//!
//! A listing costs one LIST of the tenant's bucket directories, then a LIST per bucket that may
//! overlap the window and a GET per `meta.json` in it. Metas are written once and never change,
//! so a [`Catalog`] keeps every meta it has read and only GETs new ones; and once it has seen
//! every bucket of a tenant it knows the widest bucket duration there is, so it skips buckets
//! that end before the window without listing them. A bucket that may overlap is always listed
//! again: blocks appear (flushes, compactions) and disappear (compaction, retention) there.
//!
//! The skip is safe while no block is wider than the widest seen and the configured one; a
//! replica writing wider buckets than any this process has seen or is configured for (a bucket
//! duration changed on one replica only) is missed for windows after the bucket's start until
//! this process lists all of the tenant again (a restart, or a listing from the beginning of time
//! such as the compactor's).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::{BlockError, BlockMeta, DATA_OBJECT, META_OBJECT, split_replaced};
use crate::model::Tenant;
use crate::storage::{Storage, StoredObject};

/// Metas kept in memory before the catalog forgets everything and relearns (≈ 0.5 KiB each).
const MAX_CACHED_METAS: usize = 200_000;
/// Meta GETs in flight per bucket while a listing reads metas it has not seen.
const CONCURRENT_META_READS: usize = 16;
/// Buckets listed at once (a first listing of a long history on S3 is round-trip bound).
const CONCURRENT_BUCKET_LISTS: usize = 8;

/// The blocks of one tenant that may hold samples in a window.
#[derive(Debug, Default)]
pub struct Listing {
    /// The blocks a query reads.
    pub visible: Vec<BlockMeta>,
    /// Blocks a listed compacted block replaces but which are not deleted yet (a compactor
    /// stopped between publishing and deleting): a query must not read them as well.
    pub replaced: Vec<BlockMeta>,
    /// Data objects with no `meta.json` beside them in the buckets listed: a flush or
    /// compaction uploading right now, or one that stopped before publishing.
    pub unpublished: Vec<StoredObject>,
}

/// A store's blocks as this process has learned them; clones share what was learned.
#[derive(Clone)]
pub struct Catalog {
    storage: Storage,
    /// A bucket duration this process writes itself, so skips never assume narrower buckets.
    own_bucket_ms: i64,
    known: Arc<parking_lot::Mutex<Known>>,
}

#[derive(Default)]
struct Known {
    tenants: HashMap<String, KnownTenant>,
    metas: usize,
}

#[derive(Default)]
struct KnownTenant {
    /// Every bucket directory of the tenant has been listed at least once.
    seen_every_bucket: bool,
    widest_bucket_ms: i64,
    /// Metas by key, per bucket start.
    buckets: HashMap<i64, HashMap<String, Arc<BlockMeta>>>,
}

impl Catalog {
    /// A catalog that knows nothing yet; `own_bucket_ms` is the bucket duration this process's
    /// head writes (0 when it writes none).
    pub fn new(storage: Storage, own_bucket_ms: i64) -> Self {
        Self {
            storage,
            own_bucket_ms,
            known: Arc::default(),
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The tenant's blocks whose samples may fall in `[from, until)`.
    pub async fn list(&self, tenant: &Tenant, from_ms: i64, until_ms: i64) -> Result<Listing, BlockError> {
        let mut dirs: Vec<i64> = self
            .storage
            .list_dirs(tenant.as_str())
            .await?
            .iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        dirs.sort_unstable();
        let skip_width = self.skip_width(tenant);
        let wanted: Vec<i64> = dirs
            .iter()
            .copied()
            .filter(|&start| start < until_ms)
            .filter(|&start| skip_width.is_none_or(|width| start.saturating_add(width) > from_ms))
            .collect();
        let listed_every_bucket = wanted.len() == dirs.len();

        let listed: Vec<(i64, Vec<Arc<BlockMeta>>, Vec<StoredObject>)> = futures::stream::iter(wanted)
            .map(|start| async move {
                let objects = self.storage.list_objects(&format!("{tenant}/{start}")).await?;
                let metas = self.bucket_metas(tenant, start, &objects).await?;
                let published: HashSet<&str> = objects
                    .iter()
                    .filter_map(|object| object.key.strip_suffix(META_OBJECT))
                    .collect();
                let unpublished: Vec<StoredObject> = objects
                    .iter()
                    .filter(|object| {
                        object
                            .key
                            .strip_suffix(DATA_OBJECT)
                            .is_some_and(|block_dir| !published.contains(block_dir))
                    })
                    .cloned()
                    .collect();
                Ok::<_, BlockError>((start, metas, unpublished))
            })
            .buffered(CONCURRENT_BUCKET_LISTS)
            .try_collect()
            .await?;
        let mut unpublished = Vec::new();
        let mut bucket_metas: Vec<(i64, Vec<Arc<BlockMeta>>)> = Vec::with_capacity(listed.len());
        for (start, metas, stray) in listed {
            unpublished.extend(stray);
            bucket_metas.push((start, metas));
        }
        self.remember(tenant, &dirs, &bucket_metas, listed_every_bucket);

        let mut metas: Vec<BlockMeta> = bucket_metas
            .into_iter()
            .flat_map(|(_, metas)| metas)
            .map(|meta| meta.as_ref().clone())
            .collect();
        metas.sort_by(|a, b| a.id.cmp(&b.id));
        let (visible, replaced) = split_replaced(metas);
        let overlapping = |metas: Vec<BlockMeta>| -> Vec<BlockMeta> {
            metas
                .into_iter()
                .filter(|meta| meta.overlaps(from_ms, until_ms))
                .collect()
        };
        Ok(Listing {
            visible: overlapping(visible),
            replaced: overlapping(replaced),
            unpublished,
        })
    }

    /// How far past its start a bucket may hold samples, once every bucket has been seen.
    fn skip_width(&self, tenant: &Tenant) -> Option<i64> {
        let known = self.known.lock();
        let entry = known.tenants.get(tenant.as_str())?;
        entry
            .seen_every_bucket
            .then(|| entry.widest_bucket_ms.max(self.own_bucket_ms))
            .filter(|&width| width > 0)
    }

    /// The metas among `objects`, from memory where this catalog has read them before.
    async fn bucket_metas(
        &self,
        tenant: &Tenant,
        start: i64,
        objects: &[StoredObject],
    ) -> Result<Vec<Arc<BlockMeta>>, BlockError> {
        let meta_keys = objects
            .iter()
            .map(|object| object.key.as_str())
            .filter(|key| key.ends_with(META_OBJECT));
        let mut found = Vec::new();
        let mut unread = Vec::new();
        {
            let known = self.known.lock();
            let bucket = known
                .tenants
                .get(tenant.as_str())
                .and_then(|entry| entry.buckets.get(&start));
            for key in meta_keys {
                match bucket.and_then(|metas| metas.get(key)) {
                    Some(meta) => found.push(meta.clone()),
                    None => unread.push(key.to_string()),
                }
            }
        }
        let read: Vec<Option<BlockMeta>> = futures::stream::iter(unread)
            .map(|key| read_meta(&self.storage, key))
            .buffer_unordered(CONCURRENT_META_READS)
            .try_collect()
            .await?;
        found.extend(read.into_iter().flatten().map(Arc::new));
        Ok(found)
    }

    /// Keeps what a listing read: the listed buckets' metas replace what was known of them, and
    /// buckets that no longer exist are forgotten.
    fn remember(
        &self,
        tenant: &Tenant,
        dirs: &[i64],
        listed: &[(i64, Vec<Arc<BlockMeta>>)],
        listed_every_bucket: bool,
    ) {
        let mut known = self.known.lock();
        if known.metas > MAX_CACHED_METAS {
            known.tenants.clear();
            known.metas = 0;
        }
        let entry = known.tenants.entry(tenant.to_string()).or_default();
        let mut delta: isize = 0;
        entry.buckets.retain(|start, metas| {
            let keep = dirs.binary_search(start).is_ok();
            if !keep {
                delta -= metas.len() as isize;
            }
            keep
        });
        for (start, metas) in listed {
            let by_key: HashMap<String, Arc<BlockMeta>> =
                metas.iter().map(|meta| (meta.meta_key(), meta.clone())).collect();
            delta += by_key.len() as isize;
            if let Some(previous) = entry.buckets.insert(*start, by_key) {
                delta -= previous.len() as isize;
            }
            for meta in metas {
                entry.widest_bucket_ms = entry.widest_bucket_ms.max(meta.bucket_duration_ms);
            }
        }
        entry.seen_every_bucket |= listed_every_bucket;
        known.metas = known.metas.saturating_add_signed(delta);
    }
}

/// Reads one meta; `None` when it was deleted between the listing and the read.
async fn read_meta(storage: &Storage, key: String) -> Result<Option<BlockMeta>, BlockError> {
    let Some(raw) = storage.get_if_exists(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|err| BlockError::Corrupt {
            key,
            reason: format!("meta.json: {err}"),
        })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::block::{Partition, delete, upload, write};
    use crate::model::{Labels, ProfileType};

    const HOUR: i64 = 3_600_000;

    fn tenant() -> Tenant {
        Tenant::parse("t").unwrap()
    }

    /// A block of bucket `[start, start + HOUR)` with one row at `start + 1`.
    async fn block_at(storage: &Storage, start: i64) -> BlockMeta {
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let labels = Labels::new([("service_name".to_string(), "s".to_string())]).unwrap();
        let mut partition = Partition::default();
        partition.push(&labels, &cpu, start + 1, crate::symbols::ROOT_STACK, 1);
        write(storage, &tenant(), start, HOUR, &partition).await.unwrap()
    }

    /// Ids in sorted order (blocks written in the same millisecond sort by their random part).
    fn ids(metas: &[BlockMeta]) -> Vec<&str> {
        let mut ids: Vec<&str> = metas.iter().map(|meta| meta.id.as_str()).collect();
        ids.sort_unstable();
        ids
    }

    /// A meta that cannot be parsed, in a new block directory of bucket `start`: a listing that
    /// reads it fails, so a listing that succeeds did not read it.
    async fn poison_bucket(storage: &Storage, start: i64) {
        storage
            .put(
                &format!("t/{start}/poison/{META_OBJECT}"),
                Bytes::from_static(b"not json"),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reads_each_meta_once() {
        let storage = Storage::new(Arc::new(object_store::memory::InMemory::new()));
        let first = block_at(&storage, 0).await;
        let catalog = Catalog::new(storage.clone(), HOUR);
        assert_eq!(
            ids(&catalog.list(&tenant(), 0, HOUR).await.unwrap().visible),
            [first.id.as_str()]
        );

        // Metas never change, so the catalog serves the one it read; a fresh one reads it again.
        storage
            .put(&first.meta_key(), Bytes::from_static(b"overwritten"))
            .await
            .unwrap();
        let second = block_at(&storage, 0).await;
        let listing = catalog.list(&tenant(), 0, HOUR).await.unwrap();
        assert_eq!(ids(&listing.visible), ids(&[first.clone(), second.clone()]));
        let fresh = Catalog::new(storage.clone(), HOUR).list(&tenant(), 0, HOUR).await;
        assert!(matches!(fresh, Err(BlockError::Corrupt { .. })), "{fresh:?}");

        // A deleted block leaves the listing even though its meta was remembered.
        delete(&storage, &second).await.unwrap();
        let listing = catalog.list(&tenant(), 0, HOUR).await.unwrap();
        assert_eq!(ids(&listing.visible), [first.id.as_str()]);
    }

    #[tokio::test]
    async fn skips_buckets_that_end_before_the_window_once_all_were_seen() {
        let storage = Storage::new(Arc::new(object_store::memory::InMemory::new()));
        for hour in 0..4 {
            block_at(&storage, hour * HOUR).await;
        }
        poison_bucket(&storage, 0).await;
        let catalog = Catalog::new(storage.clone(), 0);
        // Nothing is known yet, so every bucket is listed, the poisoned one too.
        assert!(catalog.list(&tenant(), 3 * HOUR, 4 * HOUR).await.is_err());
        storage.delete(&format!("t/0/poison/{META_OBJECT}")).await.unwrap();
        assert_eq!(catalog.list(&tenant(), 0, 4 * HOUR).await.unwrap().visible.len(), 4);

        // Every bucket is an hour wide: the window [3h, 4h) needs bucket 3h only.
        poison_bucket(&storage, 0).await;
        poison_bucket(&storage, 2 * HOUR).await;
        let listing = catalog.list(&tenant(), 3 * HOUR, 4 * HOUR).await.unwrap();
        assert_eq!(listing.visible.len(), 1);
        assert_eq!(listing.visible[0].bucket_start_ms, 3 * HOUR);
        // A window that reaches into bucket 2h lists it.
        assert!(catalog.list(&tenant(), 3 * HOUR - 1, 4 * HOUR).await.is_err());

        // This process writing two-hour buckets makes bucket 2h a candidate for [3h, 4h).
        let wider = Catalog::new(storage.clone(), 2 * HOUR);
        storage.delete(&format!("t/0/poison/{META_OBJECT}")).await.unwrap();
        storage
            .delete(&format!("t/{}/poison/{META_OBJECT}", 2 * HOUR))
            .await
            .unwrap();
        assert_eq!(wider.list(&tenant(), 0, 4 * HOUR).await.unwrap().visible.len(), 4);
        poison_bucket(&storage, 2 * HOUR).await;
        assert!(wider.list(&tenant(), 3 * HOUR, 4 * HOUR).await.is_err());
    }

    #[tokio::test]
    async fn reports_data_objects_without_a_meta() {
        let storage = Storage::new(Arc::new(object_store::memory::InMemory::new()));
        let published = block_at(&storage, 0).await;
        let cpu = ProfileType::parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds").unwrap();
        let labels = Labels::new([("service_name".to_string(), "s".to_string())]).unwrap();
        let mut partition = Partition::default();
        partition.push(&labels, &cpu, 5, crate::symbols::ROOT_STACK, 1);
        let unpublished = upload(&storage, &tenant(), 0, HOUR, &partition).await.unwrap();

        let listing = Catalog::new(storage, HOUR).list(&tenant(), 0, HOUR).await.unwrap();
        assert_eq!(ids(&listing.visible), [published.id.as_str()]);
        let keys: Vec<&str> = listing.unpublished.iter().map(|object| object.key.as_str()).collect();
        assert_eq!(keys, [unpublished.data_key()]);
    }
}
