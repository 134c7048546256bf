//! `sv72 train-head`: trains a classification head on cached backbone features.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

use super::Ctx;
use crate::backend::{on_device, Device, OnBackend};
use crate::config::Config;
use crate::data::manifest::{manifest_path, read_manifest, ManifestRow, Split};
use crate::features::featurizer::Featurizer;
use crate::model::load_backbone;
use crate::train::data::{
    challenge_views, gather, load_challenge, load_training_view, rows_of, training_views, LEVELS,
};
use crate::train::{run_training, BackboneInfo, FeatureSet, ManifestInfo, RunInputs, RunOptions};
use crate::util::hash::file_hash;

/// Flags of `sv72 train-head`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The training mix: a dataset name under `paths.datasets`, its folder, or a `.parquet`
    /// manifest. Its `train` rows train the head, its `val` rows drive early stopping,
    /// calibration and the threshold.
    /// Required; optional for clap only so config errors are reported first.
    #[arg(long, value_name = "DATASET")]
    pub manifest: Option<String>,
    /// Backbone snapshot folder or HF name (default: `backbone.model`).
    #[arg(long, value_name = "MODEL")]
    pub backbone: Option<String>,
    /// Augmented training views per image (default: `train.views`).
    #[arg(long, value_name = "K")]
    pub views: Option<usize>,
    /// Training epochs (default: `train.epochs`).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// `cpu` or `cuda` for feature extraction (default: `backbone.device`).
    #[arg(long, value_enum)]
    pub device: Option<Device>,
    /// Checkpoints root (default: `paths.checkpoints`).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,
}

struct TrainFeatures<'a> {
    cfg: &'a Config,
    fz: &'a mut Featurizer,
    train: &'a [&'a ManifestRow],
    val: &'a [&'a ManifestRow],
}

/// Train and val feature sets, the backbone width, and skipped views.
type Sets = (FeatureSet, FeatureSet, usize, usize);

impl OnBackend for TrainFeatures<'_> {
    type Out = Sets;
    fn run<B: Backend>(self, dev: &B::Device, _name: &str) -> Result<Sets> {
        let cfg = self.cfg;
        let model = load_backbone::<B>(&self.fz.snapshot, dev)?;
        let root = &cfg.paths.datasets;
        let aug = &cfg.augment;
        let tviews = training_views(self.train.len(), cfg.train.views, aug.seed, aug);
        eprintln!(
            "train-head: {} training views ({} images x (clean + {} augmented))",
            tviews.len(),
            self.train.len(),
            cfg.train.views
        );
        let (train, _, skipped_t) = gather::<B, _, _>(
            model.as_ref(),
            dev,
            self.train,
            &tviews,
            |r, v| load_training_view(r, v, root, aug, aug.seed),
            &self.fz.preprocess,
            cfg.backbone.batch_size,
            &mut self.fz.cache,
        )?;
        let vviews = challenge_views(
            self.val.len(),
            &LEVELS,
            cfg.eval.draws_per_image.max(1),
            cfg.eval.seed,
            aug,
        );
        eprintln!(
            "train-head: {} validation challenges ({} images x levels 0-3 x {} draw(s))",
            vviews.len(),
            self.val.len(),
            cfg.eval.draws_per_image.max(1)
        );
        let (val, _, skipped_v) = gather::<B, _, _>(
            model.as_ref(),
            dev,
            self.val,
            &vviews,
            |r, v| load_challenge(r, v, root, aug, cfg.eval.seed),
            &self.fz.preprocess,
            cfg.backbone.batch_size,
            &mut self.fz.cache,
        )?;
        Ok((train, val, model.hidden_size(), skipped_t + skipped_v))
    }
}

/// Runs `sv72 train-head`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    if let Some(b) = args.backbone {
        cfg.backbone.model = b;
    }
    if let Some(v) = args.views {
        cfg.train.views = v;
    }
    if let Some(e) = args.epochs {
        if e == 0 {
            bail!("--epochs must be at least 1");
        }
        cfg.train.epochs = e;
    }
    if let Some(d) = args.device {
        cfg.backbone.device = d;
    }
    if let Some(c) = args.checkpoints {
        cfg.paths.checkpoints = c;
    }
    let Some(manifest) = args.manifest else {
        bail!("train-head needs --manifest DATASET (the mix built by `sv72 synth-mix`)");
    };
    let path = manifest_path(&cfg.paths.datasets, &manifest);
    let rows = read_manifest(&path).with_context(|| {
        format!(
            "cannot read the training manifest {} (build one with `sv72 synth-mix`)",
            path.display()
        )
    })?;
    let (train, val) = (rows_of(&rows, Split::Train), rows_of(&rows, Split::Val));
    if train.is_empty() || val.is_empty() {
        bail!(
            "{} has {} train and {} val rows; train-head needs both splits",
            path.display(),
            train.len(),
            val.len()
        );
    }
    let mut fz = Featurizer::open(
        &cfg.backbone,
        cfg.augment.target_size,
        &cfg.paths.feature_cache,
    )?;
    let job = TrainFeatures {
        cfg: &cfg,
        fz: &mut fz,
        train: &train,
        val: &val,
    };
    let (train_set, val_set, hidden, skipped) =
        on_device(cfg.backbone.device, cfg.backbone.dtype, job)?;
    if skipped > 0 {
        eprintln!("train-head: warning: {skipped} view(s) could not be loaded and were skipped");
    }
    let inputs = RunInputs {
        backbone: BackboneInfo {
            name: cfg.backbone.model.clone(),
            weights_hash: fz.backbone_key.clone(),
            hidden_size: hidden,
            preprocess: fz.preprocess.id(),
        },
        manifest: ManifestInfo {
            path: path.display().to_string(),
            hash: file_hash(&path)?,
            train_images: train.len(),
            val_images: val.len(),
            train_rows: train_set.len(),
            val_rows: val_set.len(),
        },
        train: train_set,
        val: val_set,
    };
    // The head is tiny next to the backbone: it trains on the CPU whatever --device says.
    let out = run_training::<Autodiff<crate::backend::Cpu>>(
        &cfg,
        &inputs,
        RunOptions::from_config(&cfg),
        &Default::default(),
    )?;
    let m = &out.info.metrics;
    println!("run {} -> {}", out.run_id, out.dir.display());
    println!(
        "  val MCC {:.4}  accuracy {:.4}  expected score {:.4}  (best epoch {} of {})",
        m.val.mcc, m.val.accuracy, m.val_expected_score.mean, m.best_epoch, m.epochs_run
    );
    println!(
        "  threshold {:.4}  temperature {:.4}  ({} train rows, {} val rows)",
        out.info.threshold,
        out.info.temperature,
        inputs.manifest.train_rows,
        inputs.manifest.val_rows
    );
    Ok(ExitCode::SUCCESS)
}
