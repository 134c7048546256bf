//! The backbone side of a stage: the backbone + preprocessing + feature cache it reads through
//! (the backend it runs on is `backend::on_device`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::Backend;

use super::cache::variant;
use super::{backbone_key, FeatureCache};
use crate::config::BackboneConfig;
use crate::model::preprocess::Preprocess;
use crate::model::weights::{Overlay, Weights};
use crate::model::{hub, Backbone, LoadOptions};

/// The backbone, preprocessing and feature cache a run uses.
pub struct Featurizer {
    pub snapshot: PathBuf,
    pub preprocess: Preprocess,
    pub backbone_key: String,
    pub cache: FeatureCache,
    /// Fine-tuned tensors over the snapshot (a `sv72 finetune` checkpoint's backbone).
    pub overlay: Option<Overlay>,
    /// How the backbone is loaded (`backbone.dtype`: bf16 weights on the CPU).
    pub load: LoadOptions,
    /// The cache folder under the backbone key (preprocess id and precision, [`variant`]).
    pub variant: String,
}

impl Featurizer {
    /// Resolves `bb.model` (folder or HF cache name), builds its `bb.preprocess` recipe and opens
    /// its feature cache under `cache_root`.
    pub fn open(bb: &BackboneConfig, target_size: u32, cache_root: &Path) -> Result<Self> {
        let snapshot = hub::resolve_backbone(&bb.model, &bb.revision)?;
        let preprocess = Preprocess::for_kind(bb.preprocess, &snapshot, target_size)?;
        let backbone_key = backbone_key(&snapshot, cache_root)?;
        let variant = variant(&preprocess.id(), bb.dtype);
        let cache = FeatureCache::open(cache_root, &backbone_key, &variant)?;
        Ok(Featurizer {
            snapshot,
            preprocess,
            backbone_key,
            cache,
            overlay: None,
            load: LoadOptions::inference(bb.dtype),
            variant,
        })
    }

    /// Switches to a fine-tuned backbone: `overlay` over the snapshot, features cached under
    /// `key` (which must differ from the base's).
    pub fn with_finetuned(
        mut self,
        overlay: Overlay,
        key: &str,
        cache_root: &Path,
    ) -> Result<Self> {
        self.cache = FeatureCache::open(cache_root, key, &self.variant)?;
        self.backbone_key = key.to_string();
        self.overlay = Some(overlay);
        Ok(self)
    }

    /// The backbone on `device`, fine-tuned tensors applied.
    pub fn load_backbone<B: Backend>(&self, device: &B::Device) -> Result<Backbone<B>> {
        let mut weights = Weights::open(&self.snapshot)?;
        if let Some(o) = &self.overlay {
            weights = weights.with_overlay(o.clone())?;
        }
        Backbone::from_weights(&self.snapshot, &weights, device, self.load)
    }
}
