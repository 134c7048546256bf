//! The one configuration every stage reads (`configs/default.yaml`).
//!
//! Every section denies unknown keys so a typo in a miner's config is an error that names the key
//! and the file, not a silently ignored setting. CLI flags and `--set a.b=value` override it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The embedded default configuration, identical to `configs/default.yaml`.
pub const DEFAULT_YAML: &str = include_str!("../configs/default.yaml");

/// Where the backbone runs (`backbone.device`, `--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    /// Needs a build with `--features cuda`.
    Cuda,
}

/// Backbone precision (`backbone.dtype`): f16 and bf16 on CUDA; on the CPU, bf16 holds the
/// projection weights in bf16 for inference (AMX/AVX512-BF16 CPUs only; training stays f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    F16,
    Bf16,
}

/// How images become `pixel_values` (`backbone.preprocess`, `sv72 embed --preprocess`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PreprocessKind {
    /// The fixed `augment.target_size` square path validators send.
    #[default]
    Validator,
    /// The checkpoint's own `preprocessor_config.json`.
    Processor,
}

/// The classification head (`head.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadType {
    /// Linear on `[CLS ; patch mean]`.
    #[default]
    Linear,
    /// One hidden layer of `head.hidden` units.
    Mlp,
}

/// Class balancing of a mix's train split (`mix.balance`, `synth-mix --balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Same train count for every label (the larger class is subsampled).
    #[default]
    Equal,
    /// Natural counts per label.
    None,
}

/// Distance of mine-hard's k-centre greedy selection (`mine_hard.distance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// `1 − cos(a, b)`; insensitive to feature scale.
    #[default]
    #[serde(alias = "cos")]
    Cosine,
    /// Euclidean distance.
    #[serde(alias = "euclidean")]
    L2,
}

/// `as_str` (the name the config file uses), `Display` and `FromStr` (same names and aliases as
/// the config file) for the config's value enums.
macro_rules! value_names {
    ($($t:ident { $($v:ident => $s:literal),* $(,)? })*) => {$(
        impl $t {
            /// The name as the config file spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $s),*
                }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $t {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> Result<Self> {
                serde_yaml::from_value(serde_yaml::Value::String(s.to_string()))
                    .map_err(|e| anyhow::anyhow!("{s:?}: {e}"))
            }
        }
    )*};
}

value_names! {
    Device { Cpu => "cpu", Cuda => "cuda" }
    Dtype { F32 => "f32", F16 => "f16", Bf16 => "bf16" }
    PreprocessKind { Validator => "validator", Processor => "processor" }
    HeadType { Linear => "linear", Mlp => "mlp" }
    Balance { Equal => "equal", None => "none" }
    Distance { Cosine => "cosine", L2 => "l2" }
    GenBackend { Openai => "openai", A1111 => "a1111", Comfyui => "comfyui" }
    GenMode { Auto => "auto", T2i => "t2i", I2i => "i2i" }
    ImageResponseFormat { B64Json => "b64_json", Url => "url" }
}

/// Top-level configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub paths: PathsConfig,
    pub ingest: IngestConfig,
    pub split: SplitConfig,
    pub mix: MixConfig,
    pub augment: AugmentConfig,
    pub backbone: BackboneConfig,
    pub head: HeadConfig,
    pub train: TrainConfig,
    pub finetune: FinetuneConfig,
    pub eval: EvalConfig,
    pub serve: ServeConfig,
    pub ab_test: AbTestConfig,
    pub export: ExportConfig,
    pub register: RegisterConfig,
    pub cycle: CycleConfig,
    pub mine_hard: MineHardConfig,
    pub judge: JudgeConfig,
    pub generate: GenerateConfig,
    pub econ: EconConfig,
}

/// Where artifacts live on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Root of `datasets/<name>/manifest.parquet` and the content-addressed image store.
    pub datasets: PathBuf,
    /// Root of `checkpoints/<run-id>/`.
    pub checkpoints: PathBuf,
    /// Root of `exports/<name>-<version>/`.
    pub exports: PathBuf,
    /// On-disk feature cache.
    pub feature_cache: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            datasets: "datasets".into(),
            checkpoints: "checkpoints".into(),
            exports: "exports".into(),
            feature_cache: "datasets/.features".into(),
        }
    }
}

