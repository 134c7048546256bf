//! `sv72 synth-mix`: builds a training-mix manifest at a target synthetic share per label.
//!
//! Reads the input manifests, runs [`crate::data::mix::build_mix`], and writes
//! `datasets/<name>/manifest.parquet` with `mix_report.{json,md}` beside it. Augmentation previews
//! and materialised variants hook in after [`write_mix`], on the [`MixOutcome`]'s train rows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::Ctx;
use crate::data::manifest::{
    manifest_path, read_manifest, write_manifest, ManifestRow, SourceKind,
};
use crate::data::mix::{
    build_mix, Balance, InputSummary, MixOutcome, MixReport, MixRequest, ShortfallPolicy,
};
use crate::data::variants;
use crate::util::fsx;

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

/// A read input manifest and the role it was passed with.
struct Input {
    path: PathBuf,
    role: Option<SourceKind>,
    rows: Vec<ManifestRow>,
}

fn read_inputs(args: &Args, datasets: &Path) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    let named = args
        .real
        .iter()
        .map(|n| (n, Some(SourceKind::Real)))
        .chain(
            args.synthetic
                .iter()
                .map(|n| (n, Some(SourceKind::Synthetic))),
        )
        .chain(args.input.iter().map(|n| (n, None)));
    for (name, role) in named {
        let path = manifest_path(datasets, name);
        if !path.exists() {
            bail!(
                "no manifest for {name:?}: {} does not exist; run `sv72 ingest --name {name}` \
                 first or pass a path to a manifest.parquet",
                path.display()
            );
        }
        let rows = read_manifest(&path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        if let Some(role) = role {
            let wrong = rows.iter().filter(|r| r.source != role).count();
            if wrong > 0 {
                bail!(
                    "{} was passed with --{role} but {wrong} of its {} rows have a different \
                     source; pass it with --input to use each row's own source, or re-ingest \
                     it with the right --source",
                    path.display(),
                    rows.len()
                );
            }
        }
        out.push(Input { path, role, rows });
    }
    if out.is_empty() {
        bail!("no inputs: pass at least one --real, --synthetic or --input manifest");
    }
    Ok(out)
}

/// The request from config and flags.
pub fn request(args: &Args, ctx: &Ctx) -> Result<(MixRequest, u64)> {
    let cfg = &ctx.config.mix;
    let fraction = args.fraction.unwrap_or(cfg.synthetic_fraction);
    if !(0.0..=1.0).contains(&fraction) {
        bail!("--fraction {fraction} must be within [0, 1]");
    }
    let balance = args.balance.unwrap_or(cfg.balance);
    let policy = if args.allow_ratio_shortfall {
        ShortfallPolicy::AllowRatioShortfall
    } else {
        ShortfallPolicy::ExactRatio
    };
    Ok((
        MixRequest {
            fraction,
            balance,
            policy,
            per_label: args.per_label,
        },
        args.seed.unwrap_or(cfg.seed),
    ))
}

/// Writes the manifest and both reports of a mix into `out_manifest`'s folder, atomically each.
pub fn write_mix(out_manifest: &Path, report: &MixReport, outcome: &MixOutcome) -> Result<()> {
    let dir = out_manifest.parent().unwrap_or(Path::new("."));
    write_manifest(out_manifest, &outcome.rows)
        .with_context(|| format!("cannot write {}", out_manifest.display()))?;
    fsx::write_json_atomic(&dir.join("mix_report.json"), report)?;
    fsx::write_atomic(&dir.join("mix_report.md"), report.to_markdown().as_bytes())?;
    Ok(())
}

/// Runs `sv72 synth-mix`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let datasets = ctx.config.paths.datasets.clone();
    if args.name.is_empty()
        || args.name.starts_with('.')
        || args.name.contains(['/', '\\'])
        || args.name == "store"
    {
        bail!(
            "--name {:?} is not a usable dataset name: use letters, digits, `-`, `_` or `.`",
            args.name
        );
    }
    let (req, seed) = request(&args, ctx)?;
    let inputs = read_inputs(&args, &datasets)?;
    let out_manifest = manifest_path(&datasets, &args.name);
    for i in &inputs {
        if same_file(&i.path, &out_manifest) {
            bail!(
                "--name {} would overwrite its own input {}; choose another name",
                args.name,
                i.path.display()
            );
        }
    }

    let all: Vec<ManifestRow> = inputs.iter().flat_map(|i| i.rows.iter().cloned()).collect();
    let outcome = build_mix(&all, &req, seed)?;
    let summaries = inputs
        .iter()
        .map(|i| InputSummary {
            path: i.path.display().to_string(),
            role: i
                .role
                .map(|r| r.to_string())
                .unwrap_or_else(|| "any".into()),
            rows: i.rows.len(),
        })
        .collect();
    let report = MixReport::new(&args.name, seed, summaries, &outcome);
    print_summary(&report);

    if outcome.train_rows().next().is_none() {
        bail!(
            "the mix would have no training images (see the notes above); nothing was written. \
             Lower --fraction, add --synthetic/--real inputs, or pass --allow-ratio-shortfall"
        );
    }
    if args.dry_run {
        println!("--dry-run: nothing written");
        return Ok(ExitCode::SUCCESS);
    }
    let mut outcome = outcome;
    let k = args
        .materialize
        .unwrap_or(ctx.config.mix.materialize_variants);
    if k > 0 {
        let (variants, failed) =
            variants::materialize(&outcome.rows, k, &datasets, &ctx.config.augment, seed)?;
        println!(
            "materialised {} augmented variants ({k} per train image){}",
            variants.len(),
            if failed > 0 {
                format!(", {failed} images unreadable (skipped)")
            } else {
                String::new()
            }
        );
        outcome.rows.extend(variants);
    }
    write_mix(&out_manifest, &report, &outcome)?;
    println!(
        "wrote {} ({} rows) and mix_report.{{json,md}}",
        out_manifest.display(),
        outcome.rows.len()
    );
    if let Some(n) = args.preview.filter(|n| *n > 0) {
        let path = out_manifest.with_file_name("preview.png");
        write_preview(&path, &outcome, n, &datasets, ctx, seed)?;
        println!("wrote {} ({n} samples per validator level)", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A contact sheet of the validator levels on up to `n` train images, alternating labels so both
/// classes show.
fn write_preview(
    path: &Path,
    outcome: &MixOutcome,
    n: usize,
    datasets: &Path,
    ctx: &Ctx,
    seed: u64,
) -> Result<()> {
    let train: Vec<&ManifestRow> = outcome
        .train_rows()
        .filter(|r| r.variant_of.is_none())
        .collect();
    let (pos, neg): (Vec<&ManifestRow>, Vec<&ManifestRow>) =
        train.iter().partition(|r| r.label == 1);
    let mut picked = Vec::with_capacity(n);
    let mut images = Vec::with_capacity(n);
    for i in 0.. {
        if picked.len() >= n || (i >= pos.len() && i >= neg.len()) {
            break;
        }
        for side in [&pos, &neg] {
            if let Some(r) = side.get(i) {
                if picked.len() < n {
                    picked.push(*r);
                }
            }
        }
    }
    for r in picked {
        let p = r.resolve_path(datasets);
        images.push(
            image::open(&p).with_context(|| format!("preview: cannot read {}", p.display()))?,
        );
    }
    crate::augment::preview::write_contact_sheet(path, &images, n, &ctx.config.augment, seed)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
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
