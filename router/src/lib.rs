//! vecgate: the query router in front of shardd shards.
//!
//! This library holds the router's building blocks: the config model ([`config`]), point
//! placement ([`ring`]) and the gather step of a search ([`merge`]).

pub mod config;
pub mod merge;
pub mod ring;
