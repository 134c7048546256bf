//! `sv72 finetune`: the backbone itself trained with a head, on fresh augmented images
//! (issue #14). `train-head` stays the fast path on frozen, cached features.
//!
//! - [`model`]: backbone + head and the plan of what trains (LoRA adapters on the attention
//!   projections and optionally the MLP, the last N blocks + final norm, or everything).
//! - [`optim`]: AdamW as PyTorch computes it, with layer-wise learning rates, decay groups and
//!   global-norm clipping; warm-up + cosine schedule; gradient accumulation.
//! - [`data`]: augmented training views drawn every step, seeded per view; fixed validation
//!   challenges.
//!
//! A run writes `checkpoints/<run-id>/` like `train-head` (head + calibration in
//! `head.safetensors`, `run.yaml`, metrics.jsonl, TensorBoard events) plus
//! [`FINETUNE_FILE`](super::checkpoint::FINETUNE_FILE), the trained backbone tensors over the
//! base snapshot named in `run.yaml`. After every epoch it atomically rewrites
//! `<run>/state/` (trained values, optimiser moments, best epoch so far) so `--resume`
//! continues exactly where it stopped; the folder is removed when the run finishes.

pub mod data;
pub mod model;
pub mod optim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{activation, ElementConversion, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use self::data::{TrainImages, ValSet};
use self::model::{FtModel, Plan};
use self::optim::AdamW;
use super::checkpoint::{
    self, BackboneInfo, FinalMetrics, FinetuneInfo, HeadInfo, LoraInfo, ManifestInfo, RunInfo,
    FINETUNE_FILE,
};
use super::head::HeadKind;
use super::tracking::{Tracker, WandbSettings, WarnSink};
use super::trainer::{calibrate, lr_at, FeatureSet, TrainSettings};
use super::RunOutcome;
use crate::config::{Checkpointing, Config, EarlyStop, FinetuneMode};
use crate::data::manifest::{manifest_path, read_manifest, Split};
use crate::metrics::{self, BinaryMetrics, ScoreItem};
use crate::model::preprocess::Preprocess;
use crate::model::weights::Weights;
use crate::model::{hub, NamedTensors};
use crate::util::fsx;

/// Folder of the resume state inside a run.
pub const STATE_DIR: &str = "state";
const STATE_FILE: &str = "state.json";

/// A per-epoch callback; returning an error aborts the run (its state stays resumable).
pub type FtEpochHook = Box<dyn FnMut(&FtEpoch) -> Result<()>>;

/// What to fine-tune and how to report.
pub struct FinetuneRequest {
    /// The training mix (dataset name, folder or `.parquet`).
    pub manifest: String,
    /// A run folder to continue (its `state/`), instead of starting a new run.
    pub resume: Option<PathBuf>,
    /// CPU or CUDA (on CUDA `backbone.dtype` sets the precision).
    pub device: crate::config::Device,
    pub wandb: Option<WandbSettings>,
    pub warn: WarnSink,
    pub on_epoch: Option<FtEpochHook>,
}

/// One epoch of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FtEpoch {
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_mcc: f64,
    pub val_auc: f64,
    /// Expected subnet score of the validation challenges (uncalibrated answers).
    pub val_score: f64,
    pub images_per_second: f64,
    /// Of the epoch's training time: making the augmented views, and forward + backward + step.
    pub data_seconds: f64,
    pub step_seconds: f64,
    pub seconds: f64,
}

impl FtEpoch {
    /// `(name, value)` pairs for the trackers.
    pub fn scalars(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("epoch", self.epoch as f64),
            ("val/loss", self.val_loss),
            ("val/accuracy", self.val_accuracy),
            ("val/mcc", self.val_mcc),
            ("val/auc", self.val_auc),
            ("val/expected_score", self.val_score),
            ("train/epoch_loss", self.train_loss),
            ("train/images_per_s", self.images_per_second),
            ("train/data_seconds", self.data_seconds),
            ("train/step_seconds", self.step_seconds),
            ("epoch_seconds", self.seconds),
        ]
    }

    fn metric(&self, which: EarlyStop) -> f64 {
        match which {
            EarlyStop::Score => self.val_score,
            EarlyStop::Mcc => self.val_mcc,
        }
    }
}

