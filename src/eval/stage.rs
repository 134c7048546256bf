//! `sv72 eval` as a library call: a checkpoint's answers on every challenge of a split (features
//! through the cache on `backbone.device`, the head on the CPU), reported by [`build_report`].
//! A model spec (test-time views, an ensemble) is run end to end on the challenge images
//! instead, as `serve` runs it.

use anyhow::{Context, Result};

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use image::RgbImage;

use super::challenges::{featurizer_for, made_challenges, ChallengeFeatures, LATENCY_SAMPLES};
use super::Latency;
use super::{build_report, write_report, EvalMeta, EvalPrediction, EvalReport};
use crate::backend::{on_device, Cpu};
use crate::config::Config;
use crate::data::manifest::{parse_on, ManifestRow, Split};
use crate::infer::{is_spec_file, model_loader, ModelRef, ModelSpec, Predictor};
use crate::train::data::{challenge_views, read_split, ViewKey, LEVELS};
use crate::train::Checkpoint;
use crate::util::hash::file_hash;

/// What to evaluate, on what (the flags of `sv72 eval`).
#[derive(Debug, Clone, Default)]
pub struct EvalRequest {
    /// Checkpoint folder, `latest` pointer or model spec (default: `<paths.checkpoints>/latest`).
    pub checkpoint: Option<PathBuf>,
    /// `MANIFEST[:split]` (default: the checkpoint's training manifest, test split).
    pub on: Option<String>,
    /// Report folder (default: the checkpoint folder).
    pub out: Option<PathBuf>,
}

/// Evaluates a checkpoint (or model spec) and writes its report; returns it with the files
/// written.
pub fn evaluate(cfg: &Config, req: &EvalRequest) -> Result<(EvalReport, Vec<PathBuf>)> {
    if let Some(spec) = req.checkpoint.as_deref().filter(|p| is_spec_file(p)) {
        return evaluate_spec(cfg, req, spec);
    }
    let dir = ModelRef::checkpoint(req.checkpoint.as_deref(), &cfg.paths.checkpoints)?;
    let cpu = Default::default();
    let ck = Checkpoint::<Cpu>::load(&dir, &cpu)?;
    let (name, split) = match &req.on {
        Some(on) => parse_on(on)?,
        None => (ck.info.manifest.path.clone(), Split::Test),
    };
    let (path, owned) = read_split(&cfg.paths.datasets, &name, split, "eval")?;
    let rows: Vec<&ManifestRow> = owned.iter().collect();
    let mut fz = featurizer_for(&ck, &cfg.paths.feature_cache)?;
    let draws = cfg.eval.draws_per_image.max(1);
    let views = challenge_views(rows.len(), &LEVELS, draws, cfg.eval.seed, &cfg.augment);
    eprintln!(
        "eval: {} challenges ({} {split} images x levels 0-3 x {draws} draw(s))",
        views.len(),
        rows.len()
    );
    let job = ChallengeFeatures {
        cfg,
        fz: &mut fz,
        rows: &rows,
        views: &views,
        seed: cfg.eval.seed,
        latency: Some(&ck),
    };
    let (set, kept, skipped, latency) = on_device(cfg.backbone.device, cfg.backbone.dtype, job)?;
    if skipped > 0 {
        eprintln!("eval: warning: {skipped} challenge(s) could not be made and were skipped");
    }
    let probs = ck.predict_proba(&set.x, &cpu)?;
    let preds: Vec<EvalPrediction> = kept
        .iter()
        .zip(probs)
        .map(|(v, prob)| {
            let r = rows[v.row];
            EvalPrediction {
                id: r.id.clone(),
                label: r.label,
                source: r.source,
                generator: r.generator.clone(),
                level: v.level,
                draw: v.draw,
                prob,
            }
        })
        .collect();
    let meta = EvalMeta {
        checkpoint: dir.display().to_string(),
        run_id: ck.info.run_id.clone(),
        manifest: path.display().to_string(),
        manifest_hash: file_hash(&path)?,
        split: split.to_string(),
        seed: cfg.eval.seed,
        draws_per_image: draws,
        level_probs: cfg.augment.level_probs,
        score_sequences: cfg.eval.score_sequences,
    };
    finish(
        &preds,
        meta,
        latency,
        req.out.clone().unwrap_or_else(|| dir.clone()),
    )
}

fn finish(
    preds: &[EvalPrediction],
    meta: EvalMeta,
    latency: Option<Latency>,
    out: PathBuf,
) -> Result<(EvalReport, Vec<PathBuf>)> {
    let report = build_report(preds, meta, latency)?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the report folder {}", out.display()))?;
    let files = write_report(&out, &report, preds)?;
    Ok((report, files))
}

