//! DINOv3 ViT (`DINOv3ViTModel` of `transformers` 5.x).
//!
//! Patch-16 embedding, CLS + register tokens, 2D rotary position embeddings on the patch tokens
//! (never on CLS/registers), per-projection bias flags, layer scale, plain or gated (SwiGLU)
//! MLP, final layer norm. Every public size (ViT-S/B/L, H+, 7B) is described by its
//! `config.json`; nothing here is size-specific.
//!
//! The training-only RoPE augmentations (`pos_embed_shift`, `pos_embed_jitter`,
//! `pos_embed_rescale`) and stochastic depth are deliberately absent: `transformers` applies them
//! only in training mode, and the published configs disable them (sv72's fine-tuning trains
//! without them, as PEFT on those configs does).
//!
//! Loaded for inference ([`LoadOptions::INFERENCE`]), the layer-scale vectors are folded into
//! the output projections; for training they stay parameters of their own.

use std::cell::RefCell;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

pub use super::activation::Activation;
use super::linear::Proj;
use super::loader::{Bindings, LoadOptions, Loader, PartSpec};
use super::ops::{self, Rope};
use super::weights::Weights;
use super::{parse_config, BackboneOutput, FeatureExtractor, IntOrPair, ProjRole};

/// `model_type` of a DINOv3 ViT snapshot's `config.json`.
pub const MODEL_TYPE: &str = "dinov3_vit";

/// Prefixes under which the model's tensors may live (bare export, task wrappers, timm-style).
const PREFIXES: &[&str] = &["", "model.", "dinov3.", "backbone.", "dinov3_vit.", "vit."];

/// The inference-relevant fields of a DINOv3 ViT `config.json`, with `transformers`' defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov3Config {
    /// Square patch side in pixels.
    pub patch_size: usize,
    /// Token width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// RoPE base period.
    pub rope_theta: f64,
    /// Input channels.
    pub num_channels: usize,
    /// Bias on the query projection.
    pub query_bias: bool,
    /// Bias on the key projection.
    pub key_bias: bool,
    /// Bias on the value projection.
    pub value_bias: bool,
    /// Bias on the attention output projection.
    pub proj_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// Gated (SwiGLU-style) MLP, as in ViT-H+ and 7B.
    pub use_gated_mlp: bool,
    /// Register tokens between CLS and the patches.
    pub num_register_tokens: usize,
}

/// `config.json` as written by `transformers`; defaults are `DINOv3ViTConfig`'s.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    patch_size: Option<IntOrPair>,
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
    #[serde(default = "d_theta")]
    rope_theta: f64,
    #[serde(default = "d_channels")]
    num_channels: usize,
    #[serde(default = "d_true")]
    query_bias: bool,
    #[serde(default)]
    key_bias: bool,
    #[serde(default = "d_true")]
    value_bias: bool,
    #[serde(default = "d_true")]
    proj_bias: bool,
    #[serde(default = "d_true")]
    mlp_bias: bool,
    #[serde(default)]
    use_gated_mlp: bool,
    #[serde(default)]
    num_register_tokens: usize,
}

fn d_hidden() -> usize {
    384
}
fn d_intermediate() -> usize {
    1536
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    6
}
fn d_act() -> String {
    "gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_theta() -> f64 {
    100.0
}
fn d_channels() -> usize {
    3
}
fn d_true() -> bool {
    true
}

