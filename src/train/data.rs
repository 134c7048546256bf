//! From manifest rows to feature sets: which views each image contributes, their cache keys, and
//! the `[CLS ; patch mean]` rows the heads read.
//!
//! View ids are deterministic (seed, image, view index, augmentation-config hash), so a view's
//! cached features are reused across runs and a changed augmentation config never hits stale
//! entries. Producing the view image itself is the caller's `load` closure (the augment stage).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use image::DynamicImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::trainer::FeatureSet;
use crate::config::AugmentConfig;
use crate::data::manifest::{ManifestRow, SourceKind, Split};
use crate::features::cache::{FeatureCache, FeatureRow};
use crate::features::embed::{compute_features, NO_AUG};
use crate::model::preprocess::Preprocess;
use crate::model::FeatureExtractor;
use crate::util::hash::content_hash;

/// One view of one image to featurise.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewKey {
    /// Index into the caller's row slice.
    pub row: usize,
    /// Feature-cache aug id ([`NO_AUG`] for the clean image).
    pub aug_id: String,
    /// Validator level of a challenge view (0 for clean or training views).
    pub level: u8,
    /// Draw number (training view index or eval draw).
    pub draw: u32,
}

/// Short hash of the augmentation settings, part of every augmented view id.
pub fn augment_tag(cfg: &AugmentConfig) -> String {
    let yaml = serde_yaml::to_string(cfg).unwrap_or_default();
    content_hash(yaml.as_bytes())[..8].to_string()
}

/// Rows of `split` (all rows when `None`).
pub fn rows_of(rows: &[ManifestRow], split: Split) -> Vec<&ManifestRow> {
    rows.iter().filter(|r| r.split == split).collect()
}

/// Reads manifest `name` (a dataset name, folder or `.parquet`) and keeps the rows of `split`;
/// `purpose` ("eval", "ab-test", …) names the stage in errors. An empty split is an error.
pub fn read_split(
    datasets_root: &Path,
    name: &str,
    split: Split,
    purpose: &str,
) -> Result<(PathBuf, Vec<ManifestRow>)> {
    let path = crate::data::manifest::manifest_path(datasets_root, name);
    let mut rows = crate::data::manifest::read_manifest(&path)
        .with_context(|| format!("cannot read the {purpose} manifest {}", path.display()))?;
    rows.retain(|r| r.split == split);
    if rows.is_empty() {
        bail!("{} has no {split} rows for {purpose}", path.display());
    }
    Ok((path, rows))
}

/// Training views: the clean image plus `views` augmented training views per image.
pub fn training_views(n_rows: usize, views: usize, seed: u64, cfg: &AugmentConfig) -> Vec<ViewKey> {
    let tag = augment_tag(cfg);
    let mut out = Vec::with_capacity(n_rows * (views + 1));
    for row in 0..n_rows {
        out.push(ViewKey {
            row,
            aug_id: NO_AUG.into(),
            level: 0,
            draw: 0,
        });
        for k in 0..views {
            out.push(ViewKey {
                row,
                aug_id: format!("tv-{tag}-s{seed}-k{k}"),
                level: 0,
                draw: k as u32,
            });
        }
    }
    out
}

/// Validator-challenge views: `draws` per image per level in `levels`, with a fixed seed.
pub fn challenge_views(
    n_rows: usize,
    levels: &[u8],
    draws: usize,
    seed: u64,
    cfg: &AugmentConfig,
) -> Vec<ViewKey> {
    let tag = augment_tag(cfg);
    let mut out = Vec::new();
    for row in 0..n_rows {
        for &level in levels {
            for d in 0..draws {
                out.push(ViewKey {
                    row,
                    aug_id: format!("vc-{tag}-s{seed}-l{level}-d{d}"),
                    level,
                    draw: d as u32,
                });
            }
        }
    }
    out
}

/// Per-view RNG seed: stable across runs and machines.
pub fn view_seed(seed: u64, image_id: &str, aug_id: &str) -> u64 {
    crate::util::hash::stable_u64(&format!("{seed}|{image_id}|{aug_id}"))
}

