//! A trained checkpoint (head + calibration) served on its frozen backbone, with the exact
//! preprocessing its features were computed with.
//!
//! A checkpoint only stores the head; `run.yaml` names the backbone (HF name or folder, weights
//! hash, preprocessing id). Loading re-derives the preprocessing from the run's own config and
//! refuses to serve when any of it disagrees with what training recorded: a head fed features
//! from other weights or another resize answers confidently and wrongly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use image::RgbImage;

use super::backbone::{head_features, Backbone};
use super::load::LoadOptions;
use super::model_ref::ModelRef;
use super::predictor::{answers, scorable, Predictor};
use crate::model::preprocess::Preprocess;
use crate::model::FeatureExtractor;
use crate::train::checkpoint::{checkpoint_snapshot, training_preprocess, Checkpoint, HEAD_FILE};

/// A checkpoint served as a [`Predictor`]: preprocessing → backbone → `[CLS ; patch mean]` →
/// head → calibrated probability, batched.
pub struct CheckpointPredictor<B: Backend> {
    backbone: Backbone<B>,
    checkpoint: Checkpoint<B>,
    preprocess: Preprocess,
    device: B::Device,
    max_batch: usize,
    version: String,
    snapshot: PathBuf,
}

impl<B: Backend> CheckpointPredictor<B> {
    /// Loads what `path` names (a run folder, a `latest` pointer file, or an export folder with
    /// `head.safetensors` and `run.yaml`) with its backbone on `device`.
    pub fn load(path: &Path, device: &B::Device, opts: &LoadOptions) -> Result<Self> {
        let dir = ModelRef::checkpoint(Some(path), Path::new("."))?;
        let checkpoint = Checkpoint::<B>::load(&dir, device)?;
        let info = &checkpoint.info;
        let snapshot = checkpoint_snapshot(&dir, info)?;
        let preprocess = training_preprocess(&checkpoint, &snapshot)?;
        if opts.verify_weights && info.backbone.weights_hash.starts_with("bb-") {
            let key = crate::features::backbone_key(&snapshot, &opts.feature_cache)?;
            if key != info.backbone.weights_hash {
                bail!(
                    "{}: backbone {} has weights {key}, but the head was trained on {}; \
                     fetch the backbone revision the run used",
                    dir.display(),
                    snapshot.display(),
                    info.backbone.weights_hash
                );
            }
        }
        let weights = crate::train::checkpoint::backbone_weights(&dir, info, &snapshot)?;
        let backbone = Backbone::<B>::from_weights(
            &snapshot,
            &weights,
            device,
            crate::model::LoadOptions::INFERENCE,
        )?;
        drop(weights);
        let d = backbone.hidden_size();
        if d != info.backbone.hidden_size || checkpoint.head.input_dim() != 2 * d {
            bail!(
                "{}: head input width {} (run.yaml hidden size {}) does not fit backbone {} \
                 (hidden size {d}, needs {} = [CLS ; patch mean])",
                dir.display(),
                checkpoint.head.input_dim(),
                info.backbone.hidden_size,
                snapshot.display(),
                2 * d
            );
        }
        let head_hash = crate::util::hash::file_hash(&dir.join(HEAD_FILE))?;
        let version = format!("{}-{}", info.run_id, &head_hash[..8.min(head_hash.len())]);
        Ok(Self {
            backbone,
            preprocess,
            device: device.clone(),
            max_batch: opts.max_batch.max(1),
            version,
            snapshot,
            checkpoint,
        })
    }

    /// The loaded checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint<B> {
        &self.checkpoint
    }

    /// The preprocessing applied to every request image.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The backbone snapshot folder in use.
    pub fn snapshot(&self) -> &Path {
        &self.snapshot
    }

    /// Head inputs `[CLS ; patch mean]` of `images`, row-major `[n, 2·hidden]`.
    pub fn features(&self, images: &[RgbImage]) -> Result<Vec<f32>> {
        head_features(
            &self.backbone,
            &self.preprocess,
            &self.device,
            self.max_batch,
            images,
        )
    }
}

impl<B: Backend> Predictor for CheckpointPredictor<B>
where
    CheckpointPredictor<B>: Send,
{
    fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
        if !scorable(images)? {
            return Ok(Vec::new());
        }
        let features = self.features(images)?;
        let probs = self.checkpoint.predict_proba(&features, &self.device)?;
        answers(probs, &self.version)
    }

    fn version(&self) -> String {
        self.version.clone()
    }
}
