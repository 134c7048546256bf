//! The model `sv72 finetune` trains: the same backbone module `embed` runs (loaded unfolded, so
//! each parameter is one `transformers` tensor) and a head on `[CLS ; patch mean]`, plus the
//! plan of what trains: LoRA adapters, the last blocks, or everything, each parameter with its
//! layer-wise learning-rate scale and weight-decay flag.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, Result};
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand_chacha::ChaCha8Rng;

use crate::config::{FinetuneConfig, FinetuneMode};
use crate::model::linear::LoraSpec;
use crate::model::weights::Weights;

/// Trained values by parameter: shape and row-major data.
pub type ParamValues = HashMap<ParamId, (Vec<usize>, Vec<f32>)>;
use crate::model::{Backbone, Binding, FeatureExtractor, LoadOptions, NamedTensors, ProjRole};
use crate::train::head::{Head, HeadKind};

/// Backbone and head, trained together.
#[derive(Module, Debug)]
pub struct FtModel<B: Backend> {
    pub backbone: Backbone<B>,
    pub head: Head<B>,
}

impl<B: Backend> FtModel<B> {
    /// Head inputs `[N, 2·D]` = `[CLS ; mean of patch tokens]` of the final hidden state (SigLIP:
    /// `[pooled ; mean of patch tokens]`), as `train-head` reads them from the feature cache.
    pub fn features(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let out = self.backbone.try_extract(pixel_values, false)?;
        Ok(Tensor::cat(vec![out.cls, out.patch_mean], 1))
    }

    /// Logits `[N, 2]`; `head_mask` is the MLP head's dropout mask (training only).
    pub fn logits(
        &self,
        pixel_values: Tensor<B, 4>,
        head_mask: Option<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>> {
        Ok(self
            .head
            .forward_masked(self.features(pixel_values)?, head_mask))
    }
}

/// How one trained parameter is optimised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamGroup {
    /// Multiplies the scheduled learning rate (layer-wise decay, head rate).
    pub lr_scale: f64,
    /// Whether AdamW's decoupled weight decay applies.
    pub decay: bool,
}

/// What trains.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: FinetuneMode,
    /// Every trained parameter (backbone and head).
    pub groups: HashMap<ParamId, ParamGroup>,
    /// Trained backbone tensors, in snapshot (or PEFT adapter) names: what the checkpoint stores.
    pub saved: Vec<Binding>,
    pub trainable_params: usize,
    pub backbone_params: usize,
    /// Adapted projections (LoRA).
    pub lora_targets: Vec<String>,
    /// LoRA scaling (`alpha / rank`; 1 when not LoRA).
    pub lora_scale: f64,
}

impl Plan {
    /// The trained parameter ids.
    pub fn ids(&self) -> HashSet<ParamId> {
        self.groups.keys().copied().collect()
    }
}

/// Projections LoRA adapts: attention always, the MLP when asked.
pub fn lora_targets(mlp: bool) -> impl Fn(ProjRole) -> bool {
    move |role| match role {
        ProjRole::AttnQkv | ProjRole::AttnOut => true,
        ProjRole::MlpIn | ProjRole::MlpOut => mlp,
    }
}

