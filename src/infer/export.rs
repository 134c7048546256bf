//! An export folder (`sv72 export`) served as a [`Predictor`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use image::RgbImage;

use super::backbone::{head_features, Backbone};
use super::load::LoadOptions;
use super::model_ref::{ModelRef, SUMS_FILE};
use super::predictor::{answers, scorable, Predictor};
use crate::model::preprocess::Preprocess;
use crate::model::weights::{Weights, SINGLE_FILE as WEIGHTS_FILE};
use crate::model::FeatureExtractor;
use crate::train::head::{Head, NamedTensors};

/// An export folder (`sv72 export`) served as a [`Predictor`]: the backbone and classifier from
/// its `model.safetensors`, preprocessing from its `preprocessor_config.json`, answering
/// `softmax(logits)[Roadwork]` (calibration is already folded into the classifier).
pub struct ExportPredictor<B: Backend> {
    backbone: Backbone<B>,
    head: Head<B>,
    preprocess: Preprocess,
    device: B::Device,
    max_batch: usize,
    version: String,
    dir: PathBuf,
}

impl<B: Backend> ExportPredictor<B> {
    /// Loads an export folder, a symlink to one (`exports/deployed`) or a pointer file
    /// (`exports/latest`).
    pub fn load(path: &Path, device: &B::Device, opts: &LoadOptions) -> Result<Self> {
        let dir = ModelRef::export(path)?;
        let backbone = Backbone::<B>::load_with(&dir, device, opts.backbone)
            .with_context(|| format!("loading the backbone of export {}", dir.display()))?;
        let preprocess = Preprocess::from_snapshot(&dir)?;
        let weights = Weights::open(&dir)?;
        let mut tensors: NamedTensors = HashMap::new();
        for name in [
            "classifier.weight",
            "classifier.bias",
            "hidden.weight",
            "hidden.bias",
        ] {
            if weights.contains(name) {
                let (v, shape) = weights.f32_data(name)?;
                tensors.insert(name.to_string(), (shape, v));
            }
        }
        let head = Head::from_named_tensors(&tensors, &dir.join(WEIGHTS_FILE), device)?;
        let d = backbone.hidden_size();
        if head.input_dim() != 2 * d {
            bail!(
                "{}: classifier input width {} does not fit the backbone (hidden size {d}, needs {})",
                dir.display(),
                head.input_dim(),
                2 * d
            );
        }
        // Through `exports/deployed` the version names the export, not the link.
        let name = std::fs::canonicalize(&dir)
            .unwrap_or_else(|_| dir.clone())
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| dir.display().to_string());
        let sums = dir.join(SUMS_FILE);
        let version = match crate::util::hash::file_hash(&sums) {
            Ok(h) => format!("{name}-{}", &h[..8]),
            Err(_) => name,
        };
        Ok(Self {
            backbone,
            head,
            preprocess,
            device: device.clone(),
            max_batch: opts.max_batch.max(1),
            version,
            dir,
        })
    }

    /// The export folder in use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The preprocessing applied to every request image.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }
}

impl<B: Backend> Predictor for ExportPredictor<B>
where
    ExportPredictor<B>: Send,
{
    fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
        if !scorable(images)? {
            return Ok(Vec::new());
        }
        let features = head_features(
            &self.backbone,
            &self.preprocess,
            &self.device,
            self.max_batch,
            images,
        )?;
        let margins = self.head.margins(&features, &self.device)?;
        // softmax over two logits = sigmoid of their difference.
        let probs = margins.into_iter().map(crate::metrics::sigmoid);
        answers(probs, &self.version)
    }

    fn version(&self) -> String {
        self.version.clone()
    }
}
