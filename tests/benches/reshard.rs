//! Resharding benchmark: a live 2-shard cluster gets a third shard by reload; measured are the
//! time until the move is done and the search latency while it runs against before it, with
//! the same client threads searching throughout. Real processes on 127.0.0.1, release builds.
//! Run: `bench/reshard.sh`; see BENCHMARKS.md.
//!
//! Knobs (environment): BENCH_N (200000 points), BENCH_DIM (32), BENCH_SECONDS (10: the
//! "before" window), BENCH_THREADS (2 searching clients).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::bench::{env_or, load, Knobs};
use e2e::fixture::admin_json;
use e2e::{call, client, metric, Cluster};
use rand::SeedableRng;
use serde_json::json;

/// (p50, p99) in ms.
fn percentiles(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() as f64 * q) as usize).min(xs.len() - 1)];
    (at(0.5), at(0.99))
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let k = Knobs {
        n: env_or("BENCH_N", 200_000),
        dim: env_or("BENCH_DIM", 32),
        seconds: env_or("BENCH_SECONDS", 10),
        rounds: 1,
        connections: env_or("BENCH_THREADS", 2),
        limit: 10,
    };
    let mut cluster = Cluster::start(2, &["eu"], "");
    let loading = Instant::now();
    load(&cluster.url(), &k);
    eprintln!(
        "loaded {} points in {:.0} s",
        k.n,
        loading.elapsed().as_secs_f64()
    );
    let during = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<(Vec<f64>, Vec<f64>)>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..k.connections)
        .map(|t| {
            let (url, during, stop, samples, failed) = (
                cluster.url(),
                during.clone(),
                stop.clone(),
                samples.clone(),
                failed.clone(),
            );
            let dim = k.dim;
            std::thread::spawn(move || {
                let agent = client();
                let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                let path = format!("{url}/collections/bench/points/query");
                while !stop.load(Ordering::SeqCst) {
                    let q = json!({"query": e2e::bench::vector(&mut rng, dim), "limit": 10});
                    let started = Instant::now();
                    let ok = matches!(agent.post(&path).send_json(&q), Ok(r) if r.status().as_u16() == 200);
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut s = samples.lock().unwrap();
                    if during.load(Ordering::SeqCst) {
                        s.1.push(ms);
                    } else {
                        s.0.push(ms);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(k.seconds as u64));
    cluster.add_shard("");
    during.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let (status, body) = call("POST", &format!("{}/admin/reload", cluster.admin()), None);
    assert_eq!(status, 200, "{body}");
    loop {
        let done = metric(
            &cluster.admin(),
            "vecgate_moves_total",
            &["result=\"done\""],
        );
        if done >= 1.0
            && admin_json(&format!("{}/admin/cluster", cluster.admin()))["move"].is_null()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let moved_in = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    threads.into_iter().for_each(|t| t.join().unwrap());
    let moved = metric(&cluster.admin(), "vecgate_move_points_total", &[]);
    let (before, during) = std::mem::take(&mut *samples.lock().unwrap());
    let ((b50, b99), (d50, d99)) = (percentiles(before.clone()), percentiles(during.clone()));
    let grace = 2.0 + 1.0;
    println!(
        "{} points ({}-d, Cosine), 2 shards -> 3 by reload, {} searching client threads (limit 10), release builds",
        k.n, k.dim, k.connections
    );
    println!();
    println!("| | value |");
    println!("|---|---:|");
    println!("| points moved to the new shard | {moved:.0} |");
    println!(
        "| time to move (reload to done, incl. the {grace:.0} s settle wait) | {moved_in:.1} s |"
    );
    println!(
        "| points moved per second (excl. the settle wait) | {:.0} |",
        moved / (moved_in - grace).max(0.001)
    );
    println!(
        "| searches before / during | {} / {} |",
        before.len(),
        during.len()
    );
    println!("| failed searches | {} |", failed.load(Ordering::SeqCst));
    println!(
        "| search p50 before / during (ms) | {b50:.2} / {d50:.2} ({:.2}x) |",
        d50 / b50
    );
    println!(
        "| search p99 before / during (ms) | {b99:.2} / {d99:.2} ({:.2}x) |",
        d99 / b99
    );
}
