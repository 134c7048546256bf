//! The backbone side of a stage: the backbone + preprocessing + feature cache it reads through
//! (the backend it runs on is `backend::on_device`).

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{backbone_key, FeatureCache};
use crate::config::BackboneConfig;
use crate::model::hub;
use crate::model::preprocess::Preprocess;

/// The backbone, preprocessing and feature cache a run uses.
pub struct Featurizer {
    pub snapshot: PathBuf,
    pub preprocess: Preprocess,
    pub backbone_key: String,
    pub cache: FeatureCache,
}

impl Featurizer {
    /// Resolves `bb.model` (folder or HF cache name), builds its `bb.preprocess` recipe and opens
    /// its feature cache under `cache_root`.
    pub fn open(bb: &BackboneConfig, target_size: u32, cache_root: &Path) -> Result<Self> {
        let snapshot = hub::resolve_backbone(&bb.model, &bb.revision)?;
        let preprocess = Preprocess::for_kind(bb.preprocess, &snapshot, target_size)?;
        let backbone_key = backbone_key(&snapshot, cache_root)?;
        let cache = FeatureCache::open(cache_root, &backbone_key, &preprocess.id())?;
        Ok(Featurizer {
            snapshot,
            preprocess,
            backbone_key,
            cache,
        })
    }
}
