//! Cumulative profiles turned into deltas (in progress).