/// Loss and gradient norm of one optimiser step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// The model, its plan and optimiser: one optimiser step at a time on given pixels.
pub struct Trainer<B: AutodiffBackend> {
    pub model: FtModel<B>,
    pub plan: Plan,
    pub opt: AdamW<B::InnerBackend>,
    /// Class weights `[none, roadwork]` of the loss.
    pub class_weights: [f32; 2],
    pub label_smoothing: f64,
    pub max_grad_norm: f64,
    /// MLP head dropout.
    pub head_dropout: f64,
    pub device: B::Device,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// One optimiser step over micro-batches `(pixel_values, labels)` at learning rate `lr`:
    /// class-weighted (label-smoothed) cross-entropy normalised over the whole step, gradients
    /// summed over the micro-batches, clipped by their global norm, then AdamW. `seed` fixes the
    /// step's dropout masks.
    pub fn step(
        &mut self,
        micro: Vec<(Tensor<B, 4>, Vec<u8>)>,
        lr: f64,
        seed: u64,
    ) -> Result<StepStats> {
        let w_total: f32 = micro
            .iter()
            .flat_map(|(_, y)| y.iter().map(|&y| self.class_weights[usize::from(y)]))
            .sum();
        if w_total <= 0.0 {
            bail!("empty optimiser step");
        }
        let eps = self.label_smoothing as f32;
        let mut acc = GradientsAccumulator::<FtModel<B>>::new();
        let mut loss_sum = 0.0;
        for (j, (x, y)) in micro.into_iter().enumerate() {
            let m = y.len();
            let micro_seed = crate::util::hash::stable_u64(&format!("{seed}|micro|{j}"));
            B::seed(&self.device, micro_seed);
            let mut targets = Vec::with_capacity(m * 2);
            let mut weights = Vec::with_capacity(m);
            for &label in &y {
                let label = usize::from(label);
                for c in 0..2 {
                    let hot = if c == label { 1.0 } else { 0.0 };
                    targets.push(hot * (1.0 - eps) + eps / 2.0);
                }
                weights.push(self.class_weights[label]);
            }
            let targets = Tensor::<B, 2>::from_data(TensorData::new(targets, [m, 2]), &self.device);
            let weights = Tensor::<B, 2>::from_data(TensorData::new(weights, [m, 1]), &self.device);
            let mask = self.head_mask(m, micro_seed);
            let logits = self.model.logits(x, mask)?;
            let logp = activation::log_softmax(logits, 1);
            let loss = ((logp * targets).sum_dim(1).neg() * weights)
                .sum()
                .div_scalar(w_total);
            loss_sum += loss.clone().into_scalar().elem::<f64>();
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            acc.accumulate(&self.model, grads);
        }
        let grads = acc.grads();
        let norm = AdamW::<B::InnerBackend>::grad_norm(&self.model, &grads, &self.plan.groups);
        // torch.nn.utils.clip_grad_norm_: coef = max / (norm + 1e-6), clamped to 1.
        let scale = if self.max_grad_norm > 0.0 {
            (self.max_grad_norm / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        // Cloning a module shares its tensors; the old handles drop with the assignment.
        let model = self.model.clone();
        self.model = self.opt.step(model, grads, lr, &self.plan.groups, scale);
        if !loss_sum.is_finite() {
            bail!("the training loss is not finite ({loss_sum}); lower finetune.lr");
        }
        Ok(StepStats {
            loss: loss_sum,
            grad_norm: norm,
        })
    }

    /// The MLP head's dropout mask for `m` rows, or `None`.
    fn head_mask(&self, m: usize, seed: u64) -> Option<Tensor<B, 2>> {
        let HeadKind::Mlp { hidden } = self.model.head.kind() else {
            return None;
        };
        if self.head_dropout <= 0.0 {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4ead);
        Some(super::trainer::dropout_mask::<B>(
            &mut rng,
            [m, hidden],
            1.0 - self.head_dropout,
            &self.device,
        ))
    }
}

/// Runs `sv72 finetune` on the device the request names.
pub fn run(cfg: &Config, req: FinetuneRequest) -> Result<RunOutcome> {
    match req.device {
        crate::config::Device::Cpu => {
            if cfg.backbone.dtype != crate::config::Dtype::F32 {
                // bf16 on the CPU is an inference path (frozen bf16 weights, no backward).
                eprintln!(
                    "finetune: backbone.dtype {} does not apply to CPU training; training in f32",
                    cfg.backbone.dtype
                );
            }
            let dev = Default::default();
            match cfg.finetune.checkpointing {
                Checkpointing::None => {
                    run_on::<burn::backend::Autodiff<crate::backend::Cpu>>(cfg, req, &dev, "cpu")
                }
                Checkpointing::Balanced => run_on::<
                    burn::backend::Autodiff<
                        crate::backend::Cpu,
                        burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
                    >,
                >(cfg, req, &dev, "cpu"),
            }
        }
        crate::config::Device::Cuda => run_cuda(cfg, req),
    }
}

#[cfg(feature = "cuda")]
fn run_cuda(cfg: &Config, req: FinetuneRequest) -> Result<RunOutcome> {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing as Bal;
    use burn::backend::{Autodiff, Cuda};
    let dev = Default::default();
    let bal = cfg.finetune.checkpointing == Checkpointing::Balanced;
    use crate::config::Dtype;
    match (cfg.backbone.dtype, bal) {
        (Dtype::F16, false) => run_on::<Autodiff<Cuda<half::f16>>>(cfg, req, &dev, "cuda-f16"),
        (Dtype::F16, true) => run_on::<Autodiff<Cuda<half::f16>, Bal>>(cfg, req, &dev, "cuda-f16"),
        (Dtype::Bf16, false) => run_on::<Autodiff<Cuda<half::bf16>>>(cfg, req, &dev, "cuda-bf16"),
        (Dtype::Bf16, true) => {
            run_on::<Autodiff<Cuda<half::bf16>, Bal>>(cfg, req, &dev, "cuda-bf16")
        }
        (_, false) => run_on::<Autodiff<Cuda<f32>>>(cfg, req, &dev, "cuda-f32"),
        (_, true) => run_on::<Autodiff<Cuda<f32>, Bal>>(cfg, req, &dev, "cuda-f32"),
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_cfg: &Config, _req: FinetuneRequest) -> Result<RunOutcome> {
    bail!("--device cuda needs a CUDA build: rebuild with `cargo build --release --features cuda`, or use --device cpu")
}

/// Saved between epochs (`<run>/state/state.json`; tensors beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    format: String,
    run_id: String,
    started_at: String,
    /// Completed epochs and optimiser steps.
    epoch: usize,
    step: usize,
    best_epoch: usize,
    best_metric: f64,
    history: Vec<FtEpoch>,
    images_seen: usize,
    train_seconds: f64,
    /// Step count of each trained parameter's moments, in visit order.
    moment_steps: Vec<u64>,
    /// The run's config: a resumed run goes on with it whatever the command line says.
    config: Config,
}

/// The head kind of `head.*`.
fn head_kind(cfg: &Config) -> Result<HeadKind> {
    HeadKind::from_config(&cfg.head)
}

fn run_on<B: AutodiffBackend>(
    cfg: &Config,
    mut req: FinetuneRequest,
    device: &B::Device,
    device_name: &str,
) -> Result<RunOutcome> {
    // A resumed run continues with its own config.
    let (cfg, resume) = match &req.resume {
        Some(dir) => {
            let st = read_state(dir)?;
            (st.config.clone(), Some((dir.clone(), st)))
        }
        None => (cfg.clone(), None),
    };
    let cfg = &cfg;
    let ft = &cfg.finetune;
    ft.validate()?;
    let kind = head_kind(cfg)?;
    let path = manifest_path(&cfg.paths.datasets, &req.manifest);
    let rows = read_manifest(&path).with_context(|| {
        format!(
            "cannot read the training manifest {} (build one with `sv72 synth-mix`)",
            path.display()
        )
    })?;
    let train_rows: Vec<_> = rows.iter().filter(|r| r.split == Split::Train).collect();
    let val_rows: Vec<_> = rows.iter().filter(|r| r.split == Split::Val).collect();
    if train_rows.is_empty() || val_rows.is_empty() {
        bail!(
            "{} has {} train and {} val rows; finetune needs both splits",
            path.display(),
            train_rows.len(),
            val_rows.len()
        );
    }
    let snapshot = hub::resolve_backbone(&cfg.backbone.model, &cfg.backbone.revision)?;
    let preprocess =
        Preprocess::for_kind(cfg.backbone.preprocess, &snapshot, cfg.augment.target_size)?;
    let base_key = crate::features::backbone_key(&snapshot, &cfg.paths.feature_cache)?;
    let root = &cfg.paths.datasets;

    let (images, failed) = TrainImages::open(&train_rows, root)?;
    for (id, why) in failed.iter().take(5) {
        (req.warn)(&format!("finetune: training image {id} skipped: {why}"));
    }
    if failed.len() > 5 {
        (req.warn)(&format!(
            "finetune: {} more training images skipped",
            failed.len() - 5
        ));
    }
    let labels = images.labels();
    let n = labels.len();
    let n_pos = labels.iter().filter(|&&y| y == 1).count();
    if n_pos == 0 || n_pos == n {
        bail!(
            "the train split holds only one class ({n_pos} of {n} are roadwork); both are needed"
        );
    }
    let val = ValSet::build(
        &val_rows,
        root,
        &cfg.augment,
        cfg.eval.draws_per_image,
        cfg.eval.seed,
    )?;
    if val.skipped > 0 {
        (req.warn)(&format!(
            "finetune: {} validation challenge(s) could not be made",
            val.skipped
        ));
    }

    let started = chrono::Utc::now();
    let (run_id, started_at) = match &resume {
        Some((_, st)) => (st.run_id.clone(), st.started_at.clone()),
        None => {
            let salt = format!(
                "{}|{base_key}|ft|{}",
                file_hash_or(&path),
                serde_yaml::to_string(cfg).unwrap_or_default()
            );
            (
                checkpoint::make_run_id(started, &salt),
                started.to_rfc3339(),
            )
        }
    };
    let dir = match &resume {
        Some((d, _)) => d.clone(),
        None => cfg.paths.checkpoints.join(&run_id),
    };
    let cfg_json = serde_json::to_value(cfg).context("serialising the config")?;
    let mut tracker = Tracker::open(
        &dir,
        &run_id,
        &cfg_json,
        req.wandb.take(),
        std::mem::replace(&mut req.warn, Box::new(|_| {})),
    )?;

    let weights = Weights::open(&snapshot)?;
    let mut rng = ChaCha8Rng::seed_from_u64(ft.seed);
    let (model, plan) = model::build::<B>(
        &snapshot,
        &weights,
        ft,
        kind,
        &NamedTensors::new(),
        &mut rng,
        device,
    )?;
    drop(weights);
    let class_weights = [
        n as f32 / (2.0 * (n - n_pos) as f32),
        n as f32 / (2.0 * n_pos as f32),
    ];
    let mut trainer = Trainer {
        model,
        plan,
        opt: AdamW::new(ft.weight_decay),
        class_weights,
        label_smoothing: ft.label_smoothing,
        max_grad_norm: ft.max_grad_norm,
        head_dropout: cfg.head.dropout,
        device: device.clone(),
    };
    let order = optim::param_order(&trainer.model, &trainer.plan.groups);

    let per_step = ft.batch_size * ft.grad_accum;
    let steps_per_epoch = if ft.steps_per_epoch > 0 {
        ft.steps_per_epoch
    } else {
        n.div_ceil(per_step)
    };
    let total_steps = steps_per_epoch * ft.epochs;
    let mut st = match resume {
        Some((d, st)) => {
            restore(&mut trainer, &order, &d, &st)?;
            eprintln!(
                "finetune: resuming {run_id} after epoch {} (step {})",
                st.epoch, st.step
            );
            st
        }
        None => RunState {
            format: "sv72-finetune-state-1".into(),
            run_id: run_id.clone(),
            started_at: started_at.clone(),
            epoch: 0,
            step: 0,
            best_epoch: 0,
            best_metric: f64::NEG_INFINITY,
            history: Vec::new(),
            images_seen: 0,
            train_seconds: 0.0,
            moment_steps: Vec::new(),
            config: cfg.clone(),
        },
    };
    eprintln!(
        "finetune: {} mode, {} of {} backbone parameters train ({:.2}%); {n} training images, {} validation challenges, {steps_per_epoch} steps/epoch of {per_step} images on {device_name}",
        ft.mode.name(),
        trainer.plan.trainable_params,
        trainer.plan.backbone_params,
        100.0 * trainer.plan.trainable_params as f64 / trainer.plan.backbone_params.max(1) as f64,
        val.len()
    );

    let mut best: model::ParamValues = if st.best_epoch > 0 {
        read_values(&dir.join(STATE_DIR).join("best.safetensors"), &order, "b")?
    } else {
        HashMap::new()
    };
    let pb = crate::util::progress::bar(total_steps as u64, "finetune");
    pb.set_position(st.step as u64);
    let mut hook = req.on_epoch.take();
    let mut since_best = st.epoch.saturating_sub(st.best_epoch);
    let result: Result<()> = (|| {
        for epoch in st.epoch + 1..=ft.epochs {
            if ft.patience > 0 && st.best_epoch > 0 && since_best >= ft.patience {
                break;
            }
            let t0 = Instant::now();
            let order_e = images.epoch_order(ft.seed, epoch);
            let mut loss_sum = 0.0;
            let mut lr = 0.0;
            let mut train_time = 0.0;
            let (mut data_time, mut step_time) = (0.0, 0.0);
            for s in 0..steps_per_epoch {
                let ts = Instant::now();
                let mut micro = Vec::with_capacity(ft.grad_accum);
                for j in 0..ft.grad_accum {
                    let picks: Vec<(usize, usize)> = (0..ft.batch_size)
                        .map(|k| {
                            let pos = (s * ft.grad_accum + j) * ft.batch_size + k;
                            (order_e[pos % n], pos)
                        })
                        .collect();
                    let (px, (h, w), y) =
                        images.views(&picks, epoch, ft.seed, &cfg.augment, &preprocess)?;
                    let x =
                        Tensor::<B, 4>::from_data(TensorData::new(px, [y.len(), 3, h, w]), device);
                    micro.push((x, y));
                }
                data_time += ts.elapsed().as_secs_f64();
                let tc = Instant::now();
                lr = lr_at(st.step, total_steps, ft.warmup_steps, ft.lr);
                let seed = crate::util::hash::stable_u64(&format!("{}|step|{}", ft.seed, st.step));
                let stats = trainer.step(micro, lr, seed)?;
                step_time += tc.elapsed().as_secs_f64();
                st.step += 1;
                st.images_seen += per_step;
                loss_sum += stats.loss;
                let dt = ts.elapsed().as_secs_f64();
                train_time += dt;
                tracker.log(
                    st.step as u64,
                    &[
                        ("train/loss", stats.loss),
                        ("train/grad_norm", stats.grad_norm),
                        ("lr", lr),
                        ("train/step_images_per_s", per_step as f64 / dt.max(1e-9)),
                    ],
                )?;
                pb.inc(1);
                pb.set_message(format!(
                    "{:.1} img/s loss {:.3}",
                    per_step as f64 * (s + 1) as f64 / train_time.max(1e-9),
                    loss_sum / (s + 1) as f64
                ));
            }
            st.train_seconds += train_time;
            let ev = evaluate(
                &trainer.model.valid(),
                &val,
                &preprocess,
                ft.batch_size,
                cfg,
                device,
            )?;
            let rec = FtEpoch {
                epoch,
                step: st.step,
                lr,
                train_loss: loss_sum / steps_per_epoch as f64,
                val_loss: ev.loss,
                val_accuracy: ev.metrics.accuracy,
                val_mcc: ev.metrics.mcc,
                val_auc: ev.metrics.roc_auc.unwrap_or(0.0),
                val_score: ev.score,
                images_per_second: (steps_per_epoch * per_step) as f64 / train_time.max(1e-9),
                data_seconds: data_time,
                step_seconds: step_time,
                seconds: t0.elapsed().as_secs_f64(),
            };
            tracker.log(st.step as u64, &rec.scalars())?;
            pb.suspend(|| {
                eprintln!(
                    "finetune: epoch {epoch}/{}: loss {:.4}, val loss {:.4}, MCC {:.3}, accuracy {:.3}, expected score {:.3} ({:.1} images/s; views {:.1} s, steps {:.1} s)",
                    ft.epochs, rec.train_loss, rec.val_loss, rec.val_mcc, rec.val_accuracy, rec.val_score,
                    rec.images_per_second, rec.data_seconds, rec.step_seconds
                )
            });
            let metric = rec.metric(ft.early_stop);
            if st.best_epoch == 0 || metric > st.best_metric + 1e-12 {
                st.best_epoch = epoch;
                st.best_metric = metric;
                best = crate::model::loader::param_values(&trainer.model, &trainer.plan.ids());
                since_best = 0;
            } else {
                since_best += 1;
            }
            st.epoch = epoch;
            st.history.push(rec.clone());
            save_state(&dir, &trainer, &order, &best, &mut st)?;
            if let Some(h) = hook.as_mut() {
                h(&rec)?;
            }
        }
        Ok(())
    })();
    pb.finish_and_clear();
    if let Err(e) = result {
        tracker.finish(false);
        return Err(e.context(format!(
            "fine-tuning run {run_id} stopped; resume it with `sv72 finetune --manifest {} --resume {}` (`latest` was not changed)",
            req.manifest,
            dir.display()
        )));
    }

    // The kept epoch, calibrated on the validation challenges as train-head calibrates.
    let model = model::load_values(trainer.model, &best);
    let valid = model.valid();
    let ev = evaluate(&valid, &val, &preprocess, ft.batch_size, cfg, device)?;
    let mut settings = TrainSettings::from_config(cfg)?;
    settings.train.seed = ft.seed;
    let inner_dev = valid.head.classifier.weight.device();
    let (temperature, threshold, val_metrics, val_score) =
        calibrate(&valid.head, &ev.features, &settings, &inner_dev)?;
    tracker.log(
        (st.step + 1) as u64,
        &[
            ("final/val_mcc", val_metrics.mcc),
            ("final/val_accuracy", val_metrics.accuracy),
            ("final/val_ece", val_metrics.ece),
            ("final/expected_score", val_score.mean),
            ("final/temperature", temperature),
            ("final/threshold", threshold),
        ],
    )?;

    let saved: Vec<&crate::model::Binding> = trainer.plan.saved.iter().collect();
    let tensors = crate::model::loader::write_back(&valid, &saved)?;
    let ft_path = dir.join(FINETUNE_FILE);
    checkpoint::write_finetune_file(
        &ft_path,
        &tensors,
        ft.mode.name(),
        trainer.plan.lora_scale,
        &base_key,
    )?;
    let hidden = valid.backbone_hidden();
    let info = RunInfo {
        run_id: run_id.clone(),
        started_at,
        finished_at: chrono::Utc::now().to_rfc3339(),
        code_revision: checkpoint::code_revision(),
        backbone: BackboneInfo {
            name: cfg.backbone.model.clone(),
            weights_hash: base_key.clone(),
            hidden_size: hidden,
            preprocess: preprocess.id(),
        },
        manifest: ManifestInfo {
            path: path.display().to_string(),
            hash: file_hash_or(&path),
            train_images: n,
            val_images: val_rows.len(),
            train_rows: st.images_seen,
            val_rows: val.len(),
        },
        head: HeadInfo {
            kind: kind.name().to_string(),
            input_dim: 2 * hidden,
            hidden: match kind {
                HeadKind::Mlp { hidden } => Some(hidden),
                HeadKind::Linear => None,
            },
            features: "concat(cls, patch_mean)".into(),
            labels: vec!["None".into(), "Roadwork".into()],
        },
        temperature,
        threshold,
        served_probability: checkpoint::SERVED_FORMULA.into(),
        metrics: FinalMetrics {
            best_epoch: st.best_epoch,
            epochs_run: st.epoch,
            val: val_metrics,
            val_expected_score: val_score,
        },
        config: cfg.clone(),
        finetune: Some(FinetuneInfo {
            mode: ft.mode.name().into(),
            file_hash: crate::util::hash::file_hash(&ft_path)?,
            tensors: tensors.len(),
            trainable_params: trainer.plan.trainable_params,
            backbone_params: trainer.plan.backbone_params,
            lora: (ft.mode == FinetuneMode::Lora).then(|| LoraInfo {
                rank: ft.lora.rank,
                alpha: ft.lora.alpha,
                scale: trainer.plan.lora_scale,
                dropout: ft.lora.dropout,
                targets: trainer.plan.lora_targets.clone(),
            }),
            partial_blocks: (ft.mode == FinetuneMode::Partial).then_some(ft.partial_blocks),
            images_seen: st.images_seen,
            images_per_second: st.images_seen as f64 / st.train_seconds.max(1e-9),
            device: device_name.into(),
        }),
    };
    checkpoint::write_checkpoint(&dir, &valid.head, &info)?;
    tracker.finish(true);
    checkpoint::set_latest(&cfg.paths.checkpoints, &run_id)?;
    let _ = std::fs::remove_dir_all(dir.join(STATE_DIR));
    Ok(RunOutcome { run_id, dir, info })
}

/// The newest run folder under `root` that stopped before finishing (has `state/`).
pub fn newest_unfinished(root: &Path) -> Result<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(STATE_DIR).join(STATE_FILE).is_file())
        .collect();
    // Run ids start with their UTC start time, so the name orders them.
    runs.sort();
    runs.pop().with_context(|| {
        format!(
            "no unfinished fine-tuning run under {} to resume",
            root.display()
        )
    })
}

