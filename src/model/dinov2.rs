//! DINOv2 and DINOv2-with-registers (`transformers` `Dinov2Model` / `Dinov2WithRegistersModel`).
//!
//! One config-driven implementation covers ViT-S/B/L/g of both families: patch-embedding
//! projection, CLS (+ register) tokens, learned position embeddings resampled to the input's patch
//! grid exactly as `transformers` does it, pre-norm blocks with layer scale, GELU MLP or SwiGLU,
//! and the final layer norm. Mask tokens (pre-training only) are ignored.
//!
//! Layout choices made at load time, all numerically equivalent to the reference up to float
//! rounding:
//! - the patch-embedding convolution (kernel = stride = patch) runs as one matmul over flattened
//!   patches;
//! - q/k/v are fused into one `[D, 3D]` projection, SwiGLU's gate/up into one `[D, 2H]`;
//! - layer-scale vectors are folded into the attention output and MLP output projections;
//! - the CLS position embedding is added to the CLS token once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;

use super::weights::Weights;
use super::{BackboneOutput, FeatureExtractor};

/// Which of the two `transformers` model types a config describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dinov2Family {
    /// `model_type: dinov2` (`Dinov2Model`).
    Dinov2,
    /// `model_type: dinov2_with_registers` (`Dinov2WithRegistersModel`).
    WithRegisters,
}

impl Dinov2Family {
    /// The `model_type` string of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Dinov2 => "dinov2",
            Self::WithRegisters => "dinov2_with_registers",
        }
    }

    /// Position-embedding resampling: only the registers family antialiases (its
    /// `interpolate_pos_encoding` passes `antialias=True`, which also switches torch to the
    /// PIL-style cubic with a = -0.5).
    fn antialias(self) -> bool {
        matches!(self, Self::WithRegisters)
    }

    /// Prefixes under which `*ForImageClassification` / backbone checkpoints store the model.
    fn prefixes(self) -> &'static [&'static str] {
        match self {
            Self::Dinov2 => &["", "dinov2.", "backbone.", "model."],
            Self::WithRegisters => &["", "dinov2_with_registers.", "backbone.", "model."],
        }
    }
}

/// MLP activation (`hidden_act`); SwiGLU always uses SiLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact (erf) GELU: `gelu`.
    Gelu,
    /// Tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`.
    GeluTanh,
    /// `silu` / `swish`.
    Silu,
    /// `relu`.
    Relu,
}

/// The fields of a DINOv2 `config.json` the forward depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Dinov2Config {
    pub family: Dinov2Family,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub mlp_ratio: f64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// Pre-training image size `[height, width]`; fixes the learned position grid.
    pub image_size: [usize; 2],
    pub patch_size: usize,
    pub num_channels: usize,
    pub qkv_bias: bool,
    pub use_swiglu_ffn: bool,
    /// 0 for plain DINOv2.
    pub num_register_tokens: usize,
}

