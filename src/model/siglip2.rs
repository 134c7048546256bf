//! SigLIP 2 NaFlex vision tower (`Siglip2VisionModel` of `transformers` 5.x).
//!
//! The vision half of a `siglip2` checkpoint (`Siglip2Model`: google/siglip2-base-patch16-naflex,
//! google/siglip2-so400m-patch16-naflex) or a standalone `siglip2_vision_model` snapshot. It
//! differs from the fixed-resolution tower of [`super::siglip`] only at the input: the patch
//! embedding is a linear map over patches flattened as (row, column, channel), and the learned
//! `num_patches` position grid is resized per image (bilinear, antialiased, align_corners=False)
//! to the image's own patch grid, whatever its aspect ratio. The encoder blocks, `post_layernorm`
//! and the MAP head are [`super::siglip`]'s.
//!
//! transformers feeds a batch padded to `max_num_patches` with `pixel_attention_mask` over the
//! padding. A masked key gets weight exactly 0 in every softmax (and in the MAP head), so the
//! valid tokens of a padded image equal those of the same image run alone: sv72 runs each patch
//! grid unpadded ([`Siglip2VisionModel::try_forward`] over `[N, 3, H, W]` of one size, which is
//! how the feature pipeline batches), and [`Siglip2VisionModel::try_forward_naflex`] takes
//! transformers' padded contract as it is.

use std::cell::RefCell;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Deserialize;

use super::linear::Proj;
use super::loader::{Bindings, LoadOptions, Loader, PartSpec};
use super::resample::resize_grid;
use super::siglip::{
    d_act, d_channels, d_eps, d_heads, d_hidden, d_intermediate, d_layers, d_true, Activation,
    Layer, MapHead, SiglipVisionConfig,
};
use super::weights::Weights;
use super::{ops, parse_config, BackboneOutput, FeatureExtractor, ProjRole};

/// `model_type` of a dual-tower SigLIP 2 NaFlex checkpoint (`Siglip2Model`).
pub const MODEL_TYPE: &str = "siglip2";
/// `model_type` of a standalone `Siglip2VisionModel` snapshot.
pub const VISION_MODEL_TYPE: &str = "siglip2_vision_model";

/// Where the vision tensors may live (`Siglip2Model`: `vision_model.`; `Siglip2VisionModel`
/// saved by 5.x: none).
const PREFIXES: &[&str] = &["vision_model.", "", "model.vision_model."];

/// A NaFlex vision config: the shared block fields plus the position-grid size.
#[derive(Debug, Clone, PartialEq)]
pub struct Siglip2VisionConfig {
    /// Block fields; `base.image_size` is the side of the position grid in pixels
    /// (`sqrt(num_patches) * patch_size`), which NaFlex never resizes an image to.
    pub base: SiglipVisionConfig,
    /// Rows of the position table, a square number.
    pub num_patches: usize,
}

/// `Siglip2VisionConfig` as transformers writes it, with its defaults.
#[derive(Deserialize)]
struct RawVision {
    #[serde(default = "d_patch")]
    patch_size: usize,
    #[serde(default = "d_num_patches")]
    num_patches: usize,
    #[serde(default = "d_hidden")]
    hidden_size: usize,
    #[serde(default = "d_intermediate")]
    intermediate_size: usize,
    #[serde(default = "d_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
    #[serde(default = "d_channels")]
    num_channels: usize,
    #[serde(default = "d_true")]
    vision_use_head: bool,
}

#[derive(Deserialize)]
struct Top {
    model_type: Option<String>,
    vision_config: Option<serde_json::Value>,
}

