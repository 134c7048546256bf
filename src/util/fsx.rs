//! Crash-safe file writes: write to a temp file beside the target, fsync, rename.
//!
//! A failure mid-stage must never leave a half-written artifact in place of a good one, so every
//! artifact sv72 writes goes through here.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| {
        w.write_all(bytes)?;
        Ok(())
    })
}

/// Streams into a temp file via `f`, fsyncs it, then renames it over `path`.
pub fn write_atomic_with<F>(path: &Path, f: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
{
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".sv72-tmp-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        f(&mut w).with_context(|| format!("while writing {}", path.display()))?;
        w.flush()
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("fsync of {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot move the new file into {}", path.display()))?;
    sync_dir(&dir);
    Ok(())
}

/// Serialises `value` as pretty JSON, atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    write_atomic(path, &bytes)
}

/// Builds a folder under a temp name beside `dest` and renames it into place once `f` succeeds.
/// An existing `dest` is replaced only after the new one is complete.
pub fn write_dir_atomic<F>(dest: &Path, f: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let parent = parent_dir(dest);
    fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create folder {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".sv72-tmpdir-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a temp folder in {}", parent.display()))?;
    f(tmp.path())?;
    let staged = tmp.keep();
    if dest.exists() {
        let old = parent.join(format!(
            ".sv72-old-{}-{}",
            dest.file_name().and_then(|s| s.to_str()).unwrap_or("dir"),
            std::process::id()
        ));
        fs::rename(dest, &old).with_context(|| format!("cannot move aside {}", dest.display()))?;
        fs::rename(&staged, dest)
            .with_context(|| format!("cannot move new folder to {}", dest.display()))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&staged, dest)
            .with_context(|| format!("cannot move new folder to {}", dest.display()))?;
    }
    sync_dir(&parent);
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename durable; best effort because not every filesystem allows opening a folder.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"good").unwrap();
        let r = write_atomic_with(&p, |w| {
            w.write_all(b"half")?;
            anyhow::bail!("boom")
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"good");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }

    #[test]
    fn dir_replaced_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("out");
        write_dir_atomic(&d, |t| Ok(fs::write(t.join("x"), b"1")?)).unwrap();
        let r = write_dir_atomic(&d, |t| {
            fs::write(t.join("x"), b"2")?;
            anyhow::bail!("fail")
        });
        assert!(r.is_err());
        assert_eq!(fs::read(d.join("x")).unwrap(), b"1");
        write_dir_atomic(&d, |t| Ok(fs::write(t.join("x"), b"3")?)).unwrap();
        assert_eq!(fs::read(d.join("x")).unwrap(), b"3");
    }
}
