//! `sv72 bench`: time the backbone forward and the per-image decode + preprocess cost.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::Ctx;
use crate::bench::{self, BenchOptions};
use crate::config::{Device, Dtype};

/// Flags of `sv72 bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A snapshot folder, or a random model of a named size: vits14, vits14-reg, vitb14,
    /// vitl14, dinov3-vits16, dinov3-vitl16 (default: backbone.model when it is a folder).
    #[arg(long, value_name = "DIR|SIZE")]
    pub backbone: Option<String>,
    /// `cpu` or `cuda` (default: backbone.device).
    #[arg(long)]
    pub device: Option<Device>,
    /// f32, f16 or bf16 (half precision on CUDA only; default: backbone.dtype).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<Dtype>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    /// Square input side in pixels.
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    /// Measuring seconds per batch size, after two warm-up batches.
    #[arg(long, default_value_t = 6.0)]
    pub secs: f64,
    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    serde_yaml::from_str(s).map_err(|_| format!("{s:?}: expected f32, f16 or bf16"))
}

/// Runs `sv72 bench`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let bb = &ctx.config.backbone;
    let opts = BenchOptions {
        backbone: args.backbone.unwrap_or_else(|| bb.model.clone()),
        device: args.device.unwrap_or(bb.device),
        dtype: args.dtype.unwrap_or(bb.dtype),
        batches: args.batch,
        image_size: args.image_size,
        secs: args.secs,
        decode_images: 16,
    };
    let report = bench::run(&opts)?;
    print!("{}", report.to_text());
    if let Some(path) = args.json {
        crate::util::fsx::write_json_atomic(&path, &report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
