//! `sv72 calibrate SPEC --on MANIFEST[:val]`: fits a model spec's temperature and threshold with
//! its own test-time views and writes them into the spec.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::args::DeviceArg;
use super::Ctx;
use crate::eval::calibrate::calibrate_spec;

/// Flags of `sv72 calibrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model spec (`.yaml`) to calibrate; rewritten in place.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// `MANIFEST[:split]`: dataset name, folder or `.parquet`, and split (default `val`).
    #[arg(long, value_name = "MANIFEST[:SPLIT]")]
    pub on: String,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Runs `sv72 calibrate`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    args.device.apply(&mut cfg);
    let out = calibrate_spec(&cfg, &args.spec, &args.on)?;
    if out.skipped > 0 {
        eprintln!(
            "calibrate: warning: {} challenge(s) could not be made",
            out.skipped
        );
    }
    println!(
        "{}: temperature {:.4}, threshold {:.4} ({} challenges)",
        out.spec.display(),
        out.calibration.temperature,
        out.calibration.threshold,
        out.challenges
    );
    Ok(ExitCode::SUCCESS)
}
