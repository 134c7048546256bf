//! Frozen ViT backbones (DINOv2, DINOv2 with registers, DINOv3) loaded from Hugging Face snapshots.
//!
//! One file per family, each with a config struct, its blocks and its forward, numerically
//! matching `transformers`.

pub mod dinov2;
pub mod weights;

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

/// A frozen feature extractor over `pixel_values` `[N, 3, H, W]` (already normalised).
pub trait FeatureExtractor<B: Backend> {
    /// Runs the backbone; `want_hidden` also returns the full last hidden state.
    fn extract(&self, pixel_values: Tensor<B, 4>, want_hidden: bool) -> BackboneOutput<B>;
    /// Width of each feature vector.
    fn hidden_size(&self) -> usize;
    /// Patch side in pixels (inputs must be a multiple of it).
    fn patch_size(&self) -> usize;
}
