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
//! - for inference ([`LoadOptions::INFERENCE`]) layer-scale vectors are folded into the attention
//!   output and MLP output projections and the CLS position embedding is added to the CLS token
//!   once; for training they stay parameters of their own, as in `transformers`.

use std::cell::RefCell;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Deserialize;

use super::activation::Activation;
use super::linear::Proj;
use super::loader::{Bindings, LoadOptions, Loader, PartSpec, Piece, PieceKind};
use super::ops;
use super::resample::{bicubic_matrix, resize_grid};
use super::weights::Weights;
use super::{parse_config, BackboneOutput, FeatureExtractor, IntOrPair};

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
    pub fn prefixes(self) -> &'static [&'static str] {
        match self {
            Self::Dinov2 => &["", "dinov2.", "backbone.", "model."],
            Self::WithRegisters => &["", "dinov2_with_registers.", "backbone.", "model."],
        }
    }
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

/// `config.json` as `transformers` writes it; absent or `null` fields take the defaults of
/// `Dinov2Config` / `Dinov2WithRegistersConfig`.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<serde_json::Value>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    mlp_ratio: Option<f64>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    image_size: Option<IntOrPair>,
    patch_size: Option<IntOrPair>,
    num_channels: Option<usize>,
    qkv_bias: Option<bool>,
    use_swiglu_ffn: Option<bool>,
    num_register_tokens: Option<usize>,
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
        let raw: RawConfig = parse_config(text, origin)?;
        let family = match raw.model_type.as_deref().unwrap_or("") {
            "dinov2" => Dinov2Family::Dinov2,
            "dinov2_with_registers" => Dinov2Family::WithRegisters,
            other => bail!(
                "{file}: model_type `{other}` is not a DINOv2 model (expected `dinov2` or `dinov2_with_registers`; architectures: {})",
                raw.architectures.map(|a| a.to_string()).unwrap_or_else(|| "none".into())
            ),
        };
        // The two configuration classes default patch_size differently (14 vs 16).
        let default_patch = match family {
            Dinov2Family::Dinov2 => 14,
            Dinov2Family::WithRegisters => 16,
        };
        let patch = IntOrPair::pair(raw.patch_size, default_patch, "patch_size", origin)?;
        if patch[0] != patch[1] {
            bail!("{file}: non-square patch_size {patch:?} is not supported by the DINOv2 loader");
        }
        let hidden_act =
            Activation::from_config(raw.hidden_act.as_deref().unwrap_or("gelu"), origin)?;
        let cfg = Self {
            family,
            hidden_size: raw.hidden_size.unwrap_or(768),
            num_hidden_layers: raw.num_hidden_layers.unwrap_or(12),
            num_attention_heads: raw.num_attention_heads.unwrap_or(12),
            mlp_ratio: raw.mlp_ratio.unwrap_or(4.0),
            hidden_act,
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-6),
            image_size: IntOrPair::pair(raw.image_size, 224, "image_size", origin)?,
            patch_size: patch[0],
            num_channels: raw.num_channels.unwrap_or(3),
            qkv_bias: raw.qkv_bias.unwrap_or(true),
            use_swiglu_ffn: raw.use_swiglu_ffn.unwrap_or(false),
            num_register_tokens: match family {
                Dinov2Family::Dinov2 => 0,
                Dinov2Family::WithRegisters => raw.num_register_tokens.unwrap_or(4),
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

    /// Tokens before the patches: CLS plus registers.
    pub fn num_prefix_tokens(&self) -> usize {
        1 + self.num_register_tokens
    }
}

