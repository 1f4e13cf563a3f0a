//! Qdrant's response shapes, written once into bytes: the envelope, scored points and records,
//! groups, batches, scroll pages, and the seed-style `/v1/search` answer.
//!
//! The same writers serve a shard (points from its engine) and the router (points whose payload
//! and vectors are a shard's raw JSON), through [`PointOut`].

use std::io::Write;
use std::time::Instant;

use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use crate::api::endpoint::Endpoint;
use crate::api::request::VectorOut;
use crate::engine::point::{PointId, ScoredPoint, DEFAULT_VECTOR};
use crate::query::groups::Group;

/// Which of Qdrant's point shapes to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `{"id", "version", "score", "payload", "vector"}` (searches and queries).
    Scored,
    /// `{"id", "payload", "vector"}` (get and scroll).
    Record,
    /// `{"id", "score", "payload"}` (`/v1/search`).
    Seed,
}

/// A point that can be written in Qdrant's shapes.
pub trait PointOut {
    /// Writes the point's fields for `shape`; `single_unnamed` asks for the unnamed vector of a
    /// single-vector collection as a bare list.
    fn write_fields<M: SerializeMap>(
        &self,
        m: &mut M,
        shape: Shape,
        single_unnamed: bool,
    ) -> Result<(), M::Error>;
}

impl PointOut for ScoredPoint {
    fn write_fields<M: SerializeMap>(
        &self,
        m: &mut M,
        shape: Shape,
        single_unnamed: bool,
    ) -> Result<(), M::Error> {
        m.serialize_entry("id", &self.id)?;
        if shape == Shape::Scored {
            m.serialize_entry("version", &self.version)?;
        }
        if shape != Shape::Record {
            m.serialize_entry("score", &f64::from(self.score))?;
        }
        m.serialize_entry("payload", &self.payload)?;
        if shape != Shape::Seed {
            match &self.vectors {
                None => m.serialize_entry("vector", &())?,
                Some(v) if single_unnamed && v.len() == 1 && v.contains_key(DEFAULT_VECTOR) => {
                    m.serialize_entry("vector", &VectorOut(&v[DEFAULT_VECTOR]))?
                }
                Some(v) => m.serialize_entry("vector", &crate::api::request::VectorsOut(v))?,
            }
        }
        Ok(())
    }
}

/// One point in a shape.
struct Point<'a, H>(&'a H, Shape, bool);

impl<H: PointOut> Serialize for Point<'_, H> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.0.write_fields(&mut m, self.1, self.2)?;
        m.end()
    }
}

/// Points in a shape, as a list.
struct Points<'a, H>(&'a [H], Shape, bool);

impl<H: PointOut> Serialize for Points<'_, H> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0 {
            seq.serialize_element(&Point(p, self.1, self.2))?;
        }
        seq.end()
    }
}

/// The result of a read, before it is written.
pub enum Answer<H> {
    /// `/points/query`: `{"points": [...]}`.
    Query(Vec<H>),
    /// `/points/search`: `[...]`.
    Search(Vec<H>),
    /// `/points/query/batch`: `[{"points": [...]}, ...]`.
    QueryBatch(Vec<Vec<H>>),
    /// `/points/search/batch`: `[[...], ...]`.
    SearchBatch(Vec<Vec<H>>),
    /// `/points/query/groups`: `{"groups": [{"id", "hits"}]}`.
    Groups(Vec<Group<H>>),
    /// `POST /points`: records.
    Records(Vec<H>),
    /// `GET /points/{id}`: one record.
    Record(H),
    /// `/points/scroll`: `{"points": [...], "next_page_offset"}`.
    Scroll(Vec<H>, Option<PointId>),
    /// `/v1/search`: `{"results": [{"id", "score", "payload"}], "partial"}` (no envelope).
    Seed(Vec<H>, bool),
}

impl<H> Answer<H> {
    /// The answer of a query endpoint for `points`.
    pub fn for_query(endpoint: Endpoint, points: Vec<H>, partial: bool) -> Answer<H> {
        match endpoint {
            Endpoint::Search => Answer::Search(points),
            Endpoint::SeedSearch => Answer::Seed(points, partial),
            _ => Answer::Query(points),
        }
    }

