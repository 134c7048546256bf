//! The lock that keeps two `retrain-check --run`s (e.g. overlapping cron jobs) apart.
//!
//! An OS file lock (`File::try_lock`, `flock` on Unix) on the lock file, which also holds the
//! holder's pid and start time for messages. The OS releases the lock when its holder dies,
//! so a lock file whose lock nobody holds was left by a killed run: it is taken over with a
//! warning naming that run. The guard removes the file when dropped, on success and on failure
//! alike.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{SecondsFormat, Utc};

/// Another live process holds the lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another `sv72 retrain-check --run` holds the lock {path} (pid {pid}, started {started}); \
     wait for it to finish, or remove the file if that process is not sv72"
)]
pub struct LockHeld {
    pub path: PathBuf,
    pub pid: String,
    pub started: String,
}

/// A held lock; dropping it removes the lock file and releases the lock.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    file: File,
}

/// How a lock was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Fresh,
    /// A lock file left by this (no longer running) pid was taken over.
    TookOverStale {
        pid: String,
        started: String,
    },
}

impl RunLock {
    /// Takes the lock at `path`, creating its folder. Fails with [`LockHeld`] (downcastable) when
    /// a live process holds it.
    pub fn acquire(path: &Path) -> Result<(RunLock, Acquired)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create folder {}", dir.display()))?;
        }
        // A holder removes the file before it unlocks; a file opened just before that removal
        // is locked but no longer at `path`, so retry on the file that is there now.
        for _ in 0..8 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot open the lock file {} (cycle.lock_file)",
                        path.display()
                    )
                })?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let (pid, started) = holder(&mut file);
                    return Err(LockHeld {
                        path: path.to_path_buf(),
                        pid,
                        started,
                    }
                    .into());
                }
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| {
                        format!("cannot lock {} (cycle.lock_file)", path.display())
                    })
                }
            }
            if !same_file(&file, path) {
                continue;
            }
            let (pid, started) = holder(&mut file);
            let how = if pid == "?" && started == "?" {
                Acquired::Fresh
            } else {
                Acquired::TookOverStale { pid, started }
            };
            let contents = format!(
                "{}\n{}\n",
                std::process::id(),
                Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(contents.as_bytes()))
                .and_then(|_| file.sync_all())
                .with_context(|| format!("cannot write the lock file {}", path.display()))?;
            return Ok((
                RunLock {
                    path: path.to_path_buf(),
                    file,
                },
                how,
            ));
        }
        anyhow::bail!(
            "cannot take the lock {}: it keeps being replaced (cycle.lock_file)",
            path.display()
        )
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so no one can lock this file and then see it vanish;
        // closing `file` afterwards releases the lock.
        if same_file(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `(pid, start time)` recorded in a lock file, `?` where missing.
fn holder(file: &mut File) -> (String, String) {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut next = || lines.next().unwrap_or("?").to_string();
    (next(), next())
}

/// Whether the open `file` is the one at `path` (not one removed and re-created since).
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lock_is_refused_and_guard_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/.lock");
        {
            let (_g, how) = RunLock::acquire(&p).unwrap();
            assert_eq!(how, Acquired::Fresh);
            let e = RunLock::acquire(&p).unwrap_err();
            let held = e.downcast_ref::<LockHeld>().expect("LockHeld");
            assert_eq!(held.pid, std::process::id().to_string());
        }
        assert!(!p.exists());
        // Free again once the guard is gone.
        drop(RunLock::acquire(&p).unwrap());
    }

    #[test]
    fn lock_file_nobody_holds_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".lock");
        std::fs::write(&p, "999999\n2026-01-01T00:00:00Z\n").unwrap();
        let (g, how) = RunLock::acquire(&p).unwrap();
        assert_eq!(
            how,
            Acquired::TookOverStale {
                pid: "999999".into(),
                started: "2026-01-01T00:00:00Z".into()
            }
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with(&format!("{}\n", std::process::id())),
            "{text}"
        );
        drop(g);
        assert!(!p.exists());
    }
}
