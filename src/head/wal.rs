//! Write-ahead log: numbered segment files of length-prefixed, CRC-checked records. One writer
//! thread appends, and fsyncs once per batch of waiting appends (group commit), so throughput
//! survives fsync latency and nothing is acknowledged before it is on disk.
//!
//! Records nobody waits on (scraped profiles: no client holds an acknowledgement) go to a queue
//! the writer drains before every other command and at least every `deferred_sync`, so they are
//! written in order and fsynced at most that much later, without waking the writer each time:
//! an fsync and a thread wake-up per scrape were a sixth of a busy scraper's CPU. A crash loses
//! at most `deferred_sync` of scraped data, as it would lose a scrape in flight. The queue is
//! bounded: past `max_queued_bytes` (a slow or stuck disk) a deferred append waits for its fsync
//! like any other, so scrapes slow down instead of piling up in memory.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;

use tokio::sync::oneshot;

const SEGMENT_SUFFIX: &str = ".wal";
/// Largest record accepted back from disk; anything bigger is a torn or corrupt frame.
const MAX_RECORD_BYTES: u32 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("write-ahead log writer has stopped")]
    Stopped,
}

enum Command {
    Append(Vec<u8>, oneshot::Sender<io::Result<()>>),
    /// Seal the current segment and start a new one; answers the sealed segment's number.
    Rotate(oneshot::Sender<io::Result<u64>>),
}

/// How records nobody waits on are written.
#[derive(Debug, Clone, Copy)]
pub struct DeferredWrites {
    /// Longest a deferred record waits before it is written and fsynced.
    pub sync_interval: Duration,
    /// Bytes of deferred records that may wait for the writer; past it, deferred appends wait
    /// for their fsync.
    pub max_queued_bytes: usize,
}

/// Deferred records waiting for the writer.
#[derive(Default)]
struct DeferredQueue {
    records: Vec<Vec<u8>>,
    bytes: usize,
}

type SharedQueue = Arc<Mutex<DeferredQueue>>;

/// Handle to the log; cheap to share behind an `Arc`.
pub struct Wal {
    dir: PathBuf,
    commands: mpsc::Sender<Command>,
    deferred: SharedQueue,
    max_deferred_bytes: usize,
}

/// Records found on disk at open, oldest first.
pub struct Replay {
    pub records: Vec<Vec<u8>>,
    /// Bytes dropped from a torn tail (a write that was never acknowledged).
    pub torn_bytes: u64,
}

