//! `sv72 eval`: evaluates a checkpoint as validators score it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::Ctx;
use crate::backend::{on_device, Cpu, Device};
use crate::data::manifest::{parse_on, ManifestRow, Split};
use crate::eval::challenges::{featurizer_for, ChallengeFeatures};
use crate::eval::{build_report, summary_table, write_report, EvalMeta, EvalPrediction};
use crate::infer::ModelRef;
use crate::train::data::{challenge_views, read_split, LEVELS};
use crate::train::Checkpoint;
use crate::util::hash::file_hash;

/// Flags of `sv72 eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint folder or a `latest` file (default: `<paths.checkpoints>/latest`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// `MANIFEST[:split]`: dataset name, folder or `.parquet`, and split (default `test`).
    /// Default: the checkpoint's training manifest.
    #[arg(long, value_name = "MANIFEST[:SPLIT]")]
    pub on: Option<String>,
    /// Where to write report.json, report.md and plots (default: the checkpoint folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// `cpu` or `cuda` for feature extraction (default: `backbone.device`).
    #[arg(long, value_enum)]
    pub device: Option<Device>,
}

/// Runs `sv72 eval`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    if let Some(d) = args.device {
        cfg.backbone.device = d;
    }
    let dir = ModelRef::checkpoint(args.checkpoint.as_deref(), &cfg.paths.checkpoints)?;
    let cpu = Default::default();
    let ck = Checkpoint::<Cpu>::load(&dir, &cpu)?;
    let (name, split) = match &args.on {
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
        cfg: &cfg,
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
    let out = args.out.unwrap_or_else(|| dir.clone());
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the report folder {}", out.display()))?;
    let files = write_report(&out, &report, &preds)?;
    print!("{}", summary_table(&report));
    println!("report: {}", files[0].display());
    Ok(ExitCode::SUCCESS)
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