fn d_patch() -> usize {
    16
}
fn d_num_patches() -> usize {
    256
}
impl Siglip2VisionConfig {
    /// Reads and validates `path` (a snapshot's `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = super::read_config_text(path)?;
        Self::from_json(&text, path)
    }

    /// Parses `config.json` text: the `vision_config` of a `siglip2` checkpoint or the whole of
    /// a `siglip2_vision_model` one; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let o = origin.display();
        let top: Top = parse_config(text, origin)?;
        let raw: RawVision = match top.model_type.as_deref() {
            Some(MODEL_TYPE) => {
                let v = top.vision_config.unwrap_or_else(|| serde_json::json!({}));
                parse_config(&v.to_string(), origin)
                    .with_context(|| format!("{o}: in `vision_config`"))?
            }
            Some(VISION_MODEL_TYPE) => parse_config(text, origin)?,
            other => bail!(
                "{o}: model_type {other:?} is not a SigLIP 2 NaFlex model (expected \
                 `{MODEL_TYPE}` or `{VISION_MODEL_TYPE}`)"
            ),
        };
        let grid = (raw.num_patches as f64).sqrt().round() as usize;
        if raw.num_patches == 0 || grid * grid != raw.num_patches {
            bail!(
                "{o}: num_patches {} must be a positive square number (transformers reshapes the \
                 position table to a square grid)",
                raw.num_patches
            );
        }
        if raw.patch_size == 0 || raw.hidden_size == 0 || raw.num_attention_heads == 0 {
            bail!("{o}: patch_size, hidden_size and num_attention_heads must be positive");
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            bail!(
                "{o}: hidden_size {} is not divisible by num_attention_heads {}",
                raw.hidden_size,
                raw.num_attention_heads
            );
        }
        Ok(Self {
            base: SiglipVisionConfig {
                patch_size: raw.patch_size,
                image_size: grid * raw.patch_size,
                hidden_size: raw.hidden_size,
                intermediate_size: raw.intermediate_size,
                num_hidden_layers: raw.num_hidden_layers,
                num_attention_heads: raw.num_attention_heads,
                hidden_act: Activation::from_config(&raw.hidden_act, origin)?,
                layer_norm_eps: raw.layer_norm_eps,
                num_channels: raw.num_channels,
                vision_use_head: raw.vision_use_head,
            },
            num_patches: raw.num_patches,
        })
    }

    /// Side of the square position grid.
    pub fn grid(&self) -> usize {
        self.base.grid()
    }

    /// Width of one flattened patch (`num_channels · patch_size²`).
    pub fn patch_dim(&self) -> usize {
        self.base.num_channels * self.base.patch_size * self.base.patch_size
    }
}

/// Per-axis weights `[n_out, grid]` of `F.interpolate(mode="bilinear", align_corners=False,
/// antialias=True)` from `grid` to `n_out` samples, computed in f32 as transformers'
/// `resize_positional_embeddings` does (triangle of half-width max(scale, 1), renormalised).
pub fn bilinear_aa_matrix(grid: usize, n_out: usize) -> Vec<f32> {
    let scale = grid as f32 / n_out as f32;
    let support = scale.max(1.0);
    let mut m = vec![0f32; n_out * grid];
    for i in 0..n_out {
        let center = (i as f32 + 0.5) * scale - 0.5;
        let row = &mut m[i * grid..(i + 1) * grid];
        for (j, w) in row.iter_mut().enumerate() {
            *w = (1.0 - (j as f32 - center).abs() / support).max(0.0);
        }
        let total: f32 = row.iter().sum();
        row.iter_mut().for_each(|w| *w /= total);
    }
    m
}

/// Patch projection and the learned position grid (`Siglip2VisionEmbeddings`).
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// `patch_embedding`, a linear map `[C·P·P, D]` over (row, column, channel) patches.
    pub patch: Proj<B>,
    /// `position_embedding.weight` `[num_patches, D]`.
    pub pos: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embeddings<B> {
    fn load(l: &Loader<'_, B>, cfg: &Siglip2VisionConfig) -> Result<Self> {
        let d = cfg.base.hidden_size;
        let e = l.pp("embeddings");
        let patch = e.proj(
            &[PartSpec::new(
                &["patch_embedding.weight"],
                Some(&["patch_embedding.bias"]),
                d,
            )],
            cfg.patch_dim(),
            None,
        )?;
        let np = cfg.num_patches;
        let pos = e.param(&["position_embedding.weight"], &[np, d], [np, d], false)?;
        Ok(Self { patch, pos })
    }

    /// Position embeddings `[rows · cols, D]`: the grid resized to `rows × cols`.
    fn positions(&self, cfg: &Siglip2VisionConfig, rows: usize, cols: usize) -> Tensor<B, 2> {
        let g = cfg.grid();
        resize_grid(
            self.pos.val(),
            [g, g],
            [rows, cols],
            bilinear_aa_matrix(g, rows),
            bilinear_aa_matrix(g, cols),
        )
    }
}