/// Patch projection, CLS (+ registers) and learned positions (`Dinov2Embeddings` without
/// masking).
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// The patch convolution as `[C * p * p, D]` over patches flattened as (channel, row, col).
    pub patch: Proj<B>,
    /// CLS token `[1, D]`; folded: plus its position embedding.
    pub cls: Param<Tensor<B, 2>>,
    /// The CLS position embedding `[1, D]` (unfolded only).
    pub cls_pos: Option<Param<Tensor<B, 2>>>,
    /// Register tokens `[R, D]` (no position embedding), for the registers family.
    pub registers: Option<Param<Tensor<B, 2>>>,
    /// Learned patch position embeddings `[rows * cols, D]` on the pre-training grid.
    pub pos: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embeddings<B> {
    pub fn load(l: &Loader<'_, B>, cfg: &Dinov2Config) -> Result<Self> {
        let (d, p, c) = (cfg.hidden_size, cfg.patch_size, cfg.num_channels);
        let [gh, gw] = cfg.position_grid();
        let g = gh * gw;
        let pe = l.pp("embeddings");
        let conv_shape = [d, c, p, p];
        let patch = pe.proj(
            &[PartSpec {
                weight: &["patch_embeddings.projection.weight"],
                bias: Some(&["patch_embeddings.projection.bias"]),
                d_out: d,
                shape: Some(&conv_shape),
            }],
            c * p * p,
            None,
        )?;
        let (cls_name, cls) = pe.host(&["cls_token"], &[1, 1, d])?;
        let (pos_name, pos_all) = pe.host(&["position_embeddings"], &[1, 1 + g, d])?;
        let (cls, cls_pos) = if l.options().fold {
            let cls: Vec<f32> = cls.iter().zip(&pos_all[..d]).map(|(a, b)| a + b).collect();
            (Param::from_tensor(pe.tensor(cls, [1, d])), None)
        } else {
            let cls = Param::from_tensor(pe.tensor(cls, [1, d]));
            let cls_pos = Param::from_tensor(pe.tensor(pos_all[..d].to_vec(), [1, d]));
            (cls, Some(cls_pos))
        };
        let pos = Param::from_tensor(pe.tensor(pos_all[d..].to_vec(), [g, d]));
        let copy = |param| Piece {
            param,
            kind: PieceKind::Copy,
        };
        pe.record(cls_name, &[1, 1, d], vec![copy(cls.id)], false);
        if let Some(cp) = &cls_pos {
            pe.record(
                pos_name,
                &[1, 1 + g, d],
                vec![copy(cp.id), copy(pos.id)],
                false,
            );
        }
        let registers = if cfg.num_register_tokens > 0 {
            let r = cfg.num_register_tokens;
            Some(pe.param(&["register_tokens"], &[1, r, d], [r, d], false)?)
        } else {
            None
        };
        Ok(Self {
            patch,
            cls,
            cls_pos,
            registers,
            pos,
        })
    }

    /// Patch position embeddings for a `rows x cols` input grid, `[rows * cols, D]`.
    fn positions(
        &self,
        cfg: &Dinov2Config,
        rows: usize,
        cols: usize,
        square: bool,
    ) -> Tensor<B, 2> {
        let [gh, gw] = cfg.position_grid();
        let pos = self.pos.val();
        // transformers returns the table untouched only for the same patch count and a square
        // input in pixels; everything else is resampled, even to the same size.
        if rows * cols == gh * gw && square {
            return pos;
        }
        let aa = cfg.family.antialias();
        resize_grid(
            pos,
            [gh, gw],
            [rows, cols],
            bicubic_matrix(gh, rows, aa),
            bicubic_matrix(gw, cols, aa),
        )
    }

    /// Tokens `[N, 1 + R + patches, D]` of `pixel_values` `[N, C, H, W]`.
    pub fn forward(&self, cfg: &Dinov2Config, pixel_values: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, h, w] = pixel_values.dims();
        let p = cfg.patch_size;
        let d = cfg.hidden_size;
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
            .reshape([n * rows * cols, c * p * p]);
        let patches = self.patch.forward(patches).reshape([n, rows * cols, d])
            + self.positions(cfg, rows, cols, h == w).unsqueeze::<3>();
        let cls = match &self.cls_pos {
            Some(cp) => self.cls.val() + cp.val(),
            None => self.cls.val(),
        };
        let mut tokens = vec![cls.unsqueeze::<3>().expand([n, 1, d])];
        if let Some(r) = &self.registers {
            let r = r.val();
            let count = r.dims()[0];
            tokens.push(r.unsqueeze::<3>().expand([n, count, d]));
        }
        tokens.push(patches);
        Tensor::cat(tokens, 1)
    }
}

/// Self-attention with fused q|k|v and the output projection.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[D, 3D]`: q | k | v.
    pub qkv: Proj<B>,
    /// Output projection (with `layer_scale1` folded in, when folded).
    pub out: Proj<B>,
    pub heads: usize,
}

impl<B: Backend> Attention<B> {
    /// Legacy hub names first, then the `transformers` 5 runtime names.
    fn load(l: &Loader<'_, B>, cfg: &Dinov2Config, ls1: Option<&[f32]>) -> Result<Self> {
        let d = cfg.hidden_size;
        let names: Vec<[String; 4]> = [("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")]
            .iter()
            .map(|(legacy, renamed)| {
                [
                    format!("attention.attention.{legacy}.weight"),
                    format!("attention.{renamed}.weight"),
                    format!("attention.attention.{legacy}.bias"),
                    format!("attention.{renamed}.bias"),
                ]
            })
            .collect();
        let w: Vec<[&str; 2]> = names
            .iter()
            .map(|n| [n[0].as_str(), n[1].as_str()])
            .collect();
        let b: Vec<[&str; 2]> = names
            .iter()
            .map(|n| [n[2].as_str(), n[3].as_str()])
            .collect();
        let parts: Vec<PartSpec<'_>> = (0..3)
            .map(|j| PartSpec::new(&w[j], cfg.qkv_bias.then_some(&b[j][..]), d))
            .collect();
        let qkv = l.proj(&parts, d, None)?;
        let out = l.proj(
            &[PartSpec::new(
                &["attention.output.dense.weight", "attention.o_proj.weight"],
                Some(&["attention.output.dense.bias", "attention.o_proj.bias"]),
                d,
            )],
            d,
            ls1,
        )?;
        Ok(Self {
            qkv,
            out,
            heads: cfg.num_attention_heads,
        })
    }

