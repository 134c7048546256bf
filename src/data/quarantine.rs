//! `datasets/<name>/quarantine.csv`: inputs that could not be ingested, and why.
//!
//! The file accumulates across runs: an origin seen again replaces its old line (so re-running
//! the same inputs does not duplicate lines), and an origin that now ingests cleanly disappears.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::util::fsx;

/// File name inside `datasets/<name>/`.
pub const QUARANTINE_FILE: &str = "quarantine.csv";

/// One quarantined input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// File path, `file.parquet#row`, or `file.csv:line`.
    pub origin: String,
    /// Stable reason code (see [`super::decode::Reason::code`]).
    pub reason: String,
    pub detail: String,
    /// Label the input would have had.
    pub label: u8,
    pub source: String,
    pub generator: String,
}

/// Reads a quarantine file; a missing file is an empty list.
pub fn read_quarantine(path: &Path) -> Result<Vec<QuarantineEntry>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut rdr =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    rdr.deserialize()
        .enumerate()
        .map(|(i, r)| {
            r.with_context(|| {
                format!(
                    "{}: line {} is malformed; delete the file to start it afresh",
                    path.display(),
                    i + 2
                )
            })
        })
        .collect()
}

/// Merges this run's entries into the previous ones (see the module doc) and writes the file
/// atomically. `processed` holds every origin this run looked at.
pub fn update_quarantine(
    path: &Path,
    processed: &HashSet<String>,
    fresh: &[QuarantineEntry],
) -> Result<Vec<QuarantineEntry>> {
    let mut all: Vec<QuarantineEntry> = read_quarantine(path)?
        .into_iter()
        .filter(|e| !processed.contains(&e.origin))
        .collect();
    all.extend(fresh.iter().cloned());
    if all.is_empty() && !path.exists() {
        return Ok(all);
    }
    write_entries(path, &all)?;
    Ok(all)
}

fn write_entries(path: &Path, entries: &[QuarantineEntry]) -> Result<()> {
    fsx::write_atomic_with(path, |w| {
        let mut cw = csv::Writer::from_writer(w);
        if entries.is_empty() {
            cw.write_record(["origin", "reason", "detail", "label", "source", "generator"])?;
        }
        for e in entries {
            cw.serialize(e)?;
        }
        cw.flush()?;
        Ok(())
    })
}
