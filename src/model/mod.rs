//! Frozen ViT backbones (DINOv2, DINOv2 with registers, DINOv3) loaded from Hugging Face snapshots.
//!
//! One file per family, each with a config struct, its blocks and its forward, numerically
//! matching `transformers`.

pub mod dinov2;
pub mod dinov3;
pub mod hub;
pub mod preprocess;
pub mod weights;

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::{backend::Backend, Tensor};

/// What a backbone gives per image.
#[derive(Debug, Clone)]
pub struct BackboneOutput<B: Backend> {
    /// CLS token of the final (layer-normed) hidden state, `[N, D]`.
    pub cls: Tensor<B, 2>,
    /// The model's pooler output as `transformers` defines it, `[N, D]`.
    pub pooler: Tensor<B, 2>,
    /// Mean of the patch tokens (no CLS, no registers) of the final hidden state, `[N, D]`.
    pub patch_mean: Tensor<B, 2>,
    /// Full final hidden state `[N, 1 + registers + patches, D]`, when asked for.
    pub last_hidden_state: Option<Tensor<B, 3>>,
}

impl<B: Backend> BackboneOutput<B> {
    /// The outputs of a final hidden state `[N, T, D]` whose first `prefix` tokens are CLS and
    /// registers: CLS, pooler (transformers' pooler_output is the CLS token of the normed
    /// sequence for DINOv2 and DINOv3) and the mean of the patch tokens after the prefix.
    pub fn from_hidden(hidden: Tensor<B, 3>, prefix: usize, want_hidden: bool) -> Self {
        let [n, t, d] = hidden.dims();
        let cls = hidden.clone().narrow(1, 0, 1).reshape([n, d]);
        let patch_mean = hidden
            .clone()
            .narrow(1, prefix, t - prefix)
            .mean_dim(1)
            .reshape([n, d]);
        BackboneOutput {
            pooler: cls.clone(),
            cls,
            patch_mean,
            last_hidden_state: want_hidden.then_some(hidden),
        }
    }
}

/// A frozen feature extractor over `pixel_values` `[N, 3, H, W]` (already normalised).
pub trait FeatureExtractor<B: Backend> {
    /// Runs the backbone; `want_hidden` also returns the full last hidden state.
    fn extract(&self, pixel_values: Tensor<B, 4>, want_hidden: bool) -> BackboneOutput<B>;
    /// Width of each feature vector.
    fn hidden_size(&self) -> usize;
    /// Patch side in pixels (inputs must be a multiple of it).
    fn patch_size(&self) -> usize;
}

/// The text of a snapshot's `config.json`, with an error that says what was expected.
pub fn read_config_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} (expected a Hugging Face snapshot folder with config.json)",
            path.display()
        )
    })
}

/// The `model_type` of a snapshot's `config.json`.
pub fn model_type(snapshot_dir: &Path) -> Result<String> {
    let path = snapshot_dir.join("config.json");
    let text = read_config_text(&path)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    v.get("model_type")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no `model_type` string", path.display()))
}

/// Loads any supported backbone from a snapshot folder, dispatching on `config.json`'s
/// `model_type` (`dinov2`, `dinov2_with_registers`, `dinov3_vit`).
pub fn load_backbone<B: Backend>(
    snapshot_dir: &Path,
    device: &B::Device,
) -> Result<Box<dyn FeatureExtractor<B>>> {
    let kind = model_type(snapshot_dir)?;
    match kind.as_str() {
        "dinov2" | "dinov2_with_registers" => Ok(Box::new(dinov2::load::<B>(snapshot_dir, device)?)),
        dinov3::MODEL_TYPE => Ok(Box::new(dinov3::load::<B>(snapshot_dir, device)?)),
        other => bail!(
            "{}: unsupported model_type {other:?}; sv72 loads dinov2, dinov2_with_registers and dinov3_vit",
            snapshot_dir.join("config.json").display()
        ),
    }
}
