//! The route table of the Qdrant-compatible API: which endpoint a method and path name, shared
//! by shardd's API and the router so that both accept exactly the same requests.
//!
//! A path that matches a template under another method is answered 405 with the methods it
//! takes (`Allow`); a path that matches no template is a 404.

use std::sync::OnceLock;

use http::Method;

use crate::api::percent_decode;

/// One endpoint of the API, named for what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /`: name and version.
    Version,
    /// `GET /collections`.
    ListCollections,
    /// `PUT /collections/{c}`.
    CreateCollection,
    /// `GET /collections/{c}`.
    CollectionInfo,
    /// `DELETE /collections/{c}`.
    DropCollection,
    /// `GET /collections/{c}/exists`.
    CollectionExists,
    /// `PUT /collections/{c}/index`.
    CreateIndex,
    /// `DELETE /collections/{c}/index/{field}`.
    DropIndex,
    /// `PUT /collections/{c}/points`.
    Upsert,
    /// `POST /collections/{c}/points`.
    GetPoints,
    /// `GET /collections/{c}/points/{id}`.
    GetPoint,
    /// `POST /collections/{c}/points/delete`.
    DeletePoints,
    /// `POST /collections/{c}/points/payload`.
    SetPayload,
    /// `PUT /collections/{c}/points/payload`.
    OverwritePayload,
    /// `POST /collections/{c}/points/query`.
    Query,
    /// `POST /collections/{c}/points/query/batch`.
    QueryBatch,
    /// `POST /collections/{c}/points/query/groups`.
    QueryGroups,
    /// `POST /collections/{c}/points/search` (legacy).
    Search,
    /// `POST /collections/{c}/points/search/batch` (legacy).
    SearchBatch,
    /// `POST /collections/{c}/points/scroll`.
    Scroll,
    /// `POST /collections/{c}/points/count`.
    Count,
    /// `POST /collections/{c}/sparse/stats`: a shard's document frequencies (Vecgate's own).
    SparseStats,
    /// `POST /v1/search`: the seed-style search (router only).
    SeedSearch,
    /// `GET /collections/{c}/replication/spec` (Vecgate's own, as are the five below).
    ReplicationSpec,
    /// `PUT /collections/{c}/replication/spec`.
    ReplicationAdopt,
    /// `POST /collections/{c}/replication/digest`.
    ReplicationDigest,
    /// `POST /collections/{c}/replication/versions`.
    ReplicationVersions,
    /// `POST /collections/{c}/replication/export`.
    ReplicationExport,
    /// `PUT /collections/{c}/replication/import`.
    ReplicationImport,
    /// `PUT /collections/{c}/replication/evict`.
    ReplicationEvict,
}