impl Wal {
    /// Opens `dir`, returns every intact record of earlier segments, and starts a new segment.
    pub fn open(dir: &Path, deferred: DeferredWrites) -> Result<(Self, Replay), WalError> {
        let io_err = |source| WalError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let segments = list_segments(dir).map_err(io_err)?;
        let mut replay = Replay {
            records: Vec::new(),
            torn_bytes: 0,
        };
        for (_, path) in &segments {
            read_segment(path, &mut replay).map_err(|source| WalError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let next = segments.last().map_or(1, |(number, _)| number + 1);
        let (commands, receiver) = mpsc::channel();
        let max_deferred_bytes = deferred.max_queued_bytes;
        let deferred_sync = deferred.sync_interval;
        let deferred = SharedQueue::default();
        let writer = Writer::create(dir.to_path_buf(), next, deferred_sync, deferred.clone()).map_err(io_err)?;
        std::thread::Builder::new()
            .name("pyrite-wal".into())
            .spawn(move || writer.run(receiver))
            .map_err(io_err)?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                commands,
                deferred,
                max_deferred_bytes,
            },
            replay,
        ))
    }

    /// Reads every intact record under `dir` without starting a writer, for read-only tools
    /// (`pyrite export --data-dir`) that may run beside a live server.
    pub fn read_only(dir: &Path) -> Result<Replay, WalError> {
        Self::read_only_after(dir, 0)
    }

    /// As [`Wal::read_only`], without the segments numbered at most `skip_through`.
    pub fn read_only_after(dir: &Path, skip_through: u64) -> Result<Replay, WalError> {
        let mut replay = Replay {
            records: Vec::new(),
            torn_bytes: 0,
        };
        if !dir.exists() {
            return Ok(replay);
        }
        let segments = list_segments(dir).map_err(|source| WalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for (_, path) in segments.iter().filter(|(number, _)| *number > skip_through) {
            read_segment(path, &mut replay).map_err(|source| WalError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(replay)
    }

    /// Appends one record; returns once it is fsynced.
    pub async fn append(&self, record: Vec<u8>) -> Result<(), WalError> {
        let (ack, done) = oneshot::channel();
        self.commands
            .send(Command::Append(record, ack))
            .map_err(|_| WalError::Stopped)?;
        done.await
            .map_err(|_| WalError::Stopped)?
            .map_err(|source| WalError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// Queues one record that nobody waits on: it is written before any append or rotation
    /// that starts after this call, and on disk within the deferred sync interval; a write error
    /// is logged, not returned. When the queue is full it is an [`Wal::append`] instead, which
    /// writes the queue first, so the order holds either way.
    pub async fn append_deferred(&self, record: Vec<u8>) -> Result<(), WalError> {
        {
            let mut queue = self.deferred.lock();
            if queue.records.is_empty() || queue.bytes + record.len() <= self.max_deferred_bytes {
                queue.bytes += record.len();
                queue.records.push(record);
                return Ok(());
            }
        }
        tracing::debug!(
            limit = self.max_deferred_bytes,
            "write-ahead log: scraped profiles queue full; waiting for the disk"
        );
        self.append(record).await
    }

    /// Seals the current segment; every record appended before this call is in a segment whose
    /// number is at most the returned one.
    pub async fn rotate(&self) -> Result<u64, WalError> {
        let (ack, done) = oneshot::channel();
        self.commands
            .send(Command::Rotate(ack))
            .map_err(|_| WalError::Stopped)?;
        done.await
            .map_err(|_| WalError::Stopped)?
            .map_err(|source| WalError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    /// Deletes sealed segments up to and including `number`: their records are in published blocks.
    pub fn delete_through(&self, number: u64) -> Result<(), WalError> {
        delete_segments_through(&self.dir, number)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Deletes the segments numbered at most `number` under `dir`.
pub fn delete_segments_through(dir: &Path, number: u64) -> Result<(), WalError> {
    let io_err = |source| WalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for (segment, path) in list_segments(dir).map_err(io_err)? {
        if segment <= number {
            std::fs::remove_file(&path).map_err(|source| WalError::Io { path, source })?;
        }
    }
    Ok(())
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(number) = number {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}{SEGMENT_SUFFIX}"))
}

fn read_segment(path: &Path, replay: &mut Replay) -> io::Result<()> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut offset = 0usize;
    while offset < data.len() {
        let Some(header) = data.get(offset..offset + 8) else {
            break;
        };
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let checksum = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if length > MAX_RECORD_BYTES {
            break;
        }
        let Some(payload) = data.get(offset + 8..offset + 8 + length as usize) else {
            break;
        };
        if crc32(payload) != checksum {
            break;
        }
        replay.records.push(payload.to_vec());
        offset += 8 + length as usize;
    }
    replay.torn_bytes += (data.len() - offset) as u64;
    Ok(())
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

struct Writer {
    dir: PathBuf,
    number: u64,
    file: BufWriter<File>,
    deferred_sync: Duration,
    deferred: SharedQueue,
}

impl Writer {
    fn create(dir: PathBuf, number: u64, deferred_sync: Duration, deferred: SharedQueue) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&dir, number))?;
        // The new segment's directory entry must survive a crash too.
        File::open(&dir)?.sync_all()?;
        Ok(Self {
            dir,
            number,
            file: BufWriter::with_capacity(1 << 20, file),
            // A zero interval would spin.
            deferred_sync: deferred_sync.max(Duration::from_millis(10)),
            deferred,
        })
    }

    fn run(mut self, commands: mpsc::Receiver<Command>) {
        loop {
            let first = match commands.recv_timeout(self.deferred_sync) {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.write_deferred() {
                        self.sync_deferred();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.write_deferred();
                    self.sync_deferred();
                    return;
                }
            };
            let mut waiting = Vec::new();
            let mut pending = Some(first);
            // Group commit: take everything already queued, then fsync once for all of it.
            loop {
                // Deferred records queued before this command go first.
                let deferred_written = self.write_deferred();
                match pending.take() {
                    Some(Command::Append(record, ack)) => {
                        let result = self.write_record(&record);
                        waiting.push((ack, result));
                    }
                    Some(Command::Rotate(ack)) => {
                        let synced = self.sync();
                        Self::answer(&mut waiting, &synced);
                        let sealed = self.number;
                        let next = synced.and_then(|()| {
                            Writer::create(self.dir.clone(), sealed + 1, self.deferred_sync, self.deferred.clone())
                        });
                        match next {
                            Ok(writer) => {
                                self = writer;
                                let _ = ack.send(Ok(sealed));
                            }
                            Err(err) => {
                                let _ = ack.send(Err(err));
                            }
                        }
                    }
                    None => {
                        if deferred_written && waiting.is_empty() {
                            self.sync_deferred();
                        }
                        break;
                    }
                }
                pending = commands.try_recv().ok();
            }
            if !waiting.is_empty() {
                let synced = self.sync();
                Self::answer(&mut waiting, &synced);
            }
        }
    }

    /// Writes the queued deferred records; true if there were any.
    fn write_deferred(&mut self) -> bool {
        let records = std::mem::take(&mut *self.deferred.lock()).records;
        for record in &records {
            if let Err(err) = self.write_record(record) {
                tracing::error!(segment = self.number, error = %err, "write-ahead log: writing a scraped profile failed");
            }
        }
        !records.is_empty()
    }

    /// Fsyncs deferred records; nobody waits on them, so a failure is logged.
    fn sync_deferred(&mut self) {
        if let Err(err) = self.sync() {
            tracing::error!(segment = self.number, error = %err, "write-ahead log: fsync of scraped profiles failed");
        }
    }

    fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        self.file.write_all(&(record.len() as u32).to_le_bytes())?;
        self.file.write_all(&crc32(record).to_le_bytes())?;
        self.file.write_all(record)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }

    fn answer(waiting: &mut Vec<(oneshot::Sender<io::Result<()>>, io::Result<()>)>, synced: &io::Result<()>) {
        for (ack, written) in waiting.drain(..) {
            let result = match (written, synced) {
                (Err(err), _) => Err(err),
                (Ok(()), Err(err)) => Err(io::Error::new(err.kind(), err.to_string())),
                (Ok(()), Ok(())) => Ok(()),
            };
            let _ = ack.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn append_rotate_replay_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, replay) = Wal::open(dir.path(), deferred(Duration::from_secs(1), 1 << 20)).unwrap();
            assert!(replay.records.is_empty());
            let appends = (0..50u8).map(|i| wal.append(vec![i; i as usize + 1]));
            for result in futures::future::join_all(appends).await {
                result.unwrap();
            }
            let sealed = wal.rotate().await.unwrap();
            wal.append(b"after".to_vec()).await.unwrap();
            assert_eq!(sealed, 1);
        }
        // A torn write at the tail of the newest segment.
        let newest = list_segments(dir.path()).unwrap().last().unwrap().1.clone();
        let mut file = OpenOptions::new().append(true).open(&newest).unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(file);

        let (wal, replay) = Wal::open(dir.path(), deferred(Duration::from_secs(1), 1 << 20)).unwrap();
        assert_eq!(replay.records.len(), 51);
        assert_eq!(replay.records[49], vec![49u8; 50]);
        assert_eq!(replay.records[50], b"after");
        assert_eq!(replay.torn_bytes, 6);
        wal.delete_through(1).unwrap();
        let (_, replay) = Wal::open(dir.path(), deferred(Duration::from_secs(1), 1 << 20)).unwrap();
        assert_eq!(replay.records, vec![b"after".to_vec()]);
    }

    #[tokio::test]
    async fn deferred_appends_reach_the_disk_in_order() {
        // A long interval: deferred records wait for the next acknowledged append.
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), deferred(Duration::from_secs(3600), 1 << 20)).unwrap();
        wal.append_deferred(b"scraped 1".to_vec()).await.unwrap();
        wal.append_deferred(b"scraped 2".to_vec()).await.unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            Wal::read_only(dir.path()).unwrap().records.is_empty(),
            "not yet written"
        );
        wal.append(b"pushed".to_vec()).await.unwrap();
        let on_disk = Wal::read_only(dir.path()).unwrap().records;
        assert_eq!(
            on_disk,
            vec![b"scraped 1".to_vec(), b"scraped 2".to_vec(), b"pushed".to_vec()]
        );

        // A short interval: they reach the disk on their own.
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), deferred(Duration::from_millis(50), 1 << 20)).unwrap();
        wal.append_deferred(b"scraped".to_vec()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Wal::read_only(dir.path()).unwrap().records.is_empty() {
            assert!(std::time::Instant::now() < deadline, "deferred record never written");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A rotation seals them in the sealed segment.
        wal.append_deferred(b"before rotation".to_vec()).await.unwrap();
        let sealed = wal.rotate().await.unwrap();
        let segment = std::fs::read(segment_path(dir.path(), sealed)).unwrap();
        assert!(segment.windows(15).any(|window| window == b"before rotation"));
    }

    /// A full queue (the disk is behind) makes a deferred append wait for its fsync, and the
    /// records still reach the disk in order.
    #[tokio::test]
    async fn a_full_deferred_queue_waits_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), deferred(Duration::from_secs(3600), 20)).unwrap();
        wal.append_deferred(b"scraped 1".to_vec()).await.unwrap();
        wal.append_deferred(b"scraped 2".to_vec()).await.unwrap();
        assert!(Wal::read_only(dir.path()).unwrap().records.is_empty(), "18 bytes fit");
        wal.append_deferred(b"scraped 3".to_vec()).await.unwrap();
        assert_eq!(
            Wal::read_only(dir.path()).unwrap().records,
            vec![b"scraped 1".to_vec(), b"scraped 2".to_vec(), b"scraped 3".to_vec()]
        );
        // The queue is empty again: the next record waits for nobody.
        wal.append_deferred(b"scraped 4".to_vec()).await.unwrap();
        assert_eq!(Wal::read_only(dir.path()).unwrap().records.len(), 3);
    }

    fn deferred(sync_interval: Duration, max_queued_bytes: usize) -> DeferredWrites {
        DeferredWrites {
            sync_interval,
            max_queued_bytes,
        }
    }
}