impl Dinov2Config {
    /// Reads and validates `path` (a snapshot's `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = super::read_config_text(path)?;
        Self::from_json(&text, path)
    }

    /// Parses `config.json` text; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let file = origin.display();
        let v: Value =
            serde_json::from_str(text).with_context(|| format!("{file} is not valid JSON"))?;
        let obj = v
            .as_object()
            .with_context(|| format!("{file}: expected a JSON object"))?;
        let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
        let family = match model_type {
            "dinov2" => Dinov2Family::Dinov2,
            "dinov2_with_registers" => Dinov2Family::WithRegisters,
            other => bail!(
                "{file}: model_type `{other}` is not a DINOv2 model (expected `dinov2` or `dinov2_with_registers`; architectures: {})",
                obj.get("architectures").map(|a| a.to_string()).unwrap_or_else(|| "none".into())
            ),
        };
        let uint = |key: &str, default: usize| -> Result<usize> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x.as_u64().map(|n| n as usize).with_context(|| {
                    format!("{file}: `{key}` = {x} must be a non-negative integer")
                }),
            }
        };
        let float = |key: &str, default: f64| -> Result<f64> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_f64()
                    .with_context(|| format!("{file}: `{key}` = {x} must be a number")),
            }
        };
        let boolean = |key: &str, default: bool| -> Result<bool> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_bool()
                    .with_context(|| format!("{file}: `{key}` = {x} must be true or false")),
            }
        };
        // An int or an [h, w] pair, as transformers accepts.
        let pair = |key: &str, default: usize| -> Result<[usize; 2]> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok([default, default]),
                Some(Value::Array(a)) if a.len() == 2 => {
                    let h = a[0].as_u64();
                    let w = a[1].as_u64();
                    match (h, w) {
                        (Some(h), Some(w)) => Ok([h as usize, w as usize]),
                        _ => bail!("{file}: `{key}` must be an integer or two integers"),
                    }
                }
                Some(x) => x
                    .as_u64()
                    .map(|n| [n as usize, n as usize])
                    .with_context(|| {
                        format!("{file}: `{key}` = {x} must be an integer or two integers")
                    }),
            }
        };
        // The two configuration classes default patch_size differently (14 vs 16).
        let default_patch = match family {
            Dinov2Family::Dinov2 => 14,
            Dinov2Family::WithRegisters => 16,
        };
        let patch = pair("patch_size", default_patch)?;
        if patch[0] != patch[1] {
            bail!("{file}: non-square patch_size {patch:?} is not supported by the DINOv2 loader");
        }
        let act_name = obj
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let hidden_act = match act_name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            other => bail!(
                "{file}: hidden_act `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, silu, relu)"
            ),
        };
        let cfg = Self {
            family,
            hidden_size: uint("hidden_size", 768)?,
            num_hidden_layers: uint("num_hidden_layers", 12)?,
            num_attention_heads: uint("num_attention_heads", 12)?,
            mlp_ratio: float("mlp_ratio", 4.0)?,
            hidden_act,
            layer_norm_eps: float("layer_norm_eps", 1e-6)?,
            image_size: pair("image_size", 224)?,
            patch_size: patch[0],
            num_channels: uint("num_channels", 3)?,
            qkv_bias: boolean("qkv_bias", true)?,
            use_swiglu_ffn: boolean("use_swiglu_ffn", false)?,
            num_register_tokens: match family {
                Dinov2Family::Dinov2 => 0,
                Dinov2Family::WithRegisters => uint("num_register_tokens", 4)?,
            },
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let file = origin.display();
        for (key, val) in [
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("patch_size", self.patch_size),
            ("num_channels", self.num_channels),
        ] {
            if val == 0 {
                bail!("{file}: `{key}` must be positive");
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "{file}: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 || self.mlp_hidden() == 0 {
            bail!("{file}: mlp_ratio {} must be positive", self.mlp_ratio);
        }
        let [gh, gw] = self.position_grid();
        if gh == 0 || gw == 0 {
            bail!(
                "{file}: image_size {:?} is smaller than patch_size {}",
                self.image_size,
                self.patch_size
            );
        }
        // transformers reshapes the learned positions into a sqrt(N) x sqrt(N) square.
        if gh != gw {
            bail!(
                "{file}: image_size {:?} gives a non-square {gh}x{gw} position grid, which transformers cannot interpolate",
                self.image_size
            );
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Hidden width of the feed-forward block: `int(D * mlp_ratio)` for the MLP; for SwiGLU two
    /// thirds of that (truncated), rounded up to a multiple of 8, as `Dinov2SwiGLUFFN` does.
    pub fn mlp_hidden(&self) -> usize {
        let base = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu_ffn {
            ((base as f64 * 2.0 / 3.0) as usize).div_ceil(8) * 8
        } else {
            base
        }
    }

    /// Learned position grid `[rows, cols]` (pre-training image size / patch size).
    pub fn position_grid(&self) -> [usize; 2] {
        [
            self.image_size[0] / self.patch_size,
            self.image_size[1] / self.patch_size,
        ]
    }
}

/// Resampling matrix `[n_out, n_in]` (row-major) equal to torch's
/// `interpolate(mode="bicubic", align_corners=False, antialias=…)` along one axis, with the
/// output size given (so the scale is `n_in / n_out`).
///
/// Without antialias torch uses the Keys cubic with a = -0.75 and clamps taps at the borders;
/// with antialias it uses a = -0.5, widens the kernel by the downscale factor, drops taps outside
/// the input and renormalises the weights.
pub fn bicubic_matrix(n_in: usize, n_out: usize, antialias: bool) -> Vec<f32> {
    let mut m = vec![0f64; n_out * n_in];
    if antialias {
        fn filter(x: f64) -> f64 {
            const A: f64 = -0.5;
            let x = x.abs();
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
        let scale = n_in as f64 / n_out as f64;
        let (support, inv) = if scale >= 1.0 {
            (2.0 * scale, 1.0 / scale)
        } else {
            (2.0, 1.0)
        };
        for i in 0..n_out {
            let center = scale * (i as f64 + 0.5);
            // Truncation toward zero, as the C++ casts do.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(n_in as i64).max(0) as usize;
            let row = &mut m[i * n_in..(i + 1) * n_in];
            let mut total = 0.0;
            for (j, slot) in row.iter_mut().enumerate().take(hi).skip(lo) {
                let w = filter((j as f64 - center + 0.5) * inv);
                *slot = w;
                total += w;
            }
            if total != 0.0 {
                row.iter_mut().for_each(|w| *w /= total);
            }
        }
    } else {
        const A: f32 = -0.75;
        let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
        let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
        // torch computes the source coordinate in the input's float type.
        let scale = n_in as f32 / n_out as f32;
        for i in 0..n_out {
            let src = scale * (i as f32 + 0.5) - 0.5;
            let base = src.floor();
            let t = src - base;
            let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
            for (k, w) in taps.into_iter().enumerate() {
                let j = (base as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
                m[i * n_in + j] += w as f64;
            }
        }
    }
    m.into_iter().map(|w| w as f32).collect()
}

/// Feed-forward block: `fc2(act(fc1(x)))`, or for SwiGLU `fc2(silu(gate) * up)` with `fc1`
/// producing `[gate | up]`.
#[derive(Module, Debug)]
struct FeedForward<B: Backend> {
    fc1: Linear<B>,
    fc2: Linear<B>,
    swiglu: bool,
    #[module(skip)]
    act: Activation,
}

impl<B: Backend> FeedForward<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self.fc1.forward(x);
        let h = if self.swiglu {
            let mut halves = h.chunk(2, 1);
            let up = halves.pop().expect("two chunks");
            let gate = halves.pop().expect("two chunks");
            activation::silu(gate) * up
        } else {
            match self.act {
                Activation::Gelu => gelu_erf(h),
                Activation::GeluTanh => activation::gelu_approximate(h),
                Activation::Silu => activation::silu(h),
                Activation::Relu => activation::relu(h),
            }
        };
        self.fc2.forward(h)
    }
}

/// Exact (erf) GELU, `x * Φ(x)`, as `transformers`' `gelu`.
///
/// On burn-flex the backend's `gelu` calls a scalar libm `erf`
/// per value on one thread, and a chain of tensor ops is no faster (each op is its own
/// single-threaded pass with an allocation). There the values are taken to the host, mapped in
/// one rayon-parallel pass and put back, which is several times faster at ViT sizes. Other
/// backends (CUDA) and non-f32 tensors use the backend's own `gelu`.
pub fn gelu_erf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !crate::backend::is_host_cpu::<B>() {
        return activation::gelu(x);
    }
    if x.dtype() != burn::tensor::DType::F32 {
        return activation::gelu(x);
    }
    let shape = x.shape();
    let device = x.device();
    let mut values = x
        .into_data()
        .into_vec::<f32>()
        .expect("an f32 tensor reads back as f32");
    use rayon::prelude::*;
    values
        .par_chunks_mut(1 << 14)
        .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = gelu_scalar(*v)));
    Tensor::from_data(TensorData::new(values, shape), &device)
}

