//! vecgate: the query router in front of shardd shards.
//!
//! Building blocks so far: the config model ([`config`]), point placement ([`ring`]), replica
//! live state ([`replica`]) and choice ([`balance`]), and the gather step of a search ([`merge`]).

pub mod backend;
pub mod balance;
pub mod config;
pub mod gateway;
pub mod hints;
pub mod listener;
pub mod maintenance;
pub mod merge;
pub mod metrics;
pub mod reload;
pub mod replica;
pub mod ring;
pub mod seed;
pub mod server;
pub mod topology;
