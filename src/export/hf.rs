//! The Hugging Face image-classification layout of an export: `config.json`,
//! `preprocessor_config.json`, `model.safetensors` (backbone + calibrated classifier) and, for
//! forms transformers has no class for, `modeling_sv72.py`.
//!
//! Two targets ([`Target`]). The default, [`Target::Subnet`], writes only what the subnet's own
//! miner loads: its poetry.lock pins transformers 4.45.2, whose only DINO classifier is
//! `Dinov2ForImageClassification` (a `Linear(2·hidden, 2)` on `[CLS ; mean of patch tokens]`),
//! and its `AutoImageProcessor.from_pretrained(repo, use_fast=True)` resolves, with no
//! `image_processor_type`, the model type's `BitImageProcessor` (PIL), but not an explicit
//! `BitImageProcessor` (it looks for a `BitImageProcessorFast` that 4.45.2 lacks). Registers, DINOv3 and MLP heads have no 4.45.2
//! form computing the same function (README, "Export compatibility"), so the subnet target
//! refuses them before any work. [`Target::Transformers`] writes them for current
//! transformers: `Dinov2WithRegistersForImageClassification` for a linear head on registers,
//! `modeling_sv72.py` behind an `auto_map` (`trust_remote_code=True`) for DINOv3 and MLP heads.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::model::preprocess::{Order, Preprocess, ResizeTo, PREPROCESSOR_FILE};
use crate::model::weights::Weights;
use crate::train::head::{logit, NamedTensor};

/// Weights file of an export.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Config file of an export.
pub const CONFIG_FILE: &str = "config.json";
/// Remote-code module written for the custom form.
pub const MODELING_FILE: &str = "modeling_sv72.py";
/// Class name of the custom form.
pub const CUSTOM_CLASS: &str = "Sv72ForImageClassification";
/// `id2label` of every export (index = logit).
pub const LABELS: [&str; 2] = ["None", "Roadwork"];

/// Backbone family of a snapshot, as transformers names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Dinov2,
    Dinov2WithRegisters,
    Dinov3,
}

impl Family {
    /// From a snapshot's `model_type`.
    pub fn from_model_type(t: &str, origin: &Path) -> Result<Self> {
        Ok(match t {
            "dinov2" => Family::Dinov2,
            "dinov2_with_registers" => Family::Dinov2WithRegisters,
            crate::model::dinov3::MODEL_TYPE => Family::Dinov3,
            crate::model::siglip::MODEL_TYPE | crate::model::siglip::VISION_MODEL_TYPE => bail!(
                "{}: SigLIP backbones cannot be exported yet (either target): transformers' \
                 SiglipForImageClassification (4.45.2 and 5.x) is a Linear on the mean of the \
                 patch tokens only, while sv72's heads also read the MAP head's pooled output, \
                 so no built-in class computes the same function; serve the checkpoint with \
                 `sv72 serve`, or export a DINOv2 challenger",
                origin.display()
            ),
            crate::model::siglip2::MODEL_TYPE | crate::model::siglip2::VISION_MODEL_TYPE => bail!(
                "{}: SigLIP 2 NaFlex backbones cannot be exported: the subnet's transformers \
                 4.45.2 has no siglip2 model type at all, and 5.x's \
                 Siglip2ForImageClassification is a Linear on the mean of the valid patch \
                 tokens only, while sv72's heads also read the MAP head's pooled output; serve \
                 the checkpoint with `sv72 serve`, or export a DINOv2 challenger",
                origin.display()
            ),
            other => bail!(
                "{}: model_type {other:?} cannot be exported (sv72 exports dinov2, \
                 dinov2_with_registers and dinov3_vit backbones)",
                origin.display()
            ),
        })
    }

