//! Images for fine-tuning: every step draws fresh augmented training views (a validator
//! challenge at a level from `augment.level_probs`, JPEG round trip included, plus the
//! weather/capture ops), and validation reads a fixed seeded set of validator challenges.
//!
//! Each view's randomness comes from its own seed — the run seed, the image, the epoch and the
//! view's position in the epoch — so a run is reproducible, and a resumed run draws exactly the
//! views the uninterrupted one would have.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use image::{DynamicImage, RgbImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::config::AugmentConfig;
use crate::data::manifest::{ManifestRow, SourceKind};
use crate::model::preprocess::Preprocess;
use crate::train::data::{challenge_views, load_challenge, open_image, view_seed, LEVELS};

/// Decoded training images are kept in memory up to this many bytes (RGB); beyond it they are
/// decoded again for every view.
const DECODED_BUDGET: usize = 2 << 30;

/// The training split, decoded once (and kept, when it fits) so that bad files are found
/// before training starts.
pub struct TrainImages {
    rows: Vec<ManifestRow>,
    decoded: Vec<Option<Arc<DynamicImage>>>,
    root: std::path::PathBuf,
}

impl TrainImages {
    /// Opens every row's image; rows that fail to decode are dropped, each with its reason in
    /// the returned list.
    pub fn open(rows: &[&ManifestRow], root: &Path) -> Result<(Self, Vec<(String, String)>)> {
        let decoded: Vec<Result<DynamicImage>> =
            rows.par_iter().map(|r| open_image(r, root)).collect();
        let total: usize = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .map(|i| i.width() as usize * i.height() as usize * 3)
            .sum();
        let keep = total <= DECODED_BUDGET;
        let mut kept_rows = Vec::new();
        let mut kept = Vec::new();
        let mut failed = Vec::new();
        for (row, d) in rows.iter().zip(decoded) {
            match d {
                Ok(img) => {
                    kept_rows.push((*row).clone());
                    kept.push(keep.then(|| Arc::new(img)));
                }
                Err(e) => failed.push((row.id.clone(), format!("{e:#}"))),
            }
        }
        if kept_rows.is_empty() {
            bail!(
                "none of the {} training images could be decoded",
                rows.len()
            );
        }
        Ok((
            Self {
                rows: kept_rows,
                decoded: kept,
                root: root.to_path_buf(),
            },
            failed,
        ))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Labels of the rows, in order.
    pub fn labels(&self) -> Vec<u8> {
        self.rows.iter().map(|r| r.label).collect()
    }

    /// The order rows are drawn in during `epoch` (a seeded permutation).
    pub fn epoch_order(&self, seed: u64, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(crate::util::hash::stable_u64(&format!(
            "{seed}|ft-order|{epoch}"
        )));
        order.shuffle(&mut rng);
        order
    }

    /// Augmented views of rows `picks` (`(row, position in the epoch)`), preprocessed:
    /// `pixel_values` `[n, 3, h, w]` row-major, `(h, w)` and the labels.
    pub fn views(
        &self,
        picks: &[(usize, usize)],
        epoch: usize,
        seed: u64,
        aug: &AugmentConfig,
        preprocess: &Preprocess,
    ) -> Result<LabelledBatch> {
        let views: Vec<Result<View>> = picks
            .par_iter()
            .map(|&(i, pos)| {
                let row = &self.rows[i];
                let img = match &self.decoded[i] {
                    Some(img) => img.clone(),
                    None => Arc::new(open_image(row, &self.root)?),
                };
                let key = format!("ft-e{epoch}-p{pos}");
                let mut rng = ChaCha8Rng::seed_from_u64(view_seed(seed, &row.id, &key));
                let (view, _) = crate::augment::training_view(&img, aug, &mut rng)?;
                Ok((
                    preprocess.pixel_values_rgb(&view),
                    preprocess.output_size(view.width(), view.height()),
                ))
            })
            .collect();
        let labels = picks.iter().map(|&(i, _)| self.rows[i].label).collect();
        let (px, size) = stack(views)?;
        Ok((px, size, labels))
    }
}

/// One preprocessed image: pixel values and their `(h, w)`.
type View = (Vec<f32>, (u32, u32));

/// Stacked pixel values `[n, 3, h, w]`, `(h, w)` and the labels.
type LabelledBatch = (Vec<f32>, (usize, usize), Vec<u8>);

/// Concatenates preprocessed images that must all have one size.
fn stack(views: Vec<Result<View>>) -> Result<(Vec<f32>, (usize, usize))> {
    let mut out = Vec::new();
    let mut size = None;
    for v in views {
        let (px, s) = v?;
        match size {
            None => size = Some(s),
            Some(prev) if prev != s => bail!(
                "preprocessed images differ in size ({}x{} vs {}x{}): fine-tuning needs one input size; \
                 use `backbone.preprocess: validator` or a processor config with a centre crop",
                prev.0, prev.1, s.0, s.1
            ),
            _ => {}
        }
        out.extend_from_slice(&px);
    }
    let (h, w) = size.unwrap_or((0, 0));
    Ok((out, (h as usize, w as usize)))
}

/// The validation challenges: every image of the split at every validator level
/// (`draws` per level), as the miner receives them, drawn once with a fixed seed.
pub struct ValSet {
    pub images: Vec<RgbImage>,
    pub labels: Vec<u8>,
    pub synthetic: Vec<bool>,
    pub levels: Vec<u8>,
    /// Views that could not be made (unreadable image).
    pub skipped: usize,
}

impl ValSet {
    pub fn build(
        rows: &[&ManifestRow],
        root: &Path,
        aug: &AugmentConfig,
        draws: usize,
        seed: u64,
    ) -> Result<Self> {
        let views = challenge_views(rows.len(), &LEVELS, draws.max(1), seed, aug);
        let made: Vec<Result<RgbImage>> = views
            .par_iter()
            .map(|v| Ok(load_challenge(rows[v.row], v, root, aug, seed)?.to_rgb8()))
            .collect();
        let mut set = ValSet {
            images: Vec::new(),
            labels: Vec::new(),
            synthetic: Vec::new(),
            levels: Vec::new(),
            skipped: 0,
        };
        for (v, m) in views.iter().zip(made) {
            match m {
                Ok(img) => {
                    let row = rows[v.row];
                    set.images.push(img);
                    set.labels.push(row.label);
                    set.synthetic.push(row.source == SourceKind::Synthetic);
                    set.levels.push(v.level);
                }
                Err(_) => set.skipped += 1,
            }
        }
        if set.images.is_empty() {
            bail!(
                "none of the {} validation challenges could be made",
                views.len()
            );
        }
        if set.labels.iter().all(|&y| y == set.labels[0]) {
            bail!("the validation split holds only one class; early stopping and calibration need both");
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Preprocessed pixels of challenges `range`.
    pub fn pixels(
        &self,
        range: std::ops::Range<usize>,
        preprocess: &Preprocess,
    ) -> Result<(Vec<f32>, (usize, usize))> {
        let views: Vec<Result<View>> = self.images[range]
            .par_iter()
            .map(|im| {
                Ok((
                    preprocess.pixel_values_rgb(im),
                    preprocess.output_size(im.width(), im.height()),
                ))
            })
            .collect();
        stack(views)
    }
}
