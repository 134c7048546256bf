//! `sv72 ingest`: class folders, Hugging Face Parquet files and CSV lists into a deduplicated,
//! near-duplicate-grouped, split manifest under `datasets/<name>/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::Ctx;
use crate::data::ingest::{format_report, ingest, IngestOptions};
use crate::data::manifest::SourceKind;
use crate::data::sources::{SourceSpec, Tag};

/// Flags of `sv72 ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset name: writes `<paths.datasets>/<NAME>/manifest.parquet`. Re-running with the same
    /// name adds new images and keeps every earlier row and split.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Folder with one subfolder per class (`roadwork/` and `none/`, searched recursively).
    #[arg(long, value_name = "DIR")]
    pub folder: Vec<PathBuf>,
    /// Hugging Face datasets Parquet file, folder of them, or glob (`data/train-*.parquet`).
    #[arg(long, value_name = "FILE_OR_GLOB")]
    pub parquet: Vec<String>,
    /// CSV with columns `path,label[,source,generator,group,parent]` (`sv72 generate`'s
    /// generated.csv as it is); relative paths are from the CSV's folder. `parent` (an i2i
    /// source's content id) puts an image in its parent's group and split.
    #[arg(long, value_name = "FILE")]
    pub csv: Vec<PathBuf>,
    /// Whether the images are real photos or generated (CSV `source` column overrides).
    #[arg(long, value_name = "real|synthetic")]
    pub source: Option<SourceKind>,
    /// Generator or collection name, e.g. `natix`, `sdxl-t2i`, `cosmos` (CSV column overrides).
    #[arg(long, value_name = "G")]
    pub generator: Option<String>,
    /// pHash Hamming radius for near-duplicate groups (default: ingest.near_dup_radius).
    #[arg(long, value_name = "R")]
    pub near_dup_radius: Option<u32>,
    /// Quarantine images with more pixels than this (default: ingest.max_pixels).
    #[arg(long, value_name = "N")]
    pub max_pixels: Option<u64>,
    /// Quarantine files larger than this many bytes (default: ingest.max_file_bytes).
    #[arg(long, value_name = "BYTES")]
    pub max_file_bytes: Option<u64>,
    /// Worker threads (default: ingest.threads; 0 = all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Column naming groups that must stay whole in one split, e.g. a video id in the Parquet
    /// (default: ingest.group_column; CSVs use a `group` column when they have one).
    #[arg(long, value_name = "COLUMN")]
    pub group_column: Option<String>,
}

/// Runs `sv72 ingest`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.ingest.clone();
    if let Some(r) = args.near_dup_radius {
        cfg.near_dup_radius = r;
    }
    if let Some(n) = args.max_pixels {
        cfg.max_pixels = n;
    }
    if let Some(n) = args.max_file_bytes {
        cfg.max_file_bytes = n;
    }
    if let Some(n) = args.threads {
        cfg.threads = n;
    }
    if args.group_column.is_some() {
        cfg.group_column = args.group_column;
    }
    let spec = SourceSpec {
        folders: args.folder,
        parquets: args.parquet,
        csvs: args.csv,
    };
    let opts = IngestOptions {
        datasets_root: ctx.config.paths.datasets.clone(),
        name: args.name,
        ingest: cfg,
        split: ctx.config.split.clone(),
        tag: Tag {
            source: args.source,
            generator: args.generator,
        },
    };
    let report = ingest(&spec, &opts)?;
    print!("{}", format_report(&report));
    Ok(ExitCode::SUCCESS)
}
