//! `sv72 embed`: backbone features of images, folders or a manifest into a safetensors file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;

use super::Ctx;
use crate::features::embed::{self, EmbedJob};
use crate::features::{backbone_key, FeatureCache};
use crate::model::preprocess::Preprocess;
use crate::model::{hub, FeatureExtractor};

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
    /// `cpu` or `cuda` (default: backbone.device).
    #[arg(long)]
    pub device: Option<String>,
    /// Images per forward pass (default: backbone.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// `validator` (fixed 224x224 path) or `processor` (the checkpoint's own config).
    #[arg(long)]
    pub preprocess: Option<String>,
}

/// Runs `sv72 embed`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let cfg = &ctx.config;
    let device = args
        .device
        .clone()
        .unwrap_or_else(|| cfg.backbone.device.clone());
    let snapshot = hub::resolve_backbone(&args.backbone, &cfg.backbone.revision)?;
    let kind = args
        .preprocess
        .clone()
        .unwrap_or_else(|| cfg.backbone.preprocess.clone());
    let preprocess = Preprocess::for_kind(&kind, &snapshot, cfg.augment.target_size)?;
    let mut inputs = embed::collect_inputs(&args.inputs)?;
    if let Some(m) = &args.manifest {
        inputs.extend(embed::manifest_inputs(m, &cfg.paths.datasets)?);
    }
    if inputs.is_empty() {
        bail!("no inputs: give image files, folders or --manifest");
    }
    let bb_key = backbone_key(&snapshot, &cfg.paths.feature_cache)?;
    let mut cache = FeatureCache::open(&cfg.paths.feature_cache, &bb_key, &preprocess.id())?;
    let job = EmbedJob {
        inputs,
        preprocess: &preprocess,
        batch_size: args.batch_size.unwrap_or(cfg.backbone.batch_size),
        out: args.out.clone(),
        dump_pixels: args.dump_pixels,
        backbone_name: args.backbone.clone(),
        backbone_key: bb_key,
    };
    let index = match device.as_str() {
        "cpu" => {
            let dev = Default::default();
            let model = load_model::<crate::backend::Cpu>(&snapshot, &dev)?;
            embed::run_embed::<crate::backend::Cpu, _>(model.as_ref(), &dev, &job, &mut cache)?
        }
        "cuda" => run_cuda(&snapshot, &cfg.backbone.dtype, &job, &mut cache)?,
        other => bail!("--device {other:?}: use `cpu` or `cuda`"),
    };
    let stats = cache.stats();
    println!(
        "embedded {} images ({} from cache, {} computed, {} skipped) -> {} and {}",
        index.rows.len(),
        index.cache_hits,
        index.computed,
        index.skipped.len(),
        args.out.display(),
        embed::index_path(&args.out).display()
    );
    println!(
        "feature cache {}: {} entries in {} segments",
        cache.dir().display(),
        stats.entries,
        stats.segments
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "cuda")]
fn run_cuda(
    snapshot: &Path,
    dtype: &str,
    job: &EmbedJob<'_>,
    cache: &mut FeatureCache,
) -> Result<embed::EmbedIndex> {
    use burn::backend::Cuda;
    let dev = Default::default();
    match dtype {
        "f16" => {
            let m = load_model::<Cuda<half::f16>>(snapshot, &dev)?;
            embed::run_embed::<Cuda<half::f16>, _>(m.as_ref(), &dev, job, cache)
        }
        "bf16" => {
            let m = load_model::<Cuda<half::bf16>>(snapshot, &dev)?;
            embed::run_embed::<Cuda<half::bf16>, _>(m.as_ref(), &dev, job, cache)
        }
        _ => {
            let m = load_model::<Cuda<f32>>(snapshot, &dev)?;
            embed::run_embed::<Cuda<f32>, _>(m.as_ref(), &dev, job, cache)
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(
    _snapshot: &Path,
    _dtype: &str,
    _job: &EmbedJob<'_>,
    _cache: &mut FeatureCache,
) -> Result<embed::EmbedIndex> {
    bail!("--device cuda needs a CUDA build: rebuild with `cargo build --release --features cuda`, or use --device cpu")
}

/// Loads the snapshot's backbone on backend `B`.
fn load_model<B: Backend>(
    snapshot: &Path,
    device: &B::Device,
) -> Result<Box<dyn FeatureExtractor<B>>> {
    crate::model::load_backbone::<B>(snapshot, device)
}
