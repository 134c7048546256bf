//! DINOv3 ViT (`DINOv3ViTModel` of `transformers` 5.x), inference path only.
//!
//! Patch-16 embedding, CLS + register tokens, 2D rotary position embeddings on the patch tokens
//! (never on CLS/registers), per-projection bias flags, layer scale, plain or gated (SwiGLU)
//! MLP, final layer norm. Every public size (ViT-S/B/L, H+, 7B) is described by its
//! `config.json`; nothing here is size-specific.
//!
//! The training-only RoPE augmentations (`pos_embed_shift`, `pos_embed_jitter`,
//! `pos_embed_rescale`) and stochastic depth are deliberately absent: `transformers` applies them
//! only in training mode.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

use super::weights::Weights;
use super::{BackboneOutput, FeatureExtractor};

/// `model_type` of a DINOv3 ViT snapshot's `config.json`.
pub const MODEL_TYPE: &str = "dinov3_vit";

/// Prefixes under which the model's tensors may live (bare export, task wrappers, timm-style).
const PREFIXES: &[&str] = &["", "model.", "dinov3.", "backbone.", "dinov3_vit.", "vit."];

/// MLP activation (`hidden_act`), as `transformers`' `ACT2FN` defines each name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact, erf based.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: tanh approximation.
    GeluTanh,
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `silu` / `swish`.
    Silu,
    /// `relu`.
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "relu" => Self::Relu,
            _ => return None,
        })
    }

    fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Gelu => super::dinov2::gelu_erf(x),
            Self::GeluTanh => activation::gelu_approximate(x),
            Self::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Self::Silu => activation::silu(x),
            Self::Relu => activation::relu(x),
        }
    }
}

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

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrPair {
    Int(usize),
    Pair(Vec<usize>),
}

fn default_patch() -> IntOrPair {
    IntOrPair::Int(16)
}

/// `config.json` as written by `transformers`; defaults are `DINOv3ViTConfig`'s.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    #[serde(default = "default_patch")]
    patch_size: IntOrPair,
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
        let raw: RawConfig = serde_json::from_str(text)
            .with_context(|| format!("{o} is not a valid DINOv3 ViT config.json"))?;
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
        let patch_size = match raw.patch_size {
            IntOrPair::Int(p) => p,
            IntOrPair::Pair(v) if v.len() == 2 && v[0] == v[1] => v[0],
            IntOrPair::Pair(v) => {
                bail!("{o}: patch_size {v:?} is not square; only square patches are supported")
            }
        };
        let hidden_act = Activation::parse(&raw.hidden_act).ok_or_else(|| {
            anyhow!(
                "{o}: hidden_act `{}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, \
                 gelu_fast, quick_gelu, silu, swish, relu)",
                raw.hidden_act
            )
        })?;
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
pub struct Dinov3Mlp<B: Backend> {
    gate: Option<Linear<B>>,
    up: Linear<B>,
    down: Linear<B>,
}

impl<B: Backend> Dinov3Mlp<B> {
    fn forward(&self, x: Tensor<B, 2>, act: Activation) -> Tensor<B, 2> {
        let h = match &self.gate {
            Some(gate) => act.apply(gate.forward(x.clone())) * self.up.forward(x),
            None => act.apply(self.up.forward(x)),
        };
        self.down.forward(h)
    }
}

/// One pre-norm transformer block with layer scale.
#[derive(Module, Debug)]
pub struct Dinov3Layer<B: Backend> {
    norm1: LayerNorm<B>,
    /// q, k and v fused into one `[D, 3D]` projection (absent biases are zeros, which is exact).
    qkv: Linear<B>,
    o_proj: Linear<B>,
    layer_scale1: Param<Tensor<B, 1>>,
    norm2: LayerNorm<B>,
    mlp: Dinov3Mlp<B>,
    layer_scale2: Param<Tensor<B, 1>>,
}

