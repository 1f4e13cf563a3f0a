//! One replica's live state: requests in flight, health, passive ejection with backoff, and
//! whether it is joining (being filled from a peer before it serves reads).
//!
//! The state is keyed by replica URL and carried across config reloads, so counters and
//! ejections survive a reload that keeps the replica.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hints::HintLog;

/// Consecutive failures that eject a replica.
pub const EJECT_AFTER_FAILURES: u32 = 3;
/// First ejection length; each further ejection doubles it, up to [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(1);
/// Longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(30);
/// Consecutive failed health checks that mark a replica unhealthy; one passing check marks it
/// healthy again. A single slow check does not take a replica out of rotation.
pub const UNHEALTHY_AFTER_PROBES: u32 = 3;

/// Live state of one replica.
pub struct ReplicaState {
    /// `http://host:port`, without a trailing slash.
    pub url: String,
    in_flight: AtomicUsize,
    consecutive_failures: AtomicU32,
    ejections: AtomicU64,
    /// Milliseconds after `epoch` until which the replica is ejected (0: not ejected).
    ejected_until_ms: AtomicU64,
    /// What the active health checks say.
    healthy: AtomicBool,
    failed_probes: AtomicU32,
    epoch: Instant,
    /// Writes the replica missed, when the router keeps hints for it.
    hints: Option<HintLog>,
    /// Being filled from a peer: takes writes (as hints when it cannot), serves no reads.
    joining: AtomicBool,
    /// A join task owns this replica.
    join_running: AtomicBool,
    /// Joins that failed in a row, and the time (ms after `epoch`) before which none is
    /// tried again: 1 s after the first failure, doubling up to [`MAX_EJECTION`].
    join_failures: AtomicU32,
    join_not_before_ms: AtomicU64,
    /// Buckets of the join's copy done, and in all.
    join_done: AtomicU64,
    join_total: AtomicU64,
    /// An answer suggested it lost data (it did not know a collection): check it soon.
    suspect: AtomicBool,
    /// The identity of its data directory, as `/readyz` last reported it.
    identity: Mutex<Option<String>>,
    /// etcd holds a record that it missed writes from this router.
    missing_published: AtomicBool,
}

/// What a replica does now, as `/admin/cluster` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Serves reads and takes writes.
    Serving,
    /// Being filled from a peer; no reads yet.
    Joining,
    /// Missed writes are being replayed to it; no reads until they are.
    Lagging,
    /// Failing its health checks or ejected.
    Down,
}

impl Role {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Joining => "joining",
            Role::Lagging => "lagging",
            Role::Down => "down",
        }
    }
}

