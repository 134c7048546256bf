//! `sv72 synth-mix` as a library call: reads the input manifests, runs [`build_mix`], and writes
//! `datasets/<name>/manifest.parquet` with `mix_report.{json,md}` beside it, then the optional
//! materialised variants and augmentation preview.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::manifest::{manifest_path, read_manifest, write_manifest, ManifestRow, SourceKind};
use super::mix::{
    build_mix, Balance, InputSummary, MixOutcome, MixReport, MixRequest, ShortfallPolicy,
};
use super::variants;
use crate::config::{AugmentConfig, Config};
use crate::util::fsx;

/// What to mix (the flags of `sv72 synth-mix`; `None` takes the `mix.*` setting).
#[derive(Debug, Clone, Default)]
pub struct SynthMixRequest {
    pub real: Vec<String>,
    pub synthetic: Vec<String>,
    pub input: Vec<String>,
    pub name: String,
    pub fraction: Option<f64>,
    pub balance: Option<Balance>,
    pub seed: Option<u64>,
    pub per_label: Option<usize>,
    pub allow_ratio_shortfall: bool,
    pub dry_run: bool,
    pub preview: Option<usize>,
    pub materialize: Option<usize>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct SynthMixOutcome {
    pub report: MixReport,
    /// `None` for a dry run.
    pub manifest: Option<PathBuf>,
    pub rows: usize,
    /// Variants materialised and images that could not be read for them.
    pub variants: Option<(usize, usize)>,
    /// The contact sheet and its samples per level.
    pub preview: Option<(PathBuf, usize)>,
}

/// A read input manifest and the role it was passed with.
struct Input {
    path: PathBuf,
    role: Option<SourceKind>,
    rows: Vec<ManifestRow>,
}

fn read_inputs(req: &SynthMixRequest, datasets: &Path) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    let named = req
        .real
        .iter()
        .map(|n| (n, Some(SourceKind::Real)))
        .chain(
            req.synthetic
                .iter()
                .map(|n| (n, Some(SourceKind::Synthetic))),
        )
        .chain(req.input.iter().map(|n| (n, None)));
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

/// The mix request and seed from the request and `mix.*`.
pub fn mix_request(req: &SynthMixRequest, cfg: &Config) -> Result<(MixRequest, u64)> {
    let m = &cfg.mix;
    let fraction = req.fraction.unwrap_or(m.synthetic_fraction);
    if !(0.0..=1.0).contains(&fraction) {
        bail!("--fraction {fraction} must be within [0, 1]");
    }
    let policy = if req.allow_ratio_shortfall {
        ShortfallPolicy::AllowRatioShortfall
    } else {
        ShortfallPolicy::ExactRatio
    };
    Ok((
        MixRequest {
            fraction,
            balance: req.balance.unwrap_or(m.balance),
            policy,
            per_label: req.per_label,
        },
        req.seed.unwrap_or(m.seed),
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

/// Runs `sv72 synth-mix`; `on_plan` sees the plan before anything is written (a plan without
/// training images is then an error, and a dry run stops there).
pub fn run_synth_mix(
    cfg: &Config,
    req: &SynthMixRequest,
    on_plan: &mut dyn FnMut(&MixReport),
) -> Result<SynthMixOutcome> {
    let datasets = cfg.paths.datasets.clone();
    if req.name.is_empty()
        || req.name.starts_with('.')
        || req.name.contains(['/', '\\'])
        || req.name == "store"
    {
        bail!(
            "--name {:?} is not a usable dataset name: use letters, digits, `-`, `_` or `.`",
            req.name
        );
    }
    let (mix, seed) = mix_request(req, cfg)?;
    let inputs = read_inputs(req, &datasets)?;
    let out_manifest = manifest_path(&datasets, &req.name);
    for i in &inputs {
        if same_file(&i.path, &out_manifest) {
            bail!(
                "--name {} would overwrite its own input {}; choose another name",
                req.name,
                i.path.display()
            );
        }
    }

    let all: Vec<ManifestRow> = inputs.iter().flat_map(|i| i.rows.iter().cloned()).collect();
    let outcome = build_mix(&all, &mix, seed)?;
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
    let report = MixReport::new(&req.name, seed, summaries, &outcome);
    on_plan(&report);

    if outcome.train_rows().next().is_none() {
        bail!(
            "the mix would have no training images (see the notes above); nothing was written. \
             Lower --fraction, add --synthetic/--real inputs, or pass --allow-ratio-shortfall"
        );
    }
    if req.dry_run {
        return Ok(SynthMixOutcome {
            report,
            manifest: None,
            rows: outcome.rows.len(),
            variants: None,
            preview: None,
        });
    }
    let mut outcome = outcome;
    let k = req.materialize.unwrap_or(cfg.mix.materialize_variants);
    let mut made = None;
    if k > 0 {
        let (variants, failed) =
            variants::materialize(&outcome.rows, k, &datasets, &cfg.augment, seed)?;
        made = Some((variants.len(), failed));
        outcome.rows.extend(variants);
    }
    write_mix(&out_manifest, &report, &outcome)?;
    let mut preview = None;
    if let Some(n) = req.preview.filter(|n| *n > 0) {
        let path = out_manifest.with_file_name("preview.png");
        write_preview(&path, &outcome, n, &datasets, &cfg.augment, seed)?;
        preview = Some((path, n));
    }
    Ok(SynthMixOutcome {
        report,
        manifest: Some(out_manifest),
        rows: outcome.rows.len(),
        variants: made,
        preview,
    })
}

/// A contact sheet of the validator levels on up to `n` train images, alternating labels so both
/// classes show.
fn write_preview(
    path: &Path,
    outcome: &MixOutcome,
    n: usize,
    datasets: &Path,
    aug: &AugmentConfig,
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
    crate::augment::preview::write_contact_sheet(path, &images, n, aug, seed)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