/// Every endpoint: its method and path template (`{c}` a collection, `{field}` a payload key,
/// `{id}` a point id).
const TABLE: &[(Method, &str, Endpoint)] = &[
    (Method::GET, "/", Endpoint::Version),
    (Method::GET, "/collections", Endpoint::ListCollections),
    (Method::PUT, "/collections/{c}", Endpoint::CreateCollection),
    (Method::GET, "/collections/{c}", Endpoint::CollectionInfo),
    (Method::DELETE, "/collections/{c}", Endpoint::DropCollection),
    (
        Method::GET,
        "/collections/{c}/exists",
        Endpoint::CollectionExists,
    ),
    (Method::PUT, "/collections/{c}/index", Endpoint::CreateIndex),
    (
        Method::DELETE,
        "/collections/{c}/index/{field}",
        Endpoint::DropIndex,
    ),
    (Method::PUT, "/collections/{c}/points", Endpoint::Upsert),
    (Method::POST, "/collections/{c}/points", Endpoint::GetPoints),
    (
        Method::GET,
        "/collections/{c}/points/{id}",
        Endpoint::GetPoint,
    ),
    (
        Method::POST,
        "/collections/{c}/points/delete",
        Endpoint::DeletePoints,
    ),
    (
        Method::POST,
        "/collections/{c}/points/payload",
        Endpoint::SetPayload,
    ),
    (
        Method::PUT,
        "/collections/{c}/points/payload",
        Endpoint::OverwritePayload,
    ),
    (
        Method::POST,
        "/collections/{c}/points/query",
        Endpoint::Query,
    ),
    (
        Method::POST,
        "/collections/{c}/points/query/batch",
        Endpoint::QueryBatch,
    ),
    (
        Method::POST,
        "/collections/{c}/points/query/groups",
        Endpoint::QueryGroups,
    ),
    (
        Method::POST,
        "/collections/{c}/points/search",
        Endpoint::Search,
    ),
    (
        Method::POST,
        "/collections/{c}/points/search/batch",
        Endpoint::SearchBatch,
    ),
    (
        Method::POST,
        "/collections/{c}/points/scroll",
        Endpoint::Scroll,
    ),
    (
        Method::POST,
        "/collections/{c}/points/count",
        Endpoint::Count,
    ),
    (
        Method::POST,
        "/collections/{c}/sparse/stats",
        Endpoint::SparseStats,
    ),
    (Method::POST, "/v1/search", Endpoint::SeedSearch),
    (
        Method::GET,
        "/collections/{c}/replication/spec",
        Endpoint::ReplicationSpec,
    ),
    (
        Method::PUT,
        "/collections/{c}/replication/spec",
        Endpoint::ReplicationAdopt,
    ),
    (
        Method::POST,
        "/collections/{c}/replication/digest",
        Endpoint::ReplicationDigest,
    ),
    (
        Method::POST,
        "/collections/{c}/replication/versions",
        Endpoint::ReplicationVersions,
    ),
    (
        Method::POST,
        "/collections/{c}/replication/export",
        Endpoint::ReplicationExport,
    ),
    (
        Method::PUT,
        "/collections/{c}/replication/import",
        Endpoint::ReplicationImport,
    ),
    (
        Method::PUT,
        "/collections/{c}/replication/evict",
        Endpoint::ReplicationEvict,
    ),
];

/// One segment of a path template: a literal, or a parameter.
#[derive(Clone, Copy)]
enum Seg {
    Lit(&'static str),
    Collection,
    Field,
    Id,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// [`TABLE`] with each template split into segments, once.
fn compiled() -> &'static [(Method, Vec<Seg>, Endpoint)] {
    static COMPILED: OnceLock<Vec<(Method, Vec<Seg>, Endpoint)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        TABLE
            .iter()
            .map(|(method, template, endpoint)| {
                let segs = segments(template)
                    .map(|s| match s {
                        "{c}" => Seg::Collection,
                        "{field}" => Seg::Field,
                        "{id}" => Seg::Id,
                        literal => Seg::Lit(literal),
                    })
                    .collect();
                (method.clone(), segs, *endpoint)
            })
            .collect()
    })
}

/// The parameters a path carried, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathParams {
    /// `{c}`: the collection.
    pub collection: String,
    /// `{field}`: a payload key.
    pub field: String,
    /// `{id}`: a point id, as written.
    pub id: String,
}

/// A request that names no endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unrouted {
    /// No template has this path.
    NotFound,
    /// Templates have this path, under these other methods (for `Allow`).
    MethodNotAllowed(Vec<Method>),
}

impl Unrouted {
    /// The `Allow` header value, for a 405.
    pub fn allow(&self) -> Option<String> {
        match self {
            Unrouted::NotFound => None,
            Unrouted::MethodNotAllowed(methods) => Some(
                methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        }
    }

    /// The error message, naming the method and path.
    pub fn message(&self, method: &Method, path: &str) -> String {
        match self {
            Unrouted::NotFound => format!("Not found: no route for {method} {path}"),
            Unrouted::MethodNotAllowed(_) => format!(
                "Method not allowed: {path} takes {}, not {method}",
                self.allow().unwrap_or_default()
            ),
        }
    }

    /// The HTTP status: 404 or 405.
    pub fn status(&self) -> u16 {
        match self {
            Unrouted::NotFound => 404,
            Unrouted::MethodNotAllowed(_) => 405,
        }
    }
}

fn bind(template: &[Seg], segs: &[&str]) -> Option<(usize, PathParams)> {
    if template.len() != segs.len() {
        return None;
    }
    let mut params = PathParams::default();
    let mut literals = 0;
    for (t, s) in template.iter().zip(segs) {
        match t {
            Seg::Lit(l) if l == s => literals += 1,
            Seg::Lit(_) => return None,
            Seg::Collection => params.collection = percent_decode(s),
            Seg::Field => params.field = percent_decode(s),
            Seg::Id => params.id = percent_decode(s),
        }
    }
    Some((literals, params))
}

impl Endpoint {
    /// The endpoint a method and (percent-encoded) path name, with the path's parameters.
    ///
    /// Of the templates the path matches, only the most specific (most literal segments)
    /// count: `GET .../points/delete` is a 405, not the point with id `delete`.
    pub fn find(method: &Method, path: &str) -> Result<(Endpoint, PathParams), Unrouted> {
        let segs: Vec<&str> = segments(path).collect();
        let matches: Vec<(usize, &Method, Endpoint, PathParams)> = compiled()
            .iter()
            .filter_map(|(m, template, e)| {
                bind(template, &segs).map(|(literals, params)| (literals, m, *e, params))
            })
            .collect();
        let Some(most) = matches.iter().map(|m| m.0).max() else {
            return Err(Unrouted::NotFound);
        };
        let mut allowed = Vec::new();
        for (literals, m, endpoint, params) in matches {
            if literals < most {
                continue;
            }
            if m == method {
                return Ok((endpoint, params));
            }
            if !allowed.contains(m) {
                allowed.push(m.clone());
            }
        }
        Err(Unrouted::MethodNotAllowed(allowed))
    }

