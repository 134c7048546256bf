//! Checkpoint folders: `checkpoints/<run-id>/{head.safetensors, run.yaml, metrics.jsonl, events…}`
//! and the `checkpoints/latest` pointer.
//!
//! `head.safetensors` holds the head in PyTorch layout (`classifier.weight` `[2, 2·hidden]`,
//! `classifier.bias` `[2]`, plus `hidden.*` for an MLP) and, in its metadata, the temperature and
//! threshold. `latest` is a one-line file naming the run; it is replaced atomically and only after
//! a run has written everything, so an interrupted run never becomes `latest`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::head::{served_probability, Head};
use crate::config::{Config, PreprocessKind};
use crate::metrics::{BinaryMetrics, ScoreSummary};
use crate::model::hub;
use crate::model::preprocess::Preprocess;
use crate::util::fsx;

/// File name of the head weights.
pub const HEAD_FILE: &str = "head.safetensors";
/// File name of the run record.
pub const RUN_FILE: &str = "run.yaml";
/// Name of the pointer file in the checkpoints root.
pub const LATEST: &str = "latest";

/// The backbone a head was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneInfo {
    /// `backbone.model` as given (HF name or folder).
    pub name: String,
    /// blake3 of the weights (the feature cache's backbone key).
    pub weights_hash: String,
    pub hidden_size: usize,
    /// Preprocessing id used for the features.
    pub preprocess: String,
}

/// The data a head was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestInfo {
    pub path: String,
    /// blake3 of the manifest file.
    pub hash: String,
    pub train_images: usize,
    pub val_images: usize,
    /// Feature rows used for training (images × (1 + views)).
    pub train_rows: usize,
    pub val_rows: usize,
}

/// Head architecture and input layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadInfo {
    pub kind: String,
    pub input_dim: usize,
    pub hidden: Option<usize>,
    /// Always `concat(cls, patch_mean)`.
    pub features: String,
    /// `id2label`, index = logit.
    pub labels: Vec<String>,
}

/// Validation results stored with the head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalMetrics {
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub val: BinaryMetrics,
    pub val_expected_score: ScoreSummary,
}

/// Everything `run.yaml` records about a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub code_revision: String,
    pub backbone: BackboneInfo,
    pub manifest: ManifestInfo,
    pub head: HeadInfo,
    pub temperature: f64,
    pub threshold: f64,
    /// How served answers are computed from the logits (see `served_probability`).
    pub served_probability: String,
    pub metrics: FinalMetrics,
    pub config: Config,
    /// Set by `sv72 finetune`: the backbone was trained too, and these are its changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetuneInfo>,
}

/// A fine-tuned backbone's record: its tensors live in [`FINETUNE_FILE`] beside the head, over
/// the base snapshot `BackboneInfo` names (whose weights hash stays the identity of the base).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneInfo {
    /// `lora`, `partial` or `full`.
    pub mode: String,
    /// blake3 of [`FINETUNE_FILE`], checked on every load.
    pub file_hash: String,
    /// Tensors in the file (adapters, or replaced snapshot tensors).
    pub tensors: usize,
    /// Trained parameters (backbone part), and the backbone's total.
    pub trainable_params: usize,
    pub backbone_params: usize,
    /// LoRA rank, alpha, scaling (`alpha / rank`) and the adapted projections.
    pub lora: Option<LoraInfo>,
    /// `partial`: blocks trained (the last ones) and the final norm.
    pub partial_blocks: Option<usize>,
    /// Training images drawn (augmented views) and throughput.
    pub images_seen: usize,
    pub images_per_second: f64,
    pub device: String,
}

/// LoRA settings recorded with a fine-tuned checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraInfo {
    pub rank: usize,
    pub alpha: f64,
    pub scale: f64,
    pub dropout: f64,
    pub targets: Vec<String>,
}

/// File of a fine-tuned checkpoint's backbone tensors (snapshot names; LoRA as PEFT names them).
pub const FINETUNE_FILE: &str = "backbone.safetensors";

impl RunInfo {
    /// Key of the features this checkpoint's head reads: the base weights hash, plus the
    /// fine-tuned tensors' hash when the backbone was trained (so caches never mix them).
    pub fn features_key(&self) -> String {
        match &self.finetune {
            None => self.backbone.weights_hash.clone(),
            Some(f) => format!(
                "{}-ft{}",
                self.backbone.weights_hash,
                &f.file_hash[..12.min(f.file_hash.len())]
            ),
        }
    }
}

