//! The write-ahead log: checksummed records in numbered segment files, with group-committed fsync.
//!
//! Record layout: `len: u32 | crc32(seq ‖ body): u32 | seq: u64 | body`, little endian.
//!
//! Guarantees: when [`Wal::sync`] for `seq` returns `Ok` under [`FsyncPolicy::Always`], record
//! `seq` and every earlier one are on stable storage (the segment was fsynced; new segments are
//! made durable by fsyncing the directory). Concurrent writers share fsyncs: one fsync covers
//! every record appended before it started. Under [`FsyncPolicy::Never`] records survive a
//! process crash (`kill -9`) but not an OS crash or power loss.
//!
//! On open, a record at the tail of the last segment whose length or checksum does not hold is
//! a torn write from a crash; it and anything after it are cut off. It was never acknowledged,
//! because acknowledgement waits for the fsync that would have covered it. A bad record in an
//! older segment is corruption and stops the open. After a failed write or fsync the log
//! refuses further writes (retrying fsync after a failure cannot be trusted); restart to recover.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

const HEADER: usize = 16;
/// A record larger than this is taken as a torn length field, not a real record.
const MAX_RECORD: usize = 1 << 30;

/// When appended records reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncPolicy {
    /// fsync before a write is acknowledged (group-committed across concurrent writers).
    Always,
    /// Leave flushing to the OS: survives a process crash, not a power loss.
    Never,
}

struct Writer {
    file: Arc<File>,
    len: u64,
    next_seq: u64,
    /// Segments as (first seq, path), oldest first; the last one is being appended to.
    segments: Vec<(u64, PathBuf)>,
}

