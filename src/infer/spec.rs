//! Model specs: a YAML file that names a base model (checkpoint, export, or a pointer to one)
//! and how to answer with it — test-time views, their aggregation and the calibration fitted
//! with them (`sv72 calibrate`). Anything that takes a model reference takes a spec.
//!
//! ```yaml
//! model: ../checkpoints/latest        # relative to this file
//! views: [identity, hflip, {centre: 0.8}, {corners: 0.8}, {grid: 3}]
//! aggregate: {top_k: 3}               # or mean_logit (default), mean_prob
//! calibration: {temperature: 1.0, threshold: 0.5}
//! ```
//!
//! An ensemble names `members` instead of `model` (checkpoints or exports, any backbones); their
//! answers are stacked (`stacking: {weights, bias}`, fitted by `sv72 calibrate` on validation)
//! and the views, if any, apply to the stacked model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::ensemble::Stacking;
use super::model_ref::{is_spec_file, ModelRef};
use super::views::{Aggregate, Calibration, View, ViewSpec};
use crate::util::fsx;

/// What a spec file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The base model, relative to the spec file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Ensemble members instead of one model (relative to the spec file's folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<PathBuf>,
    /// Stacking of the members (equal weights until `sv72 calibrate` fits them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacking: Option<Stacking>,
    /// Test-time views (default: the image as sent).
    #[serde(
        default = "identity_only",
        with = "serde_yaml::with::singleton_map_recursive"
    )]
    pub views: Vec<View>,
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub aggregate: Aggregate,
    #[serde(default)]
    pub calibration: Calibration,
    /// Where the calibration came from (written by `sv72 calibrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_on: Option<String>,
    /// The VLM judge's blend weight fitted with this calibration (`sv72 calibrate --judge`);
    /// `serve` prefers it over `judge.weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeFit>,
}

/// A judge blend weight fitted on validation challenges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeFit {
    /// `w` in `(1 - w) * base + w * judge`.
    pub weight: f64,
    /// The judge model and band it was fitted with, and on how many answered challenges.
    pub model: String,
    pub band: [f64; 2],
    pub judged: usize,
}

/// The judge fit stored in the spec at `path`, or `None` when `path` is not a spec or its spec
/// has none. A spec that cannot be read, or a weight outside `[0, 1]`, is an error (serve would
/// refuse it anyway).
pub fn fitted_judge(path: &Path) -> Result<Option<JudgeFit>> {
    if !is_spec_file(path) {
        return Ok(None);
    }
    let spec = ModelSpec::read(path)?;
    match spec.judge {
        Some(j) if !(0.0..=1.0).contains(&j.weight) => bail!(
            "model spec {}: judge.weight = {} must be within [0, 1]",
            path.display(),
            j.weight
        ),
        j => Ok(j),
    }
}

fn identity_only() -> Vec<View> {
    vec![View::Identity]
}

impl ModelSpec {
    /// Reads and checks a spec; errors name the file and the field.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model spec {}", path.display()))?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let spec: ModelSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow::anyhow!(
                "model spec {}: {} (see `infer::spec` for the format)",
                path.display(),
                e
            )
        })?;
        spec.view_spec()
            .validate()
            .with_context(|| format!("model spec {}", path.display()))?;
        match (&spec.model, spec.members.len()) {
            (Some(_), 0) => {}
            (None, 0) => bail!(
                "model spec {}: give `model` (one model) or `members` (an ensemble)",
                path.display()
            ),
            (Some(_), _) => bail!(
                "model spec {}: `model` and `members` both given; use one",
                path.display()
            ),
            (None, n) => {
                if let Some(s) = &spec.stacking {
                    if s.weights.len() != n {
                        bail!(
                            "model spec {}: stacking.weights has {} entries for {n} members",
                            path.display(),
                            s.weights.len()
                        );
                    }
                }
            }
        }
        Ok(spec)
    }

    /// Writes the spec atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_yaml::to_string(self)?;
        fsx::write_atomic(path, text.as_bytes())
    }

    /// The views part.
    pub fn view_spec(&self) -> ViewSpec {
        ViewSpec {
            views: self.views.clone(),
            aggregate: self.aggregate,
            calibration: self.calibration,
        }
    }

    /// Whether this spec is an ensemble.
    pub fn is_ensemble(&self) -> bool {
        !self.members.is_empty()
    }

    /// The base model's path (`model`), resolved against the spec's folder.
    pub fn base(&self, spec_path: &Path) -> Result<PathBuf> {
        match &self.model {
            Some(m) => resolve_member(spec_path, m, "model"),
            None => bail!(
                "model spec {} is an ensemble (`members`), not one model",
                spec_path.display()
            ),
        }
    }

    /// The members' paths, resolved against the spec's folder.
    pub fn member_paths(&self, spec_path: &Path) -> Result<Vec<PathBuf>> {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| resolve_member(spec_path, m, &format!("members[{i}]")))
            .collect()
    }
}