fn file_hash_or(path: &Path) -> String {
    crate::util::hash::file_hash(path).unwrap_or_else(|_| "unhashed".into())
}

impl<B: Backend> FtModel<B> {
    /// Width of the backbone's hidden state.
    pub fn backbone_hidden(&self) -> usize {
        use crate::model::FeatureExtractor;
        self.backbone.hidden_size()
    }
}

/// Validation of one model state.
pub struct Evaluation {
    /// `[CLS ; patch mean]` of every challenge, with labels and levels (what calibration reads).
    pub features: FeatureSet,
    pub metrics: BinaryMetrics,
    /// Mean cross-entropy at temperature 1.
    pub loss: f64,
    /// Expected subnet score (mean over simulated sequences).
    pub score: f64,
}

/// Scores the validation challenges with `model` (no autodiff).
pub fn evaluate<B: Backend>(
    model: &FtModel<B>,
    val: &ValSet,
    preprocess: &Preprocess,
    batch: usize,
    cfg: &Config,
    _any: &impl std::any::Any,
) -> Result<Evaluation> {
    let device = model.head.classifier.weight.device();
    let mut set = FeatureSet::default();
    for start in (0..val.len()).step_by(batch.max(1)) {
        let end = (start + batch).min(val.len());
        let (px, (h, w)) = val.pixels(start..end, preprocess)?;
        let x = Tensor::<B, 4>::from_data(TensorData::new(px, [end - start, 3, h, w]), &device);
        let f = model.features(x)?;
        let d2 = f.dims()[1];
        let v: Vec<f32> = f
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| anyhow::anyhow!("reading features: {e:?}"))?;
        for (i, row) in v.chunks(d2).enumerate() {
            let k = start + i;
            set.push(row, val.labels[k], val.synthetic[k], val.levels[k])?;
        }
    }
    let margins = model.head.margins(&set.x, &device)?;
    let probs: Vec<f64> = margins.iter().map(|&z| metrics::sigmoid(z)).collect();
    let bm = BinaryMetrics::compute(&set.labels, &probs);
    let items: Vec<ScoreItem> = probs
        .iter()
        .enumerate()
        .map(|(i, &p)| ScoreItem {
            label: set.labels[i],
            synthetic: set.synthetic[i],
            level: set.levels[i],
            prob: p,
        })
        .collect();
    let score = metrics::simulate_scores(
        &items,
        cfg.augment.level_probs,
        cfg.eval.score_sequences.clamp(1, 200),
        cfg.finetune.seed,
    )?;
    Ok(Evaluation {
        loss: metrics::calibration::nll_at_temperature(&margins, &set.labels, 1.0),
        features: set,
        metrics: bm,
        score: score.mean,
    })
}