/// RoPE tables of one input size, flattened to `[1, patches * head_dim]`: every elementwise
/// op then broadcasts over rows of a 2D tensor, which is far cheaper on burn-flex than
/// broadcasting over the leading dims of a 4D one.
struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    /// `sin` with its first half negated, so `rotate_half(x) * sin` becomes
    /// `swap_halves(x) * sin_signed` (negation is exact, the result is bit-identical).
    sin_signed: Tensor<B, 2>,
}

/// RoPE on the patch tokens of `x` `[N, H, T, hd]`; the first `prefix` tokens pass unrotated.
fn apply_rope<B: Backend>(x: Tensor<B, 4>, rope: &Rope<B>, prefix: usize) -> Tensor<B, 4> {
    let [n, h, t, hd] = x.dims();
    let hw = t - prefix;
    let head = x.clone().narrow(2, 0, prefix);
    let patches = x.narrow(2, prefix, hw);
    let swapped = Tensor::cat(
        vec![
            patches.clone().narrow(3, hd / 2, hd / 2),
            patches.clone().narrow(3, 0, hd / 2),
        ],
        3,
    );
    let flat = |v: Tensor<B, 4>| v.reshape([n * h, hw * hd]);
    let rotated = flat(patches) * rope.cos.clone() + flat(swapped) * rope.sin_signed.clone();
    Tensor::cat(vec![head, rotated.reshape([n, h, hw, hd])], 2)
}

impl<B: Backend> Dinov3Layer<B> {
    /// One block over tokens flattened to `[N * T, D]` (2D keeps bias and layer-scale
    /// broadcasts on burn-flex's fast path).
    fn forward(
        &self,
        x: Tensor<B, 2>,
        [n, t]: [usize; 2],
        cfg: &Dinov3Config,
        rope: &Rope<B>,
    ) -> Tensor<B, 2> {
        let d = cfg.hidden_size;
        let (heads, hd) = (cfg.num_attention_heads, cfg.head_dim());
        let qkv = self.qkv.forward(self.norm1.forward(x.clone()));
        let split = |i: usize| {
            qkv.clone()
                .narrow(1, i * d, d)
                .reshape([n, t, heads, hd])
                .swap_dims(1, 2)
        };
        let prefix = cfg.num_prefix_tokens();
        let q = apply_rope(split(0), rope, prefix);
        let k = apply_rope(split(1), rope, prefix);
        let v = split(2);
        let ctx = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let ctx = ctx.swap_dims(1, 2).reshape([n * t, d]);
        let attn = self.o_proj.forward(ctx);
        let x = x + attn * self.layer_scale1.val().unsqueeze::<2>();
        let m = self
            .mlp
            .forward(self.norm2.forward(x.clone()), cfg.hidden_act);
        x + m * self.layer_scale2.val().unsqueeze::<2>()
    }
}

/// A DINOv3 ViT backbone with its weights, generic over the Burn backend.
#[derive(Module, Debug)]
pub struct Dinov3Model<B: Backend> {
    /// The patch convolution as a `[C·P·P, D]` linear map over unfolded patches
    /// (kernel = stride, so the two are the same operation).
    patch_embed: Linear<B>,
    cls_token: Param<Tensor<B, 3>>,
    register_tokens: Option<Param<Tensor<B, 3>>>,
    layers: Vec<Dinov3Layer<B>>,
    norm: LayerNorm<B>,
    #[module(skip)]
    config: Dinov3Config,
}

/// Loads a DINOv3 ViT from a Hugging Face snapshot folder (`config.json` + safetensors).
pub fn load<B: Backend>(snapshot_dir: &Path, device: &B::Device) -> Result<Dinov3Model<B>> {
    let config = Dinov3Config::from_file(&snapshot_dir.join("config.json"))?;
    let weights = Weights::open(snapshot_dir)?;
    Dinov3Model::from_weights(config, &weights, snapshot_dir, device)
}

