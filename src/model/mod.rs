//! ViT backbones (DINOv2, DINOv2 with registers, DINOv3, SigLIP / SigLIP 2 vision towers at fixed
//! resolution and SigLIP 2 NaFlex) loaded
//! from Hugging Face snapshots.
//!
//! In the manner of candle's model files: one file per family ([`dinov2`], [`dinov3`],
//! [`siglip`], [`siglip2`]), each
//! with a serde config struct, blocks that load themselves (`Block::load(&loader, i, &cfg)`)
//! and the forward, numerically matching `transformers`. Shared by both: the weight
//! [`loader`] (prefixes, renamed tensors, transposes, layer-scale folding, write-back
//! bindings), [`linear`] projections with optional LoRA adapters, [`resample`] kernels,
//! [`activation`]s and the [`ops`] every block calls.

pub mod activation;
pub mod dinov2;
pub mod dinov3;
pub mod hub;
pub mod kernels;
pub mod linear;
pub mod loader;
pub mod ops;
pub mod preprocess;
pub mod resample;
pub mod siglip;
pub mod siglip2;
pub mod weights;

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::de::DeserializeOwned;
use serde::Deserialize;

pub use loader::{Binding, Bindings, LoadOptions};

/// One tensor: `(name, shape, row-major values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Tensors by name: `(shape, row-major values)`.
pub type NamedTensors = std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>;

/// What a backbone gives per image.
#[derive(Debug, Clone)]
pub struct BackboneOutput<B: Backend> {
    /// CLS token of the final (layer-normed) hidden state, `[N, D]`; for a family without one
    /// (SigLIP) its pooled output.
    pub cls: Tensor<B, 2>,
    /// The model's pooler output as `transformers` defines it, `[N, D]`.
    pub pooler: Tensor<B, 2>,
    /// Mean of the patch tokens (no CLS, no registers) of the final hidden state, `[N, D]`.
    pub patch_mean: Tensor<B, 2>,
    /// Full final hidden state `[N, prefix tokens + patches, D]`, when asked for.
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

/// Deserialises a snapshot's JSON config into `T`; errors name `origin` and the field
/// (`snap/config.json: \`hidden_size\`: invalid type: string "big", expected usize …`).
pub fn parse_config<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T> {
    let file = origin.display();
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() || path == "." {
                bail!("{file} is not valid JSON for this model: {inner}")
            }
            bail!("{file}: `{path}`: {inner}")
        }
    }
}

/// An integer or an `[h, w]` pair, as `transformers` accepts for sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IntOrPair {
    Int(usize),
    Pair(Vec<usize>),
}

impl IntOrPair {
    /// `[h, w]` of an optional value (absent = `default` square); `key` names it in errors.
    pub fn pair(v: Option<Self>, default: usize, key: &str, origin: &Path) -> Result<[usize; 2]> {
        match v {
            None => Ok([default, default]),
            Some(Self::Int(n)) => Ok([n, n]),
            Some(Self::Pair(p)) if p.len() == 2 => Ok([p[0], p[1]]),
            Some(Self::Pair(p)) => bail!(
                "{}: `{key}` = {p:?} must be an integer or two integers",
                origin.display()
            ),
        }
    }
}

/// What a projection does in its block, for choosing LoRA targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjRole {
    /// Fused query | key | value.
    AttnQkv,
    /// Attention output.
    AttnOut,
    /// MLP input side (`fc1`, `gate_proj`, `up_proj`, SwiGLU `weights_in`).
    MlpIn,
    /// MLP output (`fc2`, `down_proj`, `weights_out`).
    MlpOut,
}

/// A backbone of either supported family, as a concrete (and therefore `Send`) type.
// A process holds one or two backbones; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone<B: Backend> {
    Dinov2(dinov2::Dinov2Model<B>),
    Dinov3(dinov3::Dinov3Model<B>),
    Siglip(siglip::SiglipVisionModel<B>),
    Siglip2(siglip2::Siglip2VisionModel<B>),
}

