//! `sv72 deploy`: point `exports/deployed` at an export.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::Ctx;
use crate::config::Device;
use crate::export;
use crate::infer::{model_loader, ModelRef};

/// Flags of `sv72 deploy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Export folder or pointer file (default: paths.exports/latest).
    pub export: Option<PathBuf>,
    /// Skip loading the export on the CPU before switching (checksums and card are still checked).
    #[arg(long)]
    pub no_load_check: bool,
}

/// Runs `sv72 deploy`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let cfg = &ctx.config;
    let root = &cfg.paths.exports;
    let target = args
        .export
        .clone()
        .unwrap_or_else(|| root.join(export::LATEST));
    let dir = ModelRef::export(&target)?;
    let card = export::verify_export(&dir)
        .with_context(|| format!("refusing to deploy {}", dir.display()))?;
    if !args.no_load_check {
        let loader = model_loader(cfg, Device::Cpu)?;
        loader(&dir)
            .with_context(|| format!("refusing to deploy {}: it does not load", dir.display()))?;
    }
    let previous = export::deploy(root, &dir)?;
    let old = previous
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(none)".into());
    println!(
        "deployed: {old} -> {} ({} {}, submitted by {})",
        dir.display(),
        card.model_name,
        card.version,
        card.submitted_by
    );
    Ok(ExitCode::SUCCESS)
}
