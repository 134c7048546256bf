//! SigLIP / SigLIP 2 vision tower at fixed resolution (`SiglipVisionModel` of `transformers` 5.x).
//!
//! The vision half of a `siglip` checkpoint (`SiglipModel`: google/siglip2-base-patch16-224,
//! google/siglip2-so400m-patch14-384 and the other fixed-resolution SigLIP 2 and SigLIP
//! releases) or a standalone `siglip_vision_model` snapshot: patch convolution, a learned
//! position table (resized bicubic for other input sizes, as `interpolate_pos_encoding=True`
//! does), pre-LN encoder blocks with a `gelu_pytorch_tanh` MLP, `post_layernorm` and the
//! multi-head attention-pooling ("MAP") head. There is no CLS token.
//!
//! Only `vision_model.*` tensors are read: the weights are memory-mapped and converted tensor by
//! tensor, so a checkpoint's text tower is never brought into memory.
//!
//! The NaFlex variant (`siglip2`, `Siglip2VisionModel`: patchified variable-aspect input with
//! per-image position resizing and a padding mask) is [`super::siglip2`], which reuses these
//! blocks.

use std::cell::RefCell;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Deserialize;

pub use super::activation::Activation;
use super::linear::Proj;
use super::loader::{Bindings, LoadOptions, Loader, PartSpec};
use super::ops;
use super::resample::{bicubic_matrix, resize_grid};
use super::weights::Weights;
use super::{parse_config, BackboneOutput, FeatureExtractor, IntOrPair, ProjRole};

/// `model_type` of a dual-tower SigLIP checkpoint (`SiglipModel`), whose `vision_config` is read.
pub const MODEL_TYPE: &str = "siglip";
/// `model_type` of a standalone `SiglipVisionModel` snapshot.
pub const VISION_MODEL_TYPE: &str = "siglip_vision_model";

/// Prefixes under which the vision tensors may live: `SiglipModel` and 4.x `SiglipVisionModel`
/// (`vision_model.`), 5.x `SiglipVisionModel` (none).
const PREFIXES: &[&str] = &[
    "vision_model.",
    "",
    "model.vision_model.",
    "siglip.vision_model.",
];

/// The inference-relevant fields of a SigLIP vision config, with `SiglipVisionConfig`'s defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipVisionConfig {
    /// Square patch side in pixels.
    pub patch_size: usize,
    /// Square training resolution; the position table is `(image_size / patch_size)²` rows.
    pub image_size: usize,
    /// Token width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block (and in the MAP head).
    pub num_attention_heads: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// Input channels.
    pub num_channels: usize,
    /// Whether the MAP head exists (`pooler_output`).
    pub vision_use_head: bool,
}

/// A vision config as `transformers` writes it; defaults are `SiglipVisionConfig`'s (published
/// configs often give only a few fields).
#[derive(Deserialize)]
struct RawVision {
    patch_size: Option<IntOrPair>,
    image_size: Option<IntOrPair>,
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

/// Just the model type of a `config.json`.
#[derive(Deserialize)]
struct Top {
    model_type: Option<String>,
    vision_config: Option<serde_json::Value>,
}

// Defaults of transformers' `SiglipVisionConfig`, shared with SigLIP 2 (same values there).
pub(super) fn d_hidden() -> usize {
    768
}
pub(super) fn d_intermediate() -> usize {
    3072
}
pub(super) fn d_layers() -> usize {
    12
}
pub(super) fn d_heads() -> usize {
    12
}
pub(super) fn d_act() -> String {
    "gelu_pytorch_tanh".into()
}
pub(super) fn d_eps() -> f64 {
    1e-6
}
pub(super) fn d_channels() -> usize {
    3
}
pub(super) fn d_true() -> bool {
    true
}

impl SiglipVisionConfig {
    /// Reads and validates `path` (a snapshot's `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = super::read_config_text(path)?;
        Self::from_json(&text, path)
    }

