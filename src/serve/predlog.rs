//! `serve`'s prediction log (`serve.prediction_log`, JSON lines): the writer serve appends with,
//! and the reader `retrain-check` and `mine-hard` use.
//!
//! Each line: `{time (RFC 3339), validator (SS58), image_hash, prediction, scored, partial,
//! latency_ms, model, saved_image}`; `saved_image` is the copy kept in `low_confidence/` for
//! answers in 0.4–0.6, or null.
//!
//! Whole lines only: each record is one `write(2)` of the complete line on a file opened with
//! `O_APPEND`, so a crash (even `kill -9`) leaves every line whole or absent; a torn last line
//! (power loss, a full disk) is cut off when serve next opens the log.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::metrics::log_event;
use super::response::py_float;

/// One answer `serve` gave.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LoggedPrediction {
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub validator: String,
    pub image_hash: String,
    /// The answer sent; -1 or out of range never reaches the log (fallbacks are logged as sent).
    pub prediction: f64,
    /// False for fallbacks (an undecodable image) that no model scored.
    #[serde(default = "yes")]
    pub scored: bool,
    /// A JPEG that ended before its end-of-image marker, scored as decoded.
    #[serde(default)]
    pub partial: bool,
    #[serde(default)]
    pub latency_ms: f64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub saved_image: Option<String>,
}

fn yes() -> bool {
    true
}

/// What [`read_prediction_log`] found.
#[derive(Debug, Clone, Default)]
pub struct PredictionLogRead {
    /// Answers at or after `since`, in file order.
    pub records: Vec<LoggedPrediction>,
    /// Lines that were not valid records (a torn last line after a crash, hand edits).
    pub bad_lines: usize,
    /// Valid records before `since`.
    pub older: usize,
}

/// Reads the log, keeping answers at or after `since`. A missing file is an empty log; bad
/// lines are counted, not fatal, because the log is appended to while serve runs.
pub fn read_prediction_log(path: &Path, since: Option<DateTime<Utc>>) -> Result<PredictionLogRead> {
    let mut out = PredictionLogRead::default();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot read the prediction log {} (serve.prediction_log)",
                    path.display()
                )
            })
        }
    };
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<LoggedPrediction>(&line) {
            Ok(r) if since.is_some_and(|s| r.time < s) => out.older += 1,
            Ok(r) => out.records.push(r),
            Err(_) => out.bad_lines += 1,
        }
    }
    Ok(out)
}

/// One line of the prediction log, as the request pipeline hands it over.
pub struct PredictionRecord {
    pub time: String,
    pub validator: String,
    pub image_hash: String,
    pub prediction: f32,
    pub scored: bool,
    pub partial: bool,
    pub latency_ms: f64,
    pub model: String,
    /// Image bytes to keep (low-confidence answers only).
    pub image: Option<Vec<u8>>,
}

/// Appends prediction records from a writer thread so disk I/O never delays an answer.
pub struct PredictionLog {
    tx: Option<std::sync::mpsc::SyncSender<PredictionRecord>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

/// Cuts a torn last line (no trailing newline) off the log; returns the bytes removed.
pub fn repair_torn_tail(file: &mut std::fs::File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Read backwards in blocks until the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if end == len && buf[n - 1] == b'\n' {
            return Ok(0);
        }
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            file.set_len(keep)?;
            return Ok(len - keep);
        }
        if start == 0 {
            file.set_len(0)?;
            return Ok(len);
        }
        end = start;
    }
}