/// `sv72 ingest` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Folder name holding positive (roadwork) images in a folder-tree source.
    pub positive_dir: String,
    /// Folder name holding negative (no roadwork) images in a folder-tree source.
    pub negative_dir: String,
    /// Parquet column with the `{bytes, path}` image struct (NATIX / HF datasets layout).
    pub parquet_image_column: String,
    /// Parquet column with the integer label (1 = roadwork, 0 = none).
    pub parquet_label_column: String,
    /// Rows read from a Parquet file at a time (bounds memory).
    pub parquet_batch_rows: usize,
    /// Images larger than this many pixels are quarantined (decompression bombs).
    pub max_pixels: u64,
    /// Files larger than this many bytes are quarantined.
    pub max_file_bytes: u64,
    /// Perceptual hashes within this Hamming distance form one near-duplicate group.
    pub near_dup_radius: u32,
    /// Worker threads for decoding and hashing (0 = all cores).
    pub threads: usize,
    /// Column whose value names a group that must stay whole in one split (e.g. a video id in a
    /// Parquet source, or `group` in a CSV), joined to the pHash groups. `None`: Parquet sources
    /// have none and CSVs use a `group` column when they have one.
    pub group_column: Option<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            positive_dir: "roadwork".into(),
            negative_dir: "none".into(),
            parquet_image_column: "image".into(),
            parquet_label_column: "label".into(),
            parquet_batch_rows: 256,
            max_pixels: 40_000_000,
            max_file_bytes: 64 * 1024 * 1024,
            near_dup_radius: 6,
            threads: 0,
            group_column: None,
        }
    }
}

/// Deterministic train/val/test fractions; they must sum to 1.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    pub train: f64,
    pub val: f64,
    pub test: f64,
    /// Mixed into the group hash; changing it reshuffles every split.
    pub salt: String,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            train: 0.8,
            val: 0.1,
            test: 0.1,
            salt: "sv72".into(),
        }
    }
}

/// `sv72 synth-mix` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MixConfig {
    /// Target share of synthetic images within each label of the training split.
    pub synthetic_fraction: f64,
    /// Class balancing: `equal` (same count per label) or `none` (keep natural counts).
    pub balance: Balance,
    /// Seed for sampling.
    pub seed: u64,
    /// Augmented variants materialised on disk per training image (0 = none).
    pub materialize_variants: usize,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self {
            synthetic_fraction: 0.5,
            balance: Balance::Equal,
            seed: 72,
            materialize_variants: 0,
        }
    }
}

/// Augmentation settings shared by synth-mix, training and evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    pub seed: u64,
    /// Probability of validator levels 0..=3 (the subnet uses 0.25 each).
    pub level_probs: [f64; 4],
    /// The subnet's flip transforms never fire (their params are pre-set to `{}`); `false`
    /// reproduces that faithfully, `true` flips with p = 0.5 as the transform names suggest.
    pub validator_flips: bool,
    /// Probability that a training view also gets one dash-cam weather/capture op.
    pub weather_prob: f64,
    /// Output side of validator challenges.
    pub target_size: u32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            seed: 72,
            level_probs: [0.25; 4],
            validator_flips: false,
            weather_prob: 0.3,
            target_size: 224,
        }
    }
}

/// The frozen feature extractor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    /// A snapshot folder or a Hugging Face model name found in the HF cache.
    pub model: String,
    /// Hub revision used by `fetch-backbone` and cache lookups.
    pub revision: String,
    /// `cpu` or `cuda`.
    pub device: Device,
    /// `f32`, `f16` or `bf16` (f16 only on CUDA; bf16 on CUDA or a CPU with AMX-BF16 / AVX512-BF16).
    pub dtype: Dtype,
    pub batch_size: usize,
    /// `validator` = the fixed 224x224 path validators send; `processor` = the checkpoint's
    /// own `preprocessor_config.json`.
    pub preprocess: PreprocessKind,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self {
            model: "facebook/dinov2-with-registers-small".into(),
            revision: "main".into(),
            device: Device::Cpu,
            dtype: Dtype::F32,
            batch_size: 8,
            preprocess: PreprocessKind::Validator,
        }
    }
}

/// Classification head on frozen features.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// `linear` on [CLS ; mean patch] or `mlp`.
    pub kind: HeadType,
    pub hidden: usize,
    pub dropout: f64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            kind: HeadType::Linear,
            hidden: 256,
            dropout: 0.1,
        }
    }
}

/// `sv72 train-head` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_epochs: usize,
    pub label_smoothing: f64,
    /// Early stopping patience in epochs on validation MCC.
    pub patience: usize,
    pub seed: u64,
    /// Augmented views per training image whose features are also used.
    pub views: usize,
    /// Weights & Biases project; live logging only when this and WANDB_API_KEY are set.
    pub wandb_project: Option<String>,
    pub wandb_entity: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 60,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: 1e-4,
            warmup_epochs: 3,
            label_smoothing: 0.0,
            patience: 10,
            seed: 72,
            views: 2,
            wandb_project: None,
            wandb_entity: None,
        }
    }
}

/// What `sv72 finetune` trains besides the head.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FinetuneMode {
    /// Low-rank adapters on the attention projections (and optionally the MLP).
    Lora,
    /// The last `partial_blocks` blocks and the final norm.
    Partial,
    /// Every backbone weight.
    Full,
}

impl FinetuneMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lora => "lora",
            Self::Partial => "partial",
            Self::Full => "full",
        }
    }
}

/// The validation metric early stopping (and the kept epoch) follows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EarlyStop {
    /// Expected subnet score of the validation challenges.
    Score,
    /// Matthews correlation of the validation challenges.
    Mcc,
}

/// Activation checkpointing of the autodiff graph (burn-autodiff's strategies).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Checkpointing {
    /// Keep every activation the backward pass needs.
    None,
    /// Recompute memory-bound (elementwise) activations in the backward pass instead of storing
    /// them (`BalancedCheckpointing`).
    Balanced,
}

