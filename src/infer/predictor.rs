//! The `Predictor` trait every served or compared model implements, and the rules all of them
//! share for what counts as an answer.

use std::path::Path;

use anyhow::{bail, Result};
use image::RgbImage;

/// A model that scores images: probability of roadwork in [0, 1], one per image.
///
/// Preprocessing (resize, normalise) is the predictor's job. It runs on one inference thread at
/// a time, so it must be `Send` but need not be `Sync`.
pub trait Predictor: Send {
    /// Scores a batch; must return exactly `images.len()` values.
    fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>>;
    /// A label for metrics and logs (e.g. export name + content hash).
    fn version(&self) -> String;
}

/// Builds a predictor from a model path (also the hot-swap loader).
pub type Loader = dyn Fn(&Path) -> Result<Box<dyn Predictor>> + Send + Sync;

/// A predictor answering one value for every image: `sv72 serve --constant-prediction`, a
/// protocol smoke test (validators score it as chance).
pub struct ConstantPredictor(pub f32);

impl Predictor for ConstantPredictor {
    fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
        Ok(vec![self.0; images.len()])
    }
    fn version(&self) -> String {
        format!("constant-{}", self.0)
    }
}

/// `false` for an empty batch; an error for an image with no pixels (nothing to resize).
pub(crate) fn scorable(images: &[RgbImage]) -> Result<bool> {
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
pub(crate) fn answers(probs: impl IntoIterator<Item = f64>, version: &str) -> Result<Vec<f32>> {
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
