//! `sv72 bench`: time the backbone forward and the per-image decode + preprocess cost, or
//! (`--train`) fine-tuning optimiser steps.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::finetune::ModeArg;
use super::Ctx;
use crate::bench::{self, BenchOptions, TrainBenchOptions};
use crate::config::{Device, Dtype, FinetuneMode};
use crate::train::head::HeadKind;

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
    /// f32, f16 or bf16 (f16 only on CUDA, bf16 on CUDA or an AMX-BF16 / AVX512-BF16 CPU; default: backbone.dtype).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<Dtype>,
    /// Batch sizes, comma-separated (default 1,8; with --train one size, default 32).
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Square input side in pixels.
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    /// Measuring seconds per batch size, after two warm-up batches.
    #[arg(long, default_value_t = 6.0)]
    pub secs: f64,
    /// Time `sv72 finetune` optimiser steps (forward + backward + AdamW) in this mode instead
    /// of the forward; the rest of the fine-tune settings come from `finetune.*`.
    #[arg(long, value_name = "MODE")]
    pub train: Option<ModeArg>,
    /// With --train: timed optimiser steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// With --train: untimed optimiser steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup_steps: usize,
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
    let backbone = args.backbone.unwrap_or_else(|| bb.model.clone());
    let device = args.device.unwrap_or(bb.device);
    let dtype = args.dtype.unwrap_or(bb.dtype);
    if let Some(mode) = args.train {
        let batch = match args.batch[..] {
            [] => 32,
            [b] => b,
            _ => anyhow::bail!("--batch with --train: give one batch size, e.g. --batch 32"),
        };
        let mut finetune = ctx.config.finetune.clone();
        finetune.mode = match mode {
            ModeArg::Lora => FinetuneMode::Lora,
            ModeArg::Partial => FinetuneMode::Partial,
            ModeArg::Full => FinetuneMode::Full,
        };
        finetune.batch_size = batch;
        finetune.grad_accum = 1;
        let opts = TrainBenchOptions {
            backbone,
            device,
            dtype,
            finetune,
            head: HeadKind::from_config(&ctx.config.head)?,
            image_size: args.image_size,
            warmup_steps: args.warmup_steps,
            steps: args.steps,
        };
        let report = bench::train::run(&opts)?;
        print!("{}", report.to_text());
        return write_json(args.json, &report);
    }
    let opts = BenchOptions {
        backbone,
        device,
        dtype,
        batches: if args.batch.is_empty() {
            vec![1, 8]
        } else {
            args.batch
        },
        image_size: args.image_size,
        secs: args.secs,
        decode_images: 16,
    };
    let report = bench::run(&opts)?;
    print!("{}", report.to_text());
    write_json(args.json, &report)
}

fn write_json(path: Option<PathBuf>, report: &impl serde::Serialize) -> Result<ExitCode> {
    if let Some(path) = path {
        crate::util::fsx::write_json_atomic(&path, report)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
