//! The engine: collections of points with their vector and payload indexes, and searches over
//! them. Reached through [`crate::Shard`]; the types requests and answers are made of are public.

pub(crate) mod collection;
pub mod distance;
pub mod filter;
pub(crate) mod hnsw;
pub mod params;
pub mod payload;
pub mod payload_index;
pub mod point;
pub mod search;
pub mod sparse;
pub(crate) mod text;
