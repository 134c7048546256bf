//! The lock that keeps two `retrain-check --run`s (e.g. overlapping cron jobs) apart.
//!
//! The lock file is created exclusively (`O_EXCL`) and holds `pid` and start time. A lock whose
//! pid is no longer alive is stale (the holder was killed) and is taken over with a warning. The
//! guard removes the file when dropped, on success and on failure alike.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

/// A held lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    contents: String,
}

/// How a lock was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Fresh,
    /// A stale lock left by this pid was replaced.
    TookOverStale {
        pid: String,
        started: String,
    },
}

/// A lock file that cannot be parsed counts as stale only after this long, so a lock being
/// written right now by a starting run is not stolen.
const UNPARSEABLE_GRACE: Duration = Duration::from_secs(30);

impl RunLock {
    /// Takes the lock at `path`, creating its folder. Fails with [`LockHeld`] (downcastable) when
    /// a live process holds it.
    pub fn acquire(path: &Path) -> Result<(RunLock, Acquired)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create folder {}", dir.display()))?;
        }
        let contents = format!(
            "{}\n{}\n",
            std::process::id(),
            Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let mut took_over = None;
        // Twice at most: once fresh, once after removing a stale lock.
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    f.write_all(contents.as_bytes())
                        .and_then(|_| f.sync_all())
                        .with_context(|| {
                            format!("cannot write the lock file {}", path.display())
                        })?;
                    let how = took_over.map_or(Acquired::Fresh, |(pid, started)| {
                        Acquired::TookOverStale { pid, started }
                    });
                    return Ok((
                        RunLock {
                            path: path.to_path_buf(),
                            contents,
                        },
                        how,
                    ));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let (pid, started, stale) = inspect(path)?;
                    if !stale {
                        return Err(LockHeld {
                            path: path.to_path_buf(),
                            pid,
                            started,
                        }
                        .into());
                    }
                    match fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("cannot remove the stale lock {}", path.display())
                            })
                        }
                    }
                    took_over = Some((pid, started));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot create the lock file {} (cycle.lock_file)",
                            path.display()
                        )
                    })
                }
            }
        }
        // Someone else took the stale lock between our removal and our create.
        let (pid, started, _) = inspect(path)?;
        Err(LockHeld {
            path: path.to_path_buf(),
            pid,
            started,
        }
        .into())
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only remove our own lock: after a takeover race the file may belong to someone else.
        if fs::read_to_string(&self.path).is_ok_and(|c| c == self.contents) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reads a lock file: (pid, start time, stale?).
fn inspect(path: &Path) -> Result<(String, String, bool)> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        // Removed meanwhile: treat as stale so the caller retries.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(("?".into(), "?".into(), true)),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the lock file {}", path.display()))
        }
    };
    let mut lines = text.lines();
    let pid_text = lines.next().unwrap_or("").trim().to_string();
    let started = lines.next().unwrap_or("?").trim().to_string();
    let stale = match pid_text.parse::<i32>() {
        Ok(pid) if pid > 0 => !pid_alive(pid),
        _ => {
            let age = fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            age > UNPARSEABLE_GRACE
        }
    };
    let pid = if pid_text.is_empty() {
        "?".into()
    } else {
        pid_text
    };
    Ok((pid, started, stale))
}

/// Whether a process with this pid exists (signal 0 probes without sending anything; EPERM
/// means it exists but belongs to another user).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission; pid > 0 so it never
    // addresses a process group.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_is_alive_and_guard_cleans_up() {
        assert!(pid_alive(std::process::id() as i32));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/.lock");
        {
            let (_g, how) = RunLock::acquire(&p).unwrap();
            assert_eq!(how, Acquired::Fresh);
            let e = RunLock::acquire(&p).unwrap_err();
            assert!(e.downcast_ref::<LockHeld>().is_some());
        }
        assert!(!p.exists());
    }
}