/// LoRA adapter settings of `sv72 finetune`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub rank: usize,
    /// Scaling is `alpha / rank`, as PEFT's.
    pub alpha: f64,
    /// Dropout on the adapters' input (PEFT's `lora_dropout`).
    pub dropout: f64,
    /// Also adapt the MLP projections (fc1/fc2, gate/up/down).
    pub mlp: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            mlp: false,
        }
    }
}

/// `sv72 finetune` settings: the backbone itself trained on augmented images (issue #14).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    pub mode: FinetuneMode,
    pub epochs: usize,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Forward passes whose gradients are summed per optimiser step.
    pub grad_accum: usize,
    /// Optimiser steps per epoch; 0 = one pass over the train split.
    pub steps_per_epoch: usize,
    /// Peak learning rate of the top of the backbone (final norm, last block's adapters).
    pub lr: f64,
    /// Peak learning rate of the head; `null` = `lr`.
    pub head_lr: Option<f64>,
    /// Layer-wise decay: block `i` of `L` learns at `lr · layer_decay^(L - i)`, the embeddings
    /// at `lr · layer_decay^(L + 1)`.
    pub layer_decay: f64,
    /// AdamW decoupled weight decay on matrices (not biases, norms, layer scales, tokens).
    pub weight_decay: f64,
    /// Linear warm-up in optimiser steps, then cosine decay to 0.
    pub warmup_steps: usize,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    pub label_smoothing: f64,
    pub lora: LoraConfig,
    /// `partial`: how many of the last blocks train.
    pub partial_blocks: usize,
    pub early_stop: EarlyStop,
    /// Epochs without a better validation metric before stopping (0 = never stop early).
    pub patience: usize,
    pub seed: u64,
    pub checkpointing: Checkpointing,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            mode: FinetuneMode::Lora,
            epochs: 10,
            batch_size: 32,
            grad_accum: 1,
            steps_per_epoch: 0,
            lr: 1e-3,
            head_lr: None,
            layer_decay: 0.75,
            weight_decay: 0.05,
            warmup_steps: 20,
            max_grad_norm: 1.0,
            label_smoothing: 0.0,
            lora: LoraConfig::default(),
            partial_blocks: 2,
            early_stop: EarlyStop::Score,
            patience: 3,
            seed: 72,
            checkpointing: Checkpointing::None,
        }
    }
}

impl FinetuneConfig {
    /// Cross-field checks, with the key in each message.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            bail!("finetune.epochs, finetune.batch_size and finetune.grad_accum must be > 0");
        }
        for (k, v) in [
            ("finetune.lr", Some(self.lr)),
            ("finetune.head_lr", self.head_lr),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    bail!("{k} = {v} must be > 0");
                }
            }
        }
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            bail!(
                "finetune.layer_decay = {} must be within (0, 1]",
                self.layer_decay
            );
        }
        if !(self.weight_decay >= 0.0 && self.max_grad_norm >= 0.0) {
            bail!("finetune.weight_decay and finetune.max_grad_norm must be >= 0");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!(
                "finetune.label_smoothing = {} must be within [0, 1)",
                self.label_smoothing
            );
        }
        if self.mode == FinetuneMode::Lora && self.lora.rank == 0 {
            bail!("finetune.lora.rank must be > 0");
        }
        if !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
            bail!("finetune.lora.alpha = {} must be > 0", self.lora.alpha);
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            bail!(
                "finetune.lora.dropout = {} must be within [0, 1)",
                self.lora.dropout
            );
        }
        if self.mode == FinetuneMode::Partial && self.partial_blocks == 0 {
            bail!("finetune.partial_blocks must be > 0 for finetune.mode = partial");
        }
        Ok(())
    }
}

/// `sv72 eval` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub seed: u64,
    /// Augmented draws per image per validator level.
    pub draws_per_image: usize,
    /// Simulated challenge sequences for the expected subnet score.
    pub score_sequences: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            seed: 72,
            draws_per_image: 1,
            score_sequences: 1000,
        }
    }
}

