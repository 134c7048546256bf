//! `sv72 eval` as a library call: a checkpoint's answers on every challenge of a split (features
//! through the cache on `backbone.device`, the head on the CPU), reported by [`build_report`].

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::challenges::{featurizer_for, ChallengeFeatures};
use super::{build_report, write_report, EvalMeta, EvalPrediction, EvalReport};
use crate::backend::{on_device, Cpu};
use crate::config::Config;
use crate::data::manifest::{parse_on, ManifestRow, Split};
use crate::infer::ModelRef;
use crate::train::data::{challenge_views, read_split, LEVELS};
use crate::train::Checkpoint;
use crate::util::hash::file_hash;

/// What to evaluate, on what (the flags of `sv72 eval`).
#[derive(Debug, Clone, Default)]
pub struct EvalRequest {
    /// Checkpoint folder or `latest` pointer (default: `<paths.checkpoints>/latest`).
    pub checkpoint: Option<PathBuf>,
    /// `MANIFEST[:split]` (default: the checkpoint's training manifest, test split).
    pub on: Option<String>,
    /// Report folder (default: the checkpoint folder).
    pub out: Option<PathBuf>,
}

/// Evaluates a checkpoint and writes its report; returns it with the files written.
pub fn evaluate(cfg: &Config, req: &EvalRequest) -> Result<(EvalReport, Vec<PathBuf>)> {
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
    let report = build_report(&preds, meta, latency)?;
    let out = req.out.clone().unwrap_or_else(|| dir.clone());
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the report folder {}", out.display()))?;
    let files = write_report(&out, &report, &preds)?;
    Ok((report, files))
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
