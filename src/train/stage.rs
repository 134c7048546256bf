//! `sv72 train-head` as a library call: the backbone features of a mix's train views and
//! validation challenges (through the feature cache, on `backbone.device`), then
//! [`run_training`] on them.

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

use super::data::{
    challenge_views, gather, load_challenge, load_training_view, rows_of, training_views, LEVELS,
};
use super::{
    run_training, BackboneInfo, FeatureSet, ManifestInfo, RunInputs, RunOptions, RunOutcome,
};
use crate::backend::{on_device, OnBackend};
use crate::config::Config;
use crate::data::manifest::{manifest_path, read_manifest, ManifestRow, Split};
use crate::features::featurizer::Featurizer;
use crate::model::load_backbone;
use crate::util::hash::file_hash;

/// The features a run trains and validates on, computed on the backend `on_device` picks.
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
        let model = load_backbone::<B>(&self.fz.snapshot, dev, self.fz.load)?;
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

/// Trains a head on the mix `manifest` (dataset name, folder or `.parquet`) with `cfg`; returns
/// the finished run and what it trained on.
pub fn train_head_on(cfg: &Config, manifest: &str) -> Result<(RunOutcome, ManifestInfo)> {
    let path = manifest_path(&cfg.paths.datasets, manifest);
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
        cfg,
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
        cfg,
        &inputs,
        RunOptions::from_config(cfg),
        &Default::default(),
    )?;
    Ok((out, inputs.manifest))
}
