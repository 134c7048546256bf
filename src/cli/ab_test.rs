//! `sv72 ab-test A B --on MANIFEST[:split]`: paired comparison of two models on byte-identical
//! validator challenges; exit 0 = promote B, 3 = keep A (`crate::exit`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::args::DeviceArg;
use super::Ctx;
use crate::eval::ab::summary_table;
use crate::eval::ab_test::{run_ab_test, AbRequest, Mode};

/// Flags of `sv72 ab-test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model A, the incumbent: checkpoint folder, `latest` pointer, export folder or
    /// `exports/deployed`.
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Model B, the challenger (same kinds as A).
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// `MANIFEST[:split]`: dataset name, folder or `.parquet`, and split (default `test`).
    #[arg(long, value_name = "MANIFEST[:SPLIT]")]
    pub on: String,
    /// Output folder for decision.json, report.md, answers.jsonl and the plot
    /// (default: `<ab_test.out_dir>/<UTC time>-<A id>-vs-<B id>/`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// How the models are run (both see the same challenge images either way).
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: Mode,
}

/// Runs `sv72 ab-test`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    args.device.apply(&mut cfg);
    let req = AbRequest {
        a: args.a,
        b: args.b,
        on: args.on,
        out: args.out,
        mode: args.mode,
    };
    let out = run_ab_test(&cfg, &req)?;
    print!("{}", summary_table(&out.report));
    println!("report: {}", out.files[0].display());
    Ok(ExitCode::from(out.report.exit_code))
}