/// `sv72 serve` settings. Every limit of the axon lives here (see the README's serve section).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// Bittensor wallet name and hotkey under `~/.bittensor/wallets`.
    pub wallet_name: String,
    pub wallet_hotkey: String,
    /// Metagraph snapshot (hotkey, uid, stake, validator_permit).
    pub metagraph: PathBuf,
    /// How often the metagraph file is checked for changes.
    pub metagraph_poll_ms: u64,
    pub min_stake: f64,
    /// Deployed export that serve loads and watches for hot swaps.
    pub model: PathBuf,
    /// Answer for an image that cannot be decoded or scored in time.
    pub fallback_prediction: f64,
    /// Send the image back in the response body as the Python axon does (doubles traffic).
    pub echo_image: bool,
    /// Images per predictor call at most.
    pub max_batch: usize,
    /// Wait for a fuller batch at most this long.
    pub max_wait_ms: u64,
    /// Images waiting for inference at most; beyond it the lowest stake is shed (503).
    pub queue_capacity: usize,
    /// Every accepted query is answered within this time from its head (the fallback if
    /// decoding or inference is not done); further shortened by a smaller `timeout` header.
    pub answer_deadline_ms: u64,
    /// Open connections at most; at the cap the oldest idle or never-verified one is closed to
    /// make room.
    pub max_connections: usize,
    /// Open connections per source address (IPv4, or IPv6 /64) at most; more are refused.
    pub max_connections_per_ip: usize,
    /// A request head must arrive whole within this time of its first byte (of the connection
    /// for its first request).
    pub header_timeout_ms: u64,
    /// Keep-alive connections with no request in progress are closed after this (keep it above
    /// aiohttp's 15 s pool idle time, or the validator's reuse can race the close).
    pub idle_timeout_ms: u64,
    /// Time allowed to receive the body once the checks passed.
    pub body_timeout_ms: u64,
    /// Size cap of the request head.
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    /// In-flight requests get this long to finish at shutdown.
    pub shutdown_grace_ms: u64,
    /// Images with more pixels (read from the header, before any pixel is decoded) get the
    /// fallback.
    pub max_image_pixels: u64,
    /// Images above this many pixels take the large-image lane.
    pub large_image_pixels: u64,
    /// Large images being decoded or waiting for inference at most (bounds memory).
    pub max_large_images: usize,
    /// Small images being decoded or waiting for inference at most.
    pub max_small_images: usize,
    /// `hotkey:uuid` nonce keys remembered at most.
    pub max_nonce_keys: usize,
    /// JSON-lines prediction log; low-confidence images go to `low_confidence/` beside it.
    pub prediction_log: PathBuf,
    /// Disk cap of the low-confidence image folder, in MiB.
    pub low_confidence_cap_mb: u64,
    /// Log lines per rejection reason per second at most; the rest are counted in the next.
    pub rejection_log_per_s: u32,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8091,
            wallet_name: "default".into(),
            wallet_hotkey: "default".into(),
            metagraph: "metagraph.json".into(),
            metagraph_poll_ms: 5000,
            min_stake: 1000.0,
            model: "exports/deployed".into(),
            fallback_prediction: 0.5,
            echo_image: false,
            max_batch: 16,
            max_wait_ms: 5,
            queue_capacity: 256,
            answer_deadline_ms: 7500,
            max_connections: 1024,
            max_connections_per_ip: 64,
            header_timeout_ms: 5000,
            idle_timeout_ms: 20_000,
            body_timeout_ms: 5000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace_ms: 10_000,
            max_image_pixels: 16 * 1024 * 1024,
            large_image_pixels: 1024 * 1024,
            max_large_images: 2,
            max_small_images: 64,
            max_nonce_keys: 100_000,
            prediction_log: "logs/predictions.jsonl".into(),
            low_confidence_cap_mb: 512,
            rejection_log_per_s: 5,
        }
    }
}

/// `sv72 ab-test`: paired comparison and the promotion rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AbTestConfig {
    /// Augmentation seed of the paired draws (both models see the very same images).
    pub seed: u64,
    /// Augmented draws per image per validator level 0–3.
    pub draws_per_image: usize,
    /// Paired bootstrap resamples for the 95% intervals.
    pub bootstrap: usize,
    /// Metric the rule is applied to: `mcc`, `accuracy` or `score` (expected subnet score).
    pub metric: String,
    /// Promote B only when Δmetric ≥ min_gain …
    pub min_gain: f64,
    /// … and the lower bound of Δmetric's 95% interval is above 0.
    pub require_ci_above_zero: bool,
    /// Also require McNemar's exact p-value below this (`null` = not required).
    pub max_mcnemar_p: Option<f64>,
    /// Simulated 100-challenge sequences per bootstrap resample for the Δscore interval
    /// (0 = no Δscore interval); the point estimate uses `eval.score_sequences`.
    pub bootstrap_score_sequences: usize,
    /// Default root of the output folders, `<out_dir>/<UTC time>-<A>-vs-<B>/`.
    pub out_dir: PathBuf,
}

impl Default for AbTestConfig {
    fn default() -> Self {
        Self {
            seed: 7272,
            draws_per_image: 1,
            bootstrap: 2000,
            metric: "mcc".into(),
            min_gain: 0.0,
            require_ci_above_zero: true,
            max_mcnemar_p: None,
            bootstrap_score_sequences: 100,
            out_dir: "abtests".into(),
        }
    }
}

/// `sv72 export`: the Hugging Face folder and model card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `model_name` in model_card.json and the export folder prefix.
    pub model_name: String,
    /// `description` in model_card.json.
    pub description: String,
    /// Licence named in the README model card (the backbone's own licence also applies).
    pub license: String,
    /// Hugging Face endpoint for `--push` (a local stand-in in tests).
    pub hf_endpoint: String,
    /// Create the Hub repository private when it does not exist.
    pub private: bool,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            model_name: "sv72-roadwork".into(),
            description: "Roadwork classifier: frozen DINOv2/DINOv3 backbone with a calibrated \
                          linear head, trained with sv72"
                .into(),
            license: "apache-2.0".into(),
            hf_endpoint: "https://huggingface.co".into(),
            private: false,
        }
    }
}

