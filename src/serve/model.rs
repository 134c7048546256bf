//! The served model: a trained checkpoint (head + calibration) on its frozen backbone, with the
//! exact preprocessing its features were computed with.
//!
//! A checkpoint only stores the head; `run.yaml` names the backbone (HF name or folder, weights
//! hash, preprocessing id). Loading re-derives the preprocessing from the run's own config and
//! refuses to serve when any of it disagrees with what training recorded: a head fed features
//! from other weights or another resize answers confidently and wrongly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use image::RgbImage;
use rayon::prelude::*;

use std::sync::Arc;

use super::batcher::{Loader, Predictor};
use crate::features::embed::extract_rows;
use crate::model::preprocess::Preprocess;
use crate::model::weights::{Weights, SINGLE_FILE as WEIGHTS_FILE};
use crate::model::FeatureExtractor;
use crate::train::checkpoint::{
    checkpoint_snapshot, resolve_checkpoint, training_preprocess, Checkpoint, HEAD_FILE,
};
use crate::train::data::head_input;
use crate::train::head::{Head, NamedTensors};
use std::collections::HashMap;

/// How a checkpoint is turned into a predictor.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Feature-cache root, where backbone weight hashes are memoised (`paths.feature_cache`).
    pub feature_cache: PathBuf,
    /// Largest forward pass; bigger request batches are split.
    pub max_batch: usize,
    /// Check the backbone's weights hash against `run.yaml` (hashes the weights once).
    pub verify_weights: bool,
}

impl LoadOptions {
    /// Defaults from the config: its feature cache, `backbone.batch_size`, verification on.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        LoadOptions {
            feature_cache: cfg.paths.feature_cache.clone(),
            max_batch: cfg.backbone.batch_size.max(1),
            verify_weights: true,
        }
    }
}

pub use crate::model::Backbone;

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
        let root = path.parent().unwrap_or(Path::new("."));
        let dir = resolve_checkpoint(Some(path), root)?;
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
        let backbone = Backbone::<B>::load(&snapshot, device)?;
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

/// Head inputs `[CLS ; patch mean]` of `images` through `backbone`, row-major
/// `[n, 2·hidden]`, in forward passes of at most `max_batch` images.
pub fn head_features<B: Backend>(
    backbone: &Backbone<B>,
    preprocess: &Preprocess,
    device: &B::Device,
    max_batch: usize,
    images: &[RgbImage],
) -> Result<Vec<f32>> {
    let d2 = 2 * backbone.hidden_size();
    let mut out = vec![0f32; images.len() * d2];
    let prepared: Vec<(Vec<f32>, (u32, u32))> = images
        .par_iter()
        .map(|im| {
            (
                preprocess.pixel_values_rgb(im),
                preprocess.output_size(im.width(), im.height()),
            )
        })
        .collect();
    // Group by output size: a processor recipe without a crop keeps aspect ratios.
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by_key(|&i| prepared[i].1);
    for group in order.chunk_by(|&a, &b| prepared[a].1 == prepared[b].1) {
        let (h, w) = prepared[group[0]].1;
        for chunk in group.chunks(max_batch) {
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * (h * w) as usize);
            for &i in chunk {
                pixels.extend_from_slice(&prepared[i].0);
            }
            let rows = extract_rows(
                backbone,
                device,
                pixels,
                chunk.len(),
                h as usize,
                w as usize,
            )?;
            for (&i, r) in chunk.iter().zip(&rows) {
                out[i * d2..(i + 1) * d2].copy_from_slice(&head_input(r));
            }
        }
    }
    Ok(out)
}

/// `false` for an empty batch; an error for an image with no pixels (nothing to resize).
fn scorable(images: &[RgbImage]) -> Result<bool> {
    if let Some(im) = images.iter().find(|im| im.width() == 0 || im.height() == 0) {
        bail!(
            "image of size {}x{} cannot be scored",
            im.width(),
            im.height()
        );
    }
    Ok(!images.is_empty())
}