/// A model spec on every challenge of the split, end to end (decoded challenge image → views →
/// model(s) → aggregate → calibration), as `serve` answers. `--on` defaults to the training
/// manifest of the spec's base checkpoint (of an ensemble's members, when they share one); the report goes beside the spec
/// (`<spec stem>-eval/`) unless `out` is given.
fn evaluate_spec(
    cfg: &Config,
    req: &EvalRequest,
    file: &Path,
) -> Result<(EvalReport, Vec<PathBuf>)> {
    let spec = ModelSpec::read(file)?;
    let (name, split) = match &req.on {
        Some(on) => parse_on(on)?,
        None => (spec_training_manifest(&spec, file)?, Split::Test),
    };
    let (path, owned) = read_split(&cfg.paths.datasets, &name, split, "eval")?;
    let rows: Vec<&ManifestRow> = owned.iter().collect();
    let draws = cfg.eval.draws_per_image.max(1);
    let views = challenge_views(rows.len(), &LEVELS, draws, cfg.eval.seed, &cfg.augment);
    eprintln!(
        "eval: {} challenges ({} {split} images x levels 0-3 x {draws} draw(s)), model spec {}",
        views.len(),
        rows.len(),
        file.display()
    );
    let loader = model_loader(cfg, cfg.backbone.device)?;
    let mut model = loader(file).with_context(|| format!("cannot load {}", file.display()))?;
    let mut preds = Vec::with_capacity(views.len());
    let mut latency = None;
    let device = cfg.backbone.device.to_string();
    let skipped = made_challenges(
        cfg,
        &rows,
        &views,
        cfg.eval.seed,
        "eval",
        |kept: &[&ViewKey], images: &[RgbImage]| {
            if latency.is_none() {
                latency = probe_latency(model.as_mut(), images, &device)?;
            }
            let probs = model.predict(images)?;
            if probs.len() != images.len() {
                bail!(
                    "{} answered {} times for {} images",
                    model.version(),
                    probs.len(),
                    images.len()
                );
            }
            for (v, p) in kept.iter().zip(probs) {
                let r = rows[v.row];
                preds.push(EvalPrediction {
                    id: r.id.clone(),
                    label: r.label,
                    source: r.source,
                    generator: r.generator.clone(),
                    level: v.level,
                    draw: v.draw,
                    prob: f64::from(p),
                });
            }
            Ok(())
        },
    )?;
    if skipped > 0 {
        eprintln!("eval: warning: {skipped} challenge(s) could not be made and were skipped");
    }
    if preds.is_empty() {
        bail!("eval: none of the {} challenges could be made", views.len());
    }
    let meta = EvalMeta {
        checkpoint: file.display().to_string(),
        run_id: model.version(),
        manifest: path.display().to_string(),
        manifest_hash: file_hash(&path)?,
        split: split.to_string(),
        seed: cfg.eval.seed,
        draws_per_image: draws,
        level_probs: cfg.augment.level_probs,
        score_sequences: cfg.eval.score_sequences,
    };
    let out = req.out.clone().unwrap_or_else(|| {
        let stem = file.file_stem().unwrap_or_default().to_string_lossy();
        file.with_file_name(format!("{stem}-eval"))
    });
    finish(&preds, meta, latency, out)
}

/// The training manifest of a spec's base checkpoint, or the one every member of an ensemble
/// was trained on (what `eval` defaults `--on` to).
fn spec_training_manifest(spec: &ModelSpec, file: &Path) -> Result<String> {
    let models = if spec.is_ensemble() {
        spec.member_paths(file)?
    } else {
        vec![spec.base(file)?]
    };
    let mut manifests = Vec::new();
    for m in &models {
        match ModelRef::resolve(m)? {
            ModelRef::Checkpoint(d) => {
                let ck = Checkpoint::<Cpu>::load(&d, &Default::default())?;
                manifests.push(ck.info.manifest.path.clone());
            }
            _ => bail!(
                "model spec {}: {} is not an sv72 checkpoint, so there is no training manifest \
                 to default to; pass --on MANIFEST[:split]",
                file.display(),
                m.display()
            ),
        }
    }
    manifests.sort();
    manifests.dedup();
    match manifests.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "model spec {}: its members were trained on different manifests ({}), so there is \
             no one to default to; pass --on MANIFEST[:split]",
            file.display(),
            manifests.join(", ")
        ),
    }
}

/// Batch-1 latency of `model` on challenge images (decoded; everything after decoding timed),
/// the first call a warm-up; small batches are cycled up to [`LATENCY_SAMPLES`] timings.
fn probe_latency(
    model: &mut dyn Predictor,
    images: &[RgbImage],
    device: &str,
) -> Result<Option<Latency>> {
    let mut ms = Vec::new();
    for (i, im) in images.iter().cycle().take(LATENCY_SAMPLES + 1).enumerate() {
        let t = Instant::now();
        model.predict(std::slice::from_ref(im))?;
        if i > 0 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(Latency::from_samples(device, ms))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_parses_split_suffix() {
        assert_eq!(
            parse_on("demo-mix:val").unwrap(),
            ("demo-mix".into(), Split::Val)
        );
        assert_eq!(
            parse_on("demo-mix").unwrap(),
            ("demo-mix".into(), Split::Test)
        );
        assert_eq!(
            parse_on("/a/b.parquet:test").unwrap(),
            ("/a/b.parquet".into(), Split::Test)
        );
        assert!(parse_on(":val").is_err());
    }
}