/// `sv72 register`: NATIX participant registration (the subnet's `register.sh`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterConfig {
    /// Base URL of the NATIX registration service.
    pub endpoint: String,
    /// The miner's UID on subnet 72 (`--uid` overrides).
    pub uid: Option<u16>,
    /// Hugging Face repository of the submission, `org/name` (`--model-repo` overrides).
    pub model_repo: Option<String>,
    /// Seconds between registration-status polls (at least 1).
    pub poll_interval_s: u64,
    /// Give up polling after this many seconds (exit 4).
    pub timeout_s: u64,
    /// Environment variable holding the password of an encrypted hotkey file.
    pub password_env: String,
}

impl Default for RegisterConfig {
    fn default() -> Self {
        Self {
            endpoint: "https://hydra.natix.network".into(),
            uid: None,
            model_repo: None,
            poll_interval_s: 3,
            timeout_s: 180,
            password_env: "SV72_HOTKEY_PASSWORD".into(),
        }
    }
}

/// The 60-day retraining cycle (`sv72 retrain-check`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CycleConfig {
    /// The deployed export's `model_card.json`.
    pub model_card: PathBuf,
    /// Days a submission keeps reward factor 1.
    pub valid_days: u32,
    /// Days over which the factor then falls linearly to 0 (0 = straight to 0).
    pub decay_days: u32,
    pub alert_days: Vec<u32>,
    pub retrain_day: u32,
    /// Answers in this band count as uncertain.
    pub uncertain_band: [f64; 2],
    /// Alert when the share of uncertain answers exceeds this.
    pub max_uncertain_share: f64,
    /// Alert when the prediction distribution's PSI against the last eval exceeds this.
    pub max_psi: f64,
    /// Alert when the serve log holds more new hard cases than this.
    pub max_hard_cases: usize,
    /// Uncertain share and PSI raise alerts only with at least this many answers in the window
    /// (a handful of answers says nothing about drift).
    pub min_answers: usize,
    /// Serve-log window read by the check, in days.
    pub window_days: u32,
    /// Lock file that keeps two `--run`s from overlapping.
    pub lock_file: PathBuf,
    /// `--run`: sv72 argument lists run in order, stopping at the first failure.
    pub pipeline: Vec<Vec<String>>,
}

impl Default for CycleConfig {
    fn default() -> Self {
        Self {
            model_card: "exports/deployed/model_card.json".into(),
            valid_days: 90,
            decay_days: 0,
            alert_days: vec![45, 60, 75, 90],
            retrain_day: 60,
            uncertain_band: [0.4, 0.6],
            max_uncertain_share: 0.2,
            max_psi: 0.2,
            max_hard_cases: 500,
            min_answers: 100,
            window_days: 7,
            lock_file: "checkpoints/.retrain.lock".into(),
            pipeline: Vec::new(),
        }
    }
}

/// `sv72 mine-hard`: hard-case selection for labelling and generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MineHardConfig {
    /// Answers in this band are hard by uncertainty.
    pub band: [f64; 2],
    /// Two models disagree when their answers fall on opposite sides of 0.5 by at least this.
    pub min_disagreement: f64,
    /// Cases kept after k-centre greedy selection on embeddings.
    pub max_cases: usize,
    /// Seed of the generator prompts (scene variety is deterministic given it).
    pub seed: u64,
    /// Distance of the k-centre greedy selection on `[CLS ; patch mean]`: `cosine` or `l2`.
    pub distance: Distance,
    /// Most tiles in the contact sheet (the hardest-first selection order is kept).
    pub contact_sheet_max: usize,
}

impl Default for MineHardConfig {
    fn default() -> Self {
        Self {
            band: [0.3, 0.7],
            min_disagreement: 0.2,
            max_cases: 500,
            seed: 72,
            distance: Distance::Cosine,
            contact_sheet_max: 64,
        }
    }
}

