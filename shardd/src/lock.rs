//! An exclusive lock on a data directory, so that two processes never write the same one.
//!
//! Guarantees: while a [`DirLock`] is alive no other process can acquire one on the same
//! directory. The lock is `flock(LOCK_EX | LOCK_NB)` on `<dir>/LOCK`, which the kernel releases
//! when the holder exits for any reason (`kill -9` included), so a crash never leaves a stale
//! lock behind. The file also holds the holder's PID, which the refused opener reports.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The name of the lock file inside a locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// A held lock on a data directory; released when dropped or when the process exits.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, or fails at once naming the directory and the PID
    /// of the process that holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        fs::create_dir_all(dir)
            .map_err(|e| Error::Storage(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::Storage(format!("opening {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_string(),
                    pid => format!("another process (pid {pid})"),
                };
                return Err(Error::Unavailable(format!(
                    "data directory {} is in use by {holder}; two processes on one directory would lose writes, so stop that one or choose another directory",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::Storage(format!("locking {}: {e}", path.display())))
            }
        }
        file.set_len(0)?;
        file.write_all(std::process::id().to_string().as_bytes())?;
        file.sync_data()?;
        Ok(DirLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().display().to_string())
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert_eq!(DirLock::acquire(dir.path()).unwrap().dir(), dir.path());
    }
}
