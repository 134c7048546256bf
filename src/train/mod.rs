//! `sv72 train-head`: classification heads on cached backbone features (issue #4).
//!
//! [`run_training`] is the stage without its data plumbing: given train/validation feature sets it
//! trains ([`trainer`]), calibrates, tracks ([`tracking`], [`tensorboard`]) and writes the
//! checkpoint ([`checkpoint`]). `checkpoints/latest` moves only once everything is written.

pub mod checkpoint;
pub mod data;
pub mod finetune;
pub mod head;
pub mod stage;
pub mod tensorboard;
pub mod tracking;
pub mod trainer;

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;

pub use checkpoint::{BackboneInfo, Checkpoint, FinalMetrics, HeadInfo, ManifestInfo, RunInfo};
pub use head::{served_probability, Head, HeadKind};
pub use tracking::{Tracker, WandbSettings, WarnSink};
pub use trainer::{train_head, EpochRecord, FeatureSet, TrainSettings, Trained};

use crate::config::Config;

/// A per-epoch callback; returning an error aborts the run.
pub type EpochHook = Box<dyn FnMut(&EpochRecord) -> Result<()>>;

/// What a run trains on.
pub struct RunInputs {
    pub train: FeatureSet,
    pub val: FeatureSet,
    pub backbone: BackboneInfo,
    pub manifest: ManifestInfo,
}

/// Where a run writes and how it reports.
pub struct RunOptions {
    /// `paths.checkpoints`.
    pub checkpoints_root: PathBuf,
    /// Live W&B logging, usually `WandbSettings::from_env`.
    pub wandb: Option<WandbSettings>,
    pub warn: WarnSink,
    /// Called after each epoch is logged; an error aborts the run (e.g. a stop request).
    pub on_epoch: Option<EpochHook>,
}

impl RunOptions {
    /// Defaults from the config and environment: stderr warnings, W&B from env.
    pub fn from_config(cfg: &Config) -> Self {
        RunOptions {
            checkpoints_root: cfg.paths.checkpoints.clone(),
            wandb: WandbSettings::from_env(&cfg.train),
            warn: tracking::stderr_warn(),
            on_epoch: None,
        }
    }
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    pub run_id: String,
    pub dir: PathBuf,
    pub info: RunInfo,
}

/// Trains, calibrates and writes `checkpoints/<run-id>/`, then points `latest` at it.
pub fn run_training<B: AutodiffBackend>(
    cfg: &Config,
    inputs: &RunInputs,
    mut opts: RunOptions,
    device: &B::Device,
) -> Result<RunOutcome> {
    let started = chrono::Utc::now();
    let salt = format!(
        "{}|{}|{}",
        inputs.manifest.hash,
        inputs.backbone.weights_hash,
        serde_yaml::to_string(cfg).unwrap_or_default()
    );
    let run_id = checkpoint::make_run_id(started, &salt);
    let dir = opts.checkpoints_root.join(&run_id);
    let cfg_json = serde_json::to_value(cfg).context("serialising the config")?;
    let mut tracker = Tracker::open(&dir, &run_id, &cfg_json, opts.wandb.take(), opts.warn)?;
    let settings = TrainSettings::from_config(cfg)?;
    let mut user_hook = opts.on_epoch.take();
    let pb = crate::util::progress::bar(settings.train.epochs as u64, "train-head");
    let result = train_head::<B>(&inputs.train, &inputs.val, &settings, device, &mut |rec| {
        tracker.log(rec.epoch as u64, &rec.scalars())?;
        pb.set_position(rec.epoch as u64);
        pb.set_message(format!("mcc {:.3}", rec.val_mcc));
        if let Some(h) = user_hook.as_mut() {
            h(rec)?;
        }
        Ok(())
    });
    pb.finish_and_clear();
    let trained = match result {
        Ok(t) => t,
        Err(e) => {
            tracker.finish(false);
            return Err(e.context(format!(
                "training run {run_id} failed; {} keeps its partial logs and `latest` was not changed",
                dir.display()
            )));
        }
    };
    tracker.log(
        (trained.history.len() + 1) as u64,
        &[
            ("final/val_mcc", trained.val_metrics.mcc),
            ("final/val_accuracy", trained.val_metrics.accuracy),
            ("final/val_ece", trained.val_metrics.ece),
            ("final/expected_score", trained.val_score.mean),
            ("final/temperature", trained.temperature),
            ("final/threshold", trained.threshold),
        ],
    )?;
    let kind = trained.head.kind();
    let info = RunInfo {
        run_id: run_id.clone(),
        started_at: started.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        code_revision: checkpoint::code_revision(),
        backbone: inputs.backbone.clone(),
        manifest: inputs.manifest.clone(),
        head: HeadInfo {
            kind: kind.name().to_string(),
            input_dim: trained.head.input_dim(),
            hidden: match kind {
                HeadKind::Mlp { hidden } => Some(hidden),
                HeadKind::Linear => None,
            },
            features: "concat(cls, patch_mean)".into(),
            labels: vec!["None".into(), "Roadwork".into()],
        },
        temperature: trained.temperature,
        threshold: trained.threshold,
        served_probability: checkpoint::SERVED_FORMULA.into(),
        metrics: FinalMetrics {
            best_epoch: trained.best_epoch,
            epochs_run: trained.history.len(),
            val: trained.val_metrics.clone(),
            val_expected_score: trained.val_score.clone(),
        },
        config: cfg.clone(),
        finetune: None,
    };
    checkpoint::write_checkpoint(&dir, &trained.head, &info)?;
    tracker.finish(true);
    checkpoint::set_latest(&opts.checkpoints_root, &run_id)?;
    Ok(RunOutcome { run_id, dir, info })
}
