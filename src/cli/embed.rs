//! `sv72 embed`: backbone features of images, folders or a manifest into a safetensors file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::args::DeviceArg;
use super::Ctx;
use crate::config::PreprocessKind;
use crate::features::embed::{embed_to_file, index_path, EmbedRequest};

/// Flags of `sv72 embed`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot folder (with config.json) or a model id in the Hugging Face cache.
    #[arg(value_name = "BACKBONE")]
    pub backbone: String,
    /// Image files and folders (searched recursively).
    #[arg(value_name = "IMAGE_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Also embed every image of this manifest (dataset name, folder or manifest.parquet).
    #[arg(long, value_name = "M")]
    pub manifest: Option<PathBuf>,
    /// Output safetensors; the input list goes to the same name with `.json`.
    #[arg(long, value_name = "FILE.safetensors")]
    pub out: PathBuf,
    /// Also store the preprocessed `pixel_values` [N, 3, H, W].
    #[arg(long)]
    pub dump_pixels: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Images per forward pass (default: backbone.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// `validator` (fixed 224x224 path) or `processor` (the checkpoint's own config).
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessKind>,
}

/// Runs `sv72 embed`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let req = EmbedRequest {
        backbone: args.backbone,
        inputs: args.inputs,
        manifest: args.manifest,
        out: args.out,
        dump_pixels: args.dump_pixels,
        device: args.device.device,
        batch_size: args.batch_size,
        preprocess: args.preprocess,
    };
    let out = embed_to_file(&ctx.config, &req)?;
    let index = &out.index;
    println!(
        "embedded {} images ({} from cache, {} computed, {} skipped) -> {} and {}",
        index.rows.len(),
        index.cache_hits,
        index.computed,
        index.skipped.len(),
        req.out.display(),
        index_path(&req.out).display()
    );
    println!(
        "feature cache {}: {} entries in {} segments",
        out.cache_dir.display(),
        out.cache.entries,
        out.cache.segments
    );
    Ok(ExitCode::SUCCESS)
}