/// Writes `<run>/state/` atomically: trained values, optimiser moments, the best epoch's values
/// and `state.json`.
fn save_state<B: AutodiffBackend>(
    dir: &Path,
    trainer: &Trainer<B>,
    order: &[(ParamId, usize)],
    best: &model::ParamValues,
    st: &mut RunState,
) -> Result<()> {
    let ids = trainer.plan.ids();
    let now = crate::model::loader::param_values(&trainer.model, &ids);
    let moments = trainer.opt.export(order);
    st.moment_steps = moments.iter().map(|m| m.2).collect();
    let mut params = Vec::new();
    let mut opt = Vec::new();
    let mut kept = Vec::new();
    for (i, (id, _)) in order.iter().enumerate() {
        let (dims, v) = now.get(id).context("a trained parameter is missing")?;
        params.push((format!("p{i}"), dims.clone(), v.clone()));
        if let Some((dims, v)) = best.get(id) {
            kept.push((format!("b{i}"), dims.clone(), v.clone()));
        }
        let (m, v, _) = &moments[i];
        opt.push((format!("m{i}"), vec![m.len()], m.clone()));
        opt.push((format!("v{i}"), vec![v.len()], v.clone()));
    }
    let json = serde_json::to_vec_pretty(&*st)?;
    fsx::write_dir_atomic(&dir.join(STATE_DIR), |tmp| {
        write_tensors(&tmp.join("params.safetensors"), &params)?;
        write_tensors(&tmp.join("moments.safetensors"), &opt)?;
        write_tensors(&tmp.join("best.safetensors"), &kept)?;
        std::fs::write(tmp.join(STATE_FILE), &json)?;
        Ok(())
    })
}