/// Decrements the in-flight count when a request ends, however it ends.
pub struct InFlight(Arc<ReplicaState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ReplicaState {
    /// A replica assumed healthy until a check or a request says otherwise, without hints.
    pub fn new(url: &str) -> Arc<Self> {
        Self::build(url, None)
    }

    /// A replica whose missed writes are kept in `hints`.
    pub fn with_hints(url: &str, hints: HintLog) -> Arc<Self> {
        Self::build(url, Some(hints))
    }

    fn build(url: &str, hints: Option<HintLog>) -> Arc<Self> {
        Arc::new(ReplicaState {
            url: url.trim_end_matches('/').to_string(),
            in_flight: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            ejected_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            failed_probes: AtomicU32::new(0),
            epoch: Instant::now(),
            hints,
            joining: AtomicBool::new(false),
            join_running: AtomicBool::new(false),
            join_failures: AtomicU32::new(0),
            join_not_before_ms: AtomicU64::new(0),
            join_done: AtomicU64::new(0),
            join_total: AtomicU64::new(0),
            suspect: AtomicBool::new(false),
            identity: Mutex::new(None),
            missing_published: AtomicBool::new(false),
        })
    }

    /// Whether etcd holds this router's record that the replica missed writes.
    pub fn missing_published(&self) -> bool {
        self.missing_published.load(Ordering::SeqCst)
    }

    /// Notes whether etcd holds that record.
    pub fn set_missing_published(&self, published: bool) {
        self.missing_published.store(published, Ordering::SeqCst);
    }

    /// What the replica does now.
    pub fn role(&self) -> Role {
        if !self.healthy() || self.ejected() {
            Role::Down
        } else if self.joining() {
            Role::Joining
        } else if self.lagging() {
            Role::Lagging
        } else {
            Role::Serving
        }
    }

    /// Whether the replica is being filled from a peer.
    pub fn joining(&self) -> bool {
        self.joining.load(Ordering::SeqCst)
    }

    /// Marks the replica joining; `false` when it already was.
    pub fn start_joining(&self) -> bool {
        self.join_done.store(0, Ordering::SeqCst);
        !self.joining.swap(true, Ordering::SeqCst)
    }

    /// Claims the join for one task; `false` when another runs it, or a failed one's backoff
    /// has not passed.
    pub fn claim_join(&self) -> bool {
        self.now_ms() >= self.join_not_before_ms.load(Ordering::SeqCst)
            && !self.join_running.swap(true, Ordering::SeqCst)
    }

    /// Ends a join: `done` makes the replica serve again (once its hints are replayed);
    /// otherwise it stays joining for another attempt after a backoff.
    pub fn end_join(&self, done: bool) {
        if done {
            self.joining.store(false, Ordering::SeqCst);
            self.join_failures.store(0, Ordering::SeqCst);
        } else {
            let n = self.join_failures.fetch_add(1, Ordering::SeqCst);
            let backoff = BASE_EJECTION
                .saturating_mul(1 << n.min(16))
                .min(MAX_EJECTION);
            self.join_not_before_ms
                .store(self.now_ms() + backoff.as_millis() as u64, Ordering::SeqCst);
        }
        self.join_running.store(false, Ordering::SeqCst);
    }

    /// Sets how many buckets the join copies.
    pub fn set_join_total(&self, total: u64) {
        self.join_total.store(total, Ordering::SeqCst);
    }

    /// Counts buckets the join copied.
    pub fn join_advanced(&self, buckets: u64) {
        self.join_done.fetch_add(buckets, Ordering::SeqCst);
    }

    /// Buckets copied and in all.
    pub fn join_progress(&self) -> (u64, u64) {
        (
            self.join_done.load(Ordering::SeqCst),
            self.join_total.load(Ordering::SeqCst),
        )
    }

    /// Notes that an answer suggested lost data.
    pub fn suspect(&self) {
        self.suspect.store(true, Ordering::SeqCst);
    }

    /// Whether a check was asked for, clearing the request.
    pub fn take_suspicion(&self) -> bool {
        self.suspect.swap(false, Ordering::SeqCst)
    }

    /// Records the identity `/readyz` reported; `true` when it differs from the one seen
    /// before (the replica came back with another data directory).
    pub fn record_identity(&self, identity: &str) -> bool {
        let mut known = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        let changed = known.as_deref().is_some_and(|k| k != identity);
        if known.as_deref() != Some(identity) {
            *known = Some(identity.to_string());
        }
        changed
    }

    /// The replica's missed writes, if the router keeps hints for it.
    pub fn hints(&self) -> Option<&HintLog> {
        self.hints.as_ref()
    }

    /// Whether the replica missed writes it has not yet received.
    pub fn lagging(&self) -> bool {
        self.hints.as_ref().is_some_and(HintLog::lagging)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Counts a request as in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Whether the replica may serve reads: healthy, not ejected, not joining, and not
    /// missing writes.
    pub fn available(&self) -> bool {
        self.role() == Role::Serving
    }

    /// Whether the last active health check passed.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Whether the replica is inside an ejection window.
    pub fn ejected(&self) -> bool {
        self.now_ms() < self.ejected_until_ms.load(Ordering::SeqCst)
    }

    /// How many times the replica was ejected.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::SeqCst)
    }

    /// Records the outcome of a request; enough consecutive failures eject the replica for a
    /// backoff that doubles with each ejection. Returns whether this call ejected it.
    pub fn record(&self, ok: bool) -> bool {
        if ok {
            self.consecutive_failures.store(0, Ordering::SeqCst);
            return false;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::SeqCst) + 1;
        if failures < EJECT_AFTER_FAILURES || self.ejected() {
            return false;
        }
        let n = self.ejections.fetch_add(1, Ordering::SeqCst);
        let backoff = BASE_EJECTION
            .saturating_mul(1 << n.min(16))
            .min(MAX_EJECTION);
        self.ejected_until_ms
            .store(self.now_ms() + backoff.as_millis() as u64, Ordering::SeqCst);
        self.consecutive_failures.store(0, Ordering::SeqCst);
        true
    }

    /// Records an active health check: healthy at once when it passes, unhealthy after
    /// [`UNHEALTHY_AFTER_PROBES`] consecutive failures.
    pub fn record_probe(&self, ok: bool) {
        if ok {
            self.failed_probes.store(0, Ordering::SeqCst);
            self.healthy.store(true, Ordering::SeqCst);
        } else if self.failed_probes.fetch_add(1, Ordering::SeqCst) + 1 >= UNHEALTHY_AFTER_PROBES {
            self.healthy.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_eject_and_success_resets() {
        let r = ReplicaState::new("http://a:1/");
        assert_eq!(r.url, "http://a:1");
        assert!(!r.record(false));
        assert!(!r.record(false));
        r.record(true);
        assert!(!r.record(false) && !r.record(false));
        assert!(r.record(false), "third consecutive failure ejects");
        assert!(r.ejected() && !r.available());
        assert_eq!(r.ejections(), 1);
    }

    #[test]
    fn a_joining_replica_serves_no_reads_until_its_join_ends() {
        let r = ReplicaState::new("http://a:1");
        assert!(r.start_joining() && !r.start_joining());
        assert_eq!(r.role(), Role::Joining);
        assert!(r.claim_join() && !r.claim_join(), "one join task at a time");
        r.end_join(false);
        assert!(
            r.joining() && !r.claim_join(),
            "a failed join waits before it is retried"
        );
        r.join_not_before_ms.store(0, Ordering::SeqCst);
        assert!(r.claim_join(), "then it is retried");
        r.end_join(true);
        assert_eq!(r.role(), Role::Serving);
    }

    #[test]
    fn a_new_identity_is_a_replica_that_lost_its_data() {
        let r = ReplicaState::new("http://a:1");
        assert!(!r.record_identity("x"), "the first one seen is no change");
        assert!(!r.record_identity("x"));
        assert!(r.record_identity("y"));
        assert!(!r.record_identity("y"));
    }

    #[test]
    fn in_flight_counts_guards() {
        let r = ReplicaState::new("http://a:1");
        let (a, b) = (r.start(), r.start());
        assert_eq!(r.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn one_failed_probe_is_not_enough_to_mark_a_replica_down() {
        let r = ReplicaState::new("http://a:1");
        r.record_probe(false);
        r.record_probe(false);
        assert!(r.available(), "two slow probes keep it in rotation");
        r.record_probe(false);
        assert!(!r.available());
        r.record_probe(true);
        assert!(r.available(), "one passing probe brings it back");
    }
}