    /// Parses `config.json` text: the `vision_config` of a `siglip` checkpoint, or the whole of a
    /// `siglip_vision_model` one; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let o = origin.display();
        let top: Top = parse_config(text, origin)?;
        let raw: RawVision = match top.model_type.as_deref() {
            Some(MODEL_TYPE) => {
                let v = top.vision_config.unwrap_or_else(|| serde_json::json!({}));
                let vt = v.to_string();
                parse_config(&vt, origin).with_context(|| format!("{o}: in `vision_config`"))?
            }
            Some(VISION_MODEL_TYPE) => parse_config(text, origin)?,
            Some(t @ ("siglip2" | "siglip2_vision_model")) => bail!(
                "{o}: model_type `{t}` is a SigLIP 2 NaFlex checkpoint (variable aspect ratio, \
                 patchified input): load it with `model::siglip2`, not the fixed-resolution tower"
            ),
            other => bail!(
                "{o}: model_type {other:?} is not a SigLIP vision model (expected `{MODEL_TYPE}` \
                 or `{VISION_MODEL_TYPE}`)"
            ),
        };
        let patch = IntOrPair::pair(raw.patch_size, 16, "patch_size", origin)?;
        let image = IntOrPair::pair(raw.image_size, 224, "image_size", origin)?;
        if patch[0] != patch[1] || image[0] != image[1] {
            bail!(
                "{o}: patch_size {patch:?} and image_size {image:?} must be square (transformers' \
                 SigLIP position table is a square grid)"
            );
        }
        let cfg = Self {
            patch_size: patch[0],
            image_size: image[0],
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            hidden_act: Activation::from_config(&raw.hidden_act, origin)?,
            layer_norm_eps: raw.layer_norm_eps,
            num_channels: raw.num_channels,
            vision_use_head: raw.vision_use_head,
        };
        if cfg.patch_size == 0 || cfg.hidden_size == 0 || cfg.num_attention_heads == 0 {
            bail!("{o}: patch_size, hidden_size and num_attention_heads must be positive");
        }
        if cfg.image_size < cfg.patch_size {
            bail!(
                "{o}: image_size {} is smaller than one {}-pixel patch",
                cfg.image_size,
                cfg.patch_size
            );
        }
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            bail!(
                "{o}: hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        Ok(cfg)
    }

    /// Side of the square position grid (`image_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// `fc1 → act → fc2` (`SiglipMLP`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Proj<B>,
    pub fc2: Proj<B>,
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    fn load(l: &Loader<'_, B>, cfg: &SiglipVisionConfig) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        let proj = |rel: &str, d_in, d_out| {
            let (w, b) = (format!("{rel}.weight"), format!("{rel}.bias"));
            l.proj(
                &[PartSpec::new(&[w.as_str()], Some(&[b.as_str()]), d_out)],
                d_in,
                None,
            )
        };
        Ok(Self {
            fc1: proj("fc1", d, f)?,
            fc2: proj("fc2", f, d)?,
            act: cfg.hidden_act,
        })
    }

    /// `residual + mlp(x)`.
    fn forward_add(&self, x: Tensor<B, 2>, residual: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2
            .forward_add(self.fc1.forward_act(x, self.act), residual, &None)
    }
}

/// One pre-LN encoder block (`SiglipEncoderLayer`): q | k | v fused into one projection.
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    pub layer_norm1: LayerNorm<B>,
    pub qkv: Proj<B>,
    pub out_proj: Proj<B>,
    pub layer_norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Layer<B> {
    /// This layer's four projections, for attaching adapters (shared with SigLIP 2).
    pub(super) fn projections_mut(&mut self) -> [(ProjRole, &mut Proj<B>); 4] {
        [
            (ProjRole::AttnQkv, &mut self.qkv),
            (ProjRole::AttnOut, &mut self.out_proj),
            (ProjRole::MlpIn, &mut self.mlp.fc1),
            (ProjRole::MlpOut, &mut self.mlp.fc2),
        ]
    }

    /// Block `i` (`encoder.layers.i`).
    pub fn load(l: &Loader<'_, B>, i: usize, cfg: &SiglipVisionConfig) -> Result<Self> {
        let l = l.pp(&format!("encoder.layers.{i}")).at_depth(i + 1);
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let names: Vec<[String; 2]> = ["q_proj", "k_proj", "v_proj", "out_proj"]
            .iter()
            .map(|p| {
                [
                    format!("self_attn.{p}.weight"),
                    format!("self_attn.{p}.bias"),
                ]
            })
            .collect();
        let w: Vec<[&str; 1]> = names.iter().map(|n| [n[0].as_str()]).collect();
        let b: Vec<[&str; 1]> = names.iter().map(|n| [n[1].as_str()]).collect();
        let part = |j: usize| PartSpec::new(&w[j], Some(&b[j][..]), d);
        Ok(Self {
            layer_norm1: l.layer_norm("layer_norm1", d, eps)?,
            qkv: l.proj(&[part(0), part(1), part(2)], d, None)?,
            out_proj: l.proj(&[part(3)], d, None)?,
            layer_norm2: l.layer_norm("layer_norm2", d, eps)?,
            mlp: Mlp::load(&l.pp("mlp"), cfg)?,
        })
    }

    /// One block over tokens flattened to `[N * T, D]`.
    pub(crate) fn forward(&self, x: Tensor<B, 2>, shape: ops::AttnShape) -> Tensor<B, 2> {
        let h = ops::layer_norm(&self.layer_norm1, x.clone());
        let a = ops::self_attention(self.qkv.forward(h), shape, None);
        let x = self.out_proj.forward_add(a, x, &None);
        self.mlp
            .forward_add(ops::layer_norm(&self.layer_norm2, x.clone()), x)
    }
}