/// Reads the tensors of one snapshot, turning `transformers`' `[out, in]` linear weights into
/// Burn's `[in, out]` on the host so the model holds contiguous weights.
struct Loader<'a, B: Backend> {
    w: &'a Weights,
    dir: &'a Path,
    root: &'static str,
    layers: String,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.root)
    }

    fn layer(&self, i: usize, rel: &str) -> String {
        format!("{}{i}.{rel}", self.layers)
    }

    fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        self.w.tensor(name, shape, self.device)
    }

    /// `[out, in]` weight of `name.weight`, transposed to `[in, out]` row-major values.
    fn weight_t(&self, name: &str, d_in: usize, d_out: usize) -> Result<Vec<f32>> {
        let v = self.host(&format!("{name}.weight"), &[d_out, d_in])?;
        Ok(transpose(&v, d_out, d_in))
    }

    /// Host values of `name`, which must have exactly `shape`.
    fn host(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (v, found) = self.w.f32_data(name)?;
        if found != shape {
            let file = self.w.file_of(name).unwrap_or(self.dir);
            bail!(
                "tensor `{name}` in {} has shape {found:?}, but config.json implies {shape:?} (config.json and weights disagree)",
                file.display()
            );
        }
        Ok(v)
    }

    /// `name.bias` when the config says the projection has one. A bias the config disables is
    /// ignored, as `transformers` ignores it (an unexpected key).
    fn bias(&self, name: &str, d_out: usize, present: bool) -> Result<Option<Vec<f32>>> {
        if !present {
            return Ok(None);
        }
        self.host(&format!("{name}.bias"), &[d_out]).map(Some)
    }

    fn linear(&self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>> {
        let w = self.weight_t(name, d_in, d_out)?;
        let b = self.bias(name, d_out, bias)?;
        Ok(self.make_linear(w, b, d_in, d_out))
    }

    fn make_linear(
        &self,
        w: Vec<f32>,
        b: Option<Vec<f32>>,
        d_in: usize,
        d_out: usize,
    ) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [d_in, d_out]),
                self.device,
            )),
            bias: b.map(|b| {
                Param::from_tensor(Tensor::from_data(TensorData::new(b, [d_out]), self.device))
            }),
        }
    }

    fn layer_norm(&self, name: &str, d: usize, eps: f64) -> Result<LayerNorm<B>> {
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(self.device);
        ln.gamma = Param::from_tensor(self.tensor(&format!("{name}.weight"), [d])?);
        ln.beta = Some(Param::from_tensor(
            self.tensor(&format!("{name}.bias"), [d])?,
        ));
        Ok(ln)
    }

    /// q, k, v fused column-wise into `[D, 3D]`.
    fn qkv(&self, i: usize, cfg: &Dinov3Config) -> Result<Linear<B>> {
        let d = cfg.hidden_size;
        let mut w = vec![0f32; d * 3 * d];
        let mut b = vec![0f32; 3 * d];
        let mut any_bias = false;
        for (j, (proj, has_bias)) in [
            ("q_proj", cfg.query_bias),
            ("k_proj", cfg.key_bias),
            ("v_proj", cfg.value_bias),
        ]
        .into_iter()
        .enumerate()
        {
            let name = self.layer(i, &format!("attention.{proj}"));
            let wt = self.weight_t(&name, d, d)?;
            for r in 0..d {
                w[r * 3 * d + j * d..r * 3 * d + (j + 1) * d]
                    .copy_from_slice(&wt[r * d..(r + 1) * d]);
            }
            if let Some(bv) = self.bias(&name, d, has_bias)? {
                b[j * d..(j + 1) * d].copy_from_slice(&bv);
                any_bias = true;
            }
        }
        Ok(self.make_linear(w, any_bias.then_some(b), d, 3 * d))
    }
}

/// `[rows, cols]` row-major values as `[cols, rows]`, in cache-sized tiles (7B matrices are
/// 4096 x 8192).
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = vec![0f32; v.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = v[r * cols + c];
                }
            }
        }
    }
    t
}

