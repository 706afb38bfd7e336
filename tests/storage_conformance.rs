//! One conformance suite for what `src/storage.rs` relies on from an object store — put, get,
//! ranges, existence, create-only puts, deletes, listings, multipart uploads, key prefixes —
//! run on every backend Pyrite is deployed on: the local filesystem, an S3 server started in
//! this process (`s3s-fs`, a real S3 protocol implementation over a directory) and the real
//! Ceph RADOS Gateway of `../shared/tools/micro-ceph.sh`.

mod common;

use bytes::Bytes;
use pyrite::storage::{MULTIPART_PART_BYTES, Storage, StorageConfig, StorageError};

/// Everything the blocks, catalog, compactor, retention and settings code expects of storage.
async fn conformance(storage: &Storage) {
    let at_start = pyrite::now_ms() - 60_000;

    // Put, get, overwrite.
    storage
        .put("t1/1000/a/data", Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    assert_eq!(
        storage.get("t1/1000/a/data").await.unwrap(),
        Bytes::from_static(b"0123456789")
    );
    storage
        .put("t1/1000/a/meta.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    storage
        .put("t1/1000/a/meta.json", Bytes::from_static(b"{\"v\":2}"))
        .await
        .unwrap();
    assert_eq!(
        storage.get("t1/1000/a/meta.json").await.unwrap(),
        Bytes::from_static(b"{\"v\":2}")
    );

    // A missing object: `get` fails with NotFound, `get_if_exists` is None, `exists` false.
    match storage.get("t1/1000/nothing/data").await {
        Err(StorageError::ObjectStore(object_store::Error::NotFound { .. })) => {}
        other => panic!("get of a missing object: {other:?}"),
    }
    assert_eq!(storage.get_if_exists("t1/1000/nothing/data").await.unwrap(), None);
    assert!(!storage.exists("t1/1000/nothing/data").await.unwrap());
    assert!(storage.exists("t1/1000/a/data").await.unwrap());

    // Ranges: one, to the end, and several of one object (near ones may be coalesced, far ones
    // not; either way each comes back exactly).
    assert_eq!(
        storage.get_range("t1/1000/a/data", 2..5).await.unwrap(),
        Bytes::from_static(b"234")
    );
    assert_eq!(
        storage.get_range("t1/1000/a/data", 7..10).await.unwrap(),
        Bytes::from_static(b"789")
    );
    let big: Bytes = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    storage.put("t1/1000/big/data", big.clone()).await.unwrap();
    let ranges = [0..10, 12..20, 2 << 20..(2 << 20) + 5, (3 << 20) - 3..3 << 20];
    let parts = storage.get_ranges("t1/1000/big/data", &ranges).await.unwrap();
    assert_eq!(parts.len(), ranges.len());
    for (range, part) in ranges.iter().zip(&parts) {
        assert_eq!(part, &big.slice(range.start as usize..range.end as usize), "{range:?}");
    }

    // Create-only puts: the first wins, a second is refused and changes nothing.
    assert!(
        storage
            .put_new("t1/2000/b/meta.json", Bytes::from_static(b"first"))
            .await
            .unwrap()
    );
    assert!(
        !storage
            .put_new("t1/2000/b/meta.json", Bytes::from_static(b"second"))
            .await
            .unwrap()
    );
    assert_eq!(
        storage.get("t1/2000/b/meta.json").await.unwrap(),
        Bytes::from_static(b"first")
    );

    // Listings: the "directories" right under a prefix, and every object under one, with keys
    // as given (no store prefix), sizes and modification times.
    let mut dirs = storage.list_dirs("t1").await.unwrap();
    dirs.sort();
    assert_eq!(dirs, ["1000", "2000"]);
    let mut dirs = storage.list_dirs("t1/1000").await.unwrap();
    dirs.sort();
    assert_eq!(dirs, ["a", "big"]);
    assert!(storage.list_dirs("t9").await.unwrap().is_empty());
    let mut objects = storage.list_objects("t1/1000").await.unwrap();
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<&str> = objects.iter().map(|object| object.key.as_str()).collect();
    assert_eq!(keys, ["t1/1000/a/data", "t1/1000/a/meta.json", "t1/1000/big/data"]);
    assert_eq!(objects[0].size, 10);
    assert_eq!(objects[2].size, big.len() as u64);
    assert!(
        objects.iter().all(|object| object.last_modified_ms >= at_start),
        "{objects:?}"
    );
    // A prefix is a directory, not a string prefix: `t1/100` holds nothing.
    assert!(storage.list_objects("t1/100").await.unwrap().is_empty());

    // Deletes: gone afterwards, and deleting what is gone is no error (retention and the
    // compactor may race).
    storage.delete("t1/1000/a/data").await.unwrap();
    storage.delete("t1/1000/a/data").await.unwrap();
    assert!(!storage.exists("t1/1000/a/data").await.unwrap());
    assert_eq!(storage.get_if_exists("t1/1000/a/data").await.unwrap(), None);
    let keys: Vec<String> = storage
        .list_objects("t1/1000/a")
        .await
        .unwrap()
        .into_iter()
        .map(|object| object.key)
        .collect();
    assert_eq!(keys, ["t1/1000/a/meta.json"]);
}

/// Objects past the multipart threshold go up in parts and read back whole, ranges across a
/// part boundary included; a create-only put past it still refuses an existing key.
async fn multipart(storage: Storage) {
    let storage = storage.with_multipart_threshold(1024);
    let data: Bytes = (0..MULTIPART_PART_BYTES + 4096).map(|i| (i % 251) as u8).collect();
    storage.put("t2/1/big/data", data.clone()).await.unwrap();
    assert_eq!(storage.get("t2/1/big/data").await.unwrap(), data);
    assert!(!storage.put_new("t2/1/big/data", data.clone()).await.unwrap(), "exists");
    assert!(storage.put_new("t2/1/other/data", data.clone()).await.unwrap());
    let boundary = MULTIPART_PART_BYTES as u64;
    assert_eq!(
        storage
            .get_range("t2/1/other/data", boundary - 2..boundary + 2)
            .await
            .unwrap(),
        data.slice(MULTIPART_PART_BYTES - 2..MULTIPART_PART_BYTES + 2)
    );
}

fn s3_config(endpoint: &str, bucket: &str, prefix: &str, access_key: &str, secret_key: &str) -> StorageConfig {
    let yaml = format!(
        "backend: s3\nbucket: {bucket}\nendpoint: {endpoint}\naccess_key_id: {access_key}\n\
         secret_access_key: {secret_key}\nallow_http: true\npath_style: true\nprefix: {prefix}\nmax_retries: 2\n"
    );
    serde_yaml::from_str(&yaml).unwrap()
}

#[tokio::test]
async fn local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::from_config(&StorageConfig::default(), dir.path()).unwrap();
    conformance(&storage).await;
    multipart(storage).await;
}

/// An S3 server in this process: s3s's protocol layer over s3s-fs's directory backend, served
/// by hyper on a loopback port, with SigV4 credentials checked.
mod in_process_s3 {
    use std::net::SocketAddr;

    use hyper_util::rt::{TokioExecutor, TokioIo};

    pub const ACCESS_KEY: &str = "conformance";
    pub const SECRET_KEY: &str = "conformance-secret";

    /// Starts the server over `root`, where each directory is a bucket; returns its address.
    pub async fn start(root: &std::path::Path) -> SocketAddr {
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        address
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_in_process() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("blocks")).unwrap();
    let address = in_process_s3::start(root.path()).await;
    let endpoint = format!("http://{address}");
    let config = s3_config(
        &endpoint,
        "blocks",
        "cluster-a",
        in_process_s3::ACCESS_KEY,
        in_process_s3::SECRET_KEY,
    );
    let storage = Storage::from_config(&config, root.path()).unwrap();
    conformance(&storage).await;
    multipart(storage).await;
    // The prefix is a real key prefix in the bucket.
    assert!(root.path().join("blocks/cluster-a/t1/2000/b/meta.json").is_file());
}

/// The real Ceph RGW. Started by micro-ceph.sh if nothing answers; if it cannot start, the
/// test says so and passes — except under CI=true, where it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceph_rgw() {
    let bucket = match tokio::task::spawn_blocking(common::ceph::fresh_bucket).await.unwrap() {
        Ok(bucket) => bucket,
        Err(reason) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: Ceph RGW could not be started ({reason}); CI=true makes this a failure");
            return;
        }
        Err(reason) => panic!("Ceph RGW could not be started: {reason}"),
    };
    let config = s3_config(
        common::ceph::ENDPOINT,
        &bucket,
        "conformance",
        common::ceph::ACCESS_KEY,
        common::ceph::SECRET_KEY,
    );
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::from_config(&config, dir.path()).unwrap();
    conformance(&storage).await;
    multipart(storage).await;
}