impl Dinov3Config {
    /// Reads and validates `path` (a snapshot's `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = super::read_config_text(path)?;
        Self::from_json(&text, path)
    }

    /// Parses `config.json` text; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let o = origin.display();
        let raw: RawConfig = parse_config(text, origin)?;
        match (&raw.model_type, &raw.architectures) {
            (Some(mt), _) if mt == MODEL_TYPE => {}
            (Some(mt), _) => bail!(
                "{o}: model_type `{mt}` is not a DINOv3 ViT (expected `{MODEL_TYPE}`; \
                 DINOv3 ConvNeXt and other families are not supported by this loader)"
            ),
            (None, Some(arch)) if arch.iter().any(|a| a.starts_with("DINOv3ViT")) => {}
            (None, arch) => bail!(
                "{o}: unknown architecture {arch:?} without a `model_type`; expected \
                 `model_type: \"{MODEL_TYPE}\"` (a DINOv3ViTModel snapshot)"
            ),
        }
        let patch = IntOrPair::pair(raw.patch_size, 16, "patch_size", origin)?;
        if patch[0] != patch[1] {
            bail!("{o}: patch_size {patch:?} is not square; only square patches are supported");
        }
        let patch_size = patch[0];
        let hidden_act = Activation::from_config(&raw.hidden_act, origin)?;
        let cfg = Self {
            patch_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            hidden_act,
            layer_norm_eps: raw.layer_norm_eps,
            rope_theta: raw.rope_theta,
            num_channels: raw.num_channels,
            query_bias: raw.query_bias,
            key_bias: raw.key_bias,
            value_bias: raw.value_bias,
            proj_bias: raw.proj_bias,
            mlp_bias: raw.mlp_bias,
            use_gated_mlp: raw.use_gated_mlp,
            num_register_tokens: raw.num_register_tokens,
        };
        if cfg.patch_size == 0 || cfg.hidden_size == 0 || cfg.num_attention_heads == 0 {
            bail!("{o}: patch_size, hidden_size and num_attention_heads must be positive");
        }
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            bail!(
                "{o}: hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        // RoPE gives each axis (y, x) head_dim / 4 frequencies, repeated for rotate_half.
        if !cfg.head_dim().is_multiple_of(4) {
            bail!(
                "{o}: head dim {} (hidden_size / num_attention_heads) must be a multiple of 4 for DINOv3's 2D RoPE",
                cfg.head_dim()
            );
        }
        if !(cfg.rope_theta.is_finite() && cfg.rope_theta > 0.0) {
            bail!("{o}: rope_theta must be a positive number");
        }
        Ok(cfg)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// CLS plus register tokens, i.e. the tokens RoPE leaves alone.
    pub fn num_prefix_tokens(&self) -> usize {
        1 + self.num_register_tokens
    }

    /// RoPE inverse frequencies, `1 / theta^(4k / head_dim)` for `k < head_dim / 4`, in f32 as
    /// `transformers` computes them.
    fn inv_freq(&self) -> Vec<f32> {
        let step = 4.0 / self.head_dim() as f64;
        (0..self.head_dim() / 4)
            .map(|k| {
                // torch.arange yields f32 exponents; pow and the reciprocal are f32 ops.
                let e = (k as f64 * step) as f32;
                1.0f32 / (self.rope_theta as f32).powf(e)
            })
            .collect()
    }

    /// `(cos, sin)` tables `[hp * wp, head_dim]` for a grid of `hp × wp` patches: patch centres
    /// normalised to [-1, 1] (row-major, y first), angles `2π · coord · inv_freq` laid out as
    /// `[y freqs, x freqs]` and repeated twice, as `rotate_half` expects.
    pub fn rope_tables(&self, hp: usize, wp: usize) -> (Vec<f32>, Vec<f32>) {
        let inv = self.inv_freq();
        let hd = self.head_dim();
        let q = hd / 4;
        let coord = |i: usize, n: usize| -> f32 {
            let c = (i as f32 + 0.5) / n as f32;
            2.0 * c - 1.0
        };
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let mut cos = Vec::with_capacity(hp * wp * hd);
        let mut sin = Vec::with_capacity(hp * wp * hd);
        let mut angles = vec![0f32; hd / 2];
        for y in 0..hp {
            for x in 0..wp {
                let (cy, cx) = (coord(y, hp), coord(x, wp));
                for k in 0..q {
                    angles[k] = two_pi * cy * inv[k];
                    angles[q + k] = two_pi * cx * inv[k];
                }
                for _ in 0..2 {
                    cos.extend(angles.iter().map(|a| a.cos()));
                    sin.extend(angles.iter().map(|a| a.sin()));
                }
            }
        }
        (cos, sin)
    }
}

