//! `sv72 eval`: evaluates a checkpoint as validators score it (`eval::stage`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::args::DeviceArg;
use super::Ctx;
use crate::eval::stage::{evaluate, EvalRequest};
use crate::eval::summary_table;

/// Flags of `sv72 eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint folder, a `latest` file, or a model spec `.yaml` (test-time views, an
    /// ensemble; run end to end on the challenge images). Default: `<paths.checkpoints>/latest`.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// `MANIFEST[:split]`: dataset name, folder or `.parquet`, and split (default `test`).
    /// Default: the checkpoint's training manifest.
    #[arg(long, value_name = "MANIFEST[:SPLIT]")]
    pub on: Option<String>,
    /// Where to write report.json, report.md and plots (default: the checkpoint folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Runs `sv72 eval`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    args.device.apply(&mut cfg);
    let req = EvalRequest {
        checkpoint: args.checkpoint,
        on: args.on,
        out: args.out,
    };
    let (report, files) = evaluate(&cfg, &req)?;
    print!("{}", summary_table(&report));
    println!("report: {}", files[0].display());
    Ok(ExitCode::SUCCESS)
}
