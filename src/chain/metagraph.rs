//! The validator set: a metagraph snapshot (the file `sv72 metagraph sync` writes and
//! `sv72 serve` reads), optionally reloaded when the file changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One neuron of the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neuron {
    pub hotkey: String,
    pub uid: u32,
    /// Stake in TAO (alpha) as the metagraph's `S` reports it.
    pub stake: f64,
    pub validator_permit: bool,
}

/// A metagraph snapshot: a JSON list of neurons (or `{"neurons": [...]}`).
#[derive(Debug, Clone, Default)]
pub struct Metagraph {
    by_hotkey: HashMap<String, Neuron>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SnapshotFile {
    List(Vec<Neuron>),
    Object { neurons: Vec<Neuron> },
}

impl Metagraph {
    /// Builds a snapshot from neurons; a duplicated hotkey keeps its last entry.
    pub fn from_neurons(neurons: impl IntoIterator<Item = Neuron>) -> Self {
        Self {
            by_hotkey: neurons.into_iter().map(|n| (n.hotkey.clone(), n)).collect(),
        }
    }

    /// Parses snapshot JSON; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let file: SnapshotFile = serde_json::from_str(text).with_context(|| {
            format!(
                "{origin} is not a metagraph snapshot: expected a JSON list of \
                 {{hotkey, uid, stake, validator_permit}} (or {{\"neurons\": [...]}})"
            )
        })?;
        let neurons = match file {
            SnapshotFile::List(n) | SnapshotFile::Object { neurons: n } => n,
        };
        for n in &neurons {
            if !n.stake.is_finite() || n.stake < 0.0 {
                bail!(
                    "{origin}: neuron uid {} has stake {}; stake must be a finite number >= 0",
                    n.uid,
                    n.stake
                );
            }
        }
        Ok(Self::from_neurons(neurons))
    }

    /// Reads a snapshot file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read metagraph snapshot {} (set serve.metagraph or --metagraph)",
                path.display()
            )
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Number of neurons.
    pub fn len(&self) -> usize {
        self.by_hotkey.len()
    }

    /// True when the snapshot has no neuron.
    pub fn is_empty(&self) -> bool {
        self.by_hotkey.is_empty()
    }

    /// The neuron with `hotkey`.
    pub fn get(&self, hotkey: &str) -> Option<&Neuron> {
        self.by_hotkey.get(hotkey)
    }
}

/// A metagraph shared with the request handlers, optionally backed by a file that is re-read
/// when its size or modification time changes.
pub struct MetagraphHandle {
    current: RwLock<Arc<Metagraph>>,
    file: Option<PathBuf>,
    stamp: RwLock<Option<(u64, SystemTime)>>,
}

impl MetagraphHandle {
    /// A fixed validator set (tests, `--selftest`).
    pub fn fixed(m: Metagraph) -> Self {
        Self {
            current: RwLock::new(Arc::new(m)),
            file: None,
            stamp: RwLock::new(None),
        }
    }

    /// Loads `path` now (an error if it is missing or bad) and watches it afterwards.
    pub fn from_file(path: &Path) -> Result<Self> {
        let m = Metagraph::load(path)?;
        let h = Self {
            current: RwLock::new(Arc::new(m)),
            file: Some(path.to_path_buf()),
            stamp: RwLock::new(file_stamp(path)),
        };
        Ok(h)
    }

    /// The snapshot in force.
    pub fn get(&self) -> Arc<Metagraph> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the snapshot.
    pub fn set(&self, m: Metagraph) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
    }

    /// Re-reads the file when it changed. `Ok(true)` after a reload; a bad new file is an error
    /// and the previous snapshot stays in force.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let stamp = file_stamp(path);
        if stamp.is_none() || *self.stamp.read().unwrap_or_else(|p| p.into_inner()) == stamp {
            return Ok(false);
        }
        // Record the stamp first so a broken file is reported once, not on every poll.
        *self.stamp.write().unwrap_or_else(|p| p.into_inner()) = stamp;
        let m = Metagraph::load(path)?;
        self.set(m);
        Ok(true)
    }
}

fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.len(), md.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_reload_keeps_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mg.json");
        std::fs::write(
            &p,
            r#"[{"hotkey":"a","uid":1,"stake":1.0,"validator_permit":true}]"#,
        )
        .unwrap();
        let h = MetagraphHandle::from_file(&p).unwrap();
        assert!(h.get().get("a").is_some());
        std::fs::write(
            &p,
            r#"{"neurons":[{"hotkey":"bb","uid":2,"stake":2.0,"validator_permit":false}]}"#,
        )
        .unwrap();
        assert!(h.reload_if_changed().unwrap());
        assert!(h.get().get("bb").is_some() && h.get().get("a").is_none());
        assert!(!h.reload_if_changed().unwrap());
        std::fs::write(&p, "not json at all").unwrap();
        let e = format!("{:#}", h.reload_if_changed().unwrap_err());
        assert!(e.contains("mg.json"), "{e}");
        assert!(h.get().get("bb").is_some());
        let e = format!(
            "{:#}",
            Metagraph::from_json(r#"[{"hotkey":"x"}]"#, "f.json").unwrap_err()
        );
        assert!(e.contains("f.json"), "{e}");
    }
}