    /// The answer of a batch endpoint for `lists`.
    pub fn for_batch(endpoint: Endpoint, lists: Vec<Vec<H>>) -> Answer<H> {
        match endpoint {
            Endpoint::SearchBatch => Answer::SearchBatch(lists),
            _ => Answer::QueryBatch(lists),
        }
    }
}

#[derive(Serialize)]
struct PointsField<T> {
    points: T,
}

struct Batch<'a, H>(&'a [Vec<H>], bool, bool);

impl<H: PointOut> Serialize for Batch<'_, H> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for list in self.0 {
            let points = Points(list, Shape::Scored, self.2);
            if self.1 {
                seq.serialize_element(&PointsField { points })?;
            } else {
                seq.serialize_element(&points)?;
            }
        }
        seq.end()
    }
}

struct Groups<'a, H>(&'a [Group<H>], bool);

impl<H: PointOut> Serialize for Groups<'_, H> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct G<'a, T> {
            id: &'a crate::query::groups::GroupKey,
            hits: T,
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for g in self.0 {
            seq.serialize_element(&G {
                id: &g.id,
                hits: Points(&g.hits, Shape::Scored, self.1),
            })?;
        }
        seq.end()
    }
}

impl<H: PointOut> Answer<H> {
    /// The answer's bytes: in Qdrant's envelope, except `/v1/search`'s bare shape.
    pub fn to_bytes(&self, single_unnamed: bool, started: Instant) -> Vec<u8> {
        let single = single_unnamed;
        match self {
            Answer::Query(points) => envelope(
                &PointsField {
                    points: Points(points, Shape::Scored, single),
                },
                started,
            ),
            Answer::Search(points) => envelope(&Points(points, Shape::Scored, single), started),
            Answer::QueryBatch(lists) => envelope(&Batch(lists, true, single), started),
            Answer::SearchBatch(lists) => envelope(&Batch(lists, false, single), started),
            Answer::Groups(groups) => {
                #[derive(Serialize)]
                struct GroupsField<T> {
                    groups: T,
                }
                envelope(
                    &GroupsField {
                        groups: Groups(groups, single),
                    },
                    started,
                )
            }
            Answer::Records(points) => envelope(&Points(points, Shape::Record, single), started),
            Answer::Record(point) => envelope(&Point(point, Shape::Record, single), started),
            Answer::Scroll(points, next) => {
                #[derive(Serialize)]
                struct Page<T> {
                    points: T,
                    next_page_offset: Option<PointId>,
                }
                envelope(
                    &Page {
                        points: Points(points, Shape::Record, single),
                        next_page_offset: *next,
                    },
                    started,
                )
            }
            Answer::Seed(points, partial) => {
                #[derive(Serialize)]
                struct Results<T> {
                    results: T,
                    partial: bool,
                }
                serde_json::to_vec(&Results {
                    results: Points(points, Shape::Seed, single),
                    partial: *partial,
                })
                .unwrap_or_default()
            }
        }
    }
}

/// Qdrant's success envelope around `result`: `{"result", "status": "ok", "time"}`.
pub fn envelope<T: Serialize + ?Sized>(result: &T, started: Instant) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"result\":");
    if serde_json::to_writer(&mut out, result).is_err() {
        return error_body("internal error: the answer could not be encoded", started);
    }
    out.extend_from_slice(b",\"status\":\"ok\",\"time\":");
    let _ = write!(out, "{}}}", started.elapsed().as_secs_f64());
    out
}

/// Qdrant's error envelope: `{"status": {"error"}, "time"}`.
pub fn error_body(message: &str, started: Instant) -> Vec<u8> {
    #[derive(Serialize)]
    struct Status<'a> {
        error: &'a str,
    }
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        status: Status<'a>,
        time: f64,
    }
    serde_json::to_vec(&ErrorBody {
        status: Status { error: message },
        time: started.elapsed().as_secs_f64(),
    })
    .unwrap_or_else(|_| b"{\"status\":{\"error\":\"internal error\"}}".to_vec())
}
