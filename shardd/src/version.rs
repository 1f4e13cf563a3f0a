//! Write versions: a hybrid logical clock. Every write carries a version that orders it after
//! every write its writer has seen; a replica keeps, for each point, the write with the highest
//! version, so copies, replays and concurrent routers converge instead of reverting data.
//!
//! A version is `milliseconds since 2025-01-01 << 23 | counter << 12 | node`: the wall clock
//! when it moves forward, a counter when it does not (or went back), and the writer's node bits
//! to break ties between writers, so two writers never issue the same version in practice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The clock's epoch, 2025-01-01T00:00:00Z, in Unix milliseconds; 41 bits of milliseconds
/// last until 2094.
const EPOCH_MS: u64 = 1_735_689_600_000;
const NODE_BITS: u32 = 12;
const LOW_BITS: u32 = 23;
const NODE_MASK: u64 = (1 << NODE_BITS) - 1;

/// A hybrid logical clock for one writer.
pub struct Clock {
    last: AtomicU64,
    node: u64,
}

impl Clock {
    /// A clock whose versions end in `node`'s low 12 bits.
    pub fn new(node: u64) -> Clock {
        Clock {
            last: AtomicU64::new(0),
            node: node & NODE_MASK,
        }
    }

    /// A clock with node bits drawn from the process id and the start time.
    pub fn for_this_process() -> Clock {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = [u64::from(std::process::id()), nanos];
        let bytes: Vec<u8> = seed.iter().flat_map(|v| v.to_le_bytes()).collect();
        Clock::new(xxhash_rust::xxh3::xxh3_64(&bytes))
    }

    /// A new version, higher than every version this clock issued or observed.
    pub fn now(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(EPOCH_MS)
            << LOW_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = (wall.max((last & !NODE_MASK) + (1 << NODE_BITS))) | self.node;
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Notes a version seen from another writer, so that later versions from this clock are
    /// higher.
    pub fn observe(&self, version: u64) {
        self.last.fetch_max(version, Ordering::Relaxed);
    }
}

/// The wall-clock time a version was issued at, in Unix milliseconds (for logs and lag).
pub fn unix_ms(version: u64) -> u64 {
    (version >> LOW_BITS) + EPOCH_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_rise_and_follow_what_was_observed() {
        let clock = Clock::new(7);
        let a = clock.now();
        let b = clock.now();
        assert!(b > a && a & NODE_MASK == 7);
        let far = b + (1000 << LOW_BITS);
        clock.observe(far);
        assert!(
            clock.now() > far,
            "a seen version from a clock ahead is passed"
        );
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(unix_ms(a).abs_diff(now_ms) < 5_000);
    }

    #[test]
    fn two_writers_in_the_same_millisecond_never_tie() {
        let (x, y) = (Clock::new(1), Clock::new(2));
        let (a, b) = (x.now(), y.now());
        assert_ne!(a, b);
    }
}