/// The vision-language judge asked about uncertain answers (`crate::judge`); off while
/// `endpoint` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:8000/v1` (`/chat/completions` is
    /// appended). Empty = no judge.
    pub endpoint: String,
    /// The `model` field of the request (e.g. `Qwen/Qwen2.5-VL-7B-Instruct`).
    pub model: String,
    /// Name of the environment variable holding the API key (the key itself never goes in a
    /// config file, log or error). Empty = no key.
    pub api_key_env: String,
    /// The question sent with the image; it must be answerable with yes or no.
    pub prompt: String,
    /// Base answers in `[lo, hi]` are judged.
    pub band: [f64; 2],
    /// Weight of the judge in the blend `(1 - w) * base + w * judge`.
    pub weight: f64,
    /// Probability a bare "yes" stands for (when no log-probabilities come back).
    pub answer_confidence: f64,
    /// Ask for the yes/no token log-probabilities (`logprobs`, `top_logprobs`).
    pub logprobs: bool,
    /// Judge calls in flight at most; beyond it the base answer goes out unjudged.
    pub max_concurrency: usize,
    /// Longest a judge call may take, whatever the request's deadline.
    pub timeout_ms: u64,
    /// Time kept back from the request's deadline for sending the answer.
    pub reserve_ms: u64,
    /// Consecutive failures that open the circuit breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    /// Judge opinions remembered by image hash.
    pub cache_entries: usize,
    /// JSON-lines log of every judged answer (both opinions). Empty = no log.
    pub log: PathBuf,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            model: String::new(),
            api_key_env: String::new(),
            prompt: "Is there road construction or roadwork in this image? Answer yes or no."
                .into(),
            band: [0.3, 0.7],
            weight: 0.5,
            answer_confidence: 0.9,
            logprobs: true,
            max_concurrency: 4,
            timeout_ms: 4000,
            reserve_ms: 500,
            breaker_failures: 3,
            breaker_cooldown_ms: 30_000,
            cache_entries: 4096,
            log: "logs/judge.jsonl".into(),
        }
    }
}

/// Which image-generation server `sv72 generate` talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GenBackend {
    /// The OpenAI-compatible images API (`/v1/images/generations`, `/v1/images/edits`).
    Openai,
    /// Automatic1111 / Forge (`/sdapi/v1/txt2img`, `/sdapi/v1/img2img`).
    A1111,
    /// ComfyUI (`/prompt`, `/history`, `/view`, `/upload/image`) with a workflow template.
    Comfyui,
}

impl GenBackend {
    /// Where the server usually listens.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            GenBackend::Openai => "https://api.openai.com",
            GenBackend::A1111 => "http://127.0.0.1:7860",
            GenBackend::Comfyui => "http://127.0.0.1:8188",
        }
    }

    /// The environment variable holding the credential when `generate.api_key_env` is unset.
    pub fn default_key_env(self) -> &'static str {
        match self {
            GenBackend::Openai => "OPENAI_API_KEY",
            GenBackend::A1111 => "SV72_A1111_AUTH",
            GenBackend::Comfyui => "SV72_COMFYUI_API_KEY",
        }
    }
}

/// Text-to-image, image-to-image, or whichever each prompt allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GenMode {
    /// Image-to-image for prompts with a source image whose label is known, else text-to-image.
    Auto,
    T2i,
    I2i,
}

/// How the OpenAI images API returns images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageResponseFormat {
    B64Json,
    Url,
}

/// `generate.openai`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiGenConfig {
    /// `size` sent (e.g. `1024x1024`); `None` = `<width>x<height>`.
    pub size: Option<String>,
    /// `quality` sent (`low|medium|high|auto` for gpt-image-1, `hd` for dall-e-3); `None` = omit.
    pub quality: Option<String>,
    /// `response_format` sent; `None` = omit it (gpt-image-1 rejects it and always answers b64).
    pub response_format: Option<ImageResponseFormat>,
    /// The API has no negative prompt: append it to the prompt as "Avoid: …".
    pub negative_in_prompt: bool,
}

impl Default for OpenAiGenConfig {
    fn default() -> Self {
        Self {
            size: None,
            quality: None,
            response_format: None,
            negative_in_prompt: true,
        }
    }
}

/// `generate.comfyui`: the workflow templates (ComfyUI "Save (API Format)" JSON) and which node
/// inputs sv72 fills, each written `NODE_ID.INPUT`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComfyUiGenConfig {
    /// Text-to-image workflow.
    pub workflow: Option<PathBuf>,
    /// Image-to-image workflow (a LoadImage node feeding VAEEncode).
    pub workflow_i2i: Option<PathBuf>,
    pub prompt_input: String,
    /// `None`: the workflow's negative prompt is left as it is.
    pub negative_input: Option<String>,
    pub seed_input: String,
    /// The LoadImage node's `image` (i2i).
    pub image_input: String,
    /// The sampler's `denoise` (i2i).
    pub strength_input: String,
    /// Interval between `/history` polls, in milliseconds.
    pub poll_ms: u64,
}

impl Default for ComfyUiGenConfig {
    fn default() -> Self {
        Self {
            workflow: Some("configs/comfyui/sdxl-t2i.json".into()),
            workflow_i2i: Some("configs/comfyui/sdxl-i2i.json".into()),
            prompt_input: "6.text".into(),
            negative_input: Some("7.text".into()),
            seed_input: "3.seed".into(),
            image_input: "10.image".into(),
            strength_input: "3.denoise".into(),
            poll_ms: 1000,
        }
    }
}

