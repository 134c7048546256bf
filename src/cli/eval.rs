//! `sv72 eval`: evaluates a checkpoint as validators score it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;

use super::train_head::{load_challenge, on_device, open_image, Featurizer, OnBackend, LEVELS};
use super::Ctx;
use crate::backend::Cpu;
use crate::config::Config;
use crate::data::manifest::{ManifestRow, Split};
use crate::eval::{build_report, summary_table, write_report, EvalMeta, EvalPrediction, Latency};
use crate::features::embed::extract_rows;
use crate::model::load_backbone;
use crate::train::data::{challenge_views, gather, head_input, read_split, ViewKey};
use crate::train::{resolve_checkpoint, Checkpoint, FeatureSet};
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
    #[arg(long)]
    pub device: Option<String>,
}

/// Splits `MANIFEST[:split]`; a trailing `:train|val|test` is the split.
pub fn parse_on(on: &str) -> Result<(String, Split)> {
    if let Some((m, s)) = on.rsplit_once(':') {
        if let Ok(split) = s.parse::<Split>() {
            if m.is_empty() {
                bail!("--on {on:?}: the manifest part is empty");
            }
            return Ok((m.to_string(), split));
        }
    }
    Ok((on.to_string(), Split::Test))
}

/// Images timed one at a time (backbone + head) for the latency line.
pub const LATENCY_SAMPLES: usize = 16;

/// Backbone features of validator challenges (the job `eval` and `ab-test` share): `views` of
/// `rows` made by [`load_challenge`] with `seed`, through the feature cache. With `latency`
/// set, also times batch-1 serving of that checkpoint.
pub struct ChallengeFeatures<'a> {
    pub cfg: &'a Config,
    pub fz: &'a mut Featurizer,
    pub rows: &'a [&'a ManifestRow],
    pub views: &'a [ViewKey],
    pub seed: u64,
    pub latency: Option<&'a Checkpoint<Cpu>>,
}

/// Challenge features, the views they belong to, skipped views and batch-1 latency.
pub type ChallengeFeaturesOut = (FeatureSet, Vec<ViewKey>, usize, Option<Latency>);

impl OnBackend for ChallengeFeatures<'_> {
    type Out = ChallengeFeaturesOut;
    fn run<B: Backend>(self, dev: &B::Device, name: &str) -> Result<ChallengeFeaturesOut> {
        let cfg = self.cfg;
        let model = load_backbone::<B>(&self.fz.snapshot, dev)?;
        let root = &cfg.paths.datasets;
        let (set, kept, skipped) = gather::<B, _, _>(
            model.as_ref(),
            dev,
            self.rows,
            self.views,
            |r, v| load_challenge(r, v, root, &cfg.augment, self.seed),
            &self.fz.preprocess,
            cfg.backbone.batch_size,
            &mut self.fz.cache,
        )?;
        let Some(ck) = self.latency else {
            return Ok((set, kept, skipped, None));
        };
        // Batch-1 latency as the miner serves: preprocess + backbone + head on a decoded image
        // (decoding excluded). The first image warms up and is not counted.
        let cpu = Default::default();
        let mut ms = Vec::new();
        // Small splits are cycled so the percentiles always rest on LATENCY_SAMPLES timings.
        for (i, row) in self
            .rows
            .iter()
            .cycle()
            .take(LATENCY_SAMPLES + 1)
            .enumerate()
        {
            let Ok(img) = open_image(row, root) else {
                continue;
            };
            let t = Instant::now();
            let px = self.fz.preprocess.pixel_values(&img)?;
            let (h, w) = self.fz.preprocess.output_size(img.width(), img.height());
            let f = extract_rows::<B, _>(model.as_ref(), dev, px, 1, h as usize, w as usize)?;
            let x = f.first().map(head_input).unwrap_or_default();
            let p = ck.predict_proba(&x, &cpu)?;
            let elapsed = t.elapsed().as_secs_f64() * 1e3;
            if i > 0 {
                ms.push(elapsed);
            }
            if p.len() != 1 {
                bail!(
                    "latency probe: the head returned {} answers for one image",
                    p.len()
                );
            }
        }
        Ok((set, kept, skipped, Latency::from_samples(name, ms)))
    }
}

/// The featurizer a checkpoint's head needs: the backbone and preprocessing it was trained on,
/// checked against `run.yaml` (weights hash, preprocessing id).
pub fn featurizer_for(ck: &Checkpoint<Cpu>, cache_root: &Path) -> Result<Featurizer> {
    let mut trained = ck.info.config.backbone.clone();
    trained.model = ck.info.backbone.name.clone();
    let fz = Featurizer::open(&trained, ck.info.config.augment.target_size, cache_root)
        .with_context(|| {
            format!(
                "cannot load the backbone {:?} that checkpoint {} was trained on",
                ck.info.backbone.name,
                ck.dir.display()
            )
        })?;
    if fz.backbone_key != ck.info.backbone.weights_hash {
        bail!(
            "backbone {:?} now resolves to weights {} but checkpoint {} was trained on {}; \
             fetch the original weights or retrain",
            ck.info.backbone.name,
            fz.backbone_key,
            ck.dir.display(),
            ck.info.backbone.weights_hash
        );
    }
    if fz.preprocess.id() != ck.info.backbone.preprocess {
        bail!(
            "preprocessing {} differs from the checkpoint's {} ({})",
            fz.preprocess.id(),
            ck.info.backbone.preprocess,
            ck.dir.display()
        );
    }
    Ok(fz)
}

/// Runs `sv72 eval`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    if let Some(d) = args.device {
        cfg.backbone.device = d;
    }
    let dir = resolve_checkpoint(args.checkpoint.as_deref(), &cfg.paths.checkpoints)?;
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
    let (set, kept, skipped, latency) = on_device(&cfg.backbone.device, &cfg.backbone.dtype, job)?;
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
