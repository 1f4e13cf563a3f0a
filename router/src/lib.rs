//! vecgate: the query router in front of shardd shards.
//!
//! # Layout
//!
//! - `main.rs` wires the pieces; [`listener`] binds the sockets, serves pingora HTTP sessions
//!   and drains on shutdown; [`server`] holds the two HTTP apps (client API, admin).
//! - [`gateway`]: the request path. A request is parsed once into shardd's `Route`, given its
//!   deadline, and answered: `reads` and `writes` hold the two kinds of work, [`scatter`] is
//!   the query algorithm's backend over every shard, [`merge`] gathers ranked lists.
//! - [`upstream`]: calls to one shard (pooled HTTP with deadlines, or in process);
//!   [`error`]: the typed errors and their HTTP status.
//! - [`topology`]: the running config (shards, ring) swapped by reload, and live state kept
//!   across reloads; [`config`]: the TOML model and its validation; [`ring`]: placement.
//! - Replicas: [`replica`] (live state, health, ejection, joining), [`balance`] (read
//!   policies), [`hints`] (missed writes, durably queued), [`repair`] (filling a joining
//!   replica from a peer, and anti-entropy between replicas).
//! - [`cache`]: the result cache (moka in process, Redis through fred), keyed at the route.
//! - [`embed`]: text to vectors (embedders, micro-batching, the embedding cache) and the
//!   replacement of a request's text by vectors before it is parsed.
//! - [`ingest`]: `vecgate ingest`, documents chunked, embedded and upserted through a router.
//! - [`reload`] (the reload and its triggers), [`maintenance`] (probes, hint replay, joins,
//!   repair rounds, checkpoints), [`reshard`] (moving points after the shard set changed),
//!   [`coordination`] (several routers through etcd), [`metrics`].

// The request path's future (listener, tracing scope, gateway, cache, scatter) nests deeper
// than the default limit of 128 when the workspace's tests build it.
#![recursion_limit = "256"]

pub mod balance;
pub mod cache;
pub mod config;
pub mod coordination;
pub mod embed;
pub mod error;
pub mod gateway;
pub mod hints;
pub mod ingest;
pub mod listener;
pub mod maintenance;
pub mod merge;
pub mod metrics;
pub mod reload;
pub mod repair;
pub mod replica;
pub mod reshard;
pub mod ring;
pub mod scatter;
pub mod server;
pub mod topology;
pub mod upstream;
