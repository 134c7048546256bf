//! What a model argument names. One resolver for every command that takes a model: a
//! checkpoint folder, an export folder, and the pointers to them (`checkpoints/latest`,
//! `exports/latest`, the `exports/deployed` symlink).
//!
//! A pointer file holds one folder name relative to its own folder. A `.yaml`/`.yml` file is a
//! model spec (`infer::spec`): a model with test-time views (issue #15).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::model::weights::SINGLE_FILE as WEIGHTS_FILE;
use crate::train::checkpoint::{HEAD_FILE, LATEST};

/// The checksum list of an export folder (`sha256sum` lines, written by `sv72 export`).
pub const SUMS_FILE: &str = "SHA256SUMS";
/// The transformers config of an export folder.
const CONFIG_FILE: &str = "config.json";

/// A model on disk, resolved to its folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// An sv72 checkpoint (`head.safetensors` + `run.yaml`; `run.yaml` names the backbone).
    Checkpoint(PathBuf),
    /// An export folder (`sv72 export`): a transformers image-classification model.
    Export(PathBuf),
    /// A model spec file (`*.yaml`, see `infer::spec`): a model served with test-time views.
    Spec(PathBuf),
}

impl ModelRef {
    /// Resolves `path`: a checkpoint or export folder (a symlink to one such as
    /// `exports/deployed` included), or a pointer file naming one (`checkpoints/latest`,
    /// `exports/latest`).
    pub fn resolve(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::classify(path);
        }
        if path.is_file() && is_spec_file(path) {
            return Ok(ModelRef::Spec(path.to_path_buf()));
        }
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let name = text.trim();
            if name.is_empty() || name.contains(['/', '\\']) || name == ".." || name == "." {
                bail!(
                    "{} does not name a checkpoint or export (a pointer file holds one folder \
                     name, e.g. a run id)",
                    path.display()
                );
            }
            let dir = path.parent().unwrap_or(Path::new(".")).join(name);
            if !dir.is_dir() {
                bail!(
                    "{} names {name}, but {} is not a folder",
                    path.display(),
                    dir.display()
                );
            }
            return Self::classify(&dir)
                .with_context(|| format!("{} names {name}", path.display()));
        }
        bail!(
            "no checkpoint or export at {}: train one with `sv72 train-head`, export one with \
             `sv72 export`, or give a checkpoint folder, a `latest` pointer, an export folder or \
             exports/deployed",
            path.display()
        )
    }

    /// The checkpoint `arg` names, or (when `None`) the one `checkpoints_root/latest` names.
    pub fn checkpoint(arg: Option<&Path>, checkpoints_root: &Path) -> Result<PathBuf> {
        let p = arg
            .map(Path::to_path_buf)
            .unwrap_or_else(|| checkpoints_root.join(LATEST));
        if !p.exists() {
            bail!(
                "no checkpoint at {}: train one with `sv72 train-head` or pass --checkpoint DIR",
                p.display()
            );
        }
        match Self::resolve(&p)? {
            ModelRef::Checkpoint(dir) => Ok(dir),
            ModelRef::Export(dir) => bail!(
                "{} is an export folder, not an sv72 checkpoint (head.safetensors + run.yaml)",
                dir.display()
            ),
            ModelRef::Spec(f) => bail!(
                "{} is a model spec, not an sv72 checkpoint (head.safetensors + run.yaml)",
                f.display()
            ),
        }
    }

    /// The export folder `path` names; an error for a checkpoint.
    pub fn export(path: &Path) -> Result<PathBuf> {
        match Self::resolve(path)? {
            ModelRef::Export(dir) => Ok(dir),
            ModelRef::Checkpoint(dir) => bail!(
                "{} is a checkpoint, not an export folder: export it with `sv72 export` first",
                dir.display()
            ),
            ModelRef::Spec(f) => bail!(
                "{} is a model spec, not an export folder: export its base model instead",
                f.display()
            ),
        }
    }

    fn classify(dir: &Path) -> Result<Self> {
        if dir.join(HEAD_FILE).is_file() {
            Ok(ModelRef::Checkpoint(dir.to_path_buf()))
        } else if is_export_dir(dir) {
            Ok(ModelRef::Export(dir.to_path_buf()))
        } else {
            bail!(
                "{} is neither a finished sv72 checkpoint (no {HEAD_FILE}) nor an export folder \
                 (no {WEIGHTS_FILE} + {CONFIG_FILE})",
                dir.display()
            )
        }
    }

    /// The folder the model lives in (for a spec, the spec file).
    pub fn dir(&self) -> &Path {
        match self {
            ModelRef::Checkpoint(d) | ModelRef::Export(d) | ModelRef::Spec(d) => d,
        }
    }

    /// `checkpoint` or `export`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelRef::Checkpoint(_) => "checkpoint",
            ModelRef::Export(_) => "export",
            ModelRef::Spec(_) => "spec",
        }
    }
}

