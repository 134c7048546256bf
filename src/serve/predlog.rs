//! Reading `serve`'s prediction log (`serve.prediction_log`, JSON lines) for `retrain-check` and
//! `mine-hard`.
//!
//! Each line: `{time (RFC 3339), validator (SS58), image_hash, prediction, scored, latency_ms,
//! model, saved_image}`; `saved_image` is the copy kept in `low_confidence/` for answers in
//! 0.4–0.6, or null.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Deserialize;

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
}