/// A SigLIP 2 NaFlex vision tower with its weights, generic over the Burn backend.
#[derive(Module, Debug)]
pub struct Siglip2VisionModel<B: Backend> {
    pub embeddings: Embeddings<B>,
    pub layers: Vec<Layer<B>>,
    pub post_layernorm: LayerNorm<B>,
    pub head: Option<MapHead<B>>,
    #[module(skip)]
    config: Siglip2VisionConfig,
    #[module(skip)]
    bindings: Bindings,
}

/// Loads a NaFlex vision tower from a Hugging Face snapshot folder.
pub fn load<B: Backend>(snapshot_dir: &Path, device: &B::Device) -> Result<Siglip2VisionModel<B>> {
    let config = Siglip2VisionConfig::from_file(&snapshot_dir.join("config.json"))?;
    let weights = Weights::open(snapshot_dir)?;
    Siglip2VisionModel::from_weights(
        config,
        &weights,
        snapshot_dir,
        device,
        LoadOptions::INFERENCE,
    )
}

impl<B: Backend> Siglip2VisionModel<B> {
    /// Builds the model from opened weights; `dir` names the snapshot in errors. Only
    /// `vision_model.*` tensors are read.
    pub fn from_weights(
        config: Siglip2VisionConfig,
        weights: &Weights,
        dir: &Path,
        device: &B::Device,
        opts: LoadOptions,
    ) -> Result<Self> {
        let probe = "embeddings.patch_embedding.weight";
        let root = weights.detect_prefix(probe, PREFIXES).ok_or_else(|| {
            let sample: Vec<&str> = weights.names().into_iter().take(5).collect();
            anyhow!(
                "tensor `vision_model.{probe}` is missing from the weights of {} (also tried \
                 prefixes {:?}); is this a SigLIP 2 NaFlex snapshot? First tensors: {sample:?}",
                dir.display(),
                PREFIXES
            )
        })?;
        let bindings = RefCell::new(Vec::new());
        let l = Loader::new(weights, dir, root, device, opts, &bindings);
        let base = &config.base;
        let embeddings = Embeddings::load(&l, &config)?;
        let mut layers = Vec::with_capacity(base.num_hidden_layers);
        for i in 0..base.num_hidden_layers {
            layers.push(Layer::load(&l, i, base)?);
        }
        let extra = format!(
            "encoder.layers.{}.layer_norm1.weight",
            base.num_hidden_layers
        );
        if l.has(&extra) {
            bail!(
                "the weights of {} contain `{}` but config.json declares num_hidden_layers={} \
                 (config.json and weights disagree)",
                dir.display(),
                l.name(&extra),
                base.num_hidden_layers
            );
        }
        let top = l.at_depth(base.num_hidden_layers + 1);
        let post_layernorm =
            top.layer_norm("post_layernorm", base.hidden_size, base.layer_norm_eps)?;
        let head = if base.vision_use_head {
            Some(MapHead::load(&top, base)?)
        } else {
            None
        };
        Ok(Self {
            embeddings,
            layers,
            post_layernorm,
            head,
            config,
            bindings: bindings.into_inner(),
        })
    }

    /// The parsed vision config.
    pub fn config(&self) -> &Siglip2VisionConfig {
        &self.config
    }

    /// Where each parameter came from (empty when loaded for inference).
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Mutable bindings, for adapters attached after loading.
    pub fn bindings_mut(&mut self) -> &mut Bindings {
        &mut self.bindings
    }

    /// Every encoder projection, for attaching adapters.
    pub fn projections_mut(&mut self) -> Vec<(ProjRole, &mut Proj<B>)> {
        self.layers
            .iter_mut()
            .flat_map(Layer::projections_mut)
            .collect()
    }