/// Whether `path` is named like a model spec (`.yaml` / `.yml`).
pub fn is_spec_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Whether `dir` looks like an sv72 export folder (as opposed to a checkpoint).
pub fn is_export_dir(dir: &Path) -> bool {
    dir.join(WEIGHTS_FILE).is_file()
        && dir.join(CONFIG_FILE).is_file()
        && !dir.join(HEAD_FILE).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_pointers_and_links_resolve() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let ck = root.join("checkpoints/run-1");
        let ex = root.join("exports/sv72-roadwork-1.0.0");
        std::fs::create_dir_all(&ck).unwrap();
        std::fs::create_dir_all(&ex).unwrap();
        std::fs::write(ck.join(HEAD_FILE), b"h").unwrap();
        std::fs::write(ex.join(WEIGHTS_FILE), b"w").unwrap();
        std::fs::write(ex.join(CONFIG_FILE), b"{}").unwrap();
        std::fs::write(root.join("checkpoints/latest"), "run-1\n").unwrap();
        std::fs::write(root.join("exports/latest"), "sv72-roadwork-1.0.0").unwrap();

        assert_eq!(
            ModelRef::resolve(&ck).unwrap(),
            ModelRef::Checkpoint(ck.clone())
        );
        assert_eq!(
            ModelRef::resolve(&ex).unwrap(),
            ModelRef::Export(ex.clone())
        );
        let latest = ModelRef::resolve(&root.join("checkpoints/latest")).unwrap();
        assert_eq!(latest, ModelRef::Checkpoint(ck.clone()));
        assert_eq!(latest.kind(), "checkpoint");
        let latest = ModelRef::resolve(&root.join("exports/latest")).unwrap();
        assert_eq!(latest.dir(), ex);
        #[cfg(unix)]
        {
            let link = root.join("exports/deployed");
            std::os::unix::fs::symlink("sv72-roadwork-1.0.0", &link).unwrap();
            assert_eq!(ModelRef::export(&link).unwrap(), link);
        }

        assert_eq!(
            ModelRef::checkpoint(None, &root.join("checkpoints")).unwrap(),
            ck
        );
        let e = format!("{:#}", ModelRef::checkpoint(Some(&ex), root).unwrap_err());
        assert!(e.contains("export folder, not an sv72 checkpoint"), "{e}");
        let e = format!("{:#}", ModelRef::export(&ck).unwrap_err());
        assert!(e.contains("sv72 export"), "{e}");
        let e = format!("{:#}", ModelRef::checkpoint(None, root).unwrap_err());
        assert!(e.contains("train one with `sv72 train-head`"), "{e}");
    }

    #[test]
    fn bad_pointers_and_folders_are_clear_errors() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for (text, want) in [
            ("", "does not name"),
            ("../x", "does not name"),
            ("..", "does not name"),
            ("gone", "is not a folder"),
        ] {
            let p = root.join("latest");
            std::fs::write(&p, text).unwrap();
            let e = format!("{:#}", ModelRef::resolve(&p).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
        std::fs::create_dir_all(root.join("half")).unwrap();
        let e = format!("{:#}", ModelRef::resolve(&root.join("half")).unwrap_err());
        assert!(e.contains("neither a finished sv72 checkpoint"), "{e}");
        std::fs::write(root.join("latest"), "half").unwrap();
        let e = format!("{:#}", ModelRef::resolve(&root.join("latest")).unwrap_err());
        assert!(e.contains("names half") && e.contains("neither"), "{e}");
        let e = format!(
            "{:#}",
            ModelRef::resolve(&root.join("nothing")).unwrap_err()
        );
        assert!(e.contains("no checkpoint or export at"), "{e}");
    }
}
