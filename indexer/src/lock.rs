//! The writer lock: one process at a time may change an index.
//!
//! The lock is an advisory `flock` on `<index>/writer.lock`, which also
//! records the holder's pid. The kernel releases it when the process dies,
//! even by SIGKILL, so a crashed indexer never leaves a stale lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{IndexError, Result};

/// File name of the lock inside the index directory.
pub const LOCK_FILE: &str = "writer.lock";

/// A held writer lock; released on drop.
#[derive(Debug)]
pub struct IndexLock {
    _file: File,
    path: PathBuf,
}

impl IndexLock {
    /// Takes the lock of the index in `dir` without waiting.
    ///
    /// Fails with [`IndexError::Locked`] (naming the holder's pid) when
    /// another process, or another handle in this process, holds it.
    pub fn acquire(dir: &Path) -> Result<IndexLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| IndexError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut content = String::new();
                let _ = file.read_to_string(&mut content);
                let pid = content.trim().parse().unwrap_or(0);
                return Err(IndexError::Locked {
                    path: dir.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(IndexError::io(&path, e)),
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        };
        write_pid(&mut file).map_err(|e| IndexError::io(&path, e))?;
        Ok(IndexLock { _file: file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pid recorded in the lock file of `dir` if the lock is held now,
    /// by this or another process. Never writes to the lock file.
    pub fn holder(dir: &Path) -> Option<u32> {
        let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => {
                let mut content = String::new();
                let _ = file.read_to_string(&mut content);
                Some(content.trim().parse().unwrap_or(0))
            }
            Err(TryLockError::Error(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_with_pid_and_release_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = IndexLock::acquire(dir.path()).expect("first lock");
        match IndexLock::acquire(dir.path()) {
            Err(IndexError::Locked { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert_eq!(IndexLock::holder(dir.path()), Some(std::process::id()));
        drop(first);
        assert!(IndexLock::acquire(dir.path()).is_ok());
    }
}