/// Builds the model from `weights` of snapshot `dir` and plans what trains. `init` may hold
/// initial adapter (`….lora_A.weight`, PEFT layout) and head (`classifier.*`, `hidden.*`)
/// tensors; what it lacks is initialised from `rng` (adapters as PEFT does, B = 0).
pub fn build<B: Backend>(
    dir: &Path,
    weights: &Weights,
    cfg: &FinetuneConfig,
    head_kind: HeadKind,
    init: &NamedTensors,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Result<(FtModel<B>, Plan)> {
    let mut backbone = Backbone::<B>::from_weights(dir, weights, device, LoadOptions::TRAINING)?;
    let backbone_params = backbone.num_params();
    let layers = backbone.num_layers();
    let spec = LoraSpec {
        rank: cfg.lora.rank,
        alpha: cfg.lora.alpha,
        dropout: cfg.lora.dropout,
    };
    let base_count = backbone.bindings().len();
    if cfg.mode == FinetuneMode::Lora {
        backbone.attach_lora(&spec, &lora_targets(cfg.lora.mlp), init, rng)?;
    }
    let d2 = 2 * backbone.hidden_size();
    let head = if init.contains_key("classifier.weight") {
        Head::from_named_tensors(init, Path::new("initial head tensors"), device)?
    } else {
        Head::init(head_kind, d2, rng, device)
    };
    if head.input_dim() != d2 {
        bail!(
            "the initial head takes {} inputs, the backbone gives {d2}",
            head.input_dim()
        );
    }
    let saved: Vec<Binding> = match cfg.mode {
        FinetuneMode::Lora => backbone.bindings()[base_count..].to_vec(),
        FinetuneMode::Partial => {
            let n = cfg.partial_blocks.min(layers);
            backbone
                .bindings()
                .iter()
                .filter(|b| b.depth > layers - n)
                .cloned()
                .collect()
        }
        FinetuneMode::Full => backbone.bindings().to_vec(),
    };
    let lr_scale = |depth: usize| {
        cfg.layer_decay
            .powi((layers + 1).saturating_sub(depth) as i32)
    };
    let mut groups = HashMap::new();
    for b in &saved {
        for p in &b.pieces {
            groups.insert(
                p.param,
                ParamGroup {
                    lr_scale: lr_scale(b.depth),
                    decay: b.decay,
                },
            );
        }
    }
    let sizes = param_sizes(&backbone);
    let trainable_params = groups
        .keys()
        .map(|id| sizes.get(id).copied().unwrap_or(0))
        .sum();
    let head_scale = cfg.head_lr.unwrap_or(cfg.lr) / cfg.lr;
    for l in head.hidden.iter().chain(std::iter::once(&head.classifier)) {
        groups.insert(
            l.weight.id,
            ParamGroup {
                lr_scale: head_scale,
                decay: true,
            },
        );
        if let Some(bias) = &l.bias {
            groups.insert(
                bias.id,
                ParamGroup {
                    lr_scale: head_scale,
                    decay: false,
                },
            );
        }
    }
    let lora_targets = saved
        .iter()
        .filter_map(|b| b.name.strip_suffix(".lora_A.weight").map(str::to_string))
        .collect();
    let model = FtModel { backbone, head };
    let ids: HashSet<ParamId> = groups.keys().copied().collect();
    let model = set_trainable(model, &ids);
    Ok((
        model,
        Plan {
            mode: cfg.mode,
            groups,
            saved,
            trainable_params,
            backbone_params,
            lora_targets,
            lora_scale: if cfg.mode == FinetuneMode::Lora {
                spec.scale()
            } else {
                1.0
            },
        },
    ))
}

/// Element count of every float parameter, by id.
fn param_sizes<B: Backend, M: Module<B>>(m: &M) -> HashMap<ParamId, usize> {
    struct Sizes(HashMap<ParamId, usize>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Sizes {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.insert(p.id, p.shape().num_elements());
        }
    }
    let mut s = Sizes(HashMap::new());
    m.visit(&mut s);
    s.0
}

/// Marks exactly the parameters in `ids` as requiring gradients (the rest are constants of the
/// graph and cost no gradient memory).
pub fn set_trainable<B: Backend, M: Module<B>>(m: M, ids: &HashSet<ParamId>) -> M {
    struct Mark<'a>(&'a HashSet<ParamId>);
    impl<B: Backend> ModuleMapper<B> for Mark<'_> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let on = self.0.contains(&p.id);
            p.set_require_grad(on)
        }
    }
    m.map(&mut Mark(ids))
}

/// Replaces the values of the parameters in `values` (by id; e.g. a kept best epoch).
pub fn load_values<B: Backend, M: Module<B>>(m: M, values: &ParamValues) -> M {
    struct Put<'a>(&'a ParamValues);
    impl<B: Backend> ModuleMapper<B> for Put<'_> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let Some((dims, v)) = self.0.get(&p.id) else {
                return p;
            };
            let (id, t, mapper) = p.consume();
            let require = t.is_require_grad();
            let shape: [usize; D] = dims.clone().try_into().expect("same rank");
            let mut new = Tensor::<B, D>::from_data(
                burn::tensor::TensorData::new(v.clone(), shape).convert_dtype(t.dtype()),
                &t.device(),
            );
            if require {
                new = new.require_grad();
            }
            Param::from_mapped_value(id, new, mapper)
        }
    }
    m.map(&mut Put(values))
}