/// `x * Φ(x)` with `erfc` from Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7, below
/// f32's own rounding of `erf` near 1). `gelu(x) = relu(x) - |x| * erfc(|x| / sqrt 2) / 2`
/// holds for both signs and avoids cancellation for negative `x`.
#[inline]
pub fn gelu_scalar(x: f32) -> f32 {
    const P: f32 = 0.327_591_1 * std::f32::consts::FRAC_1_SQRT_2;
    // a1..a5, halved so that the polynomial gives erfc(z) / 2 / exp(-z^2).
    const A: [f32; 5] = [
        0.254_829_6 * 0.5,
        -0.284_496_74 * 0.5,
        1.421_413_7 * 0.5,
        -1.453_152 * 0.5,
        1.061_405_4 * 0.5,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let half_erfc = poly * (-0.5 * x * x).exp();
    x.max(0.0) - a * half_erfc
}

/// One pre-norm transformer block (`Dinov2Layer`).
#[derive(Module, Debug)]
struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    /// `[D, 3D]`: q | k | v.
    qkv: Linear<B>,
    /// Attention output projection with `layer_scale1` folded in.
    proj: Linear<B>,
    norm2: LayerNorm<B>,
    /// With `layer_scale2` folded into its output projection.
    ffn: FeedForward<B>,
    heads: usize,
}

