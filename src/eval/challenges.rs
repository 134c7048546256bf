//! Backbone features of validator challenges for a trained checkpoint: what `eval` and `ab-test`
//! score, through the feature cache, plus the batch-1 latency probe.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use image::RgbImage;
use rayon::prelude::*;

use super::Latency;
use crate::backend::{Cpu, OnBackend};
use crate::config::Config;
use crate::data::manifest::ManifestRow;
use crate::features::embed::extract_rows;
use crate::features::featurizer::Featurizer;
use crate::train::data::{gather, head_input, load_challenge, open_image, ViewKey};
use crate::train::{Checkpoint, FeatureSet};

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
        let model = self.fz.load_backbone::<B>(dev)?;
        let root = &cfg.paths.datasets;
        let (set, kept, skipped) = gather::<B, _, _>(
            &model,
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
            let f = extract_rows::<B, _>(&model, dev, px, 1, h as usize, w as usize)?;
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
    match crate::train::checkpoint::finetune_overlay(&ck.dir, &ck.info)? {
        None => Ok(fz),
        Some(o) => fz.with_finetuned(o, &ck.info.features_key(), cache_root),
    }
}

/// Makes the challenges `keys` of `rows` with `seed`, chunk by chunk (a backbone batch each,
/// made in parallel), and hands the made images to `f` with their keys; returns how many could
/// not be made (those are skipped).
pub fn made_challenges(
    cfg: &Config,
    rows: &[&ManifestRow],
    keys: &[ViewKey],
    seed: u64,
    label: &str,
    mut f: impl FnMut(&[&ViewKey], &[RgbImage]) -> Result<()>,
) -> Result<usize> {
    let bar = crate::util::progress::bar(keys.len() as u64, label);
    let mut skipped = 0;
    for chunk in keys.chunks(cfg.backbone.batch_size.max(1)) {
        let made: Vec<Option<RgbImage>> = chunk
            .par_iter()
            .map(|v| {
                load_challenge(rows[v.row], v, &cfg.paths.datasets, &cfg.augment, seed)
                    .ok()
                    .map(|im| im.to_rgb8())
            })
            .collect();
        let (kept, images): (Vec<&ViewKey>, Vec<RgbImage>) = chunk
            .iter()
            .zip(made)
            .filter_map(|(v, im)| im.map(|im| (v, im)))
            .unzip();
        skipped += chunk.len() - kept.len();
        if !images.is_empty() {
            f(&kept, &images)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(skipped)
}
