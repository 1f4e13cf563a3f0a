//! The router's errors, typed by where they happened (the request, a shard, a replica) and what
//! happened (timeout, status, transport, unreadable answer), and mapped to HTTP in one place.

use std::fmt;

/// What one call to a replica (or a built-in shard) ended with, when it did not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// The deadline passed first.
    Timeout,
    /// It answered this 5xx status.
    Status(u16),
    /// Connecting, sending or reading failed.
    Transport(String),
    /// Its answer could not be read.
    Invalid(String),
    /// No replica was known to have applied the write a read must see (`x-vecgate-version`);
    /// the replica is `every replica`.
    NotApplied {
        /// The version asked for.
        version: u64,
        /// Why: how long it waited, or what could not be read.
        why: String,
    },
}

/// One failed attempt: which replica, and how it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The replica's URL, or `built-in`.
    pub replica: String,
    /// How the call ended.
    pub kind: CallKind,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CallKind::Timeout => write!(f, "{} timed out", self.replica),
            CallKind::Status(s) => write!(f, "{} answered {s}", self.replica),
            CallKind::Transport(e) => write!(f, "{}: {e}", self.replica),
            CallKind::Invalid(e) => write!(f, "{} answered unreadable JSON: {e}", self.replica),
            CallKind::NotApplied { version, why } => {
                write!(f, "no replica has applied version {version} yet ({why})")
            }
        }
    }
}

/// A shard none of whose replicas answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFailure {
    /// The shard's name.
    pub shard: String,
    /// Every attempt, in order; empty when no replica was available to try.
    pub attempts: Vec<Attempt>,
}

impl ShardFailure {
    /// Whether the shard failed by running out of time (its last attempt timed out).
    pub fn timed_out(&self) -> bool {
        self.attempts
            .last()
            .is_some_and(|a| a.kind == CallKind::Timeout)
    }
}

impl fmt::Display for ShardFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.attempts.last() {
            Some(last) => write!(f, "shard {}: {last}", self.shard),
            None => write!(f, "shard {}: no replica is available", self.shard),
        }
    }
}

/// Why the router could not answer as asked.
#[derive(Debug)]
pub enum GatewayError {
    /// The request is wrong, as found by the router (or the engine code it runs).
    Request(shardd::Error),
    /// A shard refused the request with a 4xx; its status and message are passed on.
    Rejected {
        /// The shard.
        shard: String,
        /// Its status.
        status: u16,
        /// Its message, as it wrote it.
        message: String,
    },
    /// Some shards could not be read.
    Unreachable(Vec<ShardFailure>),
    /// A write reached fewer replicas of some shards than its consistency level needs.
    Unacknowledged(Vec<String>),
}

impl From<ShardFailure> for GatewayError {
    fn from(f: ShardFailure) -> Self {
        GatewayError::Unreachable(vec![f])
    }
}

impl From<shardd::Error> for GatewayError {
    fn from(e: shardd::Error) -> Self {
        GatewayError::Request(e)
    }
}

impl GatewayError {
    /// The HTTP status this error is answered with: the request's own, a shard's 4xx, 504 when
    /// every unreachable shard timed out, else 503.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Request(e) => e.status(),
            GatewayError::Rejected { status, .. } => *status,
            GatewayError::Unreachable(failures) if failures.iter().all(ShardFailure::timed_out) => {
                504
            }
            GatewayError::Unreachable(_) | GatewayError::Unacknowledged(_) => 503,
        }
    }

    /// The message the client reads.
    pub fn message(&self) -> String {
        match self {
            GatewayError::Request(e) => e.to_string(),
            GatewayError::Rejected { message, .. } => message.clone(),
            GatewayError::Unreachable(failures) => {
                let each: Vec<String> = failures.iter().map(ShardFailure::to_string).collect();
                let kind = if self.status() == 504 {
                    "Timeout"
                } else {
                    "Service unavailable"
                };
                format!("{kind}: {}", each.join("; "))
            }
            GatewayError::Unacknowledged(short) => format!(
                "Service unavailable: write not acknowledged: {}",
                short.join("; ")
            ),
        }
    }

    /// The label of `vecgate_request_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Request(_) => "invalid",
            GatewayError::Rejected { .. } => "rejected",
            GatewayError::Unreachable(_) if self.status() == 504 => "timeout",
            GatewayError::Unreachable(_) => "unavailable",
            GatewayError::Unacknowledged(_) => "unacknowledged",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(shard: &str, kinds: &[CallKind]) -> ShardFailure {
        ShardFailure {
            shard: shard.into(),
            attempts: kinds
                .iter()
                .map(|k| Attempt {
                    replica: format!("http://{shard}-a:1"),
                    kind: k.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn unreachable_shards_are_a_504_only_when_all_timed_out() {
        let t = GatewayError::Unreachable(vec![failure("s1", &[CallKind::Timeout])]);
        assert_eq!(t.status(), 504);
        assert_eq!(t.message(), "Timeout: shard s1: http://s1-a:1 timed out");
        let mixed = GatewayError::Unreachable(vec![
            failure("s1", &[CallKind::Timeout]),
            failure("s2", &[CallKind::Transport("refused".into())]),
        ]);
        assert_eq!(mixed.status(), 503);
        assert!(mixed.message().contains("shard s2: http://s2-a:1: refused"));
        assert_eq!(
            GatewayError::Unreachable(vec![failure("s0", &[])]).message(),
            "Service unavailable: shard s0: no replica is available"
        );
        let rejected = GatewayError::Rejected {
            shard: "s0".into(),
            status: 404,
            message: "Not found: Collection `x` doesn't exist!".into(),
        };
        assert_eq!((rejected.status(), rejected.kind()), (404, "rejected"));
        let behind = GatewayError::Unreachable(vec![failure(
            "s0",
            &[CallKind::NotApplied {
                version: 42,
                why: "waited 2000 ms".into(),
            }],
        )]);
        assert_eq!(
            (behind.status(), behind.message().as_str()),
            (
                503,
                "Service unavailable: shard s0: no replica has applied version 42 yet (waited 2000 ms)"
            )
        );
    }
}
