//! `sv72 synth-mix`: builds a training-mix manifest at a target synthetic share per label
//! (`data::synth_mix`).

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;
use crate::data::mix::{Balance, MixReport};
use crate::data::synth_mix::{run_synth_mix, SynthMixRequest};

/// Flags of `sv72 synth-mix`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest of real images: a dataset name under `paths.datasets`, its folder, or a
    /// `.parquet` file (repeatable). Its rows must all be `source = real`.
    #[arg(long = "real", value_name = "DATASET")]
    pub real: Vec<String>,
    /// Manifest of synthetic images (repeatable). Its rows must all be `source = synthetic`.
    #[arg(long = "synthetic", value_name = "DATASET")]
    pub synthetic: Vec<String>,
    /// Manifest holding both kinds (repeatable); each row's `source` column decides.
    #[arg(long = "input", value_name = "DATASET")]
    pub input: Vec<String>,
    /// Name of the new dataset: writes `<paths.datasets>/<name>/manifest.parquet`.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Target synthetic share per label in train (default: `mix.synthetic_fraction`).
    #[arg(long, value_name = "F")]
    pub fraction: Option<f64>,
    /// `equal` (same train count per label) or `none` (default: `mix.balance`).
    #[arg(long, value_name = "MODE", value_enum)]
    pub balance: Option<Balance>,
    /// Sampling seed (default: `mix.seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train images wanted per label instead of "all real images" (implies equal counts).
    #[arg(long, value_name = "N")]
    pub per_label: Option<usize>,
    /// When a label lacks images of one source, keep the counts and accept a different ratio
    /// (reported) instead of shrinking the label to keep the ratio exact.
    #[arg(long)]
    pub allow_ratio_shortfall: bool,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write `preview.png` beside the manifest: N augmented samples per validator level (and a
    /// weather row) drawn from the mix's train images.
    #[arg(long, value_name = "N")]
    pub preview: Option<usize>,
    /// Write K augmented training views per train image into the image store and record them in
    /// the manifest (`variant_of`, `aug`) (default: `mix.materialize_variants`).
    #[arg(long, value_name = "K")]
    pub materialize: Option<usize>,
}

/// Runs `sv72 synth-mix`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let req = SynthMixRequest {
        real: args.real,
        synthetic: args.synthetic,
        input: args.input,
        name: args.name,
        fraction: args.fraction,
        balance: args.balance,
        seed: args.seed,
        per_label: args.per_label,
        allow_ratio_shortfall: args.allow_ratio_shortfall,
        dry_run: args.dry_run,
        preview: args.preview,
        materialize: args.materialize,
    };
    let out = run_synth_mix(&ctx.config, &req, &mut print_summary)?;
    let Some(manifest) = &out.manifest else {
        println!("--dry-run: nothing written");
        return Ok(ExitCode::SUCCESS);
    };
    if let Some((n, failed)) = out.variants {
        println!(
            "materialised {n} augmented variants ({} per train image){}",
            req.materialize
                .unwrap_or(ctx.config.mix.materialize_variants),
            if failed > 0 {
                format!(", {failed} images unreadable (skipped)")
            } else {
                String::new()
            }
        );
    }
    println!(
        "wrote {} ({} rows) and mix_report.{{json,md}}",
        manifest.display(),
        out.rows
    );
    if let Some((path, n)) = &out.preview {
        println!("wrote {} ({n} samples per validator level)", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(report: &MixReport) {
    let p = &report.plan;
    println!(
        "mix {:?}: target {:.1}% synthetic per label, balance {:?}, seed {}",
        report.name,
        100.0 * p.request.fraction,
        p.request.balance,
        report.seed
    );
    for l in &p.labels {
        println!(
            "  label {}: available {} real + {} synthetic -> train {} real + {} synthetic \
             (achieved {})",
            l.label,
            l.available.real,
            l.available.synthetic,
            l.take.real,
            l.take.synthetic,
            l.achieved_fraction
                .map(|a| format!("{:.1}%", 100.0 * a))
                .unwrap_or_else(|| "-".into())
        );
    }
    for n in &p.notes {
        println!("  note: {n}");
    }
    if !p.shortfalls.is_empty() {
        eprintln!(
            "warning: {} shortfall(s) against the target mix; what was done is in the notes \
             above and in mix_report.md",
            p.shortfalls.len()
        );
    }
    if report.dropped.total() > 0 {
        let d = &report.dropped;
        println!(
            "  left out: {} duplicate val/test ids, {} train ids also in val/test, {} duplicate \
             train ids, {} materialised variants",
            d.duplicate_eval, d.train_in_eval, d.duplicate_train, d.variants
        );
    }
}
