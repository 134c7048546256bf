//! `sv72 generate`: images from an image-generation server for mine-hard's prompts or a list
//! (`generate::stage`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;
use crate::config::{GenBackend, GenMode};
use crate::generate::stage::{parse_label, run_generate, GenOverrides};
use crate::generate::GenerateRequest;

/// Flags of `sv72 generate` (each overrides its `generate.*` config key).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// mine-hard output folder or its prompts.jsonl, a JSON-lines prompt list (`prompt`, and
    /// optionally `id`, `label`, `negative_prompt`, `seed`, `image`, `strength`), or a text file
    /// with one prompt per line.
    #[arg(long, value_name = "FILE_OR_DIR")]
    pub prompts: PathBuf,
    /// Output folder: images/, generated.jsonl (resume journal) and generated.csv (for
    /// `sv72 ingest --csv`). Re-running with the same folder skips finished images.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[arg(long, value_enum)]
    pub backend: Option<GenBackend>,
    /// Server base URL (default: the backend's usual local address, or api.openai.com).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Model or checkpoint name.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, value_enum)]
    pub mode: Option<GenMode>,
    /// Label of prompts that carry none (`roadwork` or `none`; required for a text list).
    #[arg(long, value_name = "roadwork|none")]
    pub label: Option<String>,
    /// Images per prompt.
    #[arg(long, value_name = "N")]
    pub per_prompt: Option<u32>,
    /// Images asked for per request.
    #[arg(long, value_name = "N")]
    pub batch: Option<u32>,
    /// Requests in flight at once.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Image-to-image denoising strength for prompts that give none.
    #[arg(long, value_name = "S")]
    pub strength: Option<f64>,
    /// ComfyUI workflow template (text-to-image).
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<PathBuf>,
    /// Use only the first N prompts.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Runs `sv72 generate`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let over = GenOverrides {
        backend: args.backend,
        endpoint: args.endpoint,
        model: args.model,
        mode: args.mode,
        images_per_prompt: args.per_prompt,
        batch: args.batch,
        concurrency: args.concurrency,
        strength: args.strength,
        workflow: args.workflow,
    };
    let req = GenerateRequest {
        prompts: args.prompts,
        out: args.out,
        label: args.label.as_deref().map(parse_label).transpose()?,
        limit: args.limit,
    };
    run_generate(&ctx.config.generate, &over, &req, &mut |s| print!("{s}"))?;
    Ok(ExitCode::SUCCESS)
}