impl<B: Backend> Backbone<B> {
    /// Loads a snapshot folder for inference, dispatching on its `model_type`.
    pub fn load(snapshot: &Path, device: &B::Device) -> Result<Self> {
        Self::load_with(snapshot, device, LoadOptions::INFERENCE)
    }

    /// [`Self::load`] with explicit options (e.g. [`LoadOptions::inference`] for bf16).
    pub fn load_with(snapshot: &Path, device: &B::Device, opts: LoadOptions) -> Result<Self> {
        let weights = weights::Weights::open(snapshot)?;
        Self::from_weights(snapshot, &weights, device, opts)
    }

    /// Builds the model of snapshot `dir` (its `config.json`) from `weights` (the snapshot's,
    /// possibly overlaid with fine-tuned tensors).
    pub fn from_weights(
        dir: &Path,
        weights: &weights::Weights,
        device: &B::Device,
        opts: LoadOptions,
    ) -> Result<Self> {
        let cfg = dir.join("config.json");
        match model_type(dir)?.as_str() {
            "dinov2" | "dinov2_with_registers" => Ok(Backbone::Dinov2(
                dinov2::Dinov2Model::from_weights(
                    dinov2::Dinov2Config::from_file(&cfg)?,
                    weights,
                    dir,
                    device,
                    opts,
                )?,
            )),
            dinov3::MODEL_TYPE => Ok(Backbone::Dinov3(dinov3::Dinov3Model::from_weights(
                dinov3::Dinov3Config::from_file(&cfg)?,
                weights,
                dir,
                device,
                opts,
            )?)),
            siglip::MODEL_TYPE | siglip::VISION_MODEL_TYPE => {
                Ok(Backbone::Siglip(siglip::SiglipVisionModel::from_weights(
                    siglip::SiglipVisionConfig::from_file(&cfg)?,
                    weights,
                    dir,
                    device,
                    opts,
                )?))
            }
            siglip2::MODEL_TYPE | siglip2::VISION_MODEL_TYPE => {
                Ok(Backbone::Siglip2(siglip2::Siglip2VisionModel::from_weights(
                    siglip2::Siglip2VisionConfig::from_file(&cfg)?,
                    weights,
                    dir,
                    device,
                    opts,
                )?))
            }
            other => bail!(
                "{}: unsupported model_type {other:?}; sv72 loads dinov2, dinov2_with_registers, dinov3_vit, siglip, siglip_vision_model, siglip2 and siglip2_vision_model",
                cfg.display()
            ),
        }
    }

    /// Final hidden state `[N, T, D]`, with an error for a malformed input.
    pub fn try_forward(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        match self {
            Backbone::Dinov2(m) => {
                m.check_input(pixel_values.dims())?;
                Ok(m.forward(pixel_values))
            }
            Backbone::Dinov3(m) => m.try_forward(pixel_values),
            Backbone::Siglip(m) => m.try_forward(pixel_values),
            Backbone::Siglip2(m) => m.try_forward(pixel_values),
        }
    }

    /// Every output of a batch (see [`BackboneOutput`]), with an error for a malformed input.
    pub fn try_extract(
        &self,
        pixel_values: Tensor<B, 4>,
        want_hidden: bool,
    ) -> Result<BackboneOutput<B>> {
        match self {
            Backbone::Dinov2(m) => m.try_extract(pixel_values, want_hidden),
            Backbone::Dinov3(m) => m.try_extract(pixel_values, want_hidden),
            Backbone::Siglip(m) => m.try_extract(pixel_values, want_hidden),
            Backbone::Siglip2(m) => m.try_extract(pixel_values, want_hidden),
        }
    }

