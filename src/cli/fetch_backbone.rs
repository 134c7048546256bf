//! `sv72 fetch-backbone`: download a backbone snapshot into the Hugging Face cache layout.

use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;
use crate::model::hub::{self, FetchOptions};

/// Flags of `sv72 fetch-backbone`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model id on the Hub, e.g. facebook/dinov2-with-registers-small (default: backbone.model).
    #[arg(value_name = "ORG/NAME")]
    pub repo: Option<String>,
    /// Branch, tag or commit (default: backbone.revision).
    #[arg(long)]
    pub revision: Option<String>,
    /// Hub endpoint (default: HF_ENDPOINT, else https://huggingface.co).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
}

/// Runs `sv72 fetch-backbone`. The token comes from `HF_TOKEN` and is never printed.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let repo = args
        .repo
        .unwrap_or_else(|| ctx.config.backbone.model.clone());
    let revision = args
        .revision
        .unwrap_or_else(|| ctx.config.backbone.revision.clone());
    let mut opts = FetchOptions::from_env(&revision);
    if let Some(e) = args.endpoint {
        opts.endpoint = e;
    }
    let report = hub::fetch(&repo, &opts)?;
    for (file, bytes, downloaded) in &report.files {
        println!(
            "{:<32} {:>12} bytes  {}",
            file,
            bytes,
            if *downloaded { "downloaded" } else { "cached" }
        );
    }
    println!(
        "{repo}@{revision} = commit {} in {}",
        report.commit,
        report.snapshot.display()
    );
    Ok(ExitCode::SUCCESS)
}
