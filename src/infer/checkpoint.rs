//! A trained checkpoint (head + calibration) served on its frozen backbone, with the exact
//! preprocessing its features were computed with.
//!
//! A checkpoint only stores the head; `run.yaml` names the backbone (HF name or folder, weights
//! hash, preprocessing id). Loading re-derives the preprocessing from the run's own config and
//! refuses to serve when any of it disagrees with what training recorded: a head fed features
//! from other weights or another resize answers confidently and wrongly.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use image::RgbImage;

use super::backbone::{head_features, Backbone};
use super::load::LoadOptions;
use super::model_ref::ModelRef;
use super::predictor::{answers, scorable, Predictor};
use crate::config::Dtype;
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
    forwards: Cell<usize>,
}

/// The head must take `[CLS ; patch mean]` of a backbone of hidden size `d`.
/// A note for a checkpoint loaded at another precision than its head was trained on: bf16
/// features drift from f32 ones by up to ~1 % (README, "Speed"), and the head's calibration was
/// fitted on the precision it was trained at. `None` when the two agree.
fn precision_note(dir: &Path, trained: Dtype, loaded_bf16: bool) -> Option<String> {
    let trained_bf16 = trained == Dtype::Bf16;
    (trained_bf16 != loaded_bf16).then(|| {
        format!(
            "warning: {}: head trained on {} backbone features, loaded {} bf16 projection \
             weights (backbone.dtype); its calibration was fitted on the former: eval or \
             recalibrate at the precision you serve",
            dir.display(),
            trained.as_str(),
            if loaded_bf16 { "with" } else { "without" }
        )
    })
}

fn check_head_width<B: Backend>(
    dir: &Path,
    ck: &Checkpoint<B>,
    snapshot: &Path,
    d: usize,
) -> Result<()> {
    if d != ck.info.backbone.hidden_size || ck.head.input_dim() != 2 * d {
        bail!(
            "{}: head input width {} (run.yaml hidden size {}) does not fit backbone {} \
             (hidden size {d}, needs {} = [CLS ; patch mean])",
            dir.display(),
            ck.head.input_dim(),
            ck.info.backbone.hidden_size,
            snapshot.display(),
            2 * d
        );
    }
    Ok(())
}

/// A checkpoint read and checked before its backbone is loaded: enough to tell which loaded
/// backbone (if any) its head can share.
pub struct OpenedCheckpoint<B: Backend> {
    dir: PathBuf,
    checkpoint: Checkpoint<B>,
    snapshot: PathBuf,
    preprocess: Preprocess,
    version: String,
}

impl<B: Backend> OpenedCheckpoint<B> {
    /// Reads what `path` names (a run folder, a `latest` pointer file, or an export folder with
    /// `head.safetensors` and `run.yaml`), its backbone snapshot and preprocessing.
    pub fn open(path: &Path, device: &B::Device) -> Result<Self> {
        let dir = ModelRef::checkpoint(Some(path), Path::new("."))?;
        let checkpoint = Checkpoint::<B>::load(&dir, device)?;
        let snapshot = checkpoint_snapshot(&dir, &checkpoint.info)?;
        let preprocess = training_preprocess(&checkpoint, &snapshot)?;
        let head_hash = crate::util::hash::file_hash(&dir.join(HEAD_FILE))?;
        let version = format!(
            "{}-{}",
            checkpoint.info.run_id,
            &head_hash[..8.min(head_hash.len())]
        );
        Ok(Self {
            dir,
            checkpoint,
            snapshot,
            preprocess,
            version,
        })
    }

    /// What the head's features depend on (backbone snapshot, its weights hash, preprocessing):
    /// heads with equal keys can answer from one forward pass. `None` for a fine-tuned
    /// checkpoint, whose backbone weights are its own.
    pub fn feature_key(&self) -> Option<String> {
        let info = &self.checkpoint.info;
        if info.finetune.is_some() {
            return None;
        }
        let snap = std::fs::canonicalize(&self.snapshot).unwrap_or_else(|_| self.snapshot.clone());
        Some(format!(
            "{}|{}|{}",
            snap.display(),
            info.backbone.weights_hash,
            self.preprocess.id()
        ))
    }
}

impl<B: Backend> CheckpointPredictor<B> {
    /// Loads what `path` names (a run folder, a `latest` pointer file, or an export folder with
    /// `head.safetensors` and `run.yaml`) with its backbone on `device`.
    pub fn load(path: &Path, device: &B::Device, opts: &LoadOptions) -> Result<Self> {
        Self::from_opened(OpenedCheckpoint::open(path, device)?, device, opts)
    }