    /// Final hidden state `[n, rows · cols, D]` of `n` images of one `rows × cols` patch grid,
    /// given as flattened patches `[n · rows · cols, C·P·P]`.
    fn forward_patches(
        &self,
        patches: Tensor<B, 2>,
        n: usize,
        rows: usize,
        cols: usize,
    ) -> Tensor<B, 3> {
        let cfg = &self.config;
        let (t, d) = (rows * cols, cfg.base.hidden_size);
        let e = &self.embeddings;
        let tokens = e.patch.forward(patches).reshape([n, t, d])
            + e.positions(cfg, rows, cols).unsqueeze::<3>();
        let mut x = tokens.reshape([n * t, d]);
        let shape = ops::AttnShape {
            n,
            t,
            heads: cfg.base.num_attention_heads,
        };
        for layer in &self.layers {
            x = layer.forward(x, shape);
        }
        ops::layer_norm(&self.post_layernorm, x).reshape([n, t, d])
    }

    /// Final (`post_layernorm`) hidden state `[N, patches, D]` of images `[N, C, H, W]` (one
    /// size per batch, each side a whole number of patches, as the NaFlex processor makes them).
    pub fn try_forward(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let cfg = &self.config.base;
        let [n, c, h, w] = pixel_values.dims();
        let p = cfg.patch_size;
        if n == 0 {
            bail!("empty batch");
        }
        if c != cfg.num_channels {
            bail!(
                "SigLIP 2 expects {} input channels, got pixel_values of shape [{n}, {c}, {h}, {w}]",
                cfg.num_channels
            );
        }
        if h == 0 || w == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
            bail!(
                "SigLIP 2 NaFlex input {h}x{w} is not a whole number of {p}x{p} patches (use the \
                 checkpoint's Siglip2ImageProcessor recipe, or a size divisible by {p})"
            );
        }
        let (rows, cols) = (h / p, w / p);
        let patches = pixel_values
            .reshape([n, c, rows, p, cols, p])
            .permute([0, 2, 4, 3, 5, 1])
            .reshape([n * rows * cols, p * p * c]);
        Ok(self.forward_patches(patches, n, rows, cols))
    }

    /// transformers' input contract: `pixel_values` `[N, L, C·P·P]` padded to `L` patches,
    /// `pixel_attention_mask` `[N, L]` (row-major, as the processor makes it: each image's first
    /// `rows · cols` patches) and `spatial_shapes` `(rows, cols)` per image. Padding rows of
    /// `last_hidden_state` are zero (transformers leaves values there that nothing reads);
    /// `patch_mean` averages the valid tokens only.
    pub fn try_forward_naflex(
        &self,
        pixel_values: Tensor<B, 3>,
        pixel_attention_mask: &[bool],
        spatial_shapes: &[[usize; 2]],
        want_hidden: bool,
    ) -> Result<BackboneOutput<B>> {
        let [n, l, pd] = pixel_values.dims();
        let d = self.config.base.hidden_size;
        if pd != self.config.patch_dim() {
            bail!(
                "SigLIP 2 NaFlex patches have {} values (channels x patch_size²), got {pd}",
                self.config.patch_dim()
            );
        }
        if spatial_shapes.len() != n || pixel_attention_mask.len() != n * l {
            bail!(
                "{n} images of {l} patches need {n} spatial_shapes and {} mask entries, got {} \
                 and {}",
                n * l,
                spatial_shapes.len(),
                pixel_attention_mask.len()
            );
        }
        let device = pixel_values.device();
        let (mut hidden, mut pooled, mut means) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &[rows, cols]) in spatial_shapes.iter().enumerate() {
            let t = rows * cols;
            if t == 0 || t > l {
                bail!("image {i}: spatial shape {rows}x{cols} does not fit {l} patches");
            }
            let mask = &pixel_attention_mask[i * l..(i + 1) * l];
            if mask.iter().enumerate().any(|(j, &m)| m != (j < t)) {
                bail!(
                    "image {i}: pixel_attention_mask is not its first {t} ({rows}x{cols}) \
                     patches, as Siglip2ImageProcessor pads"
                );
            }
            let patches = pixel_values.clone().narrow(0, i, 1).narrow(1, 0, t);
            let h = self.forward_patches(patches.reshape([t, pd]), 1, rows, cols);
            means.push(h.clone().mean_dim(1).reshape([1, d]));
            pooled.push(match &self.head {
                Some(head) => head.forward(h.clone()),
                None => h.clone().mean_dim(1).reshape([1, d]),
            });
            if want_hidden {
                let pad = Tensor::<B, 3>::zeros([1, l - t, d], &device);
                hidden.push(Tensor::cat(vec![h, pad], 1));
            }
        }
        let pooler = Tensor::cat(pooled, 0);
        Ok(BackboneOutput {
            cls: pooler.clone(),
            pooler,
            patch_mean: Tensor::cat(means, 0),
            last_hidden_state: want_hidden.then(|| Tensor::cat(hidden, 0)),
        })
    }

    /// All outputs for a batch of one size, as [`super::siglip::SiglipVisionModel::try_extract`]:
    /// `pooler` is the MAP head's output (`cls` repeats it), `patch_mean` averages every token.
    pub fn try_extract(
        &self,
        pixel_values: Tensor<B, 4>,
        want_hidden: bool,
    ) -> Result<BackboneOutput<B>> {
        let hidden = self.try_forward(pixel_values)?;
        let [n, _, d] = hidden.dims();
        let patch_mean = hidden.clone().mean_dim(1).reshape([n, d]);
        let pooler = match &self.head {
            Some(head) => head.forward(hidden.clone()),
            None => patch_mean.clone(),
        };
        Ok(BackboneOutput {
            cls: pooler.clone(),
            pooler,
            patch_mean,
            last_hidden_state: want_hidden.then_some(hidden),
        })
    }
}

