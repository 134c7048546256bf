//! `sv72 generate`: images from an image-generation server for mine-hard's prompts or a list.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};

use super::Ctx;
use crate::config::{GenBackend, GenMode};
use crate::generate::{self, prompts::label_from_str, GenerateRequest, Secret};

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
    let mut cfg = ctx.config.generate.clone();
    if let Some(b) = args.backend {
        if cfg.backend != b && args.endpoint.is_none() {
            // The configured endpoint belongs to the configured backend.
            cfg.endpoint = None;
        }
        cfg.backend = b;
    }
    if args.endpoint.is_some() {
        cfg.endpoint = args.endpoint;
    }
    if args.model.is_some() {
        cfg.model = args.model;
    }
    if let Some(m) = args.mode {
        cfg.mode = m;
    }
    if let Some(n) = args.per_prompt {
        cfg.images_per_prompt = n.max(1);
    }
    if let Some(n) = args.batch {
        cfg.batch = n.max(1);
    }
    if let Some(n) = args.concurrency {
        cfg.concurrency = n.max(1);
    }
    if let Some(s) = args.strength {
        if !(0.0..=1.0).contains(&s) {
            bail!("--strength {s} must be within [0, 1]");
        }
        cfg.strength = s;
    }
    if args.workflow.is_some() {
        cfg.comfyui.workflow = args.workflow;
    }
    let label = match args.label.as_deref() {
        None => None,
        Some(l) => Some(
            label_from_str(l)
                .ok_or_else(|| anyhow::anyhow!("--label {l:?}: use roadwork or none"))?,
        ),
    };
    let key_env = cfg
        .api_key_env
        .clone()
        .unwrap_or_else(|| cfg.backend.default_key_env().to_string());
    let key = std::env::var(&key_env).ok().and_then(Secret::new);
    let req = GenerateRequest {
        prompts: args.prompts,
        out: args.out,
        label,
        limit: args.limit,
    };
    let report = generate::run(&req, &cfg, key)?;
    print!("{}", generate::format_report(&report));
    if !report.failures.is_empty() {
        bail!(
            "{} image(s) failed (first: {}); re-run the same command to retry them (finished images are kept)",
            report.failed_images(),
            report.failures[0].error
        );
    }
    Ok(ExitCode::SUCCESS)
}
