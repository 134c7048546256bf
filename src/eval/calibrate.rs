//! `sv72 calibrate SPEC --on MANIFEST:val`: the temperature and threshold of a model spec fitted
//! with its own test-time views, on validator challenges of a validation split, and written back
//! into the spec. Aggregating views changes how confident the answers are (a mean logit over
//! agreeing views is sharper; a mean probability is softer), so the calibration fitted for one
//! view no longer holds. For an ensemble spec the stacking weights are fitted first, on the
//! members' answers to the same challenges.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::challenges::made_challenges;
use crate::config::Config;
use crate::data::manifest::{parse_on, ManifestRow, SourceKind};
use crate::infer::{
    fit_stacking, model_loader, Calibration, EnsemblePredictor, ModelRef, ModelSpec, Predictor,
    Stacking, ViewPredictor,
};
use crate::metrics::{choose_threshold, fit_temperature, sigmoid, ScoreItem};
use crate::train::data::{challenge_views, read_split, LEVELS};

/// What was fitted.
#[derive(Debug, Clone)]
pub struct CalibrateOutcome {
    pub spec: PathBuf,
    pub calibration: Calibration,
    /// Challenges the fit used.
    pub challenges: usize,
    pub skipped: usize,
}

/// Aggregate logits before calibration, with labels and score items' metadata.
struct Fitted {
    z: Vec<f64>,
    labels: Vec<u8>,
    synthetic: Vec<bool>,
    levels: Vec<u8>,
}

/// Fits the calibration of the spec at `spec_path` on `on` (`MANIFEST[:split]`, default split
/// `val`) and rewrites the spec with it.
pub fn calibrate_spec(cfg: &Config, spec_path: &Path, on: &str) -> Result<CalibrateOutcome> {
    if !matches!(ModelRef::resolve(spec_path)?, ModelRef::Spec(_)) {
        bail!(
            "{} is not a model spec (.yaml): calibrate fits the views of a spec",
            spec_path.display()
        );
    }
    let mut spec = ModelSpec::read(spec_path)?;
    let on_val = if on.contains(':') {
        on.to_string()
    } else {
        format!("{on}:val")
    };
    let (name, split) = parse_on(&on_val)?;
    let (manifest, rows) = read_split(&cfg.paths.datasets, &name, split, "calibrate")?;
    let rows: Vec<&ManifestRow> = rows.iter().collect();
    let loader = model_loader(cfg, cfg.backbone.device)?;
    let draws = cfg.ab_test.draws_per_image.max(1);
    // A seed of its own: the fit never sees the exact challenges an ab-test later draws.
    let seed = cfg.ab_test.seed ^ 0xca11_b8a7e;
    let keys = challenge_views(rows.len(), &LEVELS, draws, seed, &cfg.augment);
    let base: Box<dyn Predictor> = if spec.is_ensemble() {
        let mut members = Vec::new();
        for (i, p) in spec.member_paths(spec_path)?.iter().enumerate() {
            members
                .push(loader(p).with_context(|| {
                    format!("model spec {}: members[{i}]", spec_path.display())
                })?);
        }
        let n = members.len();
        let mut ens = EnsemblePredictor::new(members, Stacking::equal(n))?;
        // Pass 1: the stacking weights on the members' own answers.
        let (mut probs, mut labels) = (Vec::new(), Vec::new());
        made_challenges(
            cfg,
            &rows,
            &keys,
            seed,
            "calibrate: stacking",
            |kept, images| {
                let per = ens.member_probs(images)?;
                for (j, v) in kept.iter().enumerate() {
                    probs.push(per.iter().map(|m| m[j]).collect::<Vec<f64>>());
                    labels.push(rows[v.row].label);
                }
                Ok(())
            },
        )?;
        let stacking = fit_stacking(&probs, &labels)?;
        ens.set_stacking(stacking.clone())?;
        spec.stacking = Some(stacking);
        Box::new(ens)
    } else {
        loader(&spec.base(spec_path)?)
            .with_context(|| format!("model spec {}", spec_path.display()))?
    };
    let mut views = spec.view_spec();
    views.calibration = Calibration::default();
    let mut vp = ViewPredictor::new(base, views)?;
    let mut fit = Fitted {
        z: Vec::new(),
        labels: Vec::new(),
        synthetic: Vec::new(),
        levels: Vec::new(),
    };
    let skipped = made_challenges(cfg, &rows, &keys, seed, "calibrate", |kept, images| {
        let z = vp.aggregate_logits(images)?;
        for (v, z) in kept.iter().zip(z) {
            let r = rows[v.row];
            fit.z.push(z);
            fit.labels.push(r.label);
            fit.synthetic.push(r.source == SourceKind::Synthetic);
            fit.levels.push(v.level);
        }
        Ok(())
    })?;
    if fit.z.is_empty() {
        bail!(
            "calibrate: none of the {} challenges of {} could be made",
            keys.len(),
            manifest.display()
        );
    }
    let calibration = fit_calibration(&fit, cfg)?;
    spec.calibration = calibration;
    spec.calibrated_on = Some(format!(
        "{} ({split}, {} challenges, seed {seed})",
        manifest.display(),
        fit.z.len()
    ));
    spec.write(spec_path)?;
    Ok(CalibrateOutcome {
        spec: spec_path.to_path_buf(),
        calibration,
        challenges: fit.z.len(),
        skipped,
    })
}

/// Temperature by NLL on the aggregate logits, then the threshold on the tempered
/// probabilities that maximises the expected subnet score (as `train-head` does for one view).
fn fit_calibration(f: &Fitted, cfg: &Config) -> Result<Calibration> {
    let temperature = fit_temperature(&f.z, &f.labels);
    let items: Vec<ScoreItem> = (0..f.z.len())
        .map(|i| ScoreItem {
            label: f.labels[i],
            synthetic: f.synthetic[i],
            level: f.levels[i],
            prob: sigmoid(f.z[i] / temperature),
        })
        .collect();
    let two_classes = f.labels.iter().any(|&y| y != f.labels[0]);
    let threshold = if two_classes {
        let (t, _) = choose_threshold(
            &items,
            cfg.augment.level_probs,
            cfg.eval.score_sequences.max(1),
            cfg.ab_test.seed,
        )?;
        t.clamp(1e-4, 1.0 - 1e-4)
    } else {
        0.5
    };
    let c = Calibration {
        temperature,
        threshold,
    };
    c.validate()?;
    Ok(c)
}
