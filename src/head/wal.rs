//! Write-ahead log: numbered segment files of length-prefixed, CRC-checked records (the header
//! checksummed too, so replay can tell a torn tail from damage in the middle and keep every
//! intact record after the damage). One writer
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
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;

use tokio::sync::oneshot;

const SEGMENT_SUFFIX: &str = ".wal";
/// First bytes of every segment this version writes. Segments without it were written by
/// earlier versions (records framed `[length][crc32]`, no header checksum) and are still read.
const SEGMENT_MAGIC: &[u8; 8] = b"PYRWAL2\n";
/// `[length u32][crc32 of the payload u32][crc32 of those 8 bytes u32]`, little-endian. The
/// header's own checksum lets replay find the next record after damage in the middle of a
/// segment by trying each offset cheaply, without checksumming a payload per offset.
const HEADER_BYTES: usize = 12;
const LEGACY_HEADER_BYTES: usize = 8;
/// Largest record accepted back from disk; anything bigger is a torn or corrupt frame.
const MAX_RECORD_BYTES: u32 = 512 * 1024 * 1024;
/// Where damaged bytes and unreplayable records are moved, under the WAL directory.
pub const QUARANTINE_DIR: &str = "quarantine";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("write-ahead log writer has stopped")]
    Stopped,
    /// `head.max_wal_bytes` reached: the disk budget of the log, checked before writing.
    #[error(
        "the write-ahead log holds {bytes} bytes, at its budget of {limit_bytes} bytes \
         (head.max_wal_bytes) until a flush succeeds; retry later"
    )]
    Full { bytes: u64, limit_bytes: u64 },
}

impl WalError {
    /// A failure of this process's disk or budget, not of the record: the same append may
    /// succeed later (disk space returns, a flush frees segments).
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::Full { .. })
    }
}

enum Command {
    Append(Vec<u8>, oneshot::Sender<io::Result<()>>),
    /// Seal the current segment and start a new one; answers the sealed segment's number.
    Rotate(oneshot::Sender<io::Result<u64>>),
}

/// How records are written.
#[derive(Debug, Clone, Copy)]
pub struct DeferredWrites {
    /// Longest a deferred record waits before it is written and fsynced.
    pub sync_interval: Duration,
    /// Bytes of deferred records that may wait for the writer; past it, deferred appends wait
    /// for their fsync.
    pub max_queued_bytes: usize,
    /// Bytes the log's segments may take on disk (0: no budget); an append past it is
    /// refused with [`WalError::Full`] before anything is written.
    pub max_wal_bytes: u64,
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
    max_wal_bytes: u64,
    /// Bytes of every segment on disk, written or queued to be.
    bytes: Arc<AtomicU64>,
    /// Tests only: this many coming writes stop half-way with ENOSPC.
    #[cfg(test)]
    short_writes: Arc<std::sync::atomic::AtomicUsize>,
}

/// Where a record was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// One intact record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedRecord {
    pub position: Position,
    pub payload: Vec<u8>,
}

/// Records found on disk at open, oldest first.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<ReplayedRecord>,
    /// Bytes dropped from torn tails: a last write that never completed, so was never
    /// acknowledged.
    pub torn_bytes: u64,
    /// Ranges between intact records that held no record: damage in the middle of a segment.
    /// Every intact record after them is in `records`.
    pub damaged: Vec<(Position, u64)>,
}

impl Replay {
    /// The payloads alone, oldest first.
    pub fn payloads(&self) -> Vec<&[u8]> {
        self.records.iter().map(|record| record.payload.as_slice()).collect()
    }
}