impl<B: Backend> Block<B> {
    /// One block over tokens flattened to `[N * T, D]`: on burn-flex, bias and residual
    /// broadcasts over rows of a 2D tensor take the fast path, 3D ones do not.
    fn forward(&self, x: Tensor<B, 2>, [n, t]: [usize; 2]) -> Tensor<B, 2> {
        let d = x.dims()[1];
        let hd = d / self.heads;
        let qkv = self.qkv.forward(self.norm1.forward(x.clone()));
        let split = |i: usize| {
            qkv.clone()
                .narrow(1, i * d, d)
                .reshape([n, t, self.heads, hd])
                .swap_dims(1, 2)
        };
        let options = AttentionModuleOptions {
            scale: Some(1.0 / (hd as f64).sqrt()),
            softcap: None,
            is_causal: false,
        };
        let a = attention(split(0), split(1), split(2), None, None, options)
            .swap_dims(1, 2)
            .reshape([n * t, d]);
        let x = x + self.proj.forward(a);
        let h = self.ffn.forward(self.norm2.forward(x.clone()));
        x + h
    }
}

/// A DINOv2 / DINOv2-with-registers backbone (`Dinov2Model` / `Dinov2WithRegistersModel`).
#[derive(Module, Debug)]
pub struct Dinov2Model<B: Backend> {
    /// Patch projection as a matmul: `[C * p * p, D]`, input flattened as (channel, row, col).
    patch_embed: Linear<B>,
    /// CLS token plus its position embedding, `[1, D]`.
    cls: Param<Tensor<B, 2>>,
    /// Register tokens `[R, D]` (no position embedding), for the registers family.
    registers: Option<Param<Tensor<B, 2>>>,
    /// Learned patch position embeddings, `[rows * cols, D]` on the pre-training grid.
    pos: Param<Tensor<B, 2>>,
    blocks: Vec<Block<B>>,
    layernorm: LayerNorm<B>,
    #[module(skip)]
    config: Dinov2Config,
}

/// Same type: the family is in the config.
pub type Dinov2WithRegistersModel<B> = Dinov2Model<B>;

/// Loads a DINOv2-family snapshot folder (`config.json` + safetensors) onto `device`.
pub fn load<B: Backend>(snapshot_dir: &Path, device: &B::Device) -> Result<Dinov2Model<B>> {
    Dinov2Model::load(snapshot_dir, device)
}

/// Reads tensors under one name prefix, accepting the legacy hub names and the renamed ones.
struct Loader<'a> {
    weights: &'a Weights,
    prefix: &'a str,
}

impl Loader<'_> {
    /// The first of `names` present (after the prefix), else the first, so that the missing-tensor
    /// error names the canonical hub spelling.
    fn pick(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| format!("{}{n}", self.prefix))
            .find(|n| self.weights.contains(n))
            .unwrap_or_else(|| format!("{}{}", self.prefix, names[0]))
    }

    fn raw(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
        self.weights.f32_shaped(&self.pick(names), shape)
    }

    fn has(&self, name: &str) -> bool {
        self.weights.contains(&format!("{}{name}", self.prefix))
    }
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

