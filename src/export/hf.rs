//! The Hugging Face image-classification layout of an export: `config.json`,
//! `preprocessor_config.json`, `model.safetensors` (backbone + calibrated classifier) and, for
//! forms transformers has no class for, `modeling_sv72.py`.
//!
//! Linear heads on DINOv2 / DINOv2-with-registers are exactly transformers'
//! `Dinov2ForImageClassification` / `Dinov2WithRegistersForImageClassification` (a
//! `Linear(2·hidden, 2)` on `[CLS ; mean of patch tokens]`), so the subnet's reference miner loads
//! them as they are. DINOv3 (transformers 5.24 has no `DINOv3ViTForImageClassification`) and MLP
//! heads get the same files plus `modeling_sv72.py` behind an `auto_map`
//! (`trust_remote_code=True`).

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

/// Which of the two loadable forms an export takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A transformers class (`Dinov2ForImageClassification`, …): loads with no remote code.
    Builtin(&'static str),
    /// `modeling_sv72.py` + `auto_map`: needs `trust_remote_code=True`.
    Custom,
}

impl Form {
    /// The form for a family and head (`mlp_hidden` is `Some` for MLP heads).
    pub fn choose(family: Family, mlp_hidden: Option<usize>) -> Self {
        match (family.builtin_class(), mlp_hidden) {
            (Some(c), None) => Form::Builtin(c),
            _ => Form::Custom,
        }
    }

    /// The `architectures` entry.
    pub fn class(self) -> &'static str {
        match self {
            Form::Builtin(c) => c,
            Form::Custom => CUSTOM_CLASS,
        }
    }
}

/// Folds temperature `T` and threshold `t` into the classifier so that
/// `softmax(logits)[Roadwork] = sigmoid(z/T − logit(t))`, the probability sv72 serves.
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
    let shift = logit(threshold) / 2.0;
    for w in weight.iter_mut() {
        *w = (f64::from(*w) / temperature) as f32;
    }
    bias[0] = (f64::from(bias[0]) / temperature + shift) as f32;
    bias[1] = (f64::from(bias[1]) / temperature - shift) as f32;
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
    obj.insert("problem_type".into(), json!("single_label_classification"));
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
/// `processor` runs reuse the snapshot's own file. `validator` runs (exact square resize, no
/// crop, resize on uint8) become a `BitImageProcessorFast` config for every family: that class
/// resizes uint8 pixels with torchvision's antialiased kernel before rescaling, exactly the
/// validator recipe, whereas DINOv3's own processor resizes floats.
pub fn preprocessor_config(pre: &Preprocess, snapshot: &Path) -> Result<String> {
    if pre.kind != "validator" {
        let path = snapshot.join(PREPROCESSOR_FILE);
        return std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()));
    }
    let Some((ResizeTo::Exact { height, width }, resample)) = pre.resize else {
        bail!("the validator preprocessing must resize to a fixed size");
    };
    if pre.order != Order::ResizeU8First || pre.crop.is_some() {
        bail!("unexpected validator preprocessing {pre:?}");
    }
    let (mean, std) = pre.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
    let v = json!({
        "image_processor_type": "BitImageProcessorFast",
        "do_resize": true,
        "size": {"height": height, "width": width},
        "resample": resample_pil(resample),
        "do_center_crop": false,
        "do_rescale": pre.rescale.is_some(),
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": pre.normalize.is_some(),
        "image_mean": mean.map(f64::from),
        "image_std": std.map(f64::from),
        "do_convert_rgb": true,
    });
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

/// One tensor of the export: its name there, and where its values come from.
enum Source {
    Backbone(String),
    Owned(Vec<f32>),
}

/// Writes `model.safetensors`: the backbone tensors of `snapshot` as `weights` reads them
/// (a fine-tuned checkpoint's overlay applied, LoRA merged) renamed under `family.prefix()`
/// (f32), then the head tensors. Tensors are converted and written one at a time, so memory
/// peaks at one tensor rather than a copy of the model. `progress` is told after each tensor.
pub fn write_weights(
    out: &Path,
    snapshot: &Path,
    weights: &Weights,
    family: Family,
    head: Vec<NamedTensor>,
    progress: &dyn Fn(u64, u64),
) -> Result<()> {
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
    let shapes = weights.shapes()?;
    let mut entries: BTreeMap<String, (Vec<usize>, Source)> = BTreeMap::new();
    for (name, shape) in &shapes {
        let Some(rest) = name.strip_prefix(root) else {
            continue;
        };
        // A snapshot that is already a classifier brings its own head: ours replaces it.
        if rest.starts_with("classifier.") || rest.starts_with("hidden.") {
            continue;
        }
        // Published DINOv3 checkpoints say `layer.N`; the transformers module is `model.layer.N`.
        let rest = if family == Family::Dinov3 && rest.starts_with("layer.") {
            format!("model.{rest}")
        } else {
            rest.to_string()
        };
        let new = format!("{}.{rest}", family.prefix());
        entries.insert(new, (shape.clone(), Source::Backbone(name.clone())));
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
            Source::Backbone(orig) => weights.f32_shaped(&orig, &shape)?,
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
    fn folded_softmax_is_the_served_probability() {
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
        let got = l1.exp() / (l0.exp() + l1.exp());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(fold_calibration(&mut w, &mut b, 0.0, 0.5).is_err());
        assert!(fold_calibration(&mut w, &mut b, 1.0, 1.0).is_err());
    }

    #[test]
    fn forms() {
        assert_eq!(
            Form::choose(Family::Dinov2WithRegisters, None).class(),
            "Dinov2WithRegistersForImageClassification"
        );
        assert_eq!(Form::choose(Family::Dinov2, Some(8)), Form::Custom);
        assert_eq!(Form::choose(Family::Dinov3, None), Form::Custom);
    }
}
