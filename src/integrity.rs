//! Counts of damaged data that was set aside instead of failing the process or a tenant: WAL
//! records that could not be replayed, WAL bytes that were not a record, and block objects,
//! series and symbol tables a query or the compactor could not read. Process-wide, so the
//! stages that find damage (head, block reader, compactor) count it without plumbing, and
//! `/metrics` exports them (`pyrite_wal_quarantined_*`, `pyrite_block_corrupt_*`).

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Which part of a block could not be read.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CorruptLabels {
    /// `index`, `symbols`, `rows` or `series`.
    pub part: String,
}

/// WAL records moved to the quarantine directory because they could not be replayed.
pub static WAL_QUARANTINED_RECORDS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Bytes of a WAL segment between intact records that were no record (damage in the middle).
pub static WAL_DAMAGED_BYTES: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Block parts skipped because they could not be read, by part.
pub static BLOCK_CORRUPT: LazyLock<Family<CorruptLabels, Counter>> = LazyLock::new(Family::default);
/// Compaction sources left out of a merge because they could not be read.
pub static COMPACTOR_CORRUPT_SOURCES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Counts one unreadable part of a block (`index`, `symbols`, `rows`, `series`).
pub fn block_corrupt(part: &str) {
    BLOCK_CORRUPT
        .get_or_create(&CorruptLabels { part: part.to_string() })
        .inc();
}

/// Registers every counter of this module.
pub fn register(registry: &mut Registry) {
    registry.register(
        "wal_quarantined_records",
        "Write-ahead log records that could not be replayed, moved to wal/quarantine",
        WAL_QUARANTINED_RECORDS.clone(),
    );
    registry.register(
        "wal_damaged_bytes",
        "Write-ahead log bytes between intact records that held no record, moved to wal/quarantine",
        WAL_DAMAGED_BYTES.clone(),
    );
    registry.register(
        "block_corrupt",
        "Block parts (index, symbols, rows, series) that could not be read and were skipped",
        BLOCK_CORRUPT.clone(),
    );
    registry.register(
        "compactor_corrupt_sources",
        "Blocks the compactor could not read and left out of a merge",
        COMPACTOR_CORRUPT_SOURCES.clone(),
    );
}