impl<B: Backend> FeatureExtractor<B> for Siglip2VisionModel<B> {
    /// # Panics
    /// On a malformed input; use [`Siglip2VisionModel::try_extract`] to get it as an error.
    fn extract(&self, pixel_values: Tensor<B, 4>, want_hidden: bool) -> BackboneOutput<B> {
        self.try_extract(pixel_values, want_hidden)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn hidden_size(&self) -> usize {
        self.config.base.hidden_size
    }

    fn patch_size(&self) -> usize {
        self.config.base.patch_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_config_gets_class_defaults_and_bad_grid_is_named() {
        let text = r#"{"model_type": "siglip2", "vision_config": {"patch_size": 16}}"#;
        let c = Siglip2VisionConfig::from_json(text, Path::new("c.json")).unwrap();
        assert_eq!((c.num_patches, c.grid(), c.patch_dim()), (256, 16, 768));
        assert_eq!(c.base.hidden_act, Activation::GeluTanh);
        let e = Siglip2VisionConfig::from_json(
            r#"{"model_type": "siglip2_vision_model", "num_patches": 30}"#,
            Path::new("s/config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("s/config.json") && e.contains("square"), "{e}");
    }

    #[test]
    fn bilinear_rows_sum_to_one_and_identity_at_grid_size() {
        for (g, o) in [(6, 4), (6, 9), (16, 5), (4, 4)] {
            let m = bilinear_aa_matrix(g, o);
            for row in m.chunks_exact(g) {
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-6, "{g}->{o}: {s}");
            }
        }
        let m = bilinear_aa_matrix(5, 5);
        for (r, row) in m.chunks_exact(5).enumerate() {
            for (c, &w) in row.iter().enumerate() {
                assert_eq!(w, if r == c { 1.0 } else { 0.0 });
            }
        }
        // Downscaling widens the triangle: 6 -> 3 averages pairs with their neighbours.
        let m = bilinear_aa_matrix(6, 3);
        assert!(
            m[0] > 0.0 && m[1] > 0.0 && m[2] > 0.0 && m[3] == 0.0,
            "{m:?}"
        );
    }
}