    /// Short name used in file names and provenance.
    pub fn name(self) -> &'static str {
        match self {
            Family::Dinov2 => "dinov2",
            Family::Dinov2WithRegisters => "dinov2_with_registers",
            Family::Dinov3 => "dinov3_vit",
        }
    }

    /// Attribute (and state-dict prefix) holding the backbone in the classification model.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Dinov2 => "dinov2",
            Family::Dinov2WithRegisters => "dinov2_with_registers",
            Family::Dinov3 => "dinov3",
        }
    }

    /// The transformers class for a linear head, when one exists.
    pub fn builtin_class(self) -> Option<&'static str> {
        match self {
            Family::Dinov2 => Some("Dinov2ForImageClassification"),
            Family::Dinov2WithRegisters => Some("Dinov2WithRegistersForImageClassification"),
            Family::Dinov3 => None,
        }
    }

    /// Prefixes under which a snapshot may already store the backbone (bare first).
    fn source_prefixes(self) -> &'static [&'static str] {
        match self {
            Family::Dinov2 => &["", "dinov2.", "backbone.", "model."],
            Family::Dinov2WithRegisters => &["", "dinov2_with_registers.", "backbone.", "model."],
            Family::Dinov3 => &["", "model.", "dinov3.", "backbone.", "dinov3_vit.", "vit."],
        }
    }

    fn probe(self) -> &'static str {
        match self {
            Family::Dinov3 => "embeddings.patch_embeddings.weight",
            _ => "embeddings.cls_token",
        }
    }

    /// transformers module path, pretrained base class and backbone class for `modeling_sv72.py`.
    fn python_names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Family::Dinov2 => ("dinov2", "Dinov2PreTrainedModel", "Dinov2Model"),
            Family::Dinov2WithRegisters => (
                "dinov2_with_registers",
                "Dinov2WithRegistersPreTrainedModel",
                "Dinov2WithRegistersModel",
            ),
            Family::Dinov3 => ("dinov3_vit", "DINOv3ViTPreTrainedModel", "DINOv3ViTModel"),
        }
    }
}

/// Which stack an export is written for (`sv72 export --target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Target {
    /// Loads in the subnet miner's pinned stack (transformers 4.45.2) and in current
    /// transformers, without remote code.
    #[default]
    Subnet,
    /// Current transformers: built-in classes where they exist, else `modeling_sv72.py`
    /// (`trust_remote_code=True`).
    Transformers,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Subnet => "subnet",
            Target::Transformers => "transformers",
        }
    }
}

/// The subnet miner's pinned stack (natixnetwork/streetvision-subnet `poetry.lock`).
pub const SUBNET_STACK: &str = "transformers 4.45.2 + torch 2.6.0 + pillow 10.4.0";
/// The current transformers `make compat` checks against (`tools/requirements.txt`).
pub const CURRENT_STACK: &str = "transformers 5.24.0 + torch 2.15.0";

/// Whether one stack loads an export, and how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StackSupport {
    pub stack: String,
    pub loads: bool,
    /// Loading needs `trust_remote_code=True` (the subnet miner does not pass it).
    pub remote_code: bool,
    pub note: String,
}

/// Which of the two loadable forms an export takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A transformers class (`Dinov2ForImageClassification`, …): loads with no remote code.
    Builtin(&'static str),
    /// `modeling_sv72.py` + `auto_map`: needs `trust_remote_code=True`.
    Custom,
}

impl Form {
    /// The form for a family and head (`mlp_hidden` is `Some` for MLP heads) on `target`, or why
    /// the target cannot take it (naming the target that can).
    pub fn choose(family: Family, mlp_hidden: Option<usize>, target: Target) -> Result<Self> {
        match target {
            Target::Transformers => Ok(match (family.builtin_class(), mlp_hidden) {
                (Some(c), None) => Form::Builtin(c),
                _ => Form::Custom,
            }),
            Target::Subnet => {
                if family == Family::Dinov2 && mlp_hidden.is_none() {
                    return Ok(Form::Builtin("Dinov2ForImageClassification"));
                }
                let what = match (family, mlp_hidden) {
                    (Family::Dinov2, Some(h)) => format!(
                        "an MLP head (hidden {h}): 4.45.2's Dinov2ForImageClassification has a \
                         single Linear classifier"
                    ),
                    (Family::Dinov2WithRegisters, _) => "a DINOv2-with-registers backbone: \
                         4.45.2 has no dinov2_with_registers model, and its Dinov2 cannot insert \
                         register tokens"
                        .to_string(),
                    (Family::Dinov3, _) => "a DINOv3 backbone: 4.45.2 has no dinov3_vit model \
                         (rotary position embeddings, registers)"
                        .to_string(),
                    (Family::Dinov2, None) => unreachable!(),
                };
                let alt = Form::choose(family, mlp_hidden, Target::Transformers)?;
                bail!(
                    "this checkpoint cannot be exported for the subnet's miner ({SUBNET_STACK}): \
                     it has {what}. Nothing was written. `--target transformers` writes it as \
                     {} ({}); the subnet's reference miner cannot load that form. To be loadable \
                     by the subnet miner, train on a plain DINOv2 backbone with \
                     head.kind = linear.",
                    alt.class(),
                    match alt {
                        Form::Builtin(_) => format!("built-in class, loads in {CURRENT_STACK}"),
                        Form::Custom => format!(
                            "modeling_sv72.py, loads in {CURRENT_STACK} with trust_remote_code=True"
                        ),
                    }
                )
            }
        }
    }