    /// CLS plus register tokens (none for SigLIP).
    pub fn num_prefix_tokens(&self) -> usize {
        match self {
            Backbone::Dinov2(m) => m.num_prefix_tokens(),
            Backbone::Dinov3(m) => m.config().num_prefix_tokens(),
            Backbone::Siglip(_) | Backbone::Siglip2(_) => 0,
        }
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        match self {
            Backbone::Dinov2(m) => m.config().num_hidden_layers,
            Backbone::Dinov3(m) => m.config().num_hidden_layers,
            Backbone::Siglip(m) => m.config().num_hidden_layers,
            Backbone::Siglip2(m) => m.config().base.num_hidden_layers,
        }
    }

    /// Where each parameter came from (see [`loader::Binding`]).
    pub fn bindings(&self) -> &Bindings {
        match self {
            Backbone::Dinov2(m) => m.bindings(),
            Backbone::Dinov3(m) => m.bindings(),
            Backbone::Siglip(m) => m.bindings(),
            Backbone::Siglip2(m) => m.bindings(),
        }
    }

    /// Attaches LoRA adapters to the projections `targets` selects (see
    /// [`linear::Proj::attach_lora`]); their bindings are recorded with the model's.
    pub fn attach_lora(
        &mut self,
        spec: &linear::LoraSpec,
        targets: &dyn Fn(ProjRole) -> bool,
        init: &NamedTensors,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<()> {
        let mut added = Vec::new();
        let projs = match self {
            Backbone::Dinov2(m) => m.projections_mut(),
            Backbone::Dinov3(m) => m.projections_mut(),
            Backbone::Siglip(m) => m.projections_mut(),
            Backbone::Siglip2(m) => m.projections_mut(),
        };
        for (role, p) in projs {
            if targets(role) {
                p.attach_lora(spec, init, rng, &mut added)?;
            }
        }
        match self {
            Backbone::Dinov2(m) => m.bindings_mut().extend(added),
            Backbone::Dinov3(m) => m.bindings_mut().extend(added),
            Backbone::Siglip(m) => m.bindings_mut().extend(added),
            Backbone::Siglip2(m) => m.bindings_mut().extend(added),
        }
        Ok(())
    }
}

impl<B: Backend> FeatureExtractor<B> for Backbone<B> {
    fn extract(&self, pixel_values: Tensor<B, 4>, want_hidden: bool) -> BackboneOutput<B> {
        match self {
            Backbone::Dinov2(m) => m.extract(pixel_values, want_hidden),
            Backbone::Dinov3(m) => m.extract(pixel_values, want_hidden),
            Backbone::Siglip(m) => m.extract(pixel_values, want_hidden),
            Backbone::Siglip2(m) => m.extract(pixel_values, want_hidden),
        }
    }
    fn hidden_size(&self) -> usize {
        match self {
            Backbone::Dinov2(m) => m.hidden_size(),
            Backbone::Dinov3(m) => m.hidden_size(),
            Backbone::Siglip(m) => m.hidden_size(),
            Backbone::Siglip2(m) => m.hidden_size(),
        }
    }
    fn patch_size(&self) -> usize {
        match self {
            Backbone::Dinov2(m) => m.patch_size(),
            Backbone::Dinov3(m) => m.patch_size(),
            Backbone::Siglip(m) => m.patch_size(),
            Backbone::Siglip2(m) => m.patch_size(),
        }
    }
}

/// Loads any supported backbone from a snapshot folder, dispatching on `config.json`'s
/// `model_type` (`dinov2`, `dinov2_with_registers`, `dinov3_vit`, `siglip`,
/// `siglip_vision_model`, `siglip2`, `siglip2_vision_model`), with `opts` (e.g.
/// [`LoadOptions::inference`] at `backbone.dtype`).
pub fn load_backbone<B: Backend>(
    snapshot_dir: &Path,
    device: &B::Device,
    opts: LoadOptions,
) -> Result<Box<dyn FeatureExtractor<B>>> {
    Ok(Box::new(Backbone::<B>::load_with(
        snapshot_dir,
        device,
        opts,
    )?))
}
