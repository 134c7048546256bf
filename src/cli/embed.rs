//! `sv72 embed`: backbone features of images, folders or a manifest into a safetensors file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;

use super::Ctx;
use crate::backend::{on_device, Device, OnBackend};
use crate::config::PreprocessKind;
use crate::features::embed::{self, EmbedJob};
use crate::features::{backbone_key, FeatureCache};
use crate::model::hub;
use crate::model::preprocess::Preprocess;

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
    #[arg(long, value_enum)]
    pub device: Option<Device>,
    /// Images per forward pass (default: backbone.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// `validator` (fixed 224x224 path) or `processor` (the checkpoint's own config).
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessKind>,
}

/// Runs `sv72 embed`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let cfg = &ctx.config;
    let device = args.device.unwrap_or(cfg.backbone.device);
    let snapshot = hub::resolve_backbone(&args.backbone, &cfg.backbone.revision)?;
    let kind = args.preprocess.unwrap_or(cfg.backbone.preprocess);
    let preprocess = Preprocess::for_kind(kind, &snapshot, cfg.augment.target_size)?;
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
    let index = on_device(
        device,
        cfg.backbone.dtype,
        EmbedOn {
            snapshot: &snapshot,
            job: &job,
            cache: &mut cache,
        },
    )?;
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

/// `embed::run_embed` on the backend `on_device` picks.
struct EmbedOn<'a> {
    snapshot: &'a Path,
    job: &'a EmbedJob<'a>,
    cache: &'a mut FeatureCache,
}

impl OnBackend for EmbedOn<'_> {
    type Out = embed::EmbedIndex;
    fn run<B: Backend>(self, dev: &B::Device, _name: &str) -> Result<embed::EmbedIndex> {
        let model = crate::model::load_backbone::<B>(self.snapshot, dev)?;
        embed::run_embed::<B, _>(model.as_ref(), dev, self.job, self.cache)
    }
}