    /// Loads the backbone of an opened checkpoint.
    pub fn from_opened(
        opened: OpenedCheckpoint<B>,
        device: &B::Device,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let OpenedCheckpoint {
            dir,
            checkpoint,
            snapshot,
            preprocess,
            version,
        } = opened;
        let info = &checkpoint.info;
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
        if let Some(note) = precision_note(&dir, info.config.backbone.dtype, opts.backbone.bf16) {
            eprintln!("{note}");
        }
        let weights = crate::train::checkpoint::backbone_weights(&dir, info, &snapshot)?;
        let backbone = Backbone::<B>::from_weights(&snapshot, &weights, device, opts.backbone)?;
        drop(weights);
        let d = backbone.hidden_size();
        check_head_width(&dir, &checkpoint, &snapshot, d)?;
        Ok(Self {
            backbone,
            preprocess,
            device: device.clone(),
            max_batch: opts.max_batch.max(1),
            version,
            snapshot,
            checkpoint,
            forwards: Cell::new(0),
        })
    }

    /// How many times [`Self::features`] ran the backbone (one batched pass per call for
    /// batches of at most `max_batch` images of one size).
    pub fn forwards(&self) -> usize {
        self.forwards.get()
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
        self.forwards.set(self.forwards.get() + 1);
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

/// Ensemble members that are heads on one frozen backbone (equal
/// [`OpenedCheckpoint::feature_key`]): the backbone is loaded once and each batch goes through
/// it once; every head answers from those features.
pub struct HeadGroup<B: Backend> {
    first: CheckpointPredictor<B>,
    key: Option<String>,
    others: Vec<(Checkpoint<B>, String)>,
}

impl<B: Backend> HeadGroup<B> {
    /// A group of one, loading its backbone.
    pub fn new(
        opened: OpenedCheckpoint<B>,
        device: &B::Device,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let key = opened.feature_key();
        Ok(Self {
            first: CheckpointPredictor::from_opened(opened, device, opts)?,
            key,
            others: Vec::new(),
        })
    }

    /// Whether `opened`'s head can answer from this group's features.
    pub fn fits(&self, opened: &OpenedCheckpoint<B>) -> bool {
        self.key.is_some() && self.key == opened.feature_key()
    }

    /// Adds a head that [`Self::fits`]; its backbone is never loaded.
    pub fn push(&mut self, opened: OpenedCheckpoint<B>) -> Result<()> {
        if !self.fits(&opened) {
            bail!(
                "{}: its head does not share the backbone of {}",
                opened.dir.display(),
                self.first.version
            );
        }
        let d = self.first.backbone.hidden_size();
        check_head_width(&opened.dir, &opened.checkpoint, &opened.snapshot, d)?;
        self.others.push((opened.checkpoint, opened.version));
        Ok(())
    }
}

impl<B: Backend> super::ensemble::MemberGroup for HeadGroup<B>
where
    CheckpointPredictor<B>: Send,
    Checkpoint<B>: Send,
{
    fn member_probs(&mut self, images: &[RgbImage]) -> Result<Vec<Vec<f64>>> {
        let features = self.first.features(images)?;
        let dev = &self.first.device;
        let heads = std::iter::once((&self.first.checkpoint, &self.first.version))
            .chain(self.others.iter().map(|(c, v)| (c, v)));
        heads
            .map(|(ck, version)| {
                let probs = ck.predict_proba(&features, dev)?;
                Ok(answers(probs, version)?
                    .into_iter()
                    .map(f64::from)
                    .collect())
            })
            .collect()
    }

    fn versions(&self) -> Vec<String> {
        std::iter::once(self.first.version.clone())
            .chain(self.others.iter().map(|(_, v)| v.clone()))
            .collect()
    }

    fn backbone_forwards(&self) -> Option<usize> {
        Some(self.first.forwards())
    }
}

#[cfg(test)]
mod tests {
    use super::precision_note;
    use crate::config::Dtype;
    use std::path::Path;

    #[test]
    fn a_precision_change_between_training_and_loading_is_named() {
        let dir = Path::new("checkpoints/run-1");
        assert_eq!(precision_note(dir, Dtype::F32, false), None);
        assert_eq!(precision_note(dir, Dtype::Bf16, true), None);
        let up = precision_note(dir, Dtype::F32, true).expect("f32 head served in bf16");
        assert!(up.contains("checkpoints/run-1") && up.contains("f32") && up.contains("with bf16"));
        let down = precision_note(dir, Dtype::Bf16, false).expect("bf16 head served in f32");
        assert!(down.contains("bf16 backbone features") && down.contains("without bf16"));
    }
}