impl Wal {
    /// Opens `dir`, returns every intact record of earlier segments, moves damaged ranges to
    /// the quarantine directory, and starts a new segment.
    pub fn open(dir: &Path, writes: DeferredWrites) -> Result<(Self, Replay), WalError> {
        let io_err = |source| WalError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let segments = list_segments(dir).map_err(io_err)?;
        let mut replay = Replay::default();
        let mut on_disk = 0u64;
        for (number, path) in &segments {
            let data = read_segment(path, *number, &mut replay).map_err(|source| WalError::Io {
                path: path.clone(),
                source,
            })?;
            on_disk += data.len() as u64;
            quarantine_damage(dir, *number, &data, &replay.damaged);
        }
        for (_, length) in replay.damaged.iter() {
            crate::integrity::WAL_DAMAGED_BYTES.inc_by(*length);
        }
        let next = segments.last().map_or(1, |(number, _)| number + 1);
        let (commands, receiver) = mpsc::channel();
        let bytes = Arc::new(AtomicU64::new(on_disk));
        let deferred = SharedQueue::default();
        #[allow(unused_mut)]
        let mut writer = Writer::create(
            dir.to_path_buf(),
            next,
            writes.sync_interval,
            deferred.clone(),
            bytes.clone(),
        )
        .map_err(io_err)?;
        #[cfg(test)]
        let short_writes = writer.short_writes.clone();
        std::thread::Builder::new()
            .name("pyrite-wal".into())
            .spawn(move || writer.run(receiver))
            .map_err(io_err)?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                commands,
                deferred,
                max_deferred_bytes: writes.max_queued_bytes,
                max_wal_bytes: writes.max_wal_bytes,
                bytes,
                #[cfg(test)]
                short_writes,
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
        let mut replay = Replay::default();
        if !dir.exists() {
            return Ok(replay);
        }
        let segments = list_segments(dir).map_err(|source| WalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for (number, path) in segments.iter().filter(|(number, _)| *number > skip_through) {
            read_segment(path, *number, &mut replay).map_err(|source| WalError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(replay)
    }

    /// Bytes of the log's segments on disk (and queued to be written).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Refuses a record that would take the log past its disk budget.
    fn check_budget(&self, record: &[u8]) -> Result<(), WalError> {
        let bytes = self.bytes();
        if self.max_wal_bytes > 0 && bytes + (record.len() + HEADER_BYTES) as u64 > self.max_wal_bytes {
            return Err(WalError::Full {
                bytes,
                limit_bytes: self.max_wal_bytes,
            });
        }
        Ok(())
    }

    /// Appends one record; returns once it is fsynced. On an error the record is not in the
    /// log, and never will be: the writer cuts its segment back to the last good record.
    pub async fn append(&self, record: Vec<u8>) -> Result<(), WalError> {
        self.check_budget(&record)?;
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
        self.check_budget(&record)?;
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
        let freed = delete_segments_through(&self.dir, number)?;
        self.bytes.fetch_sub(freed.min(self.bytes()), Ordering::Relaxed);
        Ok(())
    }

    /// Moves a record that cannot be replayed out of the way: its payload goes to
    /// `quarantine/<segment>-<offset>.record` with the reason beside it, so start-up goes on
    /// and an operator can look at it. Returns the file written.
    pub fn quarantine_record(&self, record: &ReplayedRecord, reason: &str) -> io::Result<PathBuf> {
        let name = format!("{:016}-{}", record.position.segment, record.position.offset);
        let dir = self.dir.join(QUARANTINE_DIR);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.record"));
        std::fs::write(&path, &record.payload)?;
        std::fs::write(dir.join(format!("{name}.reason")), reason)?;
        Ok(path)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Copies each damaged range of one segment to `quarantine/<segment>-<offset>.damaged`
/// (logged; a failure to copy is logged too: the range is skipped either way).
fn quarantine_damage(dir: &Path, segment: u64, data: &[u8], damaged: &[(Position, u64)]) {
    for &(position, length) in damaged.iter().filter(|(position, _)| position.segment == segment) {
        let start = position.offset as usize;
        let range = &data[start..start + length as usize];
        let quarantine = dir.join(QUARANTINE_DIR);
        let path = quarantine.join(format!("{segment:016}-{start}.damaged"));
        let written = std::fs::create_dir_all(&quarantine).and_then(|()| std::fs::write(&path, range));
        match written {
            Ok(()) => tracing::error!(
                segment,
                offset = start,
                bytes = length,
                quarantined = %path.display(),
                "write-ahead log: damaged bytes between intact records; every intact record after them is replayed"
            ),
            Err(err) => tracing::error!(
                segment,
                offset = start,
                bytes = length,
                error = %err,
                "write-ahead log: damaged bytes between intact records (could not copy them to quarantine)"
            ),
        }
    }
}

/// Deletes the segments numbered at most `number` under `dir`; returns the bytes freed.
pub fn delete_segments_through(dir: &Path, number: u64) -> Result<u64, WalError> {
    let io_err = |source| WalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut freed = 0;
    for (segment, path) in list_segments(dir).map_err(io_err)? {
        if segment <= number {
            freed += std::fs::metadata(&path).map_or(0, |metadata| metadata.len());
            std::fs::remove_file(&path).map_err(|source| WalError::Io { path, source })?;
        }
    }
    Ok(freed)
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

/// Reads one segment's records into `replay`; returns the segment's bytes.
fn read_segment(path: &Path, number: u64, replay: &mut Replay) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    scan_segment(&data, number, replay);
    Ok(data)
}

/// Splits a segment's bytes into records. Bytes that are no record are damage when an intact
/// record follows them in the segment (reported in `replay.damaged`; the records after them
/// are kept), else a torn tail (`replay.torn_bytes`).
pub fn scan_segment(data: &[u8], segment: u64, replay: &mut Replay) {
    let position = |offset: usize| Position {
        segment,
        offset: offset as u64,
    };
    if !data.starts_with(SEGMENT_MAGIC) {
        return scan_legacy_segment(data, segment, replay);
    }
    let mut offset = SEGMENT_MAGIC.len();
    while offset < data.len() {
        if let Some(payload) = frame_at(data, offset) {
            replay.records.push(ReplayedRecord {
                position: position(offset),
                payload: payload.to_vec(),
            });
            offset += HEADER_BYTES + payload.len();
            continue;
        }
        match (offset + 1..data.len()).find(|&next| frame_at(data, next).is_some()) {
            Some(next) => {
                replay.damaged.push((position(offset), (next - offset) as u64));
                offset = next;
            }
            None => {
                replay.torn_bytes += (data.len() - offset) as u64;
                return;
            }
        }
    }
}

/// The payload of the record framed at `offset`, if one is there intact.
fn frame_at(data: &[u8], offset: usize) -> Option<&[u8]> {
    let header = data.get(offset..offset.checked_add(HEADER_BYTES)?)?;
    let header_crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if crc32(&header[..8]) != header_crc {
        return None;
    }
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let payload_crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if length > MAX_RECORD_BYTES {
        return None;
    }
    let start = offset + HEADER_BYTES;
    let payload = data.get(start..start.checked_add(length as usize)?)?;
    (crc32(payload) == payload_crc).then_some(payload)
}

/// Segments of earlier versions: `[length][crc32]` frames, read up to the first bad one (all
/// after it counts as torn: without a header checksum, finding the next record is guesswork).
fn scan_legacy_segment(data: &[u8], segment: u64, replay: &mut Replay) {
    let mut offset = 0usize;
    while offset < data.len() {
        let Some(header) = data.get(offset..offset + LEGACY_HEADER_BYTES) else {
            break;
        };
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let checksum = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if length > MAX_RECORD_BYTES {
            break;
        }
        let Some(payload) = data.get(offset + LEGACY_HEADER_BYTES..offset + LEGACY_HEADER_BYTES + length as usize)
        else {
            break;
        };
        if crc32(payload) != checksum {
            break;
        }
        replay.records.push(ReplayedRecord {
            position: Position {
                segment,
                offset: offset as u64,
            },
            payload: payload.to_vec(),
        });
        offset += LEGACY_HEADER_BYTES + length as usize;
    }
    replay.torn_bytes += (data.len() - offset) as u64;
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// Appends `record`'s frame to `out`.
fn encode_frame(record: &[u8], out: &mut Vec<u8>) {
    let length = (record.len() as u32).to_le_bytes();
    let payload_crc = crc32(record).to_le_bytes();
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&length);
    header[4..].copy_from_slice(&payload_crc);
    out.extend_from_slice(&header);
    out.extend_from_slice(&crc32(&header).to_le_bytes());
    out.extend_from_slice(record);
}

/// The writer thread's segment. Records of a group commit are framed into `batch` and written
/// and fsynced together; a failed write or fsync (ENOSPC, EIO, a short write) cuts the file
/// back to `committed_len`, so a record whose append was answered with an error never reaches
/// a later replay, and no gap is left for the records after it.
struct Writer {
    dir: PathBuf,
    number: u64,
    file: File,
    /// Length of the segment up to its last fsynced record.
    committed_len: u64,
    /// The cut back to `committed_len` failed: retried before anything else is written.
    needs_cut: bool,
    batch: Vec<u8>,
    deferred_sync: Duration,
    deferred: SharedQueue,
    bytes: Arc<AtomicU64>,
    #[cfg(test)]
    short_writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl Writer {
    fn create(
        dir: PathBuf,
        number: u64,
        deferred_sync: Duration,
        deferred: SharedQueue,
        bytes: Arc<AtomicU64>,
    ) -> io::Result<Self> {
        let path = segment_path(&dir, number);
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let started = file
            .write_all(SEGMENT_MAGIC)
            .and_then(|()| file.sync_data())
            // The new segment's directory entry must survive a crash too.
            .and_then(|()| File::open(&dir)?.sync_all());
        if let Err(err) = started {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(err);
        }
        bytes.fetch_add(SEGMENT_MAGIC.len() as u64, Ordering::Relaxed);
        Ok(Self {
            dir,
            number,
            file,
            committed_len: SEGMENT_MAGIC.len() as u64,
            needs_cut: false,
            batch: Vec::with_capacity(1 << 20),
            // A zero interval would spin.
            deferred_sync: deferred_sync.max(Duration::from_millis(10)),
            deferred,
            bytes,
            #[cfg(test)]
            short_writes: Default::default(),
        })
    }

    /// Writes one batch to the segment.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if self
            .short_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
            .is_ok()
        {
            self.file.write_all(&batch[..batch.len() / 2])?;
            return Err(io::Error::from_raw_os_error(28));
        }
        self.file.write_all(batch)
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
                        encode_frame(&record, &mut self.batch);
                        waiting.push(ack);
                    }
                    Some(Command::Rotate(ack)) => {
                        let synced = self.sync();
                        Self::answer(&mut waiting, &synced);
                        let sealed = self.number;
                        let next = synced.and_then(|()| {
                            Writer::create(
                                self.dir.clone(),
                                sealed + 1,
                                self.deferred_sync,
                                self.deferred.clone(),
                                self.bytes.clone(),
                            )
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

    /// Frames the queued deferred records into the batch; true if there were any.
    fn write_deferred(&mut self) -> bool {
        let records = std::mem::take(&mut *self.deferred.lock()).records;
        for record in &records {
            encode_frame(record, &mut self.batch);
        }
        !records.is_empty()
    }

    /// Fsyncs deferred records; nobody waits on them, so a failure is logged.
    fn sync_deferred(&mut self) {
        if let Err(err) = self.sync() {
            tracing::error!(segment = self.number, error = %err, "write-ahead log: writing scraped profiles failed; they are not stored");
        }
    }

    /// Writes and fsyncs the batch. On failure nothing of the batch stays in the segment.
    fn sync(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        // Counted before the write, so the budget sees what is in flight.
        self.bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let result = self.cut_if_needed().and_then(|()| {
            self.write_batch(&batch)?;
            self.file.sync_data()
        });
        match result {
            Ok(()) => self.committed_len += batch.len() as u64,
            Err(_) => {
                self.bytes.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                self.needs_cut = true;
                if let Err(err) = self.cut_if_needed() {
                    tracing::error!(
                        segment = self.number,
                        error = %err,
                        "write-ahead log: could not cut a failed write back; retried before the next write"
                    );
                }
            }
        }
        self.batch = batch;
        self.batch.clear();
        result
    }

    /// Cuts the segment back to its last fsynced record after a failed write.
    fn cut_if_needed(&mut self) -> io::Result<()> {
        if self.needs_cut {
            self.file.set_len(self.committed_len)?;
            self.file.sync_data()?;
            self.needs_cut = false;
        }
        Ok(())
    }

    fn answer(waiting: &mut Vec<oneshot::Sender<io::Result<()>>>, synced: &io::Result<()>) {
        for ack in waiting.drain(..) {
            let result = match synced {
                Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
                Ok(()) => Ok(()),
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
        assert_eq!(replay.payloads()[49], vec![49u8; 50]);
        assert_eq!(replay.payloads()[50], b"after");
        assert_eq!(replay.torn_bytes, 6);
        assert!(replay.damaged.is_empty());
        wal.delete_through(1).unwrap();
        let (_, replay) = Wal::open(dir.path(), deferred(Duration::from_secs(1), 1 << 20)).unwrap();
        assert_eq!(replay.payloads(), vec![b"after".as_slice()]);
    }

    /// Damage in the middle of a segment (a flipped byte in one record, garbage between two)
    /// costs exactly the damaged records: every intact record after it is replayed, and the
    /// damaged bytes are copied to the quarantine directory.
    #[tokio::test]
    async fn damage_in_the_middle_keeps_every_intact_record_after_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, _) = Wal::open(dir.path(), deferred(Duration::from_secs(1), 1 << 20)).unwrap();
            for i in 0..20u8 {
                wal.append(vec![i; 100]).await.unwrap();
            }
        }
        let segment = list_segments(dir.path()).unwrap()[0].1.clone();
        let mut data = std::fs::read(&segment).unwrap();
        let frame = HEADER_BYTES + 100;
        // Record 5's payload gets a flipped byte; 40 bytes of garbage go in after record 12.
        data[SEGMENT_MAGIC.len() + 5 * frame + HEADER_BYTES + 50] ^= 0xff;
        let garbage_at = SEGMENT_MAGIC.len() + 13 * frame;
        data.splice(garbage_at..garbage_at, [0xabu8; 40]);
        std::fs::write(&segment, &data).unwrap();

        let (_, replay) = Wal::open(dir.path(), deferred(Duration::from_secs(1), 1 << 20)).unwrap();
        let kept: Vec<u8> = replay.payloads().iter().map(|payload| payload[0]).collect();
        let expected: Vec<u8> = (0..20).filter(|&i| i != 5).collect();
        assert_eq!(kept, expected);
        assert_eq!(replay.torn_bytes, 0);
        let damaged: Vec<u64> = replay.damaged.iter().map(|(_, length)| *length).collect();
        assert_eq!(damaged, vec![frame as u64, 40]);
        let quarantined = std::fs::read_dir(dir.path().join(QUARANTINE_DIR)).unwrap().count();
        assert_eq!(quarantined, 2);
    }

    /// Writes that fail half-way (as under ENOSPC: part of the batch reaches the file, then
    /// the error) are answered with an error and never reach a later replay, leave no gap for
    /// the records after them, and the log goes on once writes work again.
    #[tokio::test]
    async fn a_failed_write_is_never_replayed_and_the_log_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), deferred(Duration::from_secs(1), 1 << 20)).unwrap();
        wal.append(b"first".to_vec()).await.unwrap();
        wal.short_writes.store(3, Ordering::SeqCst);
        for _ in 0..3 {
            assert!(matches!(wal.append(vec![7; 5000]).await, Err(WalError::Io { .. })));
        }
        wal.append(b"after the disk came back".to_vec()).await.unwrap();
        let written = std::fs::metadata(&list_segments(dir.path()).unwrap()[0].1)
            .unwrap()
            .len();
        assert_eq!(wal.bytes(), written);
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), deferred(Duration::from_secs(1), 1 << 20)).unwrap();
        assert_eq!(
            replay.payloads(),
            vec![b"first".as_slice(), b"after the disk came back"]
        );
        assert_eq!((replay.torn_bytes, replay.damaged.len()), (0, 0));
    }

    #[tokio::test]
    async fn the_disk_budget_refuses_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let writes = DeferredWrites {
            max_wal_bytes: 1000,
            ..deferred(Duration::from_secs(1), 1 << 20)
        };
        let (wal, _) = Wal::open(dir.path(), writes).unwrap();
        wal.append(vec![1; 400]).await.unwrap();
        wal.append(vec![2; 400]).await.unwrap();
        assert!(matches!(wal.append(vec![3; 400]).await, Err(WalError::Full { .. })));
        let sealed = wal.rotate().await.unwrap();
        wal.delete_through(sealed).unwrap();
        wal.append(vec![4; 400]).await.unwrap();
        assert_eq!(
            wal.bytes(),
            std::fs::metadata(segment_path(dir.path(), sealed + 1)).unwrap().len()
        );
    }

    /// Segments written before the header checksum are still replayed.
    #[test]
    fn legacy_segments_are_read() {
        let mut data = Vec::new();
        for record in [b"one".as_slice(), b"two"] {
            data.extend_from_slice(&(record.len() as u32).to_le_bytes());
            data.extend_from_slice(&crc32(record).to_le_bytes());
            data.extend_from_slice(record);
        }
        data.extend_from_slice(&[9, 0, 0]);
        let mut replay = Replay::default();
        scan_segment(&data, 7, &mut replay);
        assert_eq!(replay.payloads(), vec![b"one".as_slice(), b"two"]);
        assert_eq!(replay.torn_bytes, 3);
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
        let on_disk = Wal::read_only(dir.path()).unwrap();
        assert_eq!(
            on_disk.payloads(),
            vec![b"scraped 1".as_slice(), b"scraped 2", b"pushed"]
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
            Wal::read_only(dir.path()).unwrap().payloads(),
            vec![b"scraped 1".as_slice(), b"scraped 2", b"scraped 3"]
        );
        // The queue is empty again: the next record waits for nobody.
        wal.append_deferred(b"scraped 4".to_vec()).await.unwrap();
        assert_eq!(Wal::read_only(dir.path()).unwrap().records.len(), 3);
    }

    fn deferred(sync_interval: Duration, max_queued_bytes: usize) -> DeferredWrites {
        DeferredWrites {
            sync_interval,
            max_queued_bytes,
            max_wal_bytes: 0,
        }
    }
}
