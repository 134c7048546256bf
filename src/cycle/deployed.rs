//! Guarding the `exports/deployed` symlink around `retrain-check --run`: if a pipeline step
//! switched it and a later step failed, the previous target is put back, so a failed run never
//! leaves a half-finished model deployed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The deployed link's target before the run.
#[derive(Debug, Clone)]
pub struct DeployedSnapshot {
    link: PathBuf,
    target: PathBuf,
}

impl DeployedSnapshot {
    /// Records where `link` points; `None` when it is not a symlink (nothing to restore).
    pub fn take(link: &Path) -> Option<Self> {
        let target = std::fs::read_link(link).ok()?;
        Some(DeployedSnapshot {
            link: link.to_path_buf(),
            target,
        })
    }

    /// The link.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The recorded target.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Points the link back at the recorded target if it changed (atomic rename of a fresh
    /// link over it). Returns whether anything was restored.
    pub fn restore_if_changed(&self) -> Result<bool> {
        if std::fs::read_link(&self.link).ok().as_deref() == Some(self.target.as_path()) {
            return Ok(false);
        }
        let dir = self
            .link
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "deployed".into());
        let tmp = dir.join(format!(".{name}.restore-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.target, &tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.link).with_context(|| {
            format!(
                "cannot restore {} → {}",
                self.link.display(),
                self.target.display()
            )
        })?;
        Ok(true)
    }
}