impl PredictionLog {
    /// Opens (creating) the log for appending, repairing a torn last line first.
    pub fn open(path: &Path, cap_bytes: u64) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the prediction log folder {} (serve.prediction_log)",
                    dir.display()
                )
            })?;
        }
        let open_err = || {
            format!(
                "cannot open prediction log {} (serve.prediction_log)",
                path.display()
            )
        };
        {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)
                .with_context(open_err)?;
            let cut = repair_torn_tail(&mut f).with_context(open_err)?;
            if cut > 0 {
                log_event(
                    "warn",
                    "prediction_log_repaired",
                    json!({"path": path.display().to_string(), "torn_bytes_removed": cut}),
                );
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(open_err)?;
        let low_dir = path
            .parent()
            .map(|p| p.join("low_confidence"))
            .unwrap_or_else(|| PathBuf::from("low_confidence"));
        let mut used: u64 = std::fs::read_dir(&low_dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        let (tx, rx) = std::sync::mpsc::sync_channel::<PredictionRecord>(4096);
        let thread = std::thread::Builder::new()
            .name("sv72-prediction-log".into())
            .spawn(move || {
                let mut full_logged = false;
                let mut line = Vec::with_capacity(512);
                for r in rx {
                    let mut saved = None;
                    if let Some(img) = &r.image {
                        let dest = low_dir.join(format!("{}.img", r.image_hash));
                        if used + img.len() as u64 > cap_bytes {
                            if !std::mem::replace(&mut full_logged, true) {
                                log_event(
                                    "warn",
                                    "low_confidence_store_full",
                                    json!({"dir": low_dir.display().to_string(), "cap_bytes": cap_bytes}),
                                );
                            }
                        } else if dest.exists() {
                            saved = Some(dest.display().to_string());
                        } else if crate::util::fsx::write_atomic(&dest, img).is_ok() {
                            used += img.len() as u64;
                            saved = Some(dest.display().to_string());
                        }
                    }
                    line.clear();
                    let v = json!({
                        "time": r.time, "validator": r.validator, "image_hash": r.image_hash,
                        "prediction": py_float(r.prediction), "scored": r.scored,
                        "partial": r.partial,
                        "latency_ms": (r.latency_ms * 1000.0).round() / 1000.0,
                        "model": r.model, "saved_image": saved,
                    });
                    if serde_json::to_writer(&mut line, &v).is_err() {
                        continue;
                    }
                    line.push(b'\n');
                    // One write(2) per record: with O_APPEND the line lands whole or not at all.
                    if write_whole(&mut file, &line).is_err() {
                        log_event("error", "prediction_log_write_failed", json!({}));
                    }
                }
                let _ = file.sync_data();
            })
            .context("cannot spawn the prediction log thread")?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues a record; drops it (counted, logged once) when the writer is behind.
    pub fn record(&self, r: PredictionRecord) {
        if let Some(tx) = &self.tx {
            if tx.try_send(r).is_err() && self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                log_event(
                    "warn",
                    "prediction_log_behind",
                    json!({"note": "records dropped"}),
                );
            }
        }
    }

    /// Writes what is queued and closes the file.
    pub fn close(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PredictionLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One `write` of the whole line; a short write (a full disk) is completed, and if that fails
/// the partial line is the torn tail the next open repairs.
fn write_whole(file: &mut std::fs::File, line: &[u8]) -> std::io::Result<()> {
    let n = file.write(line)?;
    if n < line.len() {
        file.write_all(&line[n..])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_window_and_counts_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("predictions.jsonl");
        std::fs::write(
            &p,
            concat!(
                r#"{"time":"2026-11-01T00:00:00.000Z","validator":"v","image_hash":"a","prediction":0.9,"scored":true,"latency_ms":3.0,"model":"m","saved_image":null}"#,
                "\n",
                r#"{"time":"2026-11-20T00:00:00.000Z","validator":"v","image_hash":"b","prediction":0.45,"scored":true,"latency_ms":3.0,"model":"m","saved_image":"low_confidence/b.img"}"#,
                "\n",
                r#"{"time":"2026-11-2"#,
                "\n"
            ),
        )
        .unwrap();
        let since = "2026-11-10T00:00:00Z".parse().unwrap();
        let r = read_prediction_log(&p, Some(since)).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.records[0].image_hash, "b");
        assert_eq!(r.older, 1);
        assert_eq!(r.bad_lines, 1);
        let missing = read_prediction_log(&dir.path().join("none.jsonl"), None).unwrap();
        assert!(missing.records.is_empty());
    }

    fn record(hash: &str) -> PredictionRecord {
        PredictionRecord {
            time: "2026-11-20T00:00:00.000Z".into(),
            validator: "v".into(),
            image_hash: hash.into(),
            prediction: 0.73,
            scored: true,
            partial: false,
            latency_ms: 1.5,
            model: "m".into(),
            image: None,
        }
    }

    #[test]
    fn torn_last_line_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("predictions.jsonl");
        let log = PredictionLog::open(&p, 0).unwrap();
        log.record(record("a"));
        log.close();
        let whole = std::fs::read(&p).unwrap();
        // A crash mid-line: half of a second record, no newline.
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..whole.len() / 2]);
        std::fs::write(&p, &torn).unwrap();
        let log = PredictionLog::open(&p, 0).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), whole, "torn tail not cut");
        log.record(record("b"));
        log.close();
        let r = read_prediction_log(&p, None).unwrap();
        assert_eq!(r.bad_lines, 0);
        let hashes: Vec<&str> = r.records.iter().map(|x| x.image_hash.as_str()).collect();
        assert_eq!(hashes, ["a", "b"]);
        // A file that is one torn line, and an empty file.
        std::fs::write(&p, b"{\"time\":").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        assert_eq!(repair_torn_tail(&mut f).unwrap(), 8);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        assert_eq!(repair_torn_tail(&mut f).unwrap(), 0);
    }
}