    /// The `architectures` entry.
    pub fn class(self) -> &'static str {
        match self {
            Form::Builtin(c) => c,
            Form::Custom => CUSTOM_CLASS,
        }
    }

    /// Which stacks load this form of `family` (what `make compat` measured; README's
    /// compatibility table). The subnet's miner loads an export only where `loads` holds and
    /// `remote_code` does not: it never passes `trust_remote_code=True`.
    pub fn stacks(self, family: Family) -> Vec<StackSupport> {
        let row = |stack: &str, loads: bool, remote_code: bool, note: &str| StackSupport {
            stack: stack.into(),
            loads,
            remote_code,
            note: note.into(),
        };
        match self {
            Form::Builtin("Dinov2ForImageClassification") => vec![
                row(
                    SUBNET_STACK,
                    true,
                    false,
                    "the subnet miner's vit_detector.py loads it",
                ),
                row(CURRENT_STACK, true, false, "built-in class"),
            ],
            Form::Builtin(c) => vec![
                row(SUBNET_STACK, false, false, &format!("4.45.2 has no {c}")),
                row(CURRENT_STACK, true, false, "built-in class"),
            ],
            Form::Custom if family == Family::Dinov2 => vec![
                row(
                    SUBNET_STACK,
                    true,
                    true,
                    "only with trust_remote_code=True, which the subnet miner does not pass",
                ),
                row(CURRENT_STACK, true, true, "trust_remote_code=True"),
            ],
            Form::Custom => vec![
                row(
                    SUBNET_STACK,
                    false,
                    true,
                    &format!(
                        "modeling_sv72.py imports transformers' {} module, which 4.45.2 lacks",
                        family.name()
                    ),
                ),
                row(CURRENT_STACK, true, true, "trust_remote_code=True"),
            ],
        }
    }
}

/// Folds temperature `T` and threshold `t` into the classifier so that the "Roadwork" logit is
/// `z/T − logit(t)` and the "None" logit is 0, `z` being the trained margin `z1 − z0`. Then
/// `softmax(logits)[Roadwork]` and `sigmoid(logits[Roadwork])` are both
/// `sigmoid(z/T − logit(t))`, the probability sv72 serves: transformers' pipeline applies a
/// softmax to a two-label model without `problem_type`, but a per-logit sigmoid when
/// `problem_type` is `single_label_classification` (4.45.2) or when asked to.
/// `weight` is `[2, k]` row-major (PyTorch layout), `bias` `[2]`.
pub fn fold_calibration(
    weight: &mut [f32],
    bias: &mut [f32],
    temperature: f64,
    threshold: f64,
) -> Result<()> {
    if !(temperature.is_finite() && temperature > 0.0) {
        bail!("temperature {temperature} must be a positive number (run.yaml `temperature`)");
    }
    if !(threshold > 0.0 && threshold < 1.0) {
        bail!("threshold {threshold} must lie strictly between 0 and 1 (run.yaml `threshold`)");
    }
    if bias.len() != 2 || !weight.len().is_multiple_of(2) {
        bail!("the classifier must have 2 outputs");
    }
    let k = weight.len() / 2;
    let (w0, w1) = weight.split_at_mut(k);
    for (a, b) in w0.iter_mut().zip(w1.iter_mut()) {
        *b = ((f64::from(*b) - f64::from(*a)) / temperature) as f32;
        *a = 0.0;
    }
    bias[1] = ((f64::from(bias[1]) - f64::from(bias[0])) / temperature - logit(threshold)) as f32;
    bias[0] = 0.0;
    Ok(())
}

