//! `sv72 train-head`: trains a classification head on cached backbone features.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::Ctx;
use crate::data::manifest::{manifest_path, read_manifest, Split};
use crate::train::data::rows_of;

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
    if let Some(c) = args.checkpoints {
        cfg.paths.checkpoints = c;
    }
    let Some(manifest) = args.manifest else {
        bail!("train-head needs --manifest DATASET (the mix built by `sv72 synth-mix`)");
    };
    let path = manifest_path(&cfg.paths.datasets, &manifest);
    let rows = read_manifest(&path).with_context(|| {
        format!(
            "cannot read the training manifest {} (build one with `sv72 synth-mix`)",
            path.display()
        )
    })?;
    let (train, val) = (rows_of(&rows, Split::Train), rows_of(&rows, Split::Val));
    if train.is_empty() || val.is_empty() {
        bail!(
            "{} has {} train and {} val rows; train-head needs both splits",
            path.display(),
            train.len(),
            val.len()
        );
    }
    // The remaining plumbing (model::load_backbone → training_view / validator_challenge views
    // → train::data::gather → train::run_training) waits for
    // `augment::{training_view, validator_challenge}`, which is not on main yet.
    bail!(
        "train-head: {} has {} train / {} val images, but this build cannot make their training \
         views and validator challenges yet: `augment::{{training_view, validator_challenge}}` is \
         not merged. Nothing was written.",
        path.display(),
        train.len(),
        val.len()
    )
}
