//! Ring benchmark: our xxh3 ring (`vecgate::ring`) against the `consistent_hash_ring` crate with
//! xxh3 as its hasher, on placement balance, movement when a shard is added, lookup time and
//! build time, in the same run. Run: `cargo bench -p vecgate --bench ring`; see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_IDS (1000000), BENCH_RUNS (7).

use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::time::Instant;

use consistent_hash_ring::RingBuilder;
use shardd::engine::point::PointId;
use vecgate::ring::{Ring, VIRTUAL_NODES};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A shard name that feeds the hasher its bytes and nothing else, so placement does not hang on
/// how `std` happens to hash a `str`.
#[derive(Clone, PartialEq, Eq)]
struct Name(String);

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

/// A point id fed to the hasher as the same bytes our ring hashes.
struct Key<'a>(&'a PointId);

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.0 {
            PointId::Num(n) => {
                let mut key = [0u8; 9];
                key[1..].copy_from_slice(&n.to_le_bytes());
                state.write(&key);
            }
            PointId::Uuid(u) => {
                let mut key = [1u8; 17];
                key[1..].copy_from_slice(u.as_bytes());
                state.write(&key);
            }
        }
    }
}

type Crate = consistent_hash_ring::Ring<Name, Xxh3DefaultBuilder>;

/// The two rings behind one lookup, so every measurement runs the same code on both.
trait Placement {
    fn build(names: &[String]) -> Self;
    fn owner(&self, id: &PointId) -> usize;
}

impl Placement for Ring {
    fn build(names: &[String]) -> Self {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Ring::new(&names)
    }

    fn owner(&self, id: &PointId) -> usize {
        Ring::owner(self, id).expect("shards")
    }
}

/// The crate's ring answers a name; the index is parsed back from `s{i}`.
impl Placement for Crate {
    fn build(names: &[String]) -> Self {
        RingBuilder::new(Xxh3DefaultBuilder)
            .vnodes(VIRTUAL_NODES as usize)
            .nodes_iter(names.iter().cloned().map(Name))
            .build()
    }

    fn owner(&self, id: &PointId) -> usize {
        self.get(Key(id)).0[1..].parse().expect("s{i}")
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

/// Ids as users send them: half sequential integers, half random UUIDs.
fn ids(n: usize) -> Vec<PointId> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..n as u64 / 2)
        .map(PointId::Num)
        .chain((0..n / 2).map(|_| {
            let mut bytes = [0u8; 16];
            rng.fill(&mut bytes);
            PointId::Uuid(uuid::Uuid::from_bytes(bytes))
        }))
        .collect()
}

/// The largest shard's share over the even share (1.00 is perfect).
fn max_over_even<R: Placement>(ring: &R, shards: usize, ids: &[PointId]) -> f64 {
    let mut counts = vec![0usize; shards];
    for id in ids {
        counts[ring.owner(id)] += 1;
    }
    *counts.iter().max().expect("shards") as f64 * shards as f64 / ids.len() as f64
}

/// Adding shard `n` to `n` shards: the share of ids that move, over the ideal `1/(n+1)`, and
/// whether any id moved between two old shards.
fn movement<R: Placement>(n: usize, ids: &[PointId]) -> (f64, bool) {
    let (before, after) = (R::build(&names(n)), R::build(&names(n + 1)));
    let mut moved = 0;
    let mut between_old = false;
    for id in ids {
        let (b, a) = (before.owner(id), after.owner(id));
        if a != b {
            moved += 1;
            between_old |= a != n;
        }
    }
    (
        moved as f64 * (n + 1) as f64 / ids.len() as f64,
        between_old,
    )
}

/// Median nanoseconds per lookup over `runs` passes.
fn lookup_ns<R: Placement>(ring: &R, ids: &[PointId], runs: usize) -> f64 {
    median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                for id in ids {
                    black_box(ring.owner(black_box(id)));
                }
                started.elapsed().as_nanos() as f64 / ids.len() as f64
            })
            .collect(),
    )
}

/// Median microseconds to build a ring of `shards` (a reload rebuilds it).
fn build_us<R: Placement>(shards: usize, runs: usize) -> f64 {
    let names = names(shards);
    median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                black_box(R::build(&names));
                started.elapsed().as_nanos() as f64 / 1e3
            })
            .collect(),
    )
}

fn main() {
    let ids = ids(env_or("BENCH_IDS", 1_000_000));
    let runs = env_or("BENCH_RUNS", 7);
    println!(
        "{} ids (half integers, half UUIDs), {VIRTUAL_NODES} virtual nodes per shard, {runs} runs",
        ids.len()
    );
    println!(
        "{:>6}  {:>21}  {:>21}  {:>25}  {:>21}  {:>21}",
        "shards",
        "max/even ours|crate",
        "moved/ideal ours|crate",
        "lookup ns ours|crate|ratio",
        "build us ours|crate",
        "cross-moves ours|crate"
    );
    for shards in [2, 3, 4, 6, 8, 12, 16, 32] {
        let (ours, theirs) = (Ring::build(&names(shards)), Crate::build(&names(shards)));
        let (bal_o, bal_c) = (
            max_over_even(&ours, shards, &ids),
            max_over_even(&theirs, shards, &ids),
        );
        let ((mv_o, x_o), (mv_c, x_c)) = (
            movement::<Ring>(shards, &ids),
            movement::<Crate>(shards, &ids),
        );
        let (ns_o, ns_c) = (lookup_ns(&ours, &ids, runs), lookup_ns(&theirs, &ids, runs));
        let (b_o, b_c) = (
            build_us::<Ring>(shards, runs),
            build_us::<Crate>(shards, runs),
        );
        println!(
            "{shards:>6}  {bal_o:>10.3} {bal_c:>10.3}  {mv_o:>10.3} {mv_c:>10.3}  {ns_o:>8.1} {ns_c:>8.1} {:>7.2}x  {b_o:>10.0} {b_c:>10.0}  {x_o:>10} {x_c:>10}",
            ns_c / ns_o
        );
    }
}