fn tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A burn `Linear` from torch-layout `[out, in]` weights (transposed to burn's `[in, out]`),
/// optionally scaling output channel `j` by `scale[j]` (layer-scale folding).
fn linear<B: Backend>(
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    out_dim: usize,
    in_dim: usize,
    scale: Option<&[f32]>,
    device: &B::Device,
) -> Linear<B> {
    let mut w = transpose(&weight, out_dim, in_dim);
    let mut b = bias;
    if let Some(s) = scale {
        for row in w.chunks_exact_mut(out_dim) {
            row.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
        }
        if let Some(b) = b.as_mut() {
            b.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
        }
    }
    Linear {
        weight: Param::from_tensor(tensor(w, [in_dim, out_dim], device)),
        bias: b.map(|b| Param::from_tensor(tensor(b, [out_dim], device))),
    }
}

fn layer_norm<B: Backend>(
    l: &Loader<'_>,
    name: &str,
    d: usize,
    eps: f64,
    device: &B::Device,
) -> Result<LayerNorm<B>> {
    let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init(device);
    norm.gamma = Param::from_tensor(tensor(
        l.raw(&[&format!("{name}.weight")], &[d])?,
        [d],
        device,
    ));
    norm.beta = Some(Param::from_tensor(tensor(
        l.raw(&[&format!("{name}.bias")], &[d])?,
        [d],
        device,
    )));
    Ok(norm)
}

impl<B: Backend> Dinov2Model<B> {
    /// Loads `snapshot_dir/config.json` and its weights (single file or sharded).
    pub fn load(snapshot_dir: &Path, device: &B::Device) -> Result<Self> {
        let config_path: PathBuf = snapshot_dir.join("config.json");
        let config = Dinov2Config::from_file(&config_path)?;
        let weights = Weights::open(snapshot_dir)?;
        Self::from_weights(config, &weights, device)
            .with_context(|| format!("loading DINOv2 snapshot {}", snapshot_dir.display()))
    }

    /// Builds the model from already opened weights, bare or under a `dinov2.` /
    /// `dinov2_with_registers.` prefix.
    pub fn from_weights(
        config: Dinov2Config,
        weights: &Weights,
        device: &B::Device,
    ) -> Result<Self> {
        let probe = "embeddings.cls_token";
        let prefixes = config.family.prefixes();
        let prefix = weights.detect_prefix(probe, prefixes).unwrap_or("");
        let l = Loader { weights, prefix };
        let d = config.hidden_size;
        let p = config.patch_size;
        let c = config.num_channels;
        let [gh, gw] = config.position_grid();
        let eps = config.layer_norm_eps;

        let conv_w = l.raw(
            &["embeddings.patch_embeddings.projection.weight"],
            &[d, c, p, p],
        )?;
        let conv_b = l.raw(&["embeddings.patch_embeddings.projection.bias"], &[d])?;
        let patch_embed = linear(conv_w, Some(conv_b), d, c * p * p, None, device);

        let cls = l.raw(&["embeddings.cls_token"], &[1, 1, d])?;
        let pos_all = l.raw(&["embeddings.position_embeddings"], &[1, 1 + gh * gw, d])?;
        let cls: Vec<f32> = cls.iter().zip(&pos_all[..d]).map(|(a, b)| a + b).collect();
        let pos = pos_all[d..].to_vec();
        let registers = if config.num_register_tokens > 0 {
            let r = config.num_register_tokens;
            let v = l.raw(&["embeddings.register_tokens"], &[1, r, d])?;
            Some(Param::from_tensor(tensor(v, [r, d], device)))
        } else {
            None
        };

        let hidden = config.mlp_hidden();
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let lp = format!("encoder.layer.{i}.");
            let n = |s: &str| format!("{lp}{s}");
            let mut qkv_w = Vec::with_capacity(3 * d * d);
            let mut qkv_b = Vec::with_capacity(3 * d);
            for (legacy, renamed) in [("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")] {
                qkv_w.extend(l.raw(
                    &[
                        &n(&format!("attention.attention.{legacy}.weight")),
                        &n(&format!("attention.{renamed}.weight")),
                    ],
                    &[d, d],
                )?);
                if config.qkv_bias {
                    qkv_b.extend(l.raw(
                        &[
                            &n(&format!("attention.attention.{legacy}.bias")),
                            &n(&format!("attention.{renamed}.bias")),
                        ],
                        &[d],
                    )?);
                }
            }
            let qkv = linear(
                qkv_w,
                config.qkv_bias.then_some(qkv_b),
                3 * d,
                d,
                None,
                device,
            );
            let ls1 = l.raw(&[&n("layer_scale1.lambda1")], &[d])?;
            let proj = linear(
                l.raw(
                    &[
                        &n("attention.output.dense.weight"),
                        &n("attention.o_proj.weight"),
                    ],
                    &[d, d],
                )?,
                Some(l.raw(
                    &[
                        &n("attention.output.dense.bias"),
                        &n("attention.o_proj.bias"),
                    ],
                    &[d],
                )?),
                d,
                d,
                Some(&ls1),
                device,
            );
            let ls2 = l.raw(&[&n("layer_scale2.lambda1")], &[d])?;
            let (fc1, fc2) = if config.use_swiglu_ffn {
                // Hub checkpoints fuse gate|up as `weights_in`; transformers 5 renames the halves.
                let (w_in, b_in) = if l.has(&n("mlp.gate_proj.weight")) {
                    let mut w = l.raw(&[&n("mlp.gate_proj.weight")], &[hidden, d])?;
                    w.extend(l.raw(&[&n("mlp.up_proj.weight")], &[hidden, d])?);
                    let mut b = l.raw(&[&n("mlp.gate_proj.bias")], &[hidden])?;
                    b.extend(l.raw(&[&n("mlp.up_proj.bias")], &[hidden])?);
                    (w, b)
                } else {
                    (
                        l.raw(&[&n("mlp.weights_in.weight")], &[2 * hidden, d])?,
                        l.raw(&[&n("mlp.weights_in.bias")], &[2 * hidden])?,
                    )
                };
                let fc1 = linear(w_in, Some(b_in), 2 * hidden, d, None, device);
                let fc2 = linear(
                    l.raw(
                        &[&n("mlp.weights_out.weight"), &n("mlp.down_proj.weight")],
                        &[d, hidden],
                    )?,
                    Some(l.raw(
                        &[&n("mlp.weights_out.bias"), &n("mlp.down_proj.bias")],
                        &[d],
                    )?),
                    d,
                    hidden,
                    Some(&ls2),
                    device,
                );
                (fc1, fc2)
            } else {
                let fc1 = linear(
                    l.raw(&[&n("mlp.fc1.weight")], &[hidden, d])?,
                    Some(l.raw(&[&n("mlp.fc1.bias")], &[hidden])?),
                    hidden,
                    d,
                    None,
                    device,
                );
                let fc2 = linear(
                    l.raw(&[&n("mlp.fc2.weight")], &[d, hidden])?,
                    Some(l.raw(&[&n("mlp.fc2.bias")], &[d])?),
                    d,
                    hidden,
                    Some(&ls2),
                    device,
                );
                (fc1, fc2)
            };
            blocks.push(Block {
                norm1: layer_norm(&l, &n("norm1"), d, eps, device)?,
                qkv,
                proj,
                norm2: layer_norm(&l, &n("norm2"), d, eps, device)?,
                ffn: FeedForward {
                    fc1,
                    fc2,
                    swiglu: config.use_swiglu_ffn,
                    act: config.hidden_act,
                },
                heads: config.num_attention_heads,
            });
        }
        let layernorm = layer_norm(&l, "layernorm", d, eps, device)?;
        Ok(Self {
            patch_embed,
            cls: Param::from_tensor(tensor(cls, [1, d], device)),
            registers,
            pos: Param::from_tensor(tensor(pos, [gh * gw, d], device)),
            blocks,
            layernorm,
            config,
        })
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }

    /// Tokens before the patches: CLS plus registers.
    pub fn num_prefix_tokens(&self) -> usize {
        1 + self.config.num_register_tokens
    }

    /// Patch position embeddings for a `rows x cols` input grid, `[rows * cols, D]`.
    fn positions(&self, rows: usize, cols: usize, square_input: bool) -> Tensor<B, 2> {
        let [gh, gw] = self.config.position_grid();
        let pos = self.pos.val();
        // transformers returns the table untouched only for the same patch count and a square
        // input in pixels; everything else is resampled, even to the same size.
        if rows * cols == gh * gw && square_input {
            return pos;
        }
        let d = self.config.hidden_size;
        let device = pos.device();
        let aa = self.config.family.antialias();
        // Separable: out = Wy · P · Wxᵀ per channel, as two plain matmuls.
        let wy = tensor::<B, 2>(bicubic_matrix(gh, rows, aa), [rows, gh], &device);
        let wx = tensor::<B, 2>(bicubic_matrix(gw, cols, aa), [cols, gw], &device);
        let t = wy.matmul(pos.reshape([gh, gw * d])); // [rows, gw * D]
        let t = t
            .reshape([rows, gw, d])
            .swap_dims(0, 1)
            .reshape([gw, rows * d]);
        let t = wx.matmul(t); // [cols, rows * D]
        t.reshape([cols, rows, d])
            .swap_dims(0, 1)
            .reshape([rows * cols, d])
    }

    /// Embeddings `[N, 1 + R + patches, D]` (`Dinov2Embeddings` without masking).
    fn embed(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, h, w] = pixel_values.dims();
        let p = self.config.patch_size;
        let d = self.config.hidden_size;
        let (rows, cols) = (h / p, w / p);
        // A stride-p convolution ignores the remainder rows/columns.
        let x = if rows * p != h || cols * p != w {
            pixel_values.slice([0..n, 0..c, 0..rows * p, 0..cols * p])
        } else {
            pixel_values
        };
        let patches = x
            .reshape([n, c, rows, p, cols, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([n, rows * cols, c * p * p]);
        let patches =
            self.patch_embed.forward(patches) + self.positions(rows, cols, h == w).unsqueeze::<3>();
        let mut tokens = vec![self.cls.val().unsqueeze::<3>().expand([n, 1, d])];
        if let Some(r) = &self.registers {
            let r = r.val();
            let count = r.dims()[0];
            tokens.push(r.unsqueeze::<3>().expand([n, count, d]));
        }
        tokens.push(patches);
        Tensor::cat(tokens, 1)
    }

    /// Checks `pixel_values` against the config: 4-D `[N, C, H, W]` with the configured channels
    /// and at least one patch per side.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        let [n, c, h, w] = dims;
        let p = self.config.patch_size;
        if n == 0 {
            bail!("empty batch");
        }
        if c != self.config.num_channels {
            bail!(
                "pixel_values have {c} channels, the model expects {}",
                self.config.num_channels
            );
        }
        if h < p || w < p {
            bail!("input {h}x{w} is smaller than one {p}x{p} patch");
        }
        Ok(())
    }

    /// The final layer-normed hidden state `[N, 1 + R + patches, D]` (`last_hidden_state`).
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.embed(pixel_values);
        let [n, t, d] = x.dims();
        let mut x = x.reshape([n * t, d]);
        for block in &self.blocks {
            x = block.forward(x, [n, t]);
        }
        self.layernorm.forward(x).reshape([n, t, d])
    }

    /// Like [`FeatureExtractor::extract`], with a clear error for a malformed input.
    pub fn try_extract(
        &self,
        pixel_values: Tensor<B, 4>,
        want_hidden: bool,
    ) -> Result<BackboneOutput<B>> {
        self.check_input(pixel_values.dims())?;
        let hidden = self.forward(pixel_values);
        Ok(BackboneOutput::from_hidden(
            hidden,
            self.num_prefix_tokens(),
            want_hidden,
        ))
    }
}