/// `[CLS ; patch mean]`, the head input.
pub fn head_input(r: &FeatureRow) -> Vec<f32> {
    let mut v = Vec::with_capacity(r.cls.len() * 2);
    v.extend_from_slice(&r.cls);
    v.extend_from_slice(&r.patch_mean);
    v
}

/// Featurises `views` of `rows` through the cache (computing misses with a progress bar);
/// `load(row, view)` makes the view's image. Views that fail to load are skipped and counted in
/// the returned number; it is an error when none succeeds.
#[allow(clippy::too_many_arguments)]
pub fn gather<B, E, L>(
    extractor: &E,
    device: &B::Device,
    rows: &[&ManifestRow],
    views: &[ViewKey],
    load: L,
    preprocess: &Preprocess,
    batch_size: usize,
    cache: &mut FeatureCache,
) -> Result<(FeatureSet, Vec<ViewKey>, usize)>
where
    B: Backend,
    E: FeatureExtractor<B> + ?Sized,
    L: Fn(&ManifestRow, &ViewKey) -> Result<DynamicImage> + Sync,
{
    let keys: Vec<(String, String)> = views
        .iter()
        .map(|v| (rows[v.row].id.clone(), v.aug_id.clone()))
        .collect();
    let computed = compute_features(
        extractor,
        device,
        &keys,
        |i| load(rows[views[i].row], &views[i]),
        preprocess,
        batch_size,
        cache,
    )?;
    let mut set = FeatureSet::default();
    let mut kept = Vec::new();
    for (v, r) in views.iter().zip(&computed.rows) {
        if let Some(r) = r {
            let row = rows[v.row];
            set.push(
                &head_input(r),
                row.label,
                row.source == SourceKind::Synthetic,
                v.level,
            )?;
            kept.push(v.clone());
        }
    }
    if set.is_empty() && !views.is_empty() {
        let why = computed
            .failed
            .first()
            .map(|f| f.1.clone())
            .unwrap_or_default();
        bail!(
            "none of the {} views could be featurised (first failure: {why})",
            views.len()
        );
    }
    Ok((set, kept, computed.failed.len()))
}

/// Validator levels every challenge set covers (validation and eval).
pub const LEVELS: [u8; 4] = [0, 1, 2, 3];

/// Decodes a manifest row's image file.
pub fn open_image(row: &ManifestRow, datasets_root: &Path) -> Result<DynamicImage> {
    let p = row.resolve_path(datasets_root);
    let bytes = std::fs::read(&p)
        .with_context(|| format!("cannot open image {} (row {})", p.display(), row.id))?;
    let rgb = crate::data::decode::decode_rgb_any(&bytes)
        .with_context(|| format!("cannot decode image {} (row {})", p.display(), row.id))?;
    Ok(DynamicImage::ImageRgb8(rgb))
}

/// Makes a training view: the clean image for [`NO_AUG`], otherwise
/// `augment::training_view` seeded by [`view_seed`].
pub fn load_training_view(
    row: &ManifestRow,
    view: &ViewKey,
    datasets_root: &Path,
    aug: &AugmentConfig,
    seed: u64,
) -> Result<DynamicImage> {
    let img = open_image(row, datasets_root)?;
    if view.aug_id == NO_AUG {
        return Ok(img);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(view_seed(seed, &row.id, &view.aug_id));
    let (out, _) = crate::augment::training_view(&img, aug, &mut rng)?;
    Ok(DynamicImage::ImageRgb8(out))
}

/// Makes a validator challenge at the view's level, as the miner receives it (JPEG round trip).
pub fn load_challenge(
    row: &ManifestRow,
    view: &ViewKey,
    datasets_root: &Path,
    aug: &AugmentConfig,
    seed: u64,
) -> Result<DynamicImage> {
    let img = open_image(row, datasets_root)?;
    let mut rng = ChaCha8Rng::seed_from_u64(view_seed(seed, &row.id, &view.aug_id));
    let ch = crate::augment::validator_challenge(&img, Some(view.level), aug, &mut rng)?;
    Ok(DynamicImage::ImageRgb8(ch.image))
}
