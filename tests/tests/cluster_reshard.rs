//! End-to-end tests of resharding under streaming searches and writes: a shard added to a live
//! cluster, a shard removed, and a router killed in the middle of a move.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::fixture::*;
use e2e::*;
use serde_json::{json, Value};

/// Points `setup` wrote: they carry `n`, which the writer's points do not.
const FIXED: usize = 900;

fn fixed_filter() -> Value {
    json!({"must": [{"key": "n", "range": {"gte": 0}}]})
}

/// The ids a scroll through the router returns for the fixed points, every page.
fn scrolled_ids(url: &str) -> Vec<Value> {
    let points = scroll_all(
        url,
        json!({"limit": 128, "filter": fixed_filter(), "with_payload": false}),
    );
    ids(&Value::Array(points))
}

/// Checks, over and over until stopped, that count, scroll and get-by-id of the fixed points
/// are exact; returns how many rounds passed and the first wrong answer.
struct Checker {
    handle: JoinHandle<(usize, Option<String>)>,
    stop: Arc<AtomicBool>,
}

impl Checker {
    fn start(url: String) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut rounds = 0;
            while !flag.load(Ordering::SeqCst) && rounds < 2_000 {
                rounds += 1;
                let count = ok(
                    "POST",
                    &format!("{url}/collections/docs/points/count"),
                    Some(&json!({"filter": fixed_filter(), "exact": true})),
                )["count"]
                    .clone();
                if count != json!(FIXED) {
                    return (rounds, Some(format!("count {count}")));
                }
                let scrolled = scrolled_ids(&url);
                let distinct: BTreeSet<String> = scrolled.iter().map(Value::to_string).collect();
                if scrolled.len() != FIXED || distinct.len() != FIXED {
                    return (
                        rounds,
                        Some(format!(
                            "scroll {} ids, {} distinct",
                            scrolled.len(),
                            distinct.len()
                        )),
                    );
                }
                let id = (rounds * 37) % FIXED;
                let id = if id.is_multiple_of(5) {
                    format!("00000000-0000-0000-0000-{id:012}")
                } else {
                    id.to_string()
                };
                let (status, body) =
                    call("GET", &format!("{url}/collections/docs/points/{id}"), None);
                if status != 200 {
                    return (rounds, Some(format!("get {id}: {status} {body}")));
                }
            }
            (rounds, None)
        });
        Checker { handle, stop }
    }

    fn finish(self) -> (usize, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// Waits (up to `within`) until the router reports no move and one finished.
fn wait_moved(admin: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let done = metric(admin, "vecgate_moves_total", &["result=\"done\""]);
        let cluster = admin_json(&format!("{admin}/admin/cluster"));
        if done >= 1.0 && cluster["move"].is_null() {
            return;
        }
        assert!(
            started.elapsed() < within,
            "move not done after {within:?}: {cluster}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Points held by the first replica of each shard, read from it directly.
fn held_per_shard(cluster: &Cluster) -> Vec<usize> {
    cluster
        .replicas
        .iter()
        .map(|r| replica_points(&r[0].url()).len())
        .collect()
}

/// `total` points, each on exactly one shard (the per-shard counts add up), and the count
/// through the router at `url` says so too. Returns the per-shard counts.
fn assert_placed_once(cluster: &Cluster, total: usize, url: &str) -> Vec<usize> {
    let held = held_per_shard(cluster);
    assert_eq!(
        held.iter().sum::<usize>(),
        total,
        "every point on one shard only, none lost: {held:?}"
    );
    let count = ok(
        "POST",
        &format!("{url}/collections/docs/points/count"),
        Some(&json!({})),
    )["count"]
        .clone();
    assert_eq!(count, json!(total));
    held
}

/// After a move: each point on exactly one shard (the per-shard counts add up to the total),
/// the replicas of each shard equal, and count, scroll and get-by-id exact.
fn assert_settled(cluster: &Cluster, expected: &Expected) {
    let live_writes = expected.values().filter(|s| s.is_some()).count();
    assert_placed_once(cluster, FIXED + live_writes, &cluster.url());
    assert_eq!(scrolled_ids(&cluster.url()).len(), FIXED);
    assert_writes_kept(&cluster.url(), expected);
    assert_replicas_identical(cluster);
}

/// Starts `shards` x 2 replicas with the fixed points, changes the shard set with `change`
/// and reloads while searches, writes and the [`Checker`] stream, and waits for the move to
/// end; asserts that nothing failed and every answer was exact throughout. Returns what the
/// writes left.
fn move_under_traffic(
    shards: usize,
    seed: u64,
    change: impl FnOnce(&mut Cluster),
) -> (Cluster, Expected) {
    let mut cluster = Cluster::start(shards, &["eu", "eu"], "");
    setup(&cluster.url(), &random_vectors(FIXED, DIM, seed));
    let stream = Stream::start(cluster.url(), 2);
    let writer = Writer::start(cluster.url());
    let checker = Checker::start(cluster.url());
    stream.wait_for_ok(100);
    change(&mut cluster);
    reload(&cluster.admin());
    wait_moved(&cluster.admin(), Duration::from_secs(120));
    let (rounds, wrong) = checker.finish();
    let expected = writer.finish_clean();
    assert!(finish_searches(stream) > 100);
    assert!(rounds > 0 && wrong.is_none(), "during the move: {wrong:?}");
    (cluster, expected)
}

#[test]
fn a_shard_added_to_a_live_cluster_takes_its_share_without_a_failed_search() {
    let (cluster, expected) = move_under_traffic(2, 21, |c| c.add_shard(""));
    assert_settled(&cluster, &expected);
    let held = held_per_shard(&cluster);
    let total: usize = held.iter().sum();
    assert!(
        held[2] * 5 > total,
        "the new shard holds a fair share: {held:?}"
    );
}

#[test]
fn a_removed_shard_is_drained_before_it_leaves() {
    let (cluster, expected) = move_under_traffic(3, 22, |c| c.drop_shard(1, ""));
    let shards = admin_json(&format!("{}/admin/cluster", cluster.admin()))["shards"].clone();
    assert_eq!(shards.as_array().unwrap().len(), 2, "{shards}");
    for r in &cluster.replicas[1] {
        assert!(
            replica_points(&r.url()).is_empty(),
            "the removed shard is drained"
        );
    }
    assert_settled(&cluster, &expected);
}

#[test]
fn a_router_killed_in_the_middle_of_a_move_finishes_it_after_a_restart() {
    let mut cluster = Cluster::start(2, &["eu", "eu"], "");
    let bulk = random_vectors(6_000, DIM, 23);
    setup(&cluster.url(), &bulk);
    cluster.add_shard("");
    reload(&cluster.admin());
    let started = Instant::now();
    while metric(&cluster.admin(), "vecgate_move_points_total", &[]) < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no point moved"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.router.kill9();
    cluster.router = vecgate(&cluster.config);
    wait_moved(&cluster.admin(), Duration::from_secs(120));
    let held = assert_placed_once(&cluster, bulk.len(), &cluster.url());
    assert!(held[2] > 0);
    assert_replicas_identical(&cluster);
}

#[test]
fn with_etcd_two_routers_run_one_move_and_the_survivor_of_a_kill_finishes_it() {
    let etcd = EtcdServer::start();
    let mut cluster = Cluster::start_with(
        2,
        &["eu", "eu"],
        "",
        &format!(
            "[cluster]\netcd_endpoints = [\"{}\"]\nlease_ttl_s = 2\n",
            etcd.url
        ),
    );
    let mut second = cluster.another_router("");
    let second_admin = format!("http://{}", second.addrs[1]);
    let bulk = random_vectors(6_000, DIM, 24);
    setup(&cluster.url(), &bulk);
    cluster.add_shard("");
    for admin in [cluster.admin(), second_admin.clone()] {
        reload(&admin);
    }
    // Both routers see the move; the one holding the lease runs it.
    let admins = [cluster.admin(), second_admin.clone()];
    let started = Instant::now();
    let mover = loop {
        let running: Vec<f64> = admins
            .iter()
            .map(|a| metric(a, "vecgate_move_points_total", &[]))
            .collect();
        if let Some(i) = running.iter().position(|&m| m > 0.0) {
            assert_eq!(
                running.iter().filter(|&&m| m > 0.0).count(),
                1,
                "two routers moving at once: {running:?}"
            );
            break i;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no move started"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let survivor_admin = admins[1 - mover].clone();
    let survivor_url = if mover == 0 {
        cluster.router.kill9();
        second.url()
    } else {
        second.kill9();
        cluster.url()
    };
    wait_moved(&survivor_admin, Duration::from_secs(120));
    let held = assert_placed_once(&cluster, bulk.len(), &survivor_url);
    assert!(held[2] > 0, "{held:?}");
    assert_replicas_identical(&cluster);
}

#[test]
fn a_move_takes_points_a_cut_short_move_left_on_one_replica_only() {
    let mut cluster = Cluster::start(2, &["eu", "eu"], "");
    setup(&cluster.url(), &random_vectors(600, DIM, 24));
    // Points only the second replica of s0 holds, as after a move whose router died between
    // evicting on the first replica and on the second.
    let extra: Vec<Value> = random_vectors(300, DIM, 25)
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"id": 50_000 + i, "vector": v, "payload": {"extra": i}}))
        .collect();
    ok(
        "PUT",
        &format!(
            "{}/collections/docs/points?wait=true",
            cluster.replicas[0][1].url()
        ),
        Some(&json!({ "points": &extra })),
    );
    cluster.add_shard("");
    reload(&cluster.admin());
    wait_moved(&cluster.admin(), Duration::from_secs(120));
    let ids = |url: &str| -> BTreeSet<u64> {
        replica_points(url)
            .iter()
            .filter_map(|p| p["id"].as_u64())
            .filter(|&id| id >= 50_000)
            .collect()
    };
    let new_shard = ids(&cluster.replicas[2][0].url());
    let left = ids(&cluster.replicas[0][1].url());
    assert!(
        new_shard.len() * 5 > extra.len(),
        "the extra points the new shard owns moved to it: {} of 300",
        new_shard.len()
    );
    assert!(
        new_shard.is_disjoint(&left),
        "and left the replica that held them"
    );
    assert_eq!(new_shard, ids(&cluster.replicas[2][1].url()));
}