/// Writes a fine-tuned backbone's tensors (`name`, shape, values) with its LoRA scaling.
pub fn write_finetune_file(
    path: &Path,
    tensors: &[crate::model::NamedTensor],
    mode: &str,
    lora_scale: f64,
    base_hash: &str,
) -> Result<()> {
    let bytes: Vec<(&str, &[usize], &[u8])> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), bytemuck::cast_slice::<f32, u8>(v)))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.to_vec(), b)
                .map(|v| (n.to_string(), v))
                .map_err(|e| anyhow::anyhow!("building tensor {n}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    // One metadata key keeps the bytes reproducible (see `head_bytes`).
    let info = serde_json::json!({
        "format": "sv72-finetune",
        "mode": mode,
        "lora_scale": lora_scale,
        "base_weights_hash": base_hash,
    });
    let mut meta = HashMap::new();
    meta.insert("sv72".to_string(), info.to_string());
    let out = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| anyhow::anyhow!("safetensors: {e}"))?;
    fsx::write_atomic(path, &out)
}

/// Reads [`FINETUNE_FILE`] as an overlay of the base snapshot's weights.
pub fn read_finetune_file(path: &Path) -> Result<crate::model::weights::Overlay> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let info: serde_json::Value = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("sv72"))
        .and_then(|t| serde_json::from_str(t).ok())
        .with_context(|| {
            format!(
                "{} has no sv72 metadata: not a fine-tuned backbone file",
                path.display()
            )
        })?;
    let scale = info["lora_scale"]
        .as_f64()
        .with_context(|| format!("{}: metadata has no lora_scale", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let mut map = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        map.insert(name, (view.shape().to_vec(), v));
    }
    crate::model::weights::Overlay::from_tensors(map, scale)
        .with_context(|| format!("reading {}", path.display()))
}

/// The backbone weights a checkpoint's head reads: the snapshot's, with the fine-tuned tensors
/// of [`FINETUNE_FILE`] overlaid (after checking the file is the one `run.yaml` recorded).
pub fn backbone_weights(
    dir: &Path,
    info: &RunInfo,
    snapshot: &Path,
) -> Result<crate::model::weights::Weights> {
    let weights = crate::model::weights::Weights::open(snapshot)?;
    match finetune_overlay(dir, info)? {
        None => Ok(weights),
        Some(o) => weights.with_overlay(o).with_context(|| {
            format!(
                "applying the fine-tuned tensors of {} to {}",
                dir.display(),
                snapshot.display()
            )
        }),
    }
}

/// The fine-tuned tensors of a checkpoint (`None` for a head-only checkpoint), checked against
/// the hash `run.yaml` recorded.
pub fn finetune_overlay(
    dir: &Path,
    info: &RunInfo,
) -> Result<Option<crate::model::weights::Overlay>> {
    let Some(ft) = &info.finetune else {
        return Ok(None);
    };
    let path = dir.join(FINETUNE_FILE);
    let hash = crate::util::hash::file_hash(&path).with_context(|| {
        format!(
            "{} was fine-tuned, but its {FINETUNE_FILE} cannot be read",
            dir.display()
        )
    })?;
    if hash != ft.file_hash {
        bail!(
            "{}: {FINETUNE_FILE} has hash {hash}, but run.yaml recorded {}; the file was changed or damaged",
            path.display(),
            ft.file_hash
        );
    }
    read_finetune_file(&path).map(Some)
}

/// The formula recorded in `run.yaml`.
pub const SERVED_FORMULA: &str =
    "p = sigmoid((logit_roadwork - logit_none) / temperature - logit(threshold)); p > 0.5 <=> roadwork";

/// `20261124T204712Z-1a2b3c4d`: UTC start time and a short hash of what the run is about.
pub fn make_run_id(now: chrono::DateTime<chrono::Utc>, salt: &str) -> String {
    let h = blake3::hash(format!("{salt}|{}", now.timestamp_nanos_opt().unwrap_or(0)).as_bytes());
    format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), &h.to_hex()[..8])
}

/// `git describe` of the source tree when available, else the crate version.
pub fn code_revision() -> String {
    let version = concat!("sv72 ", env!("CARGO_PKG_VERSION"));
    let out = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
            "--tags",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let d = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if d.is_empty() {
                version.to_string()
            } else {
                format!("{version} ({d})")
            }
        }
        _ => version.to_string(),
    }
}

/// Serialises a head and its calibration into safetensors bytes.
pub fn head_bytes<B: Backend>(head: &Head<B>, temperature: f64, threshold: f64) -> Result<Vec<u8>> {
    let tensors = head.to_named_tensors()?;
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, bytemuck::cast_slice::<f32, u8>(&v).to_vec()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| anyhow::anyhow!("building tensor {n}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    // One metadata key: safetensors writes its metadata map in hash order, and a single entry
    // keeps the file bytes reproducible.
    let info = serde_json::json!({
        "format": "sv72-head",
        "kind": head.kind().name(),
        "temperature": temperature,
        "threshold": threshold,
        "served_probability": SERVED_FORMULA,
    });
    let mut meta = HashMap::new();
    meta.insert("sv72".to_string(), info.to_string());
    safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| anyhow::anyhow!("safetensors: {e}"))
}

