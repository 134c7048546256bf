//! Loading any model reference as a [`Predictor`] on the configured device.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;

use super::checkpoint::{CheckpointPredictor, HeadGroup, OpenedCheckpoint};
use super::ensemble::{EnsemblePredictor, MemberGroup, Stacking};
use super::export::ExportPredictor;
use super::model_ref::ModelRef;
use super::predictor::{Loader, Predictor};
use super::spec::ModelSpec;
use super::views::ViewPredictor;
use crate::backend::{on_device, OnBackend};
use crate::config::{Config, Device};

/// How a checkpoint is turned into a predictor.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Feature-cache root, where backbone weight hashes are memoised (`paths.feature_cache`).
    pub feature_cache: PathBuf,
    /// Largest forward pass; bigger request batches are split.
    pub max_batch: usize,
    /// Check the backbone's weights hash against `run.yaml` (hashes the weights once).
    pub verify_weights: bool,
    /// How backbones are built (`backbone.dtype`: bf16 weights on the CPU).
    pub backbone: crate::model::LoadOptions,
}

impl LoadOptions {
    /// Defaults from the config: its feature cache, `backbone.batch_size`, verification on.
    pub fn from_config(cfg: &Config) -> Self {
        LoadOptions {
            feature_cache: cfg.paths.feature_cache.clone(),
            max_batch: cfg.backbone.batch_size.max(1),
            verify_weights: true,
            backbone: crate::model::LoadOptions::inference(cfg.backbone.dtype),
        }
    }
}

/// Loads what `path` names (see [`ModelRef::resolve`]) as a boxed [`Predictor`] on `device`.
pub fn load_predictor<B: Backend>(
    path: &Path,
    device: &B::Device,
    opts: &LoadOptions,
) -> Result<Box<dyn Predictor>> {
    Ok(match ModelRef::resolve(path)? {
        ModelRef::Checkpoint(dir) => Box::new(CheckpointPredictor::<B>::load(&dir, device, opts)?),
        ModelRef::Export(dir) => Box::new(ExportPredictor::<B>::load(&dir, device, opts)?),
        ModelRef::Spec(file) => {
            let spec = ModelSpec::read(&file)?;
            let base: Box<dyn Predictor> = if spec.is_ensemble() {
                Box::new(load_ensemble::<B>(&file, &spec, device, opts)?)
            } else {
                load_predictor::<B>(&spec.base(&file)?, device, opts)
                    .with_context(|| format!("model spec {}", file.display()))?
            };
            Box::new(ViewPredictor::new(base, spec.view_spec())?)
        }
    })
}

/// The members of an ensemble spec, stacked as the spec says (equal weights until fitted).
/// Checkpoint members whose heads sit on one frozen backbone (same snapshot, weights and
/// preprocessing) share it: it is loaded once and runs once per batch.
pub fn load_ensemble<B: Backend>(
    file: &Path,
    spec: &ModelSpec,
    device: &B::Device,
    opts: &LoadOptions,
) -> Result<EnsemblePredictor> {
    let mut heads: Vec<(HeadGroup<B>, Vec<usize>)> = Vec::new();
    let mut others: Vec<(Box<dyn MemberGroup>, Vec<usize>)> = Vec::new();
    for (i, p) in spec.member_paths(file)?.iter().enumerate() {
        let what = || format!("model spec {}: members[{i}]", file.display());
        match ModelRef::resolve(p).with_context(what)? {
            ModelRef::Checkpoint(dir) => {
                let opened = OpenedCheckpoint::<B>::open(&dir, device).with_context(what)?;
                match heads.iter_mut().find(|(g, _)| g.fits(&opened)) {
                    Some((g, ix)) => {
                        g.push(opened).with_context(what)?;
                        ix.push(i);
                    }
                    None => heads.push((
                        HeadGroup::new(opened, device, opts).with_context(what)?,
                        vec![i],
                    )),
                }
            }
            _ => others.push((
                super::ensemble::single(load_predictor::<B>(p, device, opts).with_context(what)?),
                vec![i],
            )),
        }
    }
    let n = spec.members.len();
    let groups = heads
        .into_iter()
        .map(|(g, ix)| (Box::new(g) as Box<dyn MemberGroup>, ix))
        .chain(others)
        .collect();
    EnsemblePredictor::from_groups(
        groups,
        spec.stacking.clone().unwrap_or_else(|| Stacking::equal(n)),
    )
}

/// [`load_ensemble`] on `device` with the config's precision and load options.
pub fn ensemble_on_device(
    cfg: &Config,
    device: Device,
    file: &Path,
    spec: &ModelSpec,
) -> Result<EnsemblePredictor> {
    on_device(
        device,
        cfg.backbone.dtype,
        LoadEnsemble {
            file,
            spec,
            opts: LoadOptions::from_config(cfg),
        },
    )
}

struct LoadEnsemble<'a> {
    file: &'a Path,
    spec: &'a ModelSpec,
    opts: LoadOptions,
}

impl OnBackend for LoadEnsemble<'_> {
    type Out = EnsemblePredictor;
    fn run<B: Backend>(self, device: &B::Device, _name: &str) -> Result<EnsemblePredictor> {
        load_ensemble::<B>(self.file, self.spec, device, &self.opts)
    }
}

/// The deployed model `sv72 serve` loads when no `--checkpoint` is given: `serve.model` when it
/// exists, else `paths.checkpoints/latest`.
pub fn default_model_path(cfg: &Config) -> PathBuf {
    if cfg.serve.model.exists() {
        cfg.serve.model.clone()
    } else {
        cfg.paths.checkpoints.join(crate::train::checkpoint::LATEST)
    }
}

/// The loader (also `serve`'s hot-swap loader) for model references on `device` (`cpu`, or
/// `cuda` in a CUDA build with `backbone.dtype` precision); each call loads a
/// [`CheckpointPredictor`] or, for an export folder (or `exports/deployed`, `exports/latest`), an
/// [`ExportPredictor`].
pub fn model_loader(cfg: &Config, device: Device) -> Result<Arc<Loader>> {
    on_device(
        device,
        cfg.backbone.dtype,
        MakeLoader(LoadOptions::from_config(cfg)),
    )
}

struct MakeLoader(LoadOptions);

impl OnBackend for MakeLoader {
    type Out = Arc<Loader>;
    fn run<B: Backend>(self, _device: &B::Device, _name: &str) -> Result<Arc<Loader>> {
        let opts = self.0;
        Ok(Arc::new(move |path: &Path| {
            load_predictor::<B>(path, &Default::default(), &opts)
        }))
    }
}
