//! `exports/deployed`: the relative symlink naming the export that serve answers with and whose
//! `model_card.json` retrain-check reads.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::build::{verify_sums, DEPLOYED, LATEST};
use super::card::{ModelCard, MODEL_CARD_FILE};
use crate::infer::ModelRef;

/// Checks an export before it is served: every checksum, and a valid model card.
pub fn verify_export(dir: &Path) -> Result<ModelCard> {
    verify_sums(dir)?;
    ModelCard::read(&dir.join(MODEL_CARD_FILE))
}

/// The previous target of `exports_root/deployed`, if it is a symlink.
pub fn deployed_target(exports_root: &Path) -> Option<PathBuf> {
    let link = exports_root.join(DEPLOYED);
    std::fs::read_link(&link).ok().map(|t| exports_root.join(t))
}

/// Verifies `export_dir` (a folder inside `exports_root`, or a pointer/symlink to one) and
/// atomically points `exports_root/deployed` at it (a relative symlink: a temp link renamed over
/// the old one, so readers see the old or the new export, never none). Returns the previous
/// target.
pub fn deploy(exports_root: &Path, export_dir: &Path) -> Result<Option<PathBuf>> {
    let dir = ModelRef::export(export_dir)?;
    verify_export(&dir).with_context(|| format!("refusing to deploy {}", dir.display()))?;
    let root_abs = std::fs::canonicalize(exports_root).with_context(|| {
        format!(
            "cannot resolve the exports folder {}",
            exports_root.display()
        )
    })?;
    let dir_abs =
        std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let rel = dir_abs.strip_prefix(&root_abs).map_err(|_| {
        anyhow::anyhow!(
            "{} is not inside the exports folder {}; deploy exports written by `sv72 export`",
            dir.display(),
            exports_root.display()
        )
    })?;
    if rel.as_os_str().is_empty()
        || rel.components().any(|c| !matches!(c, Component::Normal(_)))
        || rel == Path::new(DEPLOYED)
        || rel == Path::new(LATEST)
    {
        bail!("{} is not an export folder", dir.display());
    }
    let link = exports_root.join(DEPLOYED);
    if let Ok(m) = std::fs::symlink_metadata(&link) {
        if !m.file_type().is_symlink() {
            bail!(
                "{} exists and is not a symlink; move it away, then deploy again",
                link.display()
            );
        }
    }
    let previous = deployed_target(exports_root);
    let tmp = exports_root.join(format!(".{DEPLOYED}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    make_symlink(rel, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, &link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot switch {}", link.display()));
    }
    if let Ok(d) = std::fs::File::open(exports_root) {
        let _ = d.sync_all();
    }
    Ok(previous)
}

#[cfg(unix)]
fn make_symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot create symlink {}", link.display()))
}

#[cfg(not(unix))]
fn make_symlink(_target: &Path, link: &Path) -> Result<()> {
    bail!(
        "cannot create {}: symlinks are only supported on Unix",
        link.display()
    )
}