/// Writes `head.safetensors` and `run.yaml` into `dir`, each atomically.
pub fn write_checkpoint<B: Backend>(dir: &Path, head: &Head<B>, info: &RunInfo) -> Result<()> {
    fsx::write_atomic(
        &dir.join(HEAD_FILE),
        &head_bytes(head, info.temperature, info.threshold)?,
    )?;
    let yaml = serde_yaml::to_string(info)?;
    fsx::write_atomic(&dir.join(RUN_FILE), yaml.as_bytes())
}

/// Points `root/latest` at `run_id` (atomic replace).
pub fn set_latest(root: &Path, run_id: &str) -> Result<()> {
    fsx::write_atomic(&root.join(LATEST), format!("{run_id}\n").as_bytes())
}

/// A loaded checkpoint: the head, its calibration and its record.
#[derive(Debug)]
pub struct Checkpoint<B: Backend> {
    pub dir: PathBuf,
    pub head: Head<B>,
    pub info: RunInfo,
}

impl<B: Backend> Checkpoint<B> {
    /// Loads `dir/head.safetensors` and `dir/run.yaml`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let run_path = dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&run_path)
            .with_context(|| format!("cannot read {}", run_path.display()))?;
        let info: RunInfo = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not an sv72 run record", run_path.display()))?;
        let head = load_head(&dir.join(HEAD_FILE), device)?;
        if head.input_dim() != info.head.input_dim {
            bail!(
                "{}: head input width {} disagrees with run.yaml ({})",
                dir.display(),
                head.input_dim(),
                info.head.input_dim
            );
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            head,
            info,
        })
    }

    /// Served probabilities (`> 0.5` = roadwork) for row-major features `[n, input_dim]`.
    pub fn predict_proba(&self, features: &[f32], device: &B::Device) -> Result<Vec<f64>> {
        Ok(self
            .head
            .margins(features, device)?
            .into_iter()
            .map(|z| served_probability(z, self.info.temperature, self.info.threshold))
            .collect())
    }
}

/// Reads a head from a safetensors file written by [`write_checkpoint`].
pub fn load_head<B: Backend>(path: &Path, device: &B::Device) -> Result<Head<B>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let mut map = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        map.insert(name, (view.shape().to_vec(), v));
    }
    Head::from_named_tensors(&map, path, device)
}

/// Folder inside an export (or checkpoint) holding its own backbone snapshot; when present it
/// is used instead of resolving `run.yaml`'s backbone name through the Hugging Face cache.
pub const BUNDLED_BACKBONE: &str = "backbone";

/// The backbone snapshot of a checkpoint: its bundled `backbone/` folder, else `run.yaml`'s
/// backbone resolved through the Hugging Face cache.
pub fn checkpoint_snapshot(dir: &Path, info: &RunInfo) -> Result<PathBuf> {
    let bundled = dir.join(BUNDLED_BACKBONE);
    if bundled.join("config.json").is_file() {
        return Ok(bundled);
    }
    hub::resolve_backbone(&info.backbone.name, &info.config.backbone.revision).with_context(|| {
        format!(
            "checkpoint {} was trained on backbone {:?}, which is not available here",
            dir.display(),
            info.backbone.name
        )
    })
}

/// The preprocessing a checkpoint's features were computed with: rebuilt from the run's config
/// and checked against the id recorded in `run.yaml`.
pub fn training_preprocess<B: Backend>(ck: &Checkpoint<B>, snapshot: &Path) -> Result<Preprocess> {
    let info = &ck.info;
    let want = &info.backbone.preprocess;
    let size = info.config.augment.target_size;
    let mut tried = Vec::new();
    for kind in candidate_kinds(info.config.backbone.preprocess) {
        let p = Preprocess::for_kind(kind, snapshot, size)?;
        if &p.id() == want {
            return Ok(p);
        }
        tried.push(format!("{kind} = {}", p.id()));
    }
    bail!(
        "{}: run.yaml says the features were preprocessed as {want}, but backbone {} gives \
         {} (target size {size}); serving would not match training",
        ck.dir.display(),
        snapshot.display(),
        tried.join(", ")
    )
}

/// The preprocessing kinds tried, the run's configured one first.
fn candidate_kinds(configured: PreprocessKind) -> Vec<PreprocessKind> {
    let mut v = vec![configured];
    for k in [PreprocessKind::Validator, PreprocessKind::Processor] {
        if k != configured {
            v.push(k);
        }
    }
    v
}
