//! `sv72 finetune`: trains the backbone (LoRA, last blocks or all of it) with a head on
//! augmented images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::args::DeviceArg;
use super::Ctx;
use crate::config::FinetuneMode;
use crate::train::finetune::{self, FinetuneRequest};
use crate::train::{tracking, WandbSettings};

/// Flags of `sv72 finetune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The training mix: a dataset name under `paths.datasets`, its folder, or a `.parquet`
    /// manifest. `train` rows train, `val` rows drive early stopping, calibration and the
    /// threshold. Required; optional for clap only so config errors are reported first.
    #[arg(long, value_name = "DATASET")]
    pub manifest: Option<String>,
    /// What trains besides the head (default: `finetune.mode`).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Backbone snapshot folder or HF name (default: `backbone.model`).
    #[arg(long, value_name = "MODEL")]
    pub backbone: Option<String>,
    /// Epochs (default: `finetune.epochs`).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Checkpoints root (default: `paths.checkpoints`).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,
    /// Continue a run that stopped: its folder, or without a value the newest unfinished run
    /// under the checkpoints root. The run goes on with its own config.
    #[arg(long, value_name = "RUN", num_args = 0..=1, default_missing_value = "")]
    pub resume: Option<PathBuf>,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Lora,
    Partial,
    Full,
}

/// Runs `sv72 finetune`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    if let Some(m) = args.mode {
        cfg.finetune.mode = match m {
            ModeArg::Lora => FinetuneMode::Lora,
            ModeArg::Partial => FinetuneMode::Partial,
            ModeArg::Full => FinetuneMode::Full,
        };
    }
    if let Some(b) = args.backbone {
        cfg.backbone.model = b;
    }
    if let Some(e) = args.epochs {
        if e == 0 {
            bail!("--epochs must be at least 1");
        }
        cfg.finetune.epochs = e;
    }
    cfg.backbone.device = args.device.or_config(&cfg);
    if let Some(c) = args.checkpoints {
        cfg.paths.checkpoints = c;
    }
    let Some(manifest) = args.manifest else {
        bail!("finetune needs --manifest DATASET (the mix built by `sv72 synth-mix`)");
    };
    let resume = match args.resume {
        None => None,
        Some(p) if p.as_os_str().is_empty() => {
            Some(finetune::newest_unfinished(&cfg.paths.checkpoints)?)
        }
        Some(p) => Some(p),
    };
    let req = FinetuneRequest {
        manifest,
        resume,
        device: cfg.backbone.device,
        wandb: WandbSettings::from_env(&cfg.train),
        warn: tracking::stderr_warn(),
        on_epoch: None,
    };
    let out = finetune::run(&cfg, req)?;
    let m = &out.info.metrics;
    println!("run {} -> {}", out.run_id, out.dir.display());
    println!(
        "  val MCC {:.4}  accuracy {:.4}  expected score {:.4}  (best epoch {} of {})",
        m.val.mcc, m.val.accuracy, m.val_expected_score.mean, m.best_epoch, m.epochs_run
    );
    if let Some(f) = &out.info.finetune {
        println!(
            "  {} mode: {} of {} backbone parameters trained, {} images at {:.1} images/s on {}",
            f.mode,
            f.trainable_params,
            f.backbone_params,
            f.images_seen,
            f.images_per_second,
            f.device
        );
    }
    println!(
        "  threshold {:.4}  temperature {:.4}",
        out.info.threshold, out.info.temperature
    );
    Ok(ExitCode::SUCCESS)
}