/// Plain (`up → act → down`) or gated (`down(act(gate) * up)`) MLP.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate: Option<Proj<B>>,
    pub up: Proj<B>,
    /// With `layer_scale2` folded in, when folded.
    pub down: Proj<B>,
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    fn load(l: &Loader<'_, B>, cfg: &Dinov3Config, ls2: Option<&[f32]>) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        let proj = |rel: &str, d_in, d_out, scale| {
            let (w, b) = (format!("mlp.{rel}.weight"), format!("mlp.{rel}.bias"));
            let bias = [b.as_str()];
            l.proj(
                &[PartSpec::new(
                    &[w.as_str()],
                    cfg.mlp_bias.then_some(&bias[..]),
                    d_out,
                )],
                d_in,
                scale,
            )
        };
        Ok(Self {
            gate: if cfg.use_gated_mlp {
                Some(proj("gate_proj", d, f, None)?)
            } else {
                None
            },
            up: proj("up_proj", d, f, None)?,
            down: proj("down_proj", f, d, ls2)?,
            act: cfg.hidden_act,
        })
    }

    /// `residual + scale * mlp(x)`.
    fn forward_add(
        &self,
        x: Tensor<B, 2>,
        residual: Tensor<B, 2>,
        scale: &Option<Param<Tensor<B, 1>>>,
    ) -> Tensor<B, 2> {
        let h = match &self.gate {
            Some(gate) => gate.forward_act(x.clone(), self.act) * self.up.forward(x),
            None => self.up.forward_act(x, self.act),
        };
        self.down.forward_add(h, residual, scale)
    }
}

/// Self-attention: q | k | v fused into one `[D, 3D]` projection (each with the bias the config
/// gives it), RoPE on the patch tokens, output projection.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv: Proj<B>,
    /// With `layer_scale1` folded in, when folded.
    pub o_proj: Proj<B>,
}

impl<B: Backend> Attention<B> {
    fn load(l: &Loader<'_, B>, cfg: &Dinov3Config, ls1: Option<&[f32]>) -> Result<Self> {
        let d = cfg.hidden_size;
        let names: Vec<[String; 2]> = ["q_proj", "k_proj", "v_proj", "o_proj"]
            .iter()
            .map(|p| {
                [
                    format!("attention.{p}.weight"),
                    format!("attention.{p}.bias"),
                ]
            })
            .collect();
        let w: Vec<[&str; 1]> = names.iter().map(|n| [n[0].as_str()]).collect();
        let b: Vec<[&str; 1]> = names.iter().map(|n| [n[1].as_str()]).collect();
        // A bias the config disables is ignored, as `transformers` ignores it (an unexpected key).
        let flags = [cfg.query_bias, cfg.key_bias, cfg.value_bias, cfg.proj_bias];
        let part = |j: usize| PartSpec::new(&w[j], flags[j].then_some(&b[j][..]), d);
        Ok(Self {
            qkv: l.proj(&[part(0), part(1), part(2)], d, None)?,
            o_proj: l.proj(&[part(3)], d, ls1)?,
        })
    }

    /// Attention context (before `o_proj`) over tokens flattened to `[N * T, D]`.
    fn context(
        &self,
        x: Tensor<B, 2>,
        [n, t]: [usize; 2],
        cfg: &Dinov3Config,
        rope: &Rope<B>,
    ) -> Tensor<B, 2> {
        let shape = ops::AttnShape {
            n,
            t,
            heads: cfg.num_attention_heads,
        };
        ops::self_attention(self.qkv.forward(x), shape, Some(rope))
    }
}

/// One pre-norm transformer block with layer scale.
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: Attention<B>,
    /// `layer_scale1` (unfolded only).
    pub ls1: Option<Param<Tensor<B, 1>>>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    /// `layer_scale2` (unfolded only).
    pub ls2: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Layer<B> {
    /// Block `i`, under `layers` (`layer` or `model.layer`, as the checkpoint spells it).
    pub fn load(l: &Loader<'_, B>, layers: &str, i: usize, cfg: &Dinov3Config) -> Result<Self> {
        let l = l.pp(&format!("{layers}.{i}")).at_depth(i + 1);
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let ls1 = l.layer_scale("layer_scale1.lambda1", d)?;
        let ls2 = l.layer_scale("layer_scale2.lambda1", d)?;
        Ok(Self {
            norm1: l.layer_norm("norm1", d, eps)?,
            attn: Attention::load(&l, cfg, ls1.folded())?,
            norm2: l.layer_norm("norm2", d, eps)?,
            mlp: Mlp::load(&l, cfg, ls2.folded())?,
            ls1: ls1.into_param(),
            ls2: ls2.into_param(),
        })
    }

    /// One block over tokens flattened to `[N * T, D]` (2D keeps bias and layer-scale
    /// broadcasts on burn-flex's fast path).
    fn forward(
        &self,
        x: Tensor<B, 2>,
        nt: [usize; 2],
        cfg: &Dinov3Config,
        rope: &Rope<B>,
    ) -> Tensor<B, 2> {
        let a = self
            .attn
            .context(ops::layer_norm(&self.norm1, x.clone()), nt, cfg, rope);
        let x = self.attn.o_proj.forward_add(a, x, &self.ls1);
        self.mlp
            .forward_add(ops::layer_norm(&self.norm2, x.clone()), x, &self.ls2)
    }
}