fn write_tensors(path: &Path, tensors: &[crate::model::NamedTensor]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(n, s, v)| {
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                s.clone(),
                bytemuck::cast_slice::<f32, u8>(v),
            )
            .map(|t| (n.clone(), t))
            .map_err(|e| anyhow::anyhow!("building tensor {n}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

fn read_state(dir: &Path) -> Result<RunState> {
    let p = dir.join(STATE_DIR).join(STATE_FILE);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "cannot read {}: --resume needs a fine-tuning run folder that stopped before finishing",
            p.display()
        )
    })?;
    let st: RunState = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an sv72 fine-tuning state", p.display()))?;
    if st.format != "sv72-finetune-state-1" {
        bail!("{}: unknown state format {:?}", p.display(), st.format);
    }
    Ok(st)
}

/// Values `{prefix}{i}` of a state file, by the parameter ids of `order`.
fn read_values(
    path: &Path,
    order: &[(ParamId, usize)],
    prefix: &str,
) -> Result<model::ParamValues> {
    let w = Weights::open_files(&[path.to_path_buf()])?;
    let mut out = HashMap::new();
    for (i, (id, n)) in order.iter().enumerate() {
        let name = format!("{prefix}{i}");
        if !w.contains(&name) {
            continue;
        }
        let (v, dims) = w.f32_data(&name)?;
        if v.len() != *n {
            bail!(
                "{}: `{name}` has {} values, the model's parameter {n}; the run's model changed",
                path.display(),
                v.len()
            );
        }
        out.insert(*id, (dims, v));
    }
    Ok(out)
}

/// Puts a saved state back into a freshly built trainer.
fn restore<B: AutodiffBackend>(
    trainer: &mut Trainer<B>,
    order: &[(ParamId, usize)],
    dir: &Path,
    st: &RunState,
) -> Result<()> {
    let sd = dir.join(STATE_DIR);
    let values = read_values(&sd.join("params.safetensors"), order, "p")?;
    if values.len() != order.len() || st.moment_steps.len() != order.len() {
        bail!(
            "{}: the state holds {} trained tensors, the model has {}; resume with the run's own backbone",
            sd.display(),
            values.len(),
            order.len()
        );
    }
    trainer.model = model::load_values(trainer.model.clone(), &values);
    let mw = Weights::open_files(&[sd.join("moments.safetensors")])?;
    let mut state = Vec::with_capacity(order.len());
    for (i, t) in st.moment_steps.iter().enumerate() {
        let (m, _) = mw.f32_data(&format!("m{i}"))?;
        let (v, _) = mw.f32_data(&format!("v{i}"))?;
        state.push((m, v, *t));
    }
    let dev = trainer.model.head.classifier.weight.val().inner().device();
    trainer.opt.import(order, state, &dev);
    Ok(())
}
