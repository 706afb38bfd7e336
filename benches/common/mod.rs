//! What the benchmarks share: a store (local-filesystem bucket and a head with its WAL) in a
//! temporary directory, removed when the [`Store`] is dropped. Each bench includes this file as
//! a module (`mod common;`), so it is not a bench target of its own.

#![allow(dead_code)]

use std::sync::Arc;

use pyrite::head::{Head, HeadConfig};
use pyrite::ingest::Ingester;
use pyrite::pprof::DecodeLimits;
use pyrite::query::Querier;
use pyrite::storage::{Storage, StorageConfig};

pub struct Store {
    pub dir: tempfile::TempDir,
    pub storage: Storage,
    pub head: Arc<Head>,
    pub ingester: Ingester,
}

impl Store {
    /// A store with the default head configuration and decode limits.
    pub fn new(runtime: &tokio::runtime::Runtime) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_config(&StorageConfig::default(), dir.path()).unwrap();
        let limits = DecodeLimits::default();
        let head = Arc::new(
            runtime
                .block_on(Head::open(
                    HeadConfig::default(),
                    storage.clone(),
                    &dir.path().join("wal"),
                    &limits,
                ))
                .unwrap(),
        );
        Store {
            ingester: Ingester::new(head.clone(), limits),
            storage,
            head,
            dir,
        }
    }

    /// A querier of this store with fresh (cold) caches.
    pub fn querier(&self) -> Querier {
        Querier::new(self.head.clone(), self.storage.clone())
    }
}