/// Patch projection, CLS and register tokens (`DINOv3ViTEmbeddings`; the mask token is
/// pre-training only).
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// The patch convolution as a `[C·P·P, D]` linear map over unfolded patches
    /// (kernel = stride, so the two are the same operation).
    pub patch: Proj<B>,
    pub cls_token: Param<Tensor<B, 3>>,
    pub register_tokens: Option<Param<Tensor<B, 3>>>,
}

impl<B: Backend> Embeddings<B> {
    pub fn load(l: &Loader<'_, B>, cfg: &Dinov3Config) -> Result<Self> {
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let e = l.pp("embeddings");
        let conv = [d, c, p, p];
        let patch = e.proj(
            &[PartSpec {
                weight: &["patch_embeddings.weight"],
                bias: Some(&["patch_embeddings.bias"]),
                d_out: d,
                shape: Some(&conv),
            }],
            c * p * p,
            None,
        )?;
        let r = cfg.num_register_tokens;
        Ok(Self {
            patch,
            cls_token: e.param(&["cls_token"], &[1, 1, d], [1, 1, d], false)?,
            register_tokens: if r > 0 {
                Some(e.param(&["register_tokens"], &[1, r, d], [1, r, d], false)?)
            } else {
                None
            },
        })
    }
}

/// A DINOv3 ViT backbone with its weights, generic over the Burn backend.
#[derive(Module, Debug)]
pub struct Dinov3Model<B: Backend> {
    pub embeddings: Embeddings<B>,
    pub layers: Vec<Layer<B>>,
    pub norm: LayerNorm<B>,
    #[module(skip)]
    config: Dinov3Config,
    #[module(skip)]
    bindings: Bindings,
}

/// Loads a DINOv3 ViT from a Hugging Face snapshot folder (`config.json` + safetensors).
pub fn load<B: Backend>(snapshot_dir: &Path, device: &B::Device) -> Result<Dinov3Model<B>> {
    let config = Dinov3Config::from_file(&snapshot_dir.join("config.json"))?;
    let weights = Weights::open(snapshot_dir)?;
    Dinov3Model::from_weights(
        config,
        &weights,
        snapshot_dir,
        device,
        LoadOptions::INFERENCE,
    )
}