/// The multi-head attention-pooling head (`SiglipMultiheadAttentionPoolingHead`): a learned
/// probe attends over the tokens (`torch.nn.MultiheadAttention`), then a residual MLP.
#[derive(Module, Debug)]
pub struct MapHead<B: Backend> {
    /// The probe query `[1, D]`.
    pub probe: Param<Tensor<B, 2>>,
    /// `in_proj_weight` `[3D, D]` in torch's `[out, in]` layout (one tensor for q | k | v, so it
    /// is kept as the snapshot has it, for exact write-back).
    pub in_proj_weight: Param<Tensor<B, 2>>,
    pub in_proj_bias: Param<Tensor<B, 1>>,
    pub out_proj: Proj<B>,
    pub layernorm: LayerNorm<B>,
    pub mlp: Mlp<B>,
    #[module(skip)]
    heads: usize,
}

impl<B: Backend> MapHead<B> {
    pub(crate) fn load(l: &Loader<'_, B>, cfg: &SiglipVisionConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let l = l.pp("head");
        let a = l.pp("attention");
        Ok(Self {
            probe: l.param(&["probe"], &[1, 1, d], [1, d], false)?,
            in_proj_weight: a.param(&["in_proj_weight"], &[3 * d, d], [3 * d, d], true)?,
            in_proj_bias: a.param(&["in_proj_bias"], &[3 * d], [3 * d], false)?,
            out_proj: a.proj(
                &[PartSpec::new(
                    &["out_proj.weight"],
                    Some(&["out_proj.bias"]),
                    d,
                )],
                d,
                None,
            )?,
            layernorm: l.layer_norm("layernorm", d, cfg.layer_norm_eps)?,
            mlp: Mlp::load(&l.pp("mlp"), cfg)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// The pooled vector `[N, D]` of a final hidden state `[N, T, D]`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [n, t, d] = hidden.dims();
        let (h, hd) = (self.heads, d / self.heads);
        let w = self.in_proj_weight.val();
        let b = self.in_proj_bias.val();
        let q = ops::linear(
            self.probe.val(),
            w.clone().narrow(0, 0, d).transpose(),
            Some(b.clone().narrow(0, 0, d)),
        );
        let q = q
            .reshape([1, 1, h, hd])
            .swap_dims(1, 2)
            .expand([n, h, 1, hd]);
        let kv = ops::linear(
            hidden.reshape([n * t, d]),
            w.narrow(0, d, 2 * d).transpose(),
            Some(b.narrow(0, d, 2 * d)),
        );
        let split = |i: usize| {
            kv.clone()
                .narrow(1, i * d, d)
                .reshape([n, t, h, hd])
                .swap_dims(1, 2)
        };
        let ctx = ops::attention(q, split(0), split(1), 1.0 / (hd as f64).sqrt())
            .swap_dims(1, 2)
            .reshape([n, d]);
        let x = self.out_proj.forward(ctx);
        self.mlp
            .forward_add(ops::layer_norm(&self.layernorm, x.clone()), x)
    }
}

/// Patch projection and the learned position table (`SiglipVisionEmbeddings`).
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// The patch convolution as a `[C·P·P, D]` linear map over unfolded patches.
    pub patch: Proj<B>,
    /// `position_embedding.weight` `[grid², D]`.
    pub pos: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embeddings<B> {
    pub fn load(l: &Loader<'_, B>, cfg: &SiglipVisionConfig) -> Result<Self> {
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let e = l.pp("embeddings");
        let conv = [d, c, p, p];
        let patch = e.proj(
            &[PartSpec {
                weight: &["patch_embedding.weight"],
                bias: Some(&["patch_embedding.bias"]),
                d_out: d,
                shape: Some(&conv),
            }],
            c * p * p,
            None,
        )?;
        let np = cfg.grid() * cfg.grid();
        let pos = e.param(&["position_embedding.weight"], &[np, d], [np, d], false)?;
        Ok(Self { patch, pos })
    }

    /// Position embeddings `[rows * cols, D]` for an input of `rows × cols` patches: the table
    /// itself for the trained patch count on a square input (transformers' shortcut), else the
    /// table resized bicubic (a = -0.75, no antialias, align_corners=False) to `rows × cols`.
    fn positions(
        &self,
        cfg: &SiglipVisionConfig,
        rows: usize,
        cols: usize,
        square: bool,
    ) -> Tensor<B, 2> {
        let g = cfg.grid();
        let pos = self.pos.val();
        if rows * cols == g * g && square {
            return pos;
        }
        resize_grid(
            pos,
            [g, g],
            [rows, cols],
            bicubic_matrix(g, rows, false),
            bicubic_matrix(g, cols, false),
        )
    }
}

/// A SigLIP vision tower with its weights, generic over the Burn backend.
#[derive(Module, Debug)]
pub struct SiglipVisionModel<B: Backend> {
    pub embeddings: Embeddings<B>,
    pub layers: Vec<Layer<B>>,
    pub post_layernorm: LayerNorm<B>,
    pub head: Option<MapHead<B>>,
    #[module(skip)]
    config: SiglipVisionConfig,
    #[module(skip)]
    bindings: Bindings,
}

/// Loads a SigLIP vision tower from a Hugging Face snapshot folder (`config.json` + safetensors).
pub fn load<B: Backend>(snapshot_dir: &Path, device: &B::Device) -> Result<SiglipVisionModel<B>> {
    let config = SiglipVisionConfig::from_file(&snapshot_dir.join("config.json"))?;
    let weights = Weights::open(snapshot_dir)?;
    SiglipVisionModel::from_weights(
        config,
        &weights,
        snapshot_dir,
        device,
        LoadOptions::INFERENCE,
    )
}

impl<B: Backend> SiglipVisionModel<B> {
    /// Builds the model from opened weights; `dir` names the snapshot in errors.
    pub fn from_weights(
        config: SiglipVisionConfig,
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
                 prefixes {:?}); is this a SigLIP snapshot? First tensors: {sample:?}",
                dir.display(),
                PREFIXES
            )
        })?;
        let bindings = RefCell::new(Vec::new());
        let l = Loader::new(weights, dir, root, device, opts, &bindings);
        let cfg = &config;
        let embeddings = Embeddings::load(&l, cfg)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let bar = crate::util::progress::bar(cfg.num_hidden_layers as u64, "SigLIP blocks");
        for i in 0..cfg.num_hidden_layers {
            layers.push(Layer::load(&l, i, cfg)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let extra = format!(
            "encoder.layers.{}.layer_norm1.weight",
            cfg.num_hidden_layers
        );
        if l.has(&extra) {
            bail!(
                "the weights of {} contain `{}` but config.json declares num_hidden_layers={} (config.json and weights disagree)",
                dir.display(),
                l.name(&extra),
                cfg.num_hidden_layers
            );
        }
        let top = l.at_depth(cfg.num_hidden_layers + 1);
        let post_layernorm =
            top.layer_norm("post_layernorm", cfg.hidden_size, cfg.layer_norm_eps)?;
        let head = if cfg.vision_use_head {
            Some(MapHead::load(&top, cfg)?)
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
    pub fn config(&self) -> &SiglipVisionConfig {
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

    /// Every encoder projection, for attaching adapters (the MAP head's stay as they are).
    pub fn projections_mut(&mut self) -> Vec<(ProjRole, &mut Proj<B>)> {
        self.layers
            .iter_mut()
            .flat_map(Layer::projections_mut)
            .collect()
    }

    /// Final (`post_layernorm`) hidden state `[N, patches, D]`.
    ///
    /// Other input sizes than `image_size` get the position table resized, as transformers does
    /// with `interpolate_pos_encoding=True`; trailing pixels that do not fill a patch are ignored,
    /// like the reference convolution.
    pub fn try_forward(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let cfg = &self.config;
        let [n, c, h, w] = pixel_values.dims();
        let p = cfg.patch_size;
        if n == 0 {
            bail!("empty batch");
        }
        if c != cfg.num_channels {
            bail!(
                "SigLIP expects {} input channels, got pixel_values of shape [{n}, {c}, {h}, {w}]",
                cfg.num_channels
            );
        }
        let (rows, cols) = (h / p, w / p);
        if rows == 0 || cols == 0 {
            bail!("SigLIP input {h}x{w} is smaller than one {p}x{p} patch");
        }
        let d = cfg.hidden_size;
        let x = if rows * p != h || cols * p != w {
            pixel_values.slice([0..n, 0..c, 0..rows * p, 0..cols * p])
        } else {
            pixel_values
        };
        let t = rows * cols;
        let patches = x
            .reshape([n, c, rows, p, cols, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n * t, c * p * p]);
        let e = &self.embeddings;
        let tokens = e.patch.forward(patches).reshape([n, t, d])
            + e.positions(cfg, rows, cols, h == w).unsqueeze::<3>();
        let mut x = tokens.reshape([n * t, d]);
        let shape = ops::AttnShape {
            n,
            t,
            heads: cfg.num_attention_heads,
        };
        for layer in &self.layers {
            x = layer.forward(x, shape);
        }
        Ok(ops::layer_norm(&self.post_layernorm, x).reshape([n, t, d]))
    }

    /// All outputs for a batch. SigLIP has no CLS token: `pooler` is the MAP head's output
    /// (`pooler_output`), `cls` repeats it (so the head input `[cls ; patch_mean]` is
    /// `[pooled ; mean of patch tokens]`), and `patch_mean` averages every token. Without a head
    /// (`vision_use_head: false`) both `pooler` and `cls` are the patch mean.
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

impl<B: Backend> FeatureExtractor<B> for SiglipVisionModel<B> {
    /// # Panics
    /// On a malformed input; use [`SiglipVisionModel::try_extract`] to get it as an error.
    fn extract(&self, pixel_values: Tensor<B, 4>, want_hidden: bool) -> BackboneOutput<B> {
        self.try_extract(pixel_values, want_hidden)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn patch_size(&self) -> usize {
        self.config.patch_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_published_config_gets_class_defaults() {
        // google/siglip-base-patch16-224 gives only two vision fields.
        let text = r#"{"model_type": "siglip", "vision_config": {"model_type": "siglip_vision_model", "patch_size": 16}}"#;
        let c = SiglipVisionConfig::from_json(text, Path::new("c.json")).unwrap();
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.image_size),
            (768, 12, 224)
        );
        assert_eq!(c.hidden_act, Activation::GeluTanh);
        assert_eq!(c.grid(), 14);
        assert!(c.vision_use_head);
    }

    #[test]
    fn naflex_and_bad_fields_are_named() {
        let e = SiglipVisionConfig::from_json(
            r#"{"model_type": "siglip2"}"#,
            Path::new("s/config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("s/config.json") && e.contains("NaFlex"), "{e}");
        let e = SiglipVisionConfig::from_json(
            r#"{"model_type": "siglip", "vision_config": {"hidden_size": "big"}}"#,
            Path::new("s/config.json"),
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("vision_config") && e.contains("hidden_size"),
            "{e}"
        );
        let e = SiglipVisionConfig::from_json(
            r#"{"model_type": "siglip_vision_model", "hidden_size": 30, "num_attention_heads": 4}"#,
            Path::new("s/config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("divisible"), "{e}");
    }
}
