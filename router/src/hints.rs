//! Hinted handoff: the writes a replica missed, kept durably and in order by the router, and
//! replayed when the replica is back. A replica with pending hints serves no reads.
//!
//! Guarantees: a hint is on disk (appended and fsynced) before the write it belongs to is
//! answered, so a router crash loses none. While hints are pending every new write for the
//! replica is queued behind them rather than sent, so the replica applies writes in the order
//! the router answered them. Replay progress is persisted after each replayed hint; a crash
//! between a replay and its record re-sends that one hint, which is idempotent (upserts,
//! deletes and payload writes replace state).
//!
//! Layout: `<dir>/<xxh3(url)>.hints` holds records `len: u32 | crc32: u32 | JSON`, and
//! `<dir>/<xxh3(url)>.done` the number of records already replayed.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// One write a replica missed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hint {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// JSON body.
    pub body: String,
}

impl Hint {
    /// The version of the write (`version=N` in its path), or 0 for a write without one
    /// (collections and indexes).
    pub fn version(&self) -> u64 {
        self.path
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("version="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

struct State {
    pending: VecDeque<Hint>,
    done: u64,
}

/// A replica's durable queue of missed writes.
pub struct HintLog {
    log: PathBuf,
    done: PathBuf,
    state: Mutex<State>,
}

fn frame(hint: &Hint) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(hint).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Intact records of a log file; a torn tail (a crash mid-append, never acknowledged) ends it.
fn records(bytes: &[u8]) -> Vec<Hint> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(json) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(json) != crc {
            break;
        }
        match serde_json::from_slice(json) {
            Ok(h) => out.push(h),
            Err(_) => break,
        }
        at += 8 + len;
    }
    out
}

fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

impl HintLog {
    /// Opens (or creates) the hint log of replica `url` in `dir`, loading what is pending.
    pub fn open(dir: &Path, url: &str) -> io::Result<HintLog> {
        fs::create_dir_all(dir)?;
        let stem = format!("{:016x}", xxh3_64(url.as_bytes()));
        let log = dir.join(format!("{stem}.hints"));
        let done = dir.join(format!("{stem}.done"));
        let all = match fs::read(&log) {
            Ok(b) => records(&b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let replayed = fs::read_to_string(&done)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let pending: VecDeque<Hint> = all.into_iter().skip(replayed as usize).collect();
        Ok(HintLog {
            log,
            done,
            state: Mutex::new(State {
                pending,
                done: replayed,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of writes waiting to be replayed.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Whether the replica has missed writes not yet replayed.
    pub fn lagging(&self) -> bool {
        self.pending() > 0
    }

    fn append(&self, state: &mut State, hint: &Hint) -> io::Result<()> {
        state.pending.push_back(hint.clone());
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        f.write_all(&frame(hint)?)?;
        f.sync_data()
    }

    /// Queues `hint` if writes are already pending (so it lands after them); `false` means the
    /// caller may send it directly. The hint is kept in memory even if the disk fails.
    pub fn queue_if_lagging(&self, hint: &Hint) -> io::Result<bool> {
        let mut state = self.lock();
        if state.pending.is_empty() {
            return Ok(false);
        }
        self.append(&mut state, hint).map(|()| true)
    }

    /// Queues a write the replica failed to acknowledge.
    pub fn push(&self, hint: &Hint) -> io::Result<()> {
        let mut state = self.lock();
        self.append(&mut state, hint)
    }

    /// The oldest pending write.
    pub fn head(&self) -> Option<Hint> {
        self.lock().pending.front().cloned()
    }

    /// Records that the oldest pending write was applied; the files are emptied once nothing
    /// is pending.
    pub fn pop(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.pending.pop_front().is_none() {
            return Ok(());
        }
        state.done += 1;
        if state.pending.is_empty() {
            state.done = 0;
            write_durably(&self.done, b"0")?;
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.log)?
                .sync_all()
        } else {
            write_durably(&self.done, state.done.to_string().as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(n: u32) -> Hint {
        Hint {
            method: "PUT".into(),
            path: format!("/collections/c/points?n={n}"),
            body: "{}".into(),
        }
    }

    #[test]
    fn pending_hints_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = HintLog::open(dir.path(), "http://a:1").unwrap();
        assert!(
            !log.queue_if_lagging(&hint(0)).unwrap(),
            "nothing pending: send directly"
        );
        log.push(&hint(1)).unwrap();
        assert!(
            log.queue_if_lagging(&hint(2)).unwrap(),
            "pending: queue behind"
        );
        log.push(&hint(3)).unwrap();
        log.pop().unwrap();
        drop(log);
        let log = HintLog::open(dir.path(), "http://a:1").unwrap();
        assert_eq!(log.pending(), 2);
        assert_eq!(log.head(), Some(hint(2)));
        log.pop().unwrap();
        log.pop().unwrap();
        assert!(!log.lagging());
        drop(log);
        assert!(!HintLog::open(dir.path(), "http://a:1").unwrap().lagging());
        assert!(
            !HintLog::open(dir.path(), "http://b:1").unwrap().lagging(),
            "logs are per replica"
        );
    }

    #[test]
    fn a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let log = HintLog::open(dir.path(), "http://a:1").unwrap();
        log.push(&hint(1)).unwrap();
        log.push(&hint(2)).unwrap();
        let path = log.log.clone();
        drop(log);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let log = HintLog::open(dir.path(), "http://a:1").unwrap();
        assert_eq!(log.pending(), 1);
    }
}
