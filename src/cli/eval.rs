//! `sv72 eval`: evaluates a checkpoint as validators score it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::Ctx;
use crate::data::manifest::{manifest_path, read_manifest, Split};
use crate::train::data::rows_of;
use crate::train::{resolve_checkpoint, Checkpoint};

/// Flags of `sv72 eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint folder or a `latest` file (default: `<paths.checkpoints>/latest`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// `MANIFEST[:split]`: dataset name, folder or `.parquet`, and split (default `test`).
    /// Default: the checkpoint's training manifest.
    #[arg(long, value_name = "MANIFEST[:SPLIT]")]
    pub on: Option<String>,
    /// Where to write report.json, report.md and plots (default: the checkpoint folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Splits `MANIFEST[:split]`; a trailing `:train|val|test` is the split.
pub fn parse_on(on: &str) -> Result<(String, Split)> {
    if let Some((m, s)) = on.rsplit_once(':') {
        if let Ok(split) = s.parse::<Split>() {
            if m.is_empty() {
                bail!("--on {on:?}: the manifest part is empty");
            }
            return Ok((m.to_string(), split));
        }
    }
    Ok((on.to_string(), Split::Test))
}

/// Runs `sv72 eval`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let cfg = &ctx.config;
    let dir = resolve_checkpoint(args.checkpoint.as_deref(), &cfg.paths.checkpoints)?;
    let ck = Checkpoint::<crate::backend::Cpu>::load(&dir, &Default::default())?;
    let (name, split) = match &args.on {
        Some(on) => parse_on(on)?,
        None => (ck.info.manifest.path.clone(), Split::Test),
    };
    let path = manifest_path(&cfg.paths.datasets, &name);
    let rows = read_manifest(&path)
        .with_context(|| format!("cannot read the eval manifest {}", path.display()))?;
    let rows = rows_of(&rows, split);
    if rows.is_empty() {
        bail!("{} has no {split} rows to evaluate", path.display());
    }
    // Remaining plumbing: model::load_backbone(ck.info.backbone) → validator_challenge views per
    // level (train::data::challenge_views) → gather → ck.predict_proba → eval::build_report /
    // write_report, plus batch-1 latency. It waits for `augment::validator_challenge`, which is
    // not on main yet.
    bail!(
        "eval: checkpoint {} and {} {split} images found, but this build cannot make validator \
         challenges yet: `augment::validator_challenge` is not merged. Nothing was written.",
        dir.display(),
        rows.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_parses_split_suffix() {
        assert_eq!(
            parse_on("demo-mix:val").unwrap(),
            ("demo-mix".into(), Split::Val)
        );
        assert_eq!(
            parse_on("demo-mix").unwrap(),
            ("demo-mix".into(), Split::Test)
        );
        assert_eq!(
            parse_on("/a/b.parquet:test").unwrap(),
            ("/a/b.parquet".into(), Split::Test)
        );
        assert!(parse_on(":val").is_err());
    }
}
