//! `sv72 train-head`: trains a classification head on cached backbone features
//! (`train::stage`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::args::DeviceArg;
use super::Ctx;
use crate::train::stage::train_head_on;

/// Flags of `sv72 train-head`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The training mix: a dataset name under `paths.datasets`, its folder, or a `.parquet`
    /// manifest. Its `train` rows train the head, its `val` rows drive early stopping,
    /// calibration and the threshold.
    /// Required; optional for clap only so config errors are reported first.
    #[arg(long, value_name = "DATASET")]
    pub manifest: Option<String>,
    /// Backbone snapshot folder or HF name (default: `backbone.model`).
    #[arg(long, value_name = "MODEL")]
    pub backbone: Option<String>,
    /// Augmented training views per image (default: `train.views`).
    #[arg(long, value_name = "K")]
    pub views: Option<usize>,
    /// Training epochs (default: `train.epochs`).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Checkpoints root (default: `paths.checkpoints`).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,
}

/// Runs `sv72 train-head`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    if let Some(b) = args.backbone {
        cfg.backbone.model = b;
    }
    if let Some(v) = args.views {
        cfg.train.views = v;
    }
    if let Some(e) = args.epochs {
        if e == 0 {
            bail!("--epochs must be at least 1");
        }
        cfg.train.epochs = e;
    }
    args.device.apply(&mut cfg);
    if let Some(c) = args.checkpoints {
        cfg.paths.checkpoints = c;
    }
    let Some(manifest) = args.manifest else {
        bail!("train-head needs --manifest DATASET (the mix built by `sv72 synth-mix`)");
    };
    let (out, manifest) = train_head_on(&cfg, &manifest)?;
    let m = &out.info.metrics;
    println!("run {} -> {}", out.run_id, out.dir.display());
    println!(
        "  val MCC {:.4}  accuracy {:.4}  expected score {:.4}  (best epoch {} of {})",
        m.val.mcc, m.val.accuracy, m.val_expected_score.mean, m.best_epoch, m.epochs_run
    );
    println!(
        "  threshold {:.4}  temperature {:.4}  ({} train rows, {} val rows)",
        out.info.threshold, out.info.temperature, manifest.train_rows, manifest.val_rows
    );
    Ok(ExitCode::SUCCESS)
}
