//! `sv72 calibrate SPEC --on MANIFEST:val`: the temperature and threshold of a model spec fitted
//! with its own test-time views, on validator challenges of a validation split, and written back
//! into the spec. Aggregating views changes how confident the answers are (a mean logit over
//! agreeing views is sharper; a mean probability is softer), so the calibration fitted for one
//! view no longer holds. For an ensemble spec the stacking weights are fitted first, on the
//! members' answers to the same challenges.
//!
//! With `--judge`, the configured VLM judge is then asked about the challenges whose calibrated
//! answer falls in `judge.band` (at most `max_cases`, spread over the split, through the serving
//! machinery: per-call timeout, concurrency cap, breaker, cache), and its blend weight is fitted
//! on (answer, judge, label) and stored in the spec. Without it, a weight fitted before is dropped:
//! it belonged to the old calibration's answers.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::challenges::made_challenges;
use crate::config::Config;
use crate::data::manifest::{parse_on, ManifestRow, SourceKind};
use crate::infer::{
    ensemble_on_device, fit_stacking, model_loader, Calibration, JudgeFit, ModelRef, ModelSpec,
    Predictor, Stacking, ViewPredictor,
};
use crate::judge::{FitCase, Judge, WeightFit};
use crate::metrics::{choose_threshold, fit_temperature, sigmoid, ScoreItem};
use crate::train::data::{challenge_views, read_split, ViewKey, LEVELS};

/// What was fitted.
#[derive(Debug, Clone)]
pub struct CalibrateOutcome {
    pub spec: PathBuf,
    pub calibration: Calibration,
    /// Challenges the fit used.
    pub challenges: usize,
    pub skipped: usize,
    /// The judge's weight, with `--judge`: the fit and the in-band challenges there were.
    pub judge: Option<(WeightFit, usize)>,
    /// A judge weight fitted before was dropped (calibrated without `--judge`).
    pub dropped_judge: bool,
}

/// `--judge`: fit the judge's blend weight too, asking about at most `max_cases` challenges.
#[derive(Debug, Clone, Copy)]
pub struct JudgeFitRequest {
    pub max_cases: usize,
}

/// Aggregate logits before calibration, with labels and score items' metadata.
struct Fitted {
    z: Vec<f64>,
    labels: Vec<u8>,
    synthetic: Vec<bool>,
    levels: Vec<u8>,
    keys: Vec<ViewKey>,
}

/// Fits the calibration of the spec at `spec_path` on `on` (`MANIFEST[:split]`, default split
/// `val`) and rewrites the spec with it.
pub fn calibrate_spec(
    cfg: &Config,
    spec_path: &Path,
    on: &str,
    judge_req: Option<JudgeFitRequest>,
) -> Result<CalibrateOutcome> {
    if !matches!(ModelRef::resolve(spec_path)?, ModelRef::Spec(_)) {
        bail!(
            "{} is not a model spec (.yaml): calibrate fits the views of a spec",
            spec_path.display()
        );
    }
    // Checked before any forward: a misconfigured judge should not cost a calibration run.
    let judge = match judge_req {
        None => None,
        Some(r) => {
            if r.max_cases == 0 {
                bail!("--judge-max-cases must be at least 1");
            }
            match Judge::from_config(&cfg.judge)? {
                Some(j) => Some((j, r)),
                None => bail!(
                    "--judge: judge.endpoint is empty; set it in the config (or --set \
                     judge.endpoint=http://HOST:PORT/v1) to an OpenAI-compatible VLM server"
                ),
            }
        }
    };
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
        // Members on one backbone share its forward, as when served.
        let mut ens = ensemble_on_device(cfg, cfg.backbone.device, spec_path, &spec)?;
        ens.set_stacking(Stacking::equal(spec.members.len()))?;
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
        keys: Vec::new(),
    };
    let skipped = made_challenges(cfg, &rows, &keys, seed, "calibrate", |kept, images| {
        let z = vp.aggregate_logits(images)?;
        for (v, z) in kept.iter().zip(z) {
            let r = rows[v.row];
            fit.z.push(z);
            fit.labels.push(r.label);
            fit.synthetic.push(r.source == SourceKind::Synthetic);
            fit.levels.push(v.level);
            fit.keys.push((*v).clone());
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
    let dropped_judge = judge.is_none() && spec.judge.take().is_some();
    let judged = match &judge {
        None => None,
        Some((j, r)) => {
            let base: Vec<f64> = fit.z.iter().map(|&z| calibration.apply(z)).collect();
            let (cases, in_band) = judge_cases(cfg, &rows, &fit, &base, j, r.max_cases, seed)?;
            let wf = j.fit_weight_by_asking(&cases)?;
            spec.judge = Some(JudgeFit {
                weight: wf.weight,
                model: j.describe().0,
                band: j.band(),
                judged: wf.judged,
            });
            Some((wf, in_band))
        }
    };
    spec.write(spec_path)?;
    Ok(CalibrateOutcome {
        spec: spec_path.to_path_buf(),
        calibration,
        challenges: fit.z.len(),
        skipped,
        judge: judged,
        dropped_judge,
    })
}

/// The challenges to ask the judge about: those whose calibrated answer `base` is in the
/// judge's band, at most `max` spread evenly over them, made again (deterministic in the seed)
/// and JPEG-encoded as a validator sends them. Also returns how many were in the band.
fn judge_cases(
    cfg: &Config,
    rows: &[&ManifestRow],
    fit: &Fitted,
    base: &[f64],
    judge: &Judge,
    max: usize,
    seed: u64,
) -> Result<(Vec<FitCase>, usize)> {
    let in_band: Vec<usize> = (0..base.len())
        .filter(|&i| judge.wants(base[i] as f32))
        .collect();
    if in_band.is_empty() {
        bail!(
            "calibrate --judge: no validation answer falls in judge.band {:?}; nothing to fit \
             the judge's weight on",
            judge.band()
        );
    }
    let take = max.min(in_band.len());
    let picked: Vec<usize> = (0..take)
        .map(|k| in_band[k * in_band.len() / take])
        .collect();
    let keys: Vec<ViewKey> = picked.iter().map(|&i| fit.keys[i].clone()).collect();
    let mut cases = Vec::new();
    let mut next = 0;
    made_challenges(
        cfg,
        rows,
        &keys,
        seed,
        "calibrate: judge",
        |kept, images| {
            for (v, im) in kept.iter().zip(images) {
                // `kept` follows `keys` in order, skipping any that could not be made again.
                while next < keys.len() && &keys[next] != *v {
                    next += 1;
                }
                let Some(&i) = picked.get(next) else {
                    bail!("calibrate --judge: a remade challenge is not among those picked");
                };
                next += 1;
                let mut image = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut image, 90)
                    .encode_image(im)
                    .context("calibrate --judge: encoding a challenge as JPEG")?;
                cases.push(FitCase {
                    hash: crate::util::hash::content_hash(&image),
                    image,
                    base: base[i],
                    label: fit.labels[i],
                });
            }
            Ok(())
        },
    )?;
    Ok((cases, in_band.len()))
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