/// `sv72 generate`: synthetic images from an image-generation server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateConfig {
    pub backend: GenBackend,
    /// Base URL of the server; `None` = the backend's usual address.
    pub endpoint: Option<String>,
    /// Model or checkpoint name sent to the server and written into `generator`; `None` = the
    /// server's current model (A1111 and ComfyUI report it; OpenAI needs one).
    pub model: Option<String>,
    pub mode: GenMode,
    /// Images per prompt (each with its own seed).
    pub images_per_prompt: u32,
    /// Images asked for in one request (OpenAI `n`, A1111 `batch_size`; ComfyUI always 1).
    pub batch: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub cfg_scale: f64,
    /// A1111 sampler name; `None` = the server's default.
    pub sampler: Option<String>,
    /// Image-to-image denoising strength for prompts that give none.
    pub strength: f64,
    /// Seeds of prompts that give none derive from this.
    pub seed: u64,
    /// Limit of one request, in seconds (ComfyUI: of one queued job, waiting included).
    pub timeout_s: u64,
    /// Attempts of a call that failed transiently (429, 503, connection refused; 500 and
    /// timeouts only for calls that are safe to repeat).
    pub attempts: u32,
    /// First wait between attempts (doubled each time, up to `max_backoff_ms`).
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Environment variable holding the API key (OpenAI, ComfyUI: bearer token; A1111:
    /// `user:password` of `--api-auth`); `None` = OPENAI_API_KEY, SV72_A1111_AUTH or
    /// SV72_COMFYUI_API_KEY by backend. The key is never printed.
    pub api_key_env: Option<String>,
    pub openai: OpenAiGenConfig,
    pub comfyui: ComfyUiGenConfig,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            backend: GenBackend::A1111,
            endpoint: None,
            model: None,
            mode: GenMode::Auto,
            images_per_prompt: 1,
            batch: 1,
            concurrency: 2,
            width: 1024,
            height: 1024,
            steps: 30,
            cfg_scale: 7.0,
            sampler: None,
            strength: 0.5,
            seed: 72,
            timeout_s: 300,
            attempts: 5,
            backoff_ms: 1000,
            max_backoff_ms: 30_000,
            api_key_env: None,
            openai: OpenAiGenConfig::default(),
            comfyui: ComfyUiGenConfig::default(),
        }
    }
}

/// `sv72 econ`: what mining earns and costs. Chain figures are read live; these are the
/// miner's own prices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EconConfig {
    /// Subtensor node (URL or network name), as for `metagraph sync`.
    pub endpoint: String,
    pub netuid: u16,
    /// TAO in USD (not on chain). `null`: read `price_url`, or pass `--tao-usd`.
    pub tao_usd: Option<f64>,
    /// JSON endpoint giving TAO/USD, e.g. CoinGecko's simple price API (`null` = none).
    pub price_url: Option<String>,
    /// JSON pointer (RFC 6901) to the number in the `price_url` answer.
    pub price_pointer: String,
    /// Length of one retraining cycle: per-cycle costs are spread over it.
    pub cycle_days: f64,
    /// Serving box (the axon), running around the clock.
    pub serving_usd_per_hour: f64,
    /// Training (embed, train-head, finetune, eval) per cycle …
    pub training_hours_per_cycle: f64,
    /// … on a box at this price.
    pub training_usd_per_hour: f64,
    /// Synthetic images generated per cycle …
    pub images_per_cycle: f64,
    /// … at this price each.
    pub generation_usd_per_image: f64,
    /// Storage (datasets, features, checkpoints, HF).
    pub storage_usd_per_month: f64,
    /// The registration burn is spread over this many days of mining.
    pub registration_days: f64,
    /// Default output folder of report.md, report.json and the plot.
    pub out_dir: PathBuf,
}

impl Default for EconConfig {
    fn default() -> Self {
        Self {
            endpoint: "finney".into(),
            netuid: 72,
            tao_usd: None,
            price_url: None,
            price_pointer: "/bittensor/usd".into(),
            cycle_days: 60.0,
            serving_usd_per_hour: 0.25,
            training_hours_per_cycle: 8.0,
            training_usd_per_hour: 2.0,
            images_per_cycle: 5000.0,
            generation_usd_per_image: 0.002,
            storage_usd_per_month: 5.0,
            registration_days: 60.0,
            out_dir: "econ".into(),
        }
    }
}