    /// Whether the endpoint only reads (a router may send it to one replica).
    pub fn is_read(self) -> bool {
        !matches!(
            self,
            Endpoint::CreateCollection
                | Endpoint::DropCollection
                | Endpoint::CreateIndex
                | Endpoint::DropIndex
                | Endpoint::Upsert
                | Endpoint::DeletePoints
                | Endpoint::SetPayload
                | Endpoint::OverwritePayload
                | Endpoint::ReplicationAdopt
                | Endpoint::ReplicationImport
                | Endpoint::ReplicationEvict
        )
    }

    /// Whether the endpoint is a search (query, search, their batches, groups, `/v1/search`).
    pub fn is_search(self) -> bool {
        matches!(
            self,
            Endpoint::Query
                | Endpoint::QueryBatch
                | Endpoint::QueryGroups
                | Endpoint::Search
                | Endpoint::SearchBatch
                | Endpoint::SeedSearch
        )
    }

    /// The route template, as metrics label it (`/collections/{c}/points/search`).
    pub fn template(self) -> &'static str {
        TABLE
            .iter()
            .find(|(_, _, e)| *e == self)
            .map_or("", |(_, template, _)| template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_with_literals_first_and_decoded_params() {
        let (e, p) = Endpoint::find(&Method::POST, "/collections/my%20docs/points/delete").unwrap();
        assert_eq!(
            (e, p.collection.as_str()),
            (Endpoint::DeletePoints, "my docs")
        );
        let (e, p) = Endpoint::find(&Method::GET, "/collections/c/points/42").unwrap();
        assert_eq!((e, p.id.as_str()), (Endpoint::GetPoint, "42"));
        let (e, _) = Endpoint::find(&Method::GET, "/").unwrap();
        assert_eq!(e, Endpoint::Version);
        let (e, p) = Endpoint::find(&Method::DELETE, "/collections/c/index/a.b").unwrap();
        assert_eq!((e, p.field.as_str()), (Endpoint::DropIndex, "a.b"));
    }

    #[test]
    fn every_endpoint_has_a_template_that_finds_it() {
        for (method, template, endpoint) in TABLE {
            assert_eq!(endpoint.template(), *template);
            let path = template
                .replace("{c}", "docs")
                .replace("{field}", "f")
                .replace("{id}", "7");
            assert_eq!(Endpoint::find(method, &path).unwrap().0, *endpoint);
        }
    }

    #[test]
    fn a_known_path_under_another_method_is_a_405_with_allow() {
        let err = Endpoint::find(&Method::PATCH, "/collections/c").unwrap_err();
        assert_eq!(err.status(), 405);
        assert_eq!(err.allow().as_deref(), Some("PUT, GET, DELETE"));
        for path in [
            "/collections/c/points/search",
            "/collections/c/points/delete",
        ] {
            let err = Endpoint::find(&Method::GET, path).unwrap_err();
            assert_eq!(err.allow().as_deref(), Some("POST"), "{path}");
        }
        assert_eq!(
            Endpoint::find(&Method::GET, "/collections/c/nonsense").unwrap_err(),
            Unrouted::NotFound
        );
    }
}