    /// Attention context (before the output projection) over tokens flattened to
    /// `[N * T, D]`.
    fn context(&self, x: Tensor<B, 2>, [n, t]: [usize; 2]) -> Tensor<B, 2> {
        let shape = ops::AttnShape {
            n,
            t,
            heads: self.heads,
        };
        ops::self_attention(self.qkv.forward(x), shape, None)
    }
}

/// Feed-forward block: `fc2(act(fc1(x)))`, or for SwiGLU `fc2(silu(gate) * up)` with `fc1`
/// producing `[gate | up]`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Proj<B>,
    /// With `layer_scale2` folded in, when folded.
    pub fc2: Proj<B>,
    pub swiglu: bool,
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    fn load(l: &Loader<'_, B>, cfg: &Dinov2Config, ls2: Option<&[f32]>) -> Result<Self> {
        let (d, hidden) = (cfg.hidden_size, cfg.mlp_hidden());
        let (fc1, fc2) = if cfg.use_swiglu_ffn {
            // Hub checkpoints fuse gate|up as `weights_in`; transformers 5 renames the halves.
            let fc1 = if l.has("mlp.gate_proj.weight") {
                l.proj(
                    &[
                        PartSpec::new(
                            &["mlp.gate_proj.weight"],
                            Some(&["mlp.gate_proj.bias"]),
                            hidden,
                        ),
                        PartSpec::new(&["mlp.up_proj.weight"], Some(&["mlp.up_proj.bias"]), hidden),
                    ],
                    d,
                    None,
                )?
            } else {
                l.proj(
                    &[PartSpec::new(
                        &["mlp.weights_in.weight"],
                        Some(&["mlp.weights_in.bias"]),
                        2 * hidden,
                    )],
                    d,
                    None,
                )?
            };
            let fc2 = l.proj(
                &[PartSpec::new(
                    &["mlp.weights_out.weight", "mlp.down_proj.weight"],
                    Some(&["mlp.weights_out.bias", "mlp.down_proj.bias"]),
                    d,
                )],
                hidden,
                ls2,
            )?;
            (fc1, fc2)
        } else {
            let fc1 = l.proj(
                &[PartSpec::new(
                    &["mlp.fc1.weight"],
                    Some(&["mlp.fc1.bias"]),
                    hidden,
                )],
                d,
                None,
            )?;
            let fc2 = l.proj(
                &[PartSpec::new(
                    &["mlp.fc2.weight"],
                    Some(&["mlp.fc2.bias"]),
                    d,
                )],
                hidden,
                ls2,
            )?;
            (fc1, fc2)
        };
        Ok(Self {
            fc1,
            fc2,
            swiglu: cfg.use_swiglu_ffn,
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
        let h = if self.swiglu {
            let mut halves = self.fc1.forward(x).chunk(2, 1);
            let up = halves.pop().expect("two chunks");
            let gate = halves.pop().expect("two chunks");
            Activation::Silu.apply(gate) * up
        } else {
            self.fc1.forward_act(x, self.act)
        };
        self.fc2.forward_add(h, residual, scale)
    }
}

/// One pre-norm transformer block (`Dinov2Layer`).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: Attention<B>,
    /// `layer_scale1` (unfolded only).
    pub ls1: Option<Param<Tensor<B, 1>>>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    /// `layer_scale2` (unfolded only).
    pub ls2: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Block<B> {
    /// Block `i` (`encoder.layer.{i}`).
    pub fn load(l: &Loader<'_, B>, i: usize, cfg: &Dinov2Config) -> Result<Self> {
        let l = l.pp(&format!("encoder.layer.{i}")).at_depth(i + 1);
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

    /// One block over tokens flattened to `[N * T, D]`: on burn-flex, bias and residual
    /// broadcasts over rows of a 2D tensor take the fast path, 3D ones do not.
    pub fn forward(&self, x: Tensor<B, 2>, nt: [usize; 2]) -> Tensor<B, 2> {
        let a = self
            .attn
            .context(ops::layer_norm(&self.norm1, x.clone()), nt);
        let x = self.attn.out.forward_add(a, x, &self.ls1);
        self.mlp
            .forward_add(ops::layer_norm(&self.norm2, x.clone()), x, &self.ls2)
    }
}

/// A DINOv2 / DINOv2-with-registers backbone (`Dinov2Model` / `Dinov2WithRegistersModel`).
#[derive(Module, Debug)]
pub struct Dinov2Model<B: Backend> {
    pub embeddings: Embeddings<B>,
    pub blocks: Vec<Block<B>>,
    pub layernorm: LayerNorm<B>,
    #[module(skip)]
    config: Dinov2Config,
    #[module(skip)]
    bindings: Bindings,
}

/// Same type: the family is in the config.
pub type Dinov2WithRegistersModel<B> = Dinov2Model<B>;

/// Loads a DINOv2-family snapshot folder (`config.json` + safetensors) onto `device`.
pub fn load<B: Backend>(snapshot_dir: &Path, device: &B::Device) -> Result<Dinov2Model<B>> {
    Dinov2Model::load(snapshot_dir, device)
}

impl<B: Backend> Dinov2Model<B> {
    /// Loads `snapshot_dir/config.json` and its weights (single file or sharded) for inference.
    pub fn load(snapshot_dir: &Path, device: &B::Device) -> Result<Self> {
        let config = Dinov2Config::from_file(&snapshot_dir.join("config.json"))?;
        let weights = Weights::open(snapshot_dir)?;
        Self::from_weights(
            config,
            &weights,
            snapshot_dir,
            device,
            LoadOptions::INFERENCE,
        )
    }

    /// Builds the model from already opened weights, bare or under a `dinov2.` /
    /// `dinov2_with_registers.` prefix; `dir` names the snapshot in errors.
    pub fn from_weights(
        config: Dinov2Config,
        weights: &Weights,
        dir: &Path,
        device: &B::Device,
        opts: LoadOptions,
    ) -> Result<Self> {
        let prefix = weights
            .detect_prefix("embeddings.cls_token", config.family.prefixes())
            .unwrap_or("");
        let bindings = RefCell::new(Vec::new());
        let l = Loader::new(weights, dir, prefix, device, opts, &bindings);
        let build = || -> Result<Self> {
            let embeddings = Embeddings::load(&l, &config)?;
            let blocks = (0..config.num_hidden_layers)
                .map(|i| Block::load(&l, i, &config))
                .collect::<Result<Vec<_>>>()?;
            let ln = l.at_depth(config.num_hidden_layers + 1);
            let layernorm =
                ln.layer_norm("layernorm", config.hidden_size, config.layer_norm_eps)?;
            Ok(Self {
                embeddings,
                blocks,
                layernorm,
                config: config.clone(),
                bindings: Vec::new(),
            })
        };
        let mut model =
            build().with_context(|| format!("loading DINOv2 snapshot {}", dir.display()))?;
        model.bindings = bindings.into_inner();
        Ok(model)
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }

    /// Tokens before the patches: CLS plus registers.
    pub fn num_prefix_tokens(&self) -> usize {
        self.config.num_prefix_tokens()
    }

    /// Where each parameter came from (empty when loaded folded, for inference).
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Mutable bindings, for adapters attached after loading.
    pub fn bindings_mut(&mut self) -> &mut Bindings {
        &mut self.bindings
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
        let x = self.embeddings.forward(&self.config, pixel_values);
        let [n, t, d] = x.dims();
        let mut x = x.reshape([n * t, d]);
        for block in &self.blocks {
            x = block.forward(x, [n, t]);
        }
        ops::layer_norm(&self.layernorm, x).reshape([n, t, d])
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

    /// Every projection, for attaching adapters: per block attention q|k|v and output, then the
    /// MLP's two.
    pub fn projections_mut(&mut self) -> Vec<(super::ProjRole, &mut Proj<B>)> {
        use super::ProjRole;
        let mut out = Vec::new();
        for b in &mut self.blocks {
            out.push((ProjRole::AttnQkv, &mut b.attn.qkv));
            out.push((ProjRole::AttnOut, &mut b.attn.out));
            out.push((ProjRole::MlpIn, &mut b.mlp.fc1));
            out.push((ProjRole::MlpOut, &mut b.mlp.fc2));
        }
        out
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
        // null = the default, as transformers reads it; [h, w] pairs are accepted.
        let n = cfg(r#"{"model_type":"dinov2","hidden_size":null,"image_size":[98,98]}"#).unwrap();
        assert_eq!((n.hidden_size, n.image_size), (768, [98, 98]));
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
        let e = cfg(r#"{"model_type":"dinov2","patch_size":[14,14,14]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("patch_size") && e.contains("snap/config.json"),
            "{e}"
        );
    }
}