impl<B: Backend> FeatureExtractor<B> for Dinov2Model<B> {
    /// Panics on a malformed input (wrong channel count, smaller than a patch); use
    /// [`Dinov2Model::try_extract`] to get an error instead.
    fn extract(&self, pixel_values: Tensor<B, 4>, want_hidden: bool) -> BackboneOutput<B> {
        match self.try_extract(pixel_values, want_hidden) {
            Ok(out) => out,
            Err(e) => panic!("DINOv2 forward: {e:#}"),
        }
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

    fn cfg(json: &str) -> Result<Dinov2Config> {
        Dinov2Config::from_json(json, Path::new("snap/config.json"))
    }

    #[test]
    fn swiglu_hidden_rounds_like_transformers() {
        // ViT-g: 1536 * 4 = 6144 -> 4096; 42 * 3 = 126 -> 84 -> 88.
        let g = cfg(r#"{"model_type":"dinov2","hidden_size":1536,"num_attention_heads":24,"use_swiglu_ffn":true}"#).unwrap();
        assert_eq!(g.mlp_hidden(), 4096);
        let s = cfg(r#"{"model_type":"dinov2","hidden_size":42,"num_attention_heads":3,"mlp_ratio":3,"use_swiglu_ffn":true}"#).unwrap();
        assert_eq!(s.mlp_hidden(), 88);
        let m = cfg(
            r#"{"model_type":"dinov2","hidden_size":36,"num_attention_heads":3,"mlp_ratio":2.5}"#,
        )
        .unwrap();
        assert_eq!(m.mlp_hidden(), 90);
    }

    #[test]
    fn family_defaults_differ() {
        let plain = cfg(r#"{"model_type":"dinov2"}"#).unwrap();
        assert_eq!((plain.patch_size, plain.num_register_tokens), (14, 0));
        let reg = cfg(r#"{"model_type":"dinov2_with_registers"}"#).unwrap();
        assert_eq!((reg.patch_size, reg.num_register_tokens), (16, 4));
    }

    #[test]
    fn bad_configs_name_the_file_and_field() {
        let e = cfg(r#"{"model_type":"vit"}"#).unwrap_err().to_string();
        assert!(e.contains("snap/config.json") && e.contains("`vit`"), "{e}");
        let e = cfg(r#"{"model_type":"dinov2","hidden_size":"big"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hidden_size") && e.contains("snap/config.json"),
            "{e}"
        );
        let e = cfg(r#"{"model_type":"dinov2","hidden_size":40,"num_attention_heads":3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_attention_heads"), "{e}");
        let e = cfg(r#"{"model_type":"dinov2","hidden_act":"mish"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mish"), "{e}");
    }

    #[test]
    fn host_gelu_matches_libm_erf_gelu() {
        use crate::backend::Cpu;
        let device = Default::default();
        // Dense over the range where erf varies, plus far tails.
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).collect();
        xs.extend([-30.0, -12.0, 12.0, 30.0, 1e-7, -1e-7, 0.0]);
        let n = xs.len();
        let x = Tensor::<Cpu, 1>::from_data(TensorData::new(xs.clone(), [n]), &device);
        let fast: Vec<f32> = gelu_erf(x.clone()).into_data().to_vec().unwrap();
        let exact: Vec<f32> = activation::gelu(x).into_data().to_vec().unwrap();
        for ((x, f), e) in xs.iter().zip(&fast).zip(&exact) {
            assert!(f.is_finite(), "gelu({x}) = {f}");
            assert!(
                (f - e).abs() <= 5e-7 * x.abs().max(1.0),
                "gelu({x}): {f} vs {e}"
            );
        }
    }

    #[test]
    fn bicubic_rows_sum_to_one_and_identity_at_same_size() {
        for aa in [false, true] {
            for (i, o) in [(16, 7), (4, 16), (37, 16), (5, 3)] {
                let m = bicubic_matrix(i, o, aa);
                for row in m.chunks_exact(i) {
                    let s: f32 = row.iter().sum();
                    assert!((s - 1.0).abs() < 1e-5, "{i}->{o} aa={aa}: {s}");
                }
            }
            let m = bicubic_matrix(6, 6, aa);
            for (r, row) in m.chunks_exact(6).enumerate() {
                for (c, &w) in row.iter().enumerate() {
                    assert_eq!(w, if r == c { 1.0 } else { 0.0 }, "aa={aa}");
                }
            }
        }
        // The two modes really differ (a = -0.75 vs -0.5).
        assert_ne!(bicubic_matrix(4, 16, false), bicubic_matrix(4, 16, true));
    }
}