impl Config {
    /// Loads `path` (or the embedded default when `None`) and applies `key.path=value` overrides.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (
                DEFAULT_YAML.to_string(),
                "the embedded default config".to_string(),
            ),
        };
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(&text).with_context(|| format!("{origin} is not valid YAML"))?;
        if value.is_null() {
            value = serde_yaml::Value::Mapping(Default::default());
        }
        for ov in overrides {
            apply_override(&mut value, ov)?;
        }
        let cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let at = if key == "." {
                String::new()
            } else {
                format!("{key}: ")
            };
            anyhow::anyhow!(
                "{origin}: {at}{}. Fix or remove that key (see configs/default.yaml)",
                e.inner()
            )
        })?;
        cfg.validate()
            .with_context(|| format!("invalid settings in {origin}"))?;
        Ok(cfg)
    }

    /// Checks cross-field constraints that serde cannot express.
    pub fn validate(&self) -> Result<()> {
        let s = &self.split;
        for (k, v) in [
            ("split.train", s.train),
            ("split.val", s.val),
            ("split.test", s.test),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{k} = {v} must be within [0, 1]");
            }
        }
        if ((s.train + s.val + s.test) - 1.0).abs() > 1e-6 {
            bail!(
                "split.train + split.val + split.test = {} must sum to 1",
                s.train + s.val + s.test
            );
        }
        if !(0.0..=1.0).contains(&self.mix.synthetic_fraction) {
            bail!(
                "mix.synthetic_fraction = {} must be within [0, 1]",
                self.mix.synthetic_fraction
            );
        }
        let e = &self.econ;
        for (k, v) in [
            ("econ.cycle_days", e.cycle_days),
            ("econ.registration_days", e.registration_days),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{k} = {v} must be a positive number of days");
            }
        }
        for (k, v) in [
            ("econ.serving_usd_per_hour", e.serving_usd_per_hour),
            ("econ.training_hours_per_cycle", e.training_hours_per_cycle),
            ("econ.training_usd_per_hour", e.training_usd_per_hour),
            ("econ.images_per_cycle", e.images_per_cycle),
            ("econ.generation_usd_per_image", e.generation_usd_per_image),
            ("econ.storage_usd_per_month", e.storage_usd_per_month),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{k} = {v} must be a number >= 0");
            }
        }
        if let Some(p) = e.tao_usd {
            if !(p.is_finite() && p > 0.0) {
                bail!("econ.tao_usd = {p} must be a positive price in USD (or null)");
            }
        }
        let p: f64 = self.augment.level_probs.iter().sum();
        if (p - 1.0).abs() > 1e-6 || self.augment.level_probs.iter().any(|x| *x < 0.0) {
            bail!("augment.level_probs must be non-negative and sum to 1 (got {p})");
        }
        let g = &self.generate;
        if !(0.0..=1.0).contains(&g.strength) {
            bail!("generate.strength = {} must be within [0, 1]", g.strength);
        }
        for (k, v) in [
            ("generate.images_per_prompt", g.images_per_prompt as usize),
            ("generate.batch", g.batch as usize),
            ("generate.concurrency", g.concurrency),
            ("generate.attempts", g.attempts as usize),
        ] {
            if v == 0 {
                bail!("{k} must be at least 1");
            }
        }
        self.finetune.validate()?;
        Ok(())
    }
}

/// Sets `a.b.c=value` in a YAML tree; the value is parsed as YAML so numbers stay numbers.
fn apply_override(root: &mut serde_yaml::Value, ov: &str) -> Result<()> {
    let (key, raw) = ov.split_once('=').with_context(|| {
        format!("--set {ov:?}: expected KEY=VALUE, e.g. mix.synthetic_fraction=0.4")
    })?;
    let value: serde_yaml::Value = serde_yaml::from_str(raw)
        .with_context(|| format!("--set {key}: value {raw:?} is not valid YAML"))?;
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let map = node
            .as_mapping_mut()
            .with_context(|| format!("--set {key}: {} is not a section", parts[..i].join(".")))?;
        let k = serde_yaml::Value::String(part.to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map
            .entry(k)
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    }
    bail!("--set {ov:?}: empty key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_struct_default() {
        let cfg = Config::load(None, &[]).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.yaml");
        std::fs::write(&p, "mix:\n  synthetic_fractoin: 0.3\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), &[]).unwrap_err());
        assert!(err.contains("synthetic_fractoin"), "{err}");
        assert!(err.contains("bad.yaml"), "{err}");
    }

    #[test]
    fn overrides_apply_and_validate() {
        let cfg = Config::load(None, &["mix.synthetic_fraction=0.3".into()]).unwrap();
        assert_eq!(cfg.mix.synthetic_fraction, 0.3);
        let err = Config::load(None, &["split.train=0.9".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("sum to 1"));
        let err = Config::load(None, &["mix.nope=1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("nope"));
    }

    #[test]
    fn bad_enum_value_names_key_file_and_choices() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.yaml");
        std::fs::write(&p, "backbone:\n  device: gpu\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), &[]).unwrap_err());
        assert!(
            err.contains("backbone.device") && err.contains("gpu") && err.contains("bad.yaml"),
            "{err}"
        );
        assert!(err.contains("cpu") && err.contains("cuda"), "{err}");
        for (ov, key) in [
            ("backbone.dtype=f8", "backbone.dtype"),
            ("backbone.preprocess=crop", "backbone.preprocess"),
            ("head.kind=tree", "head.kind"),
            ("mix.balance=half", "mix.balance"),
            ("mine_hard.distance=manhattan", "mine_hard.distance"),
            ("generate.backend=midjourney", "generate.backend"),
            ("generate.mode=both", "generate.mode"),
            (
                "generate.openai.response_format=png",
                "generate.openai.response_format",
            ),
        ] {
            let err = format!("{:#}", Config::load(None, &[ov.into()]).unwrap_err());
            assert!(err.contains(key), "{ov}: {err}");
        }
        let cfg = Config::load(None, &["mine_hard.distance=euclidean".into()]).unwrap();
        assert_eq!(cfg.mine_hard.distance, Distance::L2);
        assert_eq!(Device::Cuda.to_string(), "cuda");
    }
}
