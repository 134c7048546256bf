//! `sv72 calibrate SPEC --on MANIFEST[:val]`: fits a model spec's temperature and threshold with
//! its own test-time views and writes them into the spec; with `--judge`, also the VLM judge's
//! blend weight.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::args::DeviceArg;
use super::Ctx;
use crate::eval::calibrate::{calibrate_spec, JudgeFitRequest};

/// Flags of `sv72 calibrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model spec (`.yaml`) to calibrate; rewritten in place.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// `MANIFEST[:split]`: dataset name, folder or `.parquet`, and split (default `val`).
    #[arg(long, value_name = "MANIFEST[:SPLIT]")]
    pub on: String,
    /// Also fit the judge's blend weight (`judge:` in the config) on the validation answers in
    /// `judge.band`, and store it in the spec (`serve` prefers it over `judge.weight`).
    #[arg(long)]
    pub judge: bool,
    /// With `--judge`: ask about at most this many in-band challenges.
    #[arg(long, value_name = "N", default_value_t = 200, requires = "judge")]
    pub judge_max_cases: usize,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Runs `sv72 calibrate`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    args.device.apply(&mut cfg);
    let judge = args.judge.then_some(JudgeFitRequest {
        max_cases: args.judge_max_cases,
    });
    let out = calibrate_spec(&cfg, &args.spec, &args.on, judge)?;
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
    if let Some((j, in_band)) = &out.judge {
        let why: Vec<String> = j.unjudged.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "{}: judge weight {:.2} ({} of {} asked answered; {in_band} in the band{})",
            out.spec.display(),
            j.weight,
            j.judged,
            j.asked,
            if why.is_empty() {
                String::new()
            } else {
                format!("; unanswered: {}", why.join(", "))
            }
        );
    }
    if out.dropped_judge {
        eprintln!(
            "calibrate: the judge weight fitted before was dropped (it belonged to the old \
             calibration); rerun with --judge to fit it again"
        );
    }
    Ok(ExitCode::SUCCESS)
}
