//! Replica choice for reads: least in flight (power of two choices), weighted round robin, or
//! geo (the caller's region first).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::ReadPolicy;
use crate::replica::ReplicaState;

/// A replica as the running topology sees it: live state plus its configured region and weight.
#[derive(Clone)]
pub struct Replica {
    /// Live state, shared across reloads.
    pub state: Arc<ReplicaState>,
    /// Region, for the geo policy (`""` when not configured).
    pub region: String,
    /// Share of round-robin traffic.
    pub weight: u32,
}

/// Picks one replica index among those available and not in `tried`, or `None` when none is.
///
/// `turn` is the shard's round-robin counter.
pub fn pick(
    policy: ReadPolicy,
    replicas: &[Replica],
    region: &str,
    turn: &AtomicUsize,
    tried: &[usize],
) -> Option<usize> {
    let candidates: Vec<usize> = (0..replicas.len())
        .filter(|i| !tried.contains(i) && replicas[*i].state.available())
        .collect();
    match policy {
        ReadPolicy::LeastConn => least_conn(replicas, &candidates),
        ReadPolicy::RoundRobin => round_robin(replicas, &candidates, turn),
        ReadPolicy::Geo => {
            let local: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| replicas[i].region == region)
                .collect();
            least_conn(
                replicas,
                if local.is_empty() {
                    &candidates
                } else {
                    &local
                },
            )
        }
    }
}

/// Power of two choices: of two random candidates, the one with fewer requests in flight.
fn least_conn(replicas: &[Replica], candidates: &[usize]) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let (a, b) = (candidates[a], candidates[b]);
            Some(
                if replicas[b].state.in_flight() < replicas[a].state.in_flight() {
                    b
                } else {
                    a
                },
            )
        }
    }
}

/// Weighted round robin over the candidates.
fn round_robin(replicas: &[Replica], candidates: &[usize], turn: &AtomicUsize) -> Option<usize> {
    let total: usize = candidates
        .iter()
        .map(|&i| replicas[i].weight as usize)
        .sum();
    if total == 0 {
        return None;
    }
    let mut n = turn.fetch_add(1, Ordering::Relaxed) % total;
    candidates.iter().copied().find(|&i| {
        let w = replicas[i].weight as usize;
        if n < w {
            true
        } else {
            n -= w;
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::UNHEALTHY_AFTER_PROBES;

    fn replicas(spec: &[(&str, u32)]) -> Vec<Replica> {
        spec.iter()
            .enumerate()
            .map(|(i, (region, weight))| Replica {
                state: ReplicaState::new(&format!("http://r{i}:1")),
                region: region.to_string(),
                weight: *weight,
            })
            .collect()
    }

    fn share(policy: ReadPolicy, rs: &[Replica], region: &str) -> Vec<usize> {
        let turn = AtomicUsize::new(0);
        let mut counts = vec![0; rs.len()];
        for _ in 0..3000 {
            counts[pick(policy, rs, region, &turn, &[]).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_follows_weights() {
        let rs = replicas(&[("a", 1), ("b", 2)]);
        assert_eq!(share(ReadPolicy::RoundRobin, &rs, "a"), vec![1000, 2000]);
    }

    #[test]
    fn least_conn_avoids_the_busy_replica() {
        let rs = replicas(&[("a", 1), ("a", 1), ("a", 1)]);
        let _busy: Vec<_> = (0..5).map(|_| rs[0].state.start()).collect();
        let counts = share(ReadPolicy::LeastConn, &rs, "a");
        assert_eq!(counts[0], 0, "{counts:?}");
    }

    #[test]
    fn geo_stays_local_while_local_is_available_then_fails_over() {
        let rs = replicas(&[("us", 1), ("eu", 1), ("eu", 1)]);
        let counts = share(ReadPolicy::Geo, &rs, "us");
        assert_eq!(counts, vec![3000, 0, 0]);
        (0..UNHEALTHY_AFTER_PROBES).for_each(|_| rs[0].state.record_probe(false));
        let counts = share(ReadPolicy::Geo, &rs, "us");
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
    }

    #[test]
    fn tried_and_ejected_replicas_are_skipped() {
        let rs = replicas(&[("a", 1), ("a", 1)]);
        let turn = AtomicUsize::new(0);
        assert_eq!(pick(ReadPolicy::LeastConn, &rs, "a", &turn, &[0]), Some(1));
        for _ in 0..3 {
            rs[1].state.record(false);
        }
        assert_eq!(pick(ReadPolicy::RoundRobin, &rs, "a", &turn, &[0]), None);
    }
}