/// The log; shared by all writers of a shard.
pub struct Wal {
    dir: PathBuf,
    policy: FsyncPolicy,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    sync_lock: Mutex<()>,
    durable: AtomicU64,
    poisoned: AtomicBool,
    metrics: Arc<Metrics>,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses the records of one segment, calling `on_record` for each; returns the length of the
/// valid prefix (shorter than the file when the tail is torn).
fn read_segment(
    bytes: &[u8],
    mut on_record: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<usize> {
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let seq_and_body = &bytes[at + 8..at + HEADER + len];
        if crc32fast::hash(seq_and_body) != crc {
            break;
        }
        let seq = u64::from_le_bytes(seq_and_body[..8].try_into().expect("8 bytes"));
        on_record(seq, &seq_and_body[8..])?;
        at += HEADER + len;
    }
    Ok(at)
}

impl Wal {
    /// Opens the log in `dir`, replaying every intact record in order through `on_record`.
    ///
    /// `floor_seq` is the highest sequence number already covered by snapshots; numbering
    /// continues above it and above the last record.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        segment_bytes: u64,
        floor_seq: u64,
        metrics: Arc<Metrics>,
        mut on_record: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wal"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                segments.push((first, path));
            }
        }
        segments.sort();
        let mut last_seq = floor_seq;
        let mut prev: Option<u64> = None;
        let count = segments.len();
        let mut tail_len = 0;
        for (i, (_, path)) in segments.iter().enumerate() {
            let bytes = fs::read(path)?;
            let valid = read_segment(&bytes, |seq, body| {
                if let Some(p) = prev.filter(|&p| seq <= p) {
                    return Err(Error::Storage(format!(
                        "WAL {}: sequence {seq} after {p}",
                        path.display()
                    )));
                }
                prev = Some(seq);
                last_seq = last_seq.max(seq);
                metrics.wal_replayed.inc();
                on_record(seq, body)
            })?;
            if valid < bytes.len() {
                if i + 1 < count {
                    return Err(Error::Storage(format!(
                        "WAL segment {} is corrupt at byte {valid}; it is not the last segment, so this is not a torn write. Move the data directory aside and restore from a replica",
                        path.display()
                    )));
                }
                tracing::warn!(segment = %path.display(), kept = valid, dropped = bytes.len() - valid, "cut torn WAL tail");
                metrics.wal_torn_tails.inc();
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
            }
            tail_len = valid as u64;
        }
        let next_seq = last_seq + 1;
        let file = match segments.last() {
            Some((_, path)) => OpenOptions::new().write(true).open(path)?,
            None => {
                let path = segment_path(dir, next_seq);
                let f = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&path)?;
                sync_dir(dir)?;
                segments.push((next_seq, path));
                tail_len = 0;
                f
            }
        };
        Ok(Wal {
            dir: dir.to_path_buf(),
            policy,
            segment_bytes,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                len: tail_len,
                next_seq,
                segments,
            }),
            sync_lock: Mutex::new(()),
            durable: AtomicU64::new(last_seq),
            poisoned: AtomicBool::new(false),
            metrics,
        })
    }

    fn poison(&self, what: &str, e: std::io::Error) -> Error {
        self.poisoned.store(true, Ordering::SeqCst);
        self.metrics.wal_failures.inc();
        tracing::error!(error = %e, "WAL {what} failed; refusing writes until restart");
        Error::Storage(format!(
            "WAL {what} failed: {e}; this shard refuses writes until it is restarted"
        ))
    }

    /// Appends a record and returns its sequence number. It is durable only after [`Wal::sync`].
    pub fn append(&self, body: &[u8]) -> Result<u64> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "writes are disabled after a WAL failure; restart the shard".into(),
            ));
        }
        let mut w = lock(&self.writer);
        if w.len >= self.segment_bytes {
            self.rotate_locked(&mut w)?;
        }
        let seq = w.next_seq;
        let mut buf = Vec::with_capacity(HEADER + body.len());
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(body);
        let crc = crc32fast::hash(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = w.file.write_all_at(&buf, w.len) {
            if w.file.set_len(w.len).is_err() {
                return Err(self.poison("write", e));
            }
            self.metrics.wal_failures.inc();
            return Err(Error::Storage(format!("WAL write failed: {e}")));
        }
        w.len += buf.len() as u64;
        w.next_seq += 1;
        self.metrics.wal_bytes.inc_by(buf.len() as u64);
        Ok(seq)
    }

    /// Waits until record `seq` is durable (per the policy), sharing one fsync among waiters.
    pub fn sync(&self, seq: u64) -> Result<()> {
        if self.policy == FsyncPolicy::Never || self.durable.load(Ordering::SeqCst) >= seq {
            return Ok(());
        }
        let _one_at_a_time = lock(&self.sync_lock);
        if self.durable.load(Ordering::SeqCst) >= seq {
            return Ok(());
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "writes are disabled after a WAL failure; restart the shard".into(),
            ));
        }
        let (file, upto) = {
            let w = lock(&self.writer);
            (w.file.clone(), w.next_seq - 1)
        };
        let started = Instant::now();
        file.sync_data().map_err(|e| self.poison("fsync", e))?;
        self.metrics
            .wal_fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        self.durable.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// The sequence number of the last appended record.
    pub fn last_seq(&self) -> u64 {
        lock(&self.writer).next_seq - 1
    }

    fn rotate_locked(&self, w: &mut Writer) -> Result<()> {
        w.file.sync_data().map_err(|e| self.poison("fsync", e))?;
        self.durable.fetch_max(w.next_seq - 1, Ordering::SeqCst);
        let path = segment_path(&self.dir, w.next_seq);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.poison("rotate", e))?;
        sync_dir(&self.dir)?;
        w.segments.push((w.next_seq, path));
        w.file = Arc::new(file);
        w.len = 0;
        Ok(())
    }

    /// Starts a new segment if the current one holds records, so older ones can be dropped.
    pub fn rotate(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        if w.len > 0 {
            self.rotate_locked(&mut w)?;
        }
        Ok(())
    }

    /// Deletes closed segments whose records all have sequence numbers at or below `seq`.
    pub fn truncate_through(&self, seq: u64) -> Result<usize> {
        let doomed: Vec<PathBuf> = {
            let mut w = lock(&self.writer);
            let keep_from = w
                .segments
                .windows(2)
                .position(|pair| pair[1].0 > seq + 1)
                .unwrap_or(w.segments.len() - 1);
            w.segments.drain(..keep_from).map(|(_, p)| p).collect()
        };
        for path in &doomed {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(&prometheus::Registry::new(), "t").unwrap())
    }

    fn replay(dir: &Path) -> (Wal, Vec<(u64, Vec<u8>)>) {
        let mut seen = Vec::new();
        let wal = Wal::open(dir, FsyncPolicy::Always, 1 << 20, 0, metrics(), |s, b| {
            seen.push((s, b.to_vec()));
            Ok(())
        })
        .unwrap();
        (wal, seen)
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let mut segments: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(segments.len(), 1);
        segments.pop().unwrap()
    }

    #[test]
    fn records_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = replay(dir.path());
        for i in 0..10u8 {
            let seq = wal.append(&[i; 3]).unwrap();
            wal.sync(seq).unwrap();
        }
        drop(wal);
        let (wal, seen) = replay(dir.path());
        assert_eq!(seen.len(), 10);
        assert_eq!(seen[9], (10, vec![9; 3]));
        assert_eq!(wal.append(b"x").unwrap(), 11);
    }

    #[test]
    fn a_torn_tail_is_cut_and_writing_continues() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = replay(dir.path());
        wal.append(b"first").unwrap();
        wal.append(b"second").unwrap();
        drop(wal);
        let seg = only_segment(dir.path());
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 2)
            .unwrap();
        let (wal, seen) = replay(dir.path());
        assert_eq!(seen, vec![(1, b"first".to_vec())]);
        assert_eq!(wal.append(b"third").unwrap(), 2);
        drop(wal);
        let (_, seen) = replay(dir.path());
        assert_eq!(
            seen.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            vec![b"first".to_vec(), b"third".to_vec()]
        );
    }

    #[test]
    fn a_flipped_bit_in_the_tail_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = replay(dir.path());
        wal.append(b"good").unwrap();
        wal.append(b"will rot").unwrap();
        drop(wal);
        let seg = only_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&seg, bytes).unwrap();
        let (_, seen) = replay(dir.path());
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn truncation_drops_only_covered_closed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = replay(dir.path());
        wal.append(b"a").unwrap();
        wal.append(b"b").unwrap();
        wal.rotate().unwrap();
        wal.append(b"c").unwrap();
        assert_eq!(wal.truncate_through(1).unwrap(), 0);
        assert_eq!(wal.truncate_through(2).unwrap(), 1);
        assert_eq!(wal.truncate_through(3).unwrap(), 0);
        drop(wal);
        let (_, seen) = replay(dir.path());
        assert_eq!(seen, vec![(3, b"c".to_vec())]);
    }
}
