//! Durable storage of a shard: the write-ahead log, the operations it records, and snapshots.

pub(crate) mod ops;
pub(crate) mod snapshot;
pub mod wal;