/// Probabilities as answers: clamped into [0, 1]; a non-finite one is an error (the batcher
/// then sends the fallback) rather than an answer that scores 0.
fn answers(probs: impl IntoIterator<Item = f64>, version: &str) -> Result<Vec<f32>> {
    probs
        .into_iter()
        .map(|p| {
            if p.is_finite() {
                Ok(p.clamp(0.0, 1.0) as f32)
            } else {
                bail!("model {version} produced a non-finite probability")
            }
        })
        .collect()
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
        let dir = crate::export::resolve_export(path)?;
        let backbone = Backbone::<B>::load(&dir, device)
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
        let sums = dir.join(crate::export::SUMS_FILE);
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

/// Whether `path` names an export (folder, symlink or pointer file) rather than a checkpoint.
pub fn is_export_path(path: &Path) -> bool {
    crate::export::resolve_export(path)
        .map(|d| crate::export::is_export_dir(&d))
        .unwrap_or(false)
}

/// Loads a checkpoint or an export as a boxed [`Predictor`] on `device`.
pub fn load_predictor<B: Backend>(
    path: &Path,
    device: &B::Device,
    opts: &LoadOptions,
) -> Result<Box<dyn Predictor>>
where
    CheckpointPredictor<B>: Send,
    ExportPredictor<B>: Send,
{
    if is_export_path(path) {
        Ok(Box::new(ExportPredictor::<B>::load(path, device, opts)?))
    } else {
        Ok(Box::new(CheckpointPredictor::<B>::load(
            path, device, opts,
        )?))
    }
}

/// The deployed model `sv72 serve` loads when no `--checkpoint` is given: `serve.model` when it
/// exists, else `paths.checkpoints/latest`.
pub fn default_model_path(cfg: &crate::config::Config) -> PathBuf {
    if cfg.serve.model.exists() {
        cfg.serve.model.clone()
    } else {
        cfg.paths.checkpoints.join(crate::train::checkpoint::LATEST)
    }
}

/// The loader (also `serve`'s hot-swap loader) for deployed models on `device` (`cpu`, or `cuda`
/// in a CUDA build with `backbone.dtype` precision); each call loads a [`CheckpointPredictor`]
/// or, for an export folder (or `exports/deployed`, `exports/latest`), an [`ExportPredictor`].
pub fn model_loader(cfg: &crate::config::Config, device: &str) -> Result<Arc<Loader>> {
    let opts = LoadOptions::from_config(cfg);
    match device {
        "cpu" => Ok(Arc::new(move |path: &Path| {
            let dev = Default::default();
            load_predictor::<crate::backend::Cpu>(path, &dev, &opts)
        })),
        "cuda" => cuda_loader(opts, &cfg.backbone.dtype),
        other => bail!("--device {other:?}: use `cpu` or `cuda`"),
    }
}

#[cfg(feature = "cuda")]
fn cuda_loader(opts: LoadOptions, dtype: &str) -> Result<Arc<Loader>> {
    use burn::backend::Cuda;
    fn make<B: burn::tensor::backend::Backend>(opts: LoadOptions) -> Arc<Loader>
    where
        CheckpointPredictor<B>: Send,
        ExportPredictor<B>: Send,
    {
        Arc::new(move |path: &Path| {
            let dev = Default::default();
            load_predictor::<B>(path, &dev, &opts)
        })
    }
    Ok(match dtype {
        "f16" => make::<Cuda<half::f16>>(opts),
        "bf16" => make::<Cuda<half::bf16>>(opts),
        _ => make::<Cuda<f32>>(opts),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_loader(_opts: LoadOptions, _dtype: &str) -> Result<Arc<Loader>> {
    bail!("--device cuda needs a CUDA build: rebuild with `cargo build --release --features cuda`, or use --device cpu")
}