/// `rel` against the spec's folder; a spec naming another spec is refused (one level keeps
/// versions and loading simple).
fn resolve_member(spec_path: &Path, rel: &Path, field: &str) -> Result<PathBuf> {
    let p = if rel.is_absolute() {
        rel.to_path_buf()
    } else {
        spec_path.parent().unwrap_or(Path::new(".")).join(rel)
    };
    if is_spec_file(&p) {
        bail!(
            "model spec {}: `{field}: {}` names another spec; name a checkpoint or export",
            spec_path.display(),
            rel.display()
        );
    }
    match ModelRef::resolve(&p)
        .with_context(|| format!("model spec {}: `{field}`", spec_path.display()))?
    {
        ModelRef::Spec(_) => unreachable!("spec files are refused above"),
        r => Ok(r.dir().to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_reads_resolves_and_round_trips() {
        let t = tempfile::tempdir().unwrap();
        let ck = t.path().join("checkpoints/run-1");
        std::fs::create_dir_all(&ck).unwrap();
        std::fs::write(ck.join(crate::train::checkpoint::HEAD_FILE), b"h").unwrap();
        std::fs::write(t.path().join("checkpoints/latest"), "run-1").unwrap();
        let p = t.path().join("tta.yaml");
        std::fs::write(
            &p,
            "model: checkpoints/latest\nviews: [identity, hflip, {centre: 0.8}, {grid: 3}]\n\
             aggregate: {top_k: 3}\n",
        )
        .unwrap();
        assert_eq!(ModelRef::resolve(&p).unwrap(), ModelRef::Spec(p.clone()));
        let s = ModelSpec::read(&p).unwrap();
        assert_eq!(s.aggregate, Aggregate::TopK(3));
        assert_eq!(s.view_spec().per_image(), 12);
        assert_eq!(s.calibration, Calibration::default());
        assert_eq!(s.base(&p).unwrap(), ck);
        let mut s2 = s.clone();
        s2.calibration.temperature = 1.5;
        s2.write(&p).unwrap();
        assert_eq!(ModelSpec::read(&p).unwrap(), s2);
    }

    #[test]
    fn bad_specs_name_the_file_and_field() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s.yaml");
        for (text, want) in [
            ("views: [identity]\n", "`model` (one model) or `members`"),
            ("model: x\nmembers: [y]\n", "both given"),
            ("members: [a, b]\nstacking: {weights: [1]}\n", "2 members"),
            ("model: x\nviews: [sideways]\n", "views"),
            ("model: x\nviews: [{centre: 2.0}]\n", "crop scale"),
            (
                "model: x\ncalibration: {temperature: -1, threshold: 0.5}\n",
                "temperature",
            ),
            ("model: x\nextra: 1\n", "extra"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = format!("{:#}", ModelSpec::read(&p).unwrap_err());
            assert!(e.contains("s.yaml") && e.contains(want), "{text:?}: {e}");
        }
        std::fs::write(&p, "model: other.yaml\n").unwrap();
        let e = format!("{:#}", ModelSpec::read(&p).unwrap().base(&p).unwrap_err());
        assert!(e.contains("another spec"), "{e}");
        std::fs::write(&p, "model: missing\n").unwrap();
        let e = format!("{:#}", ModelSpec::read(&p).unwrap().base(&p).unwrap_err());
        assert!(e.contains("`model`") && e.contains("missing"), "{e}");
    }
}