/// `config.json` of the export: the backbone's config plus the classification fields.
pub fn build_config(
    backbone_config: &Value,
    form: Form,
    family: Family,
    mlp_hidden: Option<usize>,
    origin: &Path,
) -> Result<Value> {
    let mut obj = backbone_config
        .as_object()
        .cloned()
        .with_context(|| format!("{}: expected a JSON object", origin.display()))?;
    obj.insert("architectures".into(), json!([form.class()]));
    obj.insert("id2label".into(), json!({"0": LABELS[0], "1": LABELS[1]}));
    obj.insert("label2id".into(), json!({LABELS[0]: 0, LABELS[1]: 1}));
    obj.insert("num_labels".into(), json!(2));
    // No `problem_type`: with `single_label_classification` 4.45.2's pipeline scores each
    // logit with a sigmoid (see `fold_calibration`, which makes both readings agree anyway).
    obj.remove("problem_type");
    // 4.45.2 reads `torch_dtype`, current transformers `dtype`.
    obj.insert("torch_dtype".into(), json!("float32"));
    obj.insert("dtype".into(), json!("float32"));
    if form == Form::Custom {
        obj.insert(
            "auto_map".into(),
            json!({"AutoModelForImageClassification": format!("modeling_sv72.{CUSTOM_CLASS}")}),
        );
        obj.insert(
            "sv72_head".into(),
            json!({
                "kind": if mlp_hidden.is_some() { "mlp" } else { "linear" },
                "hidden": mlp_hidden,
                "backbone_prefix": family.prefix(),
                "features": "concat(cls, mean(patch tokens without registers))",
            }),
        );
    }
    Ok(Value::Object(obj))
}

