//! shardd: the search engine behind Vecgate, one shard of every collection.
//!
//! Collections hold points (id, named dense and sparse vectors, JSON payload) with an HNSW index
//! per dense vector and an inverted index per sparse one. Every write goes to the WAL before it
//! is acknowledged; snapshots bound recovery time. The same library serves the `shardd` daemon
//! and the router's in-process built-in shards.
//!
//! # Layout
//!
//! - [`Shard`] (`shard`) is the door: the only way in for reads and writes on a data
//!   directory (locked by [`lock`]), with its WAL, recovery and snapshot rounds.
//! - [`api`]: the Qdrant-compatible API over a shard. `endpoint` is the route table, `route`
//!   parses a request once into a typed [`api::Route`], `request` and `response` are the JSON
//!   shapes (read and written without JSON trees), `filter` the filter language's wire form,
//!   `seed` the `/v1/search` shape.
//! - [`query`]: the one query algorithm (prefetch, fusion, rescoring, MMR, groups) over a
//!   [`query::Backend`]; `local` is a shard's own backend; the router brings its scatter.
//! - `engine`: collections and their points (`collection`), search planning (`search`), the
//!   HNSW graph (`hnsw`) and its kernels (`distance`), sparse vectors (`sparse`), payloads and
//!   their indexes (`payload`, `payload_index`), filters (`filter`), text tokens (`text`),
//!   parameters (`params`) and the point model (`point`).
//! - `storage`: the write-ahead log (`wal`), the logged operations (`ops`) and snapshots.
//! - [`version`]: the hybrid logical clock that versions writes, so replicas converge.
//! - [`server`] (the daemon's HTTP server), [`metrics`], [`telemetry`] (logs and traces),
//!   [`error`].

pub mod api;
pub mod engine;
pub mod error;
pub mod lock;
pub mod metrics;
pub mod query;
pub mod server;
pub mod shard;
mod storage;
pub mod telemetry;
pub mod version;

pub use error::{Error, Result};
pub use shard::{Shard, ShardOptions};
pub use storage::wal::FsyncPolicy;
