//! shardd: the search engine behind Vecgate, one shard of every collection.
//!
//! Collections hold points (id, named dense and sparse vectors, JSON payload) with an HNSW index
//! per dense vector and an inverted index per sparse one. Every write goes to the WAL before it
//! is acknowledged; snapshots bound recovery time. The same library serves the `shardd` daemon
//! and the router's in-process built-in shards.

pub mod api;
pub mod collection;
pub mod distance;
pub mod error;
pub mod filter;
pub mod fusion;
pub mod groups;
pub mod hnsw;
pub mod lock;
pub mod logs;
pub mod metrics;
pub mod mmr;
pub mod ops;
pub mod output;
pub mod params;
pub mod payload;
pub mod payload_index;
pub mod point;
pub mod search;
pub mod server;
pub mod shard;
pub mod snapshot;
pub mod sparse;
pub mod wal;
pub mod wire;

pub use error::{Error, Result};