/// `preprocessor_config.json` reproducing the recipe the head's features were computed with.
///
/// `validator` runs (exact square resize, no crop, resize on uint8) become, for the
/// transformers target, a `ViTImageProcessor` config for every family: current transformers
/// loads its torchvision backend, which resizes uint8 pixels and then rescales and normalises in
/// one step, the validator recipe (DINOv3's own processor resizes floats). For the subnet target
/// they become the model type's `BitImageProcessor` without a crop, which 4.45.2 runs with PIL
/// (see the comment inside). `processor` runs reuse the snapshot's own file; for
/// the subnet target a `BitImageProcessor` loses its `image_processor_type`, so that 4.45.2
/// takes the model type's processor (`BitImageProcessor`) instead of looking for the
/// `BitImageProcessorFast` it lacks, and a `ViTImageProcessor` snapshot (the validator recipe
/// under another name) is written out in full as a validator run is.
pub fn preprocessor_config(pre: &Preprocess, snapshot: &Path, target: Target) -> Result<String> {
    if pre.kind != "validator" {
        let path = snapshot.join(PREPROCESSOR_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if target == Target::Transformers {
            return Ok(text);
        }
        let mut v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let obj = v
            .as_object_mut()
            .with_context(|| format!("{}: expected a JSON object", path.display()))?;
        let ty = obj
            .get("image_processor_type")
            .and_then(Value::as_str)
            .unwrap_or("BitImageProcessor");
        match ty.strip_suffix("Fast").unwrap_or(ty) {
            "BitImageProcessor" => {
                obj.remove("image_processor_type");
            }
            // A ViT processor is the validator recipe (exact resize, no crop): written out
            // in full below, so 4.45.2 runs it with PIL too.
            "ViTImageProcessor" => return exact_resize_config(pre, target),
            other => bail!(
                "{}: image_processor_type {other:?} has no form the subnet's miner \
                 ({SUBNET_STACK}) loads; train with backbone.preprocess = validator",
                path.display()
            ),
        }
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    exact_resize_config(pre, target)
}

/// The processor config of an exact resize on uint8 without a crop (the validator recipe).
fn exact_resize_config(pre: &Preprocess, target: Target) -> Result<String> {
    let Some((ResizeTo::Exact { height, width }, resample)) = pre.resize else {
        bail!("the validator preprocessing must resize to a fixed size");
    };
    if pre.order != Order::ResizeU8First || pre.crop.is_some() {
        bail!("unexpected validator preprocessing {pre:?}");
    }
    let (mean, std) = pre.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
    let mut v = json!({
        "do_resize": true,
        "size": {"height": height, "width": width},
        "resample": resample_pil(resample),
        "do_rescale": pre.rescale.is_some(),
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": pre.normalize.is_some(),
        "image_mean": mean.map(f64::from),
        "image_std": std.map(f64::from),
        "do_convert_rgb": true,
    });
    let obj = v.as_object_mut().expect("a JSON object");
    match target {
        Target::Transformers => {
            obj.insert("image_processor_type".into(), json!("ViTImageProcessor"));
        }
        // The model type's `BitImageProcessor` (no `image_processor_type`), told not to crop:
        // 4.45.2 has no fast variant of it and resizes with PIL, which sv72's resize matches,
        // where its `ViTImageProcessorFast` (torchvision 0.21) rounds one uint8 level apart on
        // ~20% of pixels, measured up to 4e-4 on a fine-tuned model's probability.
        Target::Subnet => {
            obj.insert("do_center_crop".into(), json!(false));
        }
    }
    Ok(serde_json::to_string_pretty(&v)?)
}

fn resample_pil(r: crate::model::preprocess::Resample) -> u8 {
    use crate::model::preprocess::Resample;
    match r {
        Resample::Bilinear => 2,
        Resample::Bicubic => 3,
    }
}

/// Whether two recipes give the same `pixel_values` (the `kind` label aside).
pub fn same_recipe(a: &Preprocess, b: &Preprocess) -> bool {
    a.resize == b.resize
        && a.crop == b.crop
        && a.rescale == b.rescale
        && a.normalize == b.normalize
        && a.order == b.order
}

/// The backbone tensors an export writes, under transformers' bare backbone names
/// (`embeddings.cls_token`, `encoder.layer.0.…`, DINOv3's `model.layer.0.…`).
///
/// The export takes its backbone from this, not from a file: a frozen backbone reads the
/// snapshot ([`SnapshotTensors`]); a fine-tuned one (LoRA merged into the weights) hands its own
/// tensors ([`OwnedTensors`]) and exports to the same built-in classes.
pub trait BackboneTensors {
    /// Names and shapes, sorted.
    fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>>;
    /// The values of one tensor as f32, checked against `shape`.
    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

/// A snapshot's backbone tensors, whatever prefix it stores them under.
pub struct SnapshotTensors {
    weights: Weights,
    /// Bare name -> name in the snapshot.
    names: BTreeMap<String, (String, Vec<usize>)>,
}

impl SnapshotTensors {
    pub fn open(snapshot: &Path, family: Family) -> Result<Self> {
        Self::from_weights(Weights::open(snapshot)?, snapshot, family)
    }

    /// `weights` read from `snapshot`, e.g. with a fine-tuned checkpoint's overlay (LoRA merged
    /// on read).
    pub fn from_weights(weights: Weights, snapshot: &Path, family: Family) -> Result<Self> {
        let root = weights
            .detect_prefix(family.probe(), family.source_prefixes())
            .with_context(|| {
                format!(
                    "{}: no tensor `{}` under any known prefix: not a {} snapshot",
                    snapshot.display(),
                    family.probe(),
                    family.name()
                )
            })?;
        let mut names = BTreeMap::new();
        for (name, shape) in weights.shapes()? {
            let Some(rest) = name.strip_prefix(root) else {
                continue;
            };
            // A snapshot that is already a classifier brings its own head: ours replaces it.
            if rest.starts_with("classifier.") || rest.starts_with("hidden.") {
                continue;
            }
            // Published DINOv3 checkpoints say `layer.N`; the transformers module is `model.layer.N`.
            let bare = if family == Family::Dinov3 && rest.starts_with("layer.") {
                format!("model.{rest}")
            } else {
                rest.to_string()
            };
            names.insert(bare, (name.clone(), shape));
        }
        Ok(Self { weights, names })
    }
}

impl BackboneTensors for SnapshotTensors {
    fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        Ok(self
            .names
            .iter()
            .map(|(k, (_, s))| (k.clone(), s.clone()))
            .collect())
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (orig, _) = self
            .names
            .get(name)
            .with_context(|| format!("no backbone tensor {name}"))?;
        self.weights.f32_shaped(orig, shape)
    }
}

/// Backbone tensors held in memory (bare name -> shape, values).
#[derive(Debug, Clone, Default)]
pub struct OwnedTensors(pub BTreeMap<String, (Vec<usize>, Vec<f32>)>);

impl BackboneTensors for OwnedTensors {
    fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        Ok(self
            .0
            .iter()
            .map(|(k, (s, _))| (k.clone(), s.clone()))
            .collect())
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = self
            .0
            .get(name)
            .with_context(|| format!("no backbone tensor {name}"))?;
        if s != shape || v.len() != shape.iter().product::<usize>() {
            bail!(
                "backbone tensor {name}: shape {s:?} with {} values, expected {shape:?}",
                v.len()
            );
        }
        Ok(v.clone())
    }
}

/// One tensor of the export: its name there, and where its values come from.
enum Source {
    Backbone(String),
    Owned(Vec<f32>),
}

/// Writes `model.safetensors`: the backbone tensors renamed under `family.prefix()` (f32), then
/// the head tensors. Tensors are converted and written one at a time, so memory peaks at one
/// tensor rather than a copy of the model. `progress` is told after each tensor.
pub fn write_weights(
    out: &Path,
    backbone: &dyn BackboneTensors,
    family: Family,
    head: Vec<NamedTensor>,
    progress: &dyn Fn(u64, u64),
) -> Result<()> {
    let mut entries: BTreeMap<String, (Vec<usize>, Source)> = BTreeMap::new();
    for (bare, shape) in backbone.shapes()? {
        let new = format!("{}.{bare}", family.prefix());
        entries.insert(new, (shape, Source::Backbone(bare)));
    }
    for (name, shape, values) in head {
        entries.insert(name, (shape, Source::Owned(values)));
    }
    // Header: offsets are known from the shapes because every tensor is written as f32.
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, (shape, _)) in &entries {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut h = serde_json::to_vec(&Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(h.len() as u64).to_le_bytes())?;
    w.write_all(&h)?;
    let total = entries.len() as u64;
    for (i, (name, (shape, src))) in entries.into_iter().enumerate() {
        let values = match src {
            Source::Owned(v) => v,
            Source::Backbone(bare) => backbone.f32(&bare, &shape)?,
        };
        if values.len() != shape.iter().product::<usize>() {
            bail!("tensor {name}: {} values for shape {shape:?}", values.len());
        }
        w.write_all(bytemuck::cast_slice::<f32, u8>(&values))
            .with_context(|| format!("writing {}", out.display()))?;
        progress(i as u64 + 1, total);
    }
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    w.get_ref()
        .sync_all()
        .with_context(|| format!("fsync of {}", out.display()))?;
    Ok(())
}

/// `modeling_sv72.py` for the custom form: the family's own pretrained base class (so weight
/// initialisation and buffers behave as transformers expects) with the backbone under
/// `family.prefix()` and sv72's head on `[CLS ; mean of patch tokens]`.
pub fn modeling_py(family: Family) -> String {
    let (module, base, model) = family.python_names();
    let prefix = family.prefix();
    format!(
        r#"# Written by sv72 export. Loaded with trust_remote_code=True.
"""sv72 roadwork classifier: frozen {model} + head on [CLS ; mean of patch tokens].

The head is `classifier` (Linear) or, for MLP heads, `hidden` (Linear) -> GELU -> `classifier`.
Temperature and threshold are folded into `classifier`, so softmax(logits)[1] ("Roadwork") is
the probability sv72 serves.
"""
import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.{module}.modeling_{module} import {base}, {model}


class {CUSTOM_CLASS}({base}):
    base_model_prefix = "{prefix}"

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.{prefix} = {model}(config)
        head = getattr(config, "sv72_head", None) or {{}}
        width = 2 * config.hidden_size
        hidden = head.get("hidden") if head.get("kind") == "mlp" else None
        self.hidden = nn.Linear(width, hidden) if hidden else None
        self.classifier = nn.Linear(hidden or width, config.num_labels)
        self.post_init()

    def forward(self, pixel_values=None, labels=None, **kwargs):
        outputs = self.{prefix}(pixel_values)
        sequence = outputs.last_hidden_state
        skip = 1 + int(getattr(self.config, "num_register_tokens", 0) or 0)
        x = torch.cat([sequence[:, 0], sequence[:, skip:].mean(dim=1)], dim=-1)
        if self.hidden is not None:
            x = nn.functional.gelu(self.hidden(x))
        logits = self.classifier(x)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return ImageClassifierOutput(loss=loss, logits=logits)
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_softmax_and_sigmoid_are_the_served_probability() {
        let (t, thr) = (1.7, 0.35);
        let mut w = vec![0.3f32, -0.2, 0.5, 0.1];
        let mut b = vec![0.05f32, -0.1];
        let x = [0.7f64, -1.3];
        let z = |w: &[f32], b: &[f32], k: usize| {
            f64::from(b[k]) + x[0] * f64::from(w[2 * k]) + x[1] * f64::from(w[2 * k + 1])
        };
        let margin = z(&w, &b, 1) - z(&w, &b, 0);
        let want = crate::train::head::served_probability(margin, t, thr);
        fold_calibration(&mut w, &mut b, t, thr).unwrap();
        let (l0, l1) = (z(&w, &b, 0), z(&w, &b, 1));
        let softmax = l1.exp() / (l0.exp() + l1.exp());
        let sigmoid = 1.0 / (1.0 + (-l1).exp());
        assert!((softmax - want).abs() < 1e-6, "{softmax} vs {want}");
        // 4.45.2's pipeline with problem_type = single_label_classification.
        assert!((sigmoid - want).abs() < 1e-6, "{sigmoid} vs {want}");
        assert_eq!((w[0], w[1], b[0]), (0.0, 0.0, 0.0));
        assert!(fold_calibration(&mut w, &mut b, 0.0, 0.5).is_err());
        assert!(fold_calibration(&mut w, &mut b, 1.0, 1.0).is_err());
    }

    #[test]
    fn forms_per_target() {
        let tr = Target::Transformers;
        assert_eq!(
            Form::choose(Family::Dinov2WithRegisters, None, tr)
                .unwrap()
                .class(),
            "Dinov2WithRegistersForImageClassification"
        );
        assert_eq!(
            Form::choose(Family::Dinov2, Some(8), tr).unwrap(),
            Form::Custom
        );
        assert_eq!(
            Form::choose(Family::Dinov3, None, tr).unwrap(),
            Form::Custom
        );
        let sub = Target::Subnet;
        let f = Form::choose(Family::Dinov2, None, sub).unwrap();
        assert_eq!(f.class(), "Dinov2ForImageClassification");
        assert!(f
            .stacks(Family::Dinov2)
            .iter()
            .all(|s| s.loads && !s.remote_code));
        for (family, mlp) in [
            (Family::Dinov2, Some(8)),
            (Family::Dinov2WithRegisters, None),
            (Family::Dinov3, None),
        ] {
            let e = format!("{:#}", Form::choose(family, mlp, sub).unwrap_err());
            assert!(
                e.contains("--target transformers") && e.contains("4.45.2"),
                "{e}"
            );
            let alt = Form::choose(family, mlp, tr).unwrap();
            let s = &alt.stacks(family)[0];
            assert!(
                !s.loads || s.remote_code,
                "{alt:?} must not claim the miner loads it"
            );
        }
    }

    #[test]
    fn subnet_processor_config_drops_bit_type() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(PREPROCESSOR_FILE),
            r#"{"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 256}}"#,
        )
        .unwrap();
        let pre = Preprocess::from_snapshot(dir.path()).unwrap();
        let text = preprocessor_config(&pre, dir.path(), Target::Subnet).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.get("image_processor_type").is_none(), "{text}");
        assert_eq!(v["size"]["shortest_edge"], 256);
        let kept = preprocessor_config(&pre, dir.path(), Target::Transformers).unwrap();
        assert!(kept.contains("BitImageProcessor"));
    }

    /// A ViT-processor snapshot (exact resize, ViT's class defaults) becomes the model type's
    /// processor told not to crop, with every value the class defaults supplied written out,
    /// and parses back to the same preprocessing.
    #[test]
    fn subnet_processor_config_spells_out_a_vit_processor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(PREPROCESSOR_FILE),
            r#"{"image_processor_type": "ViTImageProcessorFast", "size": {"height": 98, "width": 98}}"#,
        )
        .unwrap();
        let pre = Preprocess::from_snapshot(dir.path()).unwrap();
        let text = preprocessor_config(&pre, dir.path(), Target::Subnet).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.get("image_processor_type").is_none(), "{text}");
        assert_eq!(v["do_center_crop"], false, "{text}");
        assert_eq!(
            (v["size"]["height"].as_u64(), v["resample"].as_u64()),
            (Some(98), Some(2))
        );
        assert_eq!(v["image_mean"][0], 0.5, "{text}");
        let back = Preprocess::from_json(&text, "exported").unwrap();
        assert_eq!(
            (back.resize, back.crop, back.order),
            (pre.resize, pre.crop, pre.order)
        );
        assert_eq!((back.normalize, back.rescale), (pre.normalize, pre.rescale));
    }
}
