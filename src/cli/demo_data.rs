//! `sv72 demo-data`: writes the generated demo set (see [`crate::data::demo`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use super::Ctx;
use crate::data::demo::{generate_demo, DemoOptions};

/// Flags of `sv72 demo-data`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder; gets `real/{roadwork,none}`, `synthetic/{roadwork,none}` and README.txt.
    /// An existing folder is replaced only if it is an earlier demo set or empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 72)]
    pub seed: u64,
    /// Scenes per source (real and synthetic each), half roadwork, half none.
    #[arg(long, default_value_t = 160)]
    pub count: usize,
    /// Leave out the planted duplicate and corrupt files.
    #[arg(long)]
    pub no_extras: bool,
}

/// Runs `sv72 demo-data`.
pub fn run(args: Args, _ctx: &Ctx) -> Result<ExitCode> {
    let t0 = Instant::now();
    let opts = DemoOptions {
        seed: args.seed,
        count: args.count,
        extras: !args.no_extras,
    };
    let s = generate_demo(&args.out, &opts)?;
    println!(
        "wrote a generated demo set (not real data) to {} in {:.1} s:",
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    for (src, class, n) in &s.scenes {
        println!("  {src}/{class}: {n} scenes");
    }
    if !s.duplicates.is_empty() || !s.corrupt.is_empty() {
        println!(
            "  planted in real/: {} exact duplicates ({}), {} corrupt file ({})",
            s.duplicates.len(),
            s.duplicates.join(", "),
            s.corrupt.len(),
            s.corrupt.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