impl<B: Backend> Dinov3Model<B> {
    /// Builds the model from opened weights; `dir` names the snapshot in errors.
    pub fn from_weights(
        config: Dinov3Config,
        weights: &Weights,
        dir: &Path,
        device: &B::Device,
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
        // Published checkpoints say `layer.N`, transformers 5 in memory says `model.layer.N`.
        let layers = ["layer.", "model.layer."]
            .iter()
            .map(|l| format!("{root}{l}"))
            .find(|l| weights.contains(&format!("{l}0.norm1.weight")))
            .unwrap_or_else(|| format!("{root}layer."));
        let ld = Loader::<B> {
            w: weights,
            dir,
            root,
            layers,
            device,
        };
        let cfg = &config;
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);

        let k = c * p * p;
        let pe = ld.host(
            &ld.name("embeddings.patch_embeddings.weight"),
            &[d, c, p, p],
        )?;
        let pe_t = transpose(&pe, d, k);
        drop(pe);
        let pe_bias = ld.bias(&ld.name("embeddings.patch_embeddings"), d, true)?;
        let patch_embed = ld.make_linear(pe_t, pe_bias, k, d);

        let cls_token = Param::from_tensor(ld.tensor(&ld.name("embeddings.cls_token"), [1, 1, d])?);
        let r = cfg.num_register_tokens;
        let register_tokens = if r > 0 {
            Some(Param::from_tensor(
                ld.tensor(&ld.name("embeddings.register_tokens"), [1, r, d])?,
            ))
        } else {
            None
        };

        let (f, bias) = (cfg.intermediate_size, cfg.mlp_bias);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let bar = crate::util::progress::bar(cfg.num_hidden_layers as u64, "DINOv3 blocks");
        for i in 0..cfg.num_hidden_layers {
            let mlp = |rel: &str, din, dout| {
                ld.linear(&ld.layer(i, &format!("mlp.{rel}")), din, dout, bias)
            };
            layers.push(Dinov3Layer {
                norm1: ld.layer_norm(&ld.layer(i, "norm1"), d, cfg.layer_norm_eps)?,
                qkv: ld.qkv(i, cfg)?,
                o_proj: ld.linear(&ld.layer(i, "attention.o_proj"), d, d, cfg.proj_bias)?,
                layer_scale1: Param::from_tensor(
                    ld.tensor(&ld.layer(i, "layer_scale1.lambda1"), [d])?,
                ),
                norm2: ld.layer_norm(&ld.layer(i, "norm2"), d, cfg.layer_norm_eps)?,
                mlp: Dinov3Mlp {
                    gate: if cfg.use_gated_mlp {
                        Some(mlp("gate_proj", d, f)?)
                    } else {
                        None
                    },
                    up: mlp("up_proj", d, f)?,
                    down: mlp("down_proj", f, d)?,
                },
                layer_scale2: Param::from_tensor(
                    ld.tensor(&ld.layer(i, "layer_scale2.lambda1"), [d])?,
                ),
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        // A checkpoint with more blocks than config.json declares is the wrong config.
        let extra = ld.layer(cfg.num_hidden_layers, "norm1.weight");
        if weights.contains(&extra) {
            bail!(
                "the weights of {} contain `{extra}` but config.json declares num_hidden_layers={} (config.json and weights disagree)",
                dir.display(),
                cfg.num_hidden_layers
            );
        }
        let norm = ld.layer_norm(&ld.name("norm"), d, cfg.layer_norm_eps)?;
        Ok(Self {
            patch_embed,
            cls_token,
            register_tokens,
            layers,
            norm,
            config,
        })
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Dinov3Config {
        &self.config
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
        let patches = self.patch_embed.forward(patches).reshape([n, hw, d]);
        let mut tokens = vec![self.cls_token.val().expand([n, 1, d])];
        if let Some(reg) = &self.register_tokens {
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
        };
        for layer in &self.layers {
            x = layer.forward(x, [n, t], cfg, &rope);
        }
        Ok(self.norm.forward(x).reshape([n, t, d]))
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