impl<B: Backend> Dinov3Model<B> {
    /// Builds the model from opened weights; `dir` names the snapshot in errors.
    pub fn from_weights(
        config: Dinov3Config,
        weights: &Weights,
        dir: &Path,
        device: &B::Device,
        opts: LoadOptions,
    ) -> Result<Self> {
        let probe = "embeddings.patch_embeddings.weight";
        let root = weights.detect_prefix(probe, PREFIXES).ok_or_else(|| {
            let sample: Vec<&str> = weights.names().into_iter().take(5).collect();
            anyhow!(
                "tensor `{probe}` is missing from the weights of {} (also tried prefixes {:?}); \
                 is this a DINOv3 ViT snapshot? First tensors: {sample:?}",
                dir.display(),
                &PREFIXES[1..]
            )
        })?;
        let bindings = RefCell::new(Vec::new());
        let l = Loader::new(weights, dir, root, device, opts, &bindings);
        // Published checkpoints say `layer.N`, transformers 5 in memory says `model.layer.N`.
        let layers = ["layer", "model.layer"]
            .into_iter()
            .find(|p| l.has(&format!("{p}.0.norm1.weight")))
            .unwrap_or("layer");
        let cfg = &config;
        let embeddings = Embeddings::load(&l, cfg)?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        let bar = crate::util::progress::bar(cfg.num_hidden_layers as u64, "DINOv3 blocks");
        for i in 0..cfg.num_hidden_layers {
            blocks.push(Layer::load(&l, layers, i, cfg)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        // A checkpoint with more blocks than config.json declares is the wrong config.
        let extra = format!("{layers}.{}.norm1.weight", cfg.num_hidden_layers);
        if l.has(&extra) {
            bail!(
                "the weights of {} contain `{}` but config.json declares num_hidden_layers={} (config.json and weights disagree)",
                dir.display(),
                l.name(&extra),
                cfg.num_hidden_layers
            );
        }
        let ln = l.at_depth(cfg.num_hidden_layers + 1);
        let norm = ln.layer_norm("norm", cfg.hidden_size, cfg.layer_norm_eps)?;
        Ok(Self {
            embeddings,
            layers: blocks,
            norm,
            config,
            bindings: bindings.into_inner(),
        })
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Dinov3Config {
        &self.config
    }

    /// Where each parameter came from (empty when loaded folded, for inference).
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Mutable bindings, for adapters attached after loading.
    pub fn bindings_mut(&mut self) -> &mut Bindings {
        &mut self.bindings
    }

    /// Every projection, for attaching adapters.
    pub fn projections_mut(&mut self) -> Vec<(ProjRole, &mut Proj<B>)> {
        let mut out = Vec::new();
        for l in &mut self.layers {
            out.push((ProjRole::AttnQkv, &mut l.attn.qkv));
            out.push((ProjRole::AttnOut, &mut l.attn.o_proj));
            if let Some(g) = &mut l.mlp.gate {
                out.push((ProjRole::MlpIn, g));
            }
            out.push((ProjRole::MlpIn, &mut l.mlp.up));
            out.push((ProjRole::MlpOut, &mut l.mlp.down));
        }
        out
    }

    /// Final layer-normed hidden state `[N, 1 + registers + patches, D]`.
    ///
    /// Like the reference convolution, trailing pixels that do not fill a patch are ignored.
    pub fn try_forward(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let cfg = &self.config;
        let [n, c, h, w] = pixel_values.dims();
        let p = cfg.patch_size;
        if c != cfg.num_channels {
            bail!(
                "DINOv3 expects {} input channels, got pixel_values of shape [{n}, {c}, {h}, {w}]",
                cfg.num_channels
            );
        }
        let (hp, wp) = (h / p, w / p);
        if hp == 0 || wp == 0 {
            bail!("DINOv3 input {h}x{w} is smaller than one {p}x{p} patch");
        }
        let device = pixel_values.device();
        let d = cfg.hidden_size;
        let x = if hp * p != h || wp * p != w {
            pixel_values.slice([0..n, 0..c, 0..hp * p, 0..wp * p])
        } else {
            pixel_values
        };
        let hw = hp * wp;
        let patches = x
            .reshape([n, c, hp, p, wp, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n * hw, c * p * p]);
        let e = &self.embeddings;
        let patches = e.patch.forward(patches).reshape([n, hw, d]);
        let mut tokens = vec![e.cls_token.val().expand([n, 1, d])];
        if let Some(reg) = &e.register_tokens {
            tokens.push(reg.val().expand([n, cfg.num_register_tokens, d]));
        }
        tokens.push(patches);
        let t = cfg.num_prefix_tokens() + hw;
        let mut x = Tensor::cat(tokens, 1).reshape([n * t, d]);

        let (cos, mut sin) = cfg.rope_tables(hp, wp);
        let hd = cfg.head_dim();
        for row in sin.chunks_exact_mut(hd) {
            row[..hd / 2].iter_mut().for_each(|v| *v = -*v);
        }
        let table =
            |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [1, hw * hd]), &device);
        let rope = Rope {
            cos: table(cos),
            sin_signed: table(sin),
            prefix: cfg.num_prefix_tokens(),
        };
        for layer in &self.layers {
            x = layer.forward(x, [n, t], cfg, &rope);
        }
        Ok(ops::layer_norm(&self.norm, x).reshape([n, t, d]))
    }

    /// All outputs for a batch (see [`BackboneOutput`]); `pooler` is the CLS token, as
    /// `DINOv3ViTModel.pooler_output` is.
    pub fn try_extract(
        &self,
        pixel_values: Tensor<B, 4>,
        want_hidden: bool,
    ) -> Result<BackboneOutput<B>> {
        let hidden = self.try_forward(pixel_values)?;
        Ok(BackboneOutput::from_hidden(
            hidden,
            self.config.num_prefix_tokens(),
            want_hidden,
        ))
    }
}

impl<B: Backend> FeatureExtractor<B> for Dinov3Model<B> {
    /// # Panics
    /// On a channel count other than the config's, or an input smaller than one patch; use
    /// [`Dinov3Model::try_extract`] to get these as errors.
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
