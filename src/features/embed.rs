//! Batched feature computation through the cache, and the `sv72 embed` artifact.
//!
//! `sv72 embed` writes `FILE.safetensors` with `cls`, `pooler`, `patch_mean` `[N, D]` f32 (and
//! `pixel_values` `[N, 3, H, W]` when asked) plus `FILE.json` listing the inputs in row order
//! (`path`, content `id` = blake3 of the file bytes, `width`, `height`) and the skipped inputs
//! with a reason. Other tools rely on this layout: keep it stable.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use image::DynamicImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::backbone_key;
use super::cache::{FeatureCache, FeatureRow};
use crate::backend::{on_device, Device, OnBackend};
use crate::config::{Config, PreprocessKind};
use crate::model::hub;
use crate::model::preprocess::Preprocess;
use crate::model::FeatureExtractor;
use crate::util::{fsx, hash, progress};

/// Computed rows are written to the cache in segments of this many (bounds loss on interrupt
/// and the number of segment files).
pub const FLUSH_ROWS: usize = 2048;

/// Aug id of an unaugmented view.
pub const NO_AUG: &str = "none";

/// Result of [`compute_features`], in the order of the keys.
#[derive(Debug, Default)]
pub struct Computed {
    /// `None` where the image failed to load (see `failed`).
    pub rows: Vec<Option<FeatureRow>>,
    /// `(key index, reason)` of views that could not be loaded or preprocessed.
    pub failed: Vec<(usize, String)>,
    pub cache_hits: usize,
    pub computed: usize,
}

fn tensor_rows<B: Backend>(t: Tensor<B, 2>) -> Result<(Vec<f32>, usize)> {
    let d = t.dims()[1];
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading backbone output: {e:?}"))?;
    Ok((v, d))
}

/// Runs `extractor` on preprocessed `[n, 3, h, w]` pixels and splits the output into rows.
pub fn extract_rows<B: Backend, E: FeatureExtractor<B> + ?Sized>(
    extractor: &E,
    device: &B::Device,
    pixels: Vec<f32>,
    n: usize,
    h: usize,
    w: usize,
) -> Result<Vec<FeatureRow>> {
    let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, h, w]), device);
    let out = extractor.extract(x, false);
    let (cls, d) = tensor_rows(out.cls)?;
    let (pooler, dp) = tensor_rows(out.pooler)?;
    let (pm, dm) = tensor_rows(out.patch_mean)?;
    if dp != d || dm != d || cls.len() != n * d {
        bail!("backbone returned inconsistent output shapes");
    }
    Ok((0..n)
        .map(|i| FeatureRow {
            cls: cls[i * d..(i + 1) * d].to_vec(),
            pooler: pooler[i * d..(i + 1) * d].to_vec(),
            patch_mean: pm[i * d..(i + 1) * d].to_vec(),
        })
        .collect())
}

/// Preprocessed pixels and their `(height, width)`.
type Prepared = (Vec<f32>, (u32, u32));
/// Views of one output size: `(size, [(key index, pixels)])`.
type Group = ((u32, u32), Vec<(usize, Vec<f32>)>);

/// Features of the views `keys` = `(image_id, aug_id)`, served from `cache` where present and
/// otherwise computed in batches of `batch_size` and added to it. `load(i)` produces view `i`'s
/// image (already augmented for aug ids other than [`NO_AUG`]); it is only called on misses, in
/// parallel. A view that fails to load is reported in `failed`, not fatal.
pub fn compute_features<B, E, L>(
    extractor: &E,
    device: &B::Device,
    keys: &[(String, String)],
    load: L,
    preprocess: &Preprocess,
    batch_size: usize,
    cache: &mut FeatureCache,
) -> Result<Computed>
where
    B: Backend,
    E: FeatureExtractor<B> + ?Sized,
    L: Fn(usize) -> Result<DynamicImage> + Sync,
{
    let batch_size = batch_size.max(1);
    let mut res = Computed {
        rows: vec![None; keys.len()],
        ..Default::default()
    };
    let mut misses = Vec::new();
    // The same view twice in one call is computed once.
    let mut first_of: HashMap<&(String, String), usize> = HashMap::new();
    let mut dups = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if let Some(&j) = first_of.get(k) {
            dups.push((i, j));
            continue;
        }
        first_of.insert(k, i);
        match cache.get(&k.0, &k.1) {
            Some(r) => {
                res.rows[i] = Some(r);
                res.cache_hits += 1;
            }
            None => misses.push(i),
        }
    }
    let bar = progress::bar(misses.len() as u64, "embed");
    let mut pending: Vec<(String, String, FeatureRow)> = Vec::new();
    for chunk in misses.chunks(batch_size) {
        let prepared: Vec<(usize, Result<Prepared>)> = chunk
            .par_iter()
            .map(|&i| {
                let r = load(i).and_then(|img| {
                    let (h, w) = preprocess.output_size(img.width(), img.height());
                    Ok((preprocess.pixel_values(&img)?, (h, w)))
                });
                (i, r)
            })
            .collect();
        // Group by output size: a recipe without a crop keeps aspect ratios.
        let mut groups: Vec<Group> = Vec::new();
        for (i, r) in prepared {
            match r {
                Ok((px, hw)) => match groups.iter_mut().find(|g| g.0 == hw) {
                    Some(g) => g.1.push((i, px)),
                    None => groups.push((hw, vec![(i, px)])),
                },
                Err(e) => res.failed.push((i, format!("{e:#}"))),
            }
        }
        for ((h, w), items) in groups {
            let n = items.len();
            let mut pixels = Vec::with_capacity(n * 3 * (h * w) as usize);
            for (_, px) in &items {
                pixels.extend_from_slice(px);
            }
            let rows = extract_rows(extractor, device, pixels, n, h as usize, w as usize)?;
            for ((i, _), row) in items.into_iter().zip(rows) {
                pending.push((keys[i].0.clone(), keys[i].1.clone(), row.clone()));
                res.rows[i] = Some(row);
                res.computed += 1;
            }
        }
        bar.inc(chunk.len() as u64);
        if pending.len() >= FLUSH_ROWS {
            cache.put_many(&pending)?;
            pending.clear();
        }
    }
    cache.put_many(&pending)?;
    bar.finish_and_clear();
    for (i, j) in dups {
        res.rows[i] = res.rows[j].clone();
        if res.rows[i].is_none() {
            if let Some((_, why)) = res.failed.iter().find(|(k, _)| *k == j).cloned() {
                res.failed.push((i, why));
            }
        }
    }
    res.failed.sort_by_key(|(i, _)| *i);
    Ok(res)
}

/// File extensions picked up when a folder is given.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "jfif",
];

/// Expands files and folders (recursively, sorted) into image paths; a folder contributes only
/// files with an image extension, a file given explicitly is always kept.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    Ok(out)
}

/// Image files under `dir`, recursively (symlinks followed; a link loop is an error).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in walkdir::WalkDir::new(dir).follow_links(true) {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let is_image = e
            .path()
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()));
        if !e.file_type().is_dir() && is_image {
            out.push(e.into_path());
        }
    }
    Ok(())
}

/// The image paths of a manifest, in row order. `manifest` is a dataset name under
/// `datasets_root`, a dataset folder, or a `manifest.parquet` path.
pub fn manifest_inputs(manifest: &Path, datasets_root: &Path) -> Result<Vec<PathBuf>> {
    let path = crate::data::manifest::manifest_path(datasets_root, &manifest.to_string_lossy());
    let rows = crate::data::manifest::read_manifest(&path)?;
    Ok(rows.iter().map(|r| r.resolve_path(datasets_root)).collect())
}

/// One embedded input in `FILE.json`, in tensor row order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRow {
    pub path: String,
    pub id: String,
    pub width: u32,
    pub height: u32,
}

/// An input left out of the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// `FILE.json` beside the `sv72 embed` safetensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedIndex {
    pub backbone: String,
    pub backbone_key: String,
    pub preprocess: String,
    pub hidden_size: usize,
    pub rows: Vec<EmbedRow>,
    pub skipped: Vec<Skipped>,
    pub cache_hits: usize,
    pub computed: usize,
}

/// What `sv72 embed` needs besides the model.
pub struct EmbedJob<'a> {
    pub inputs: Vec<PathBuf>,
    pub preprocess: &'a Preprocess,
    pub batch_size: usize,
    pub out: PathBuf,
    pub dump_pixels: bool,
    /// Shown in the JSON (the BACKBONE argument or snapshot folder).
    pub backbone_name: String,
    pub backbone_key: String,
}

/// What `sv72 embed` embeds (its flags; `None` takes the `backbone.*` setting).
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    /// Snapshot folder or a model id in the Hugging Face cache.
    pub backbone: String,
    /// Image files and folders (searched recursively).
    pub inputs: Vec<PathBuf>,
    /// Also every image of this manifest.
    pub manifest: Option<PathBuf>,
    pub out: PathBuf,
    pub dump_pixels: bool,
    pub device: Option<Device>,
    pub batch_size: Option<usize>,
    pub preprocess: Option<PreprocessKind>,
}

/// What `sv72 embed` did.
#[derive(Debug)]
pub struct EmbedOutcome {
    pub index: EmbedIndex,
    pub cache_dir: PathBuf,
    pub cache: super::cache::CacheStats,
}

/// Runs `sv72 embed`: resolves the backbone and its preprocessing, gathers the inputs and writes
/// their features (through the feature cache) to `req.out`.
pub fn embed_to_file(cfg: &Config, req: &EmbedRequest) -> Result<EmbedOutcome> {
    let snapshot = hub::resolve_backbone(&req.backbone, &cfg.backbone.revision)?;
    let kind = req.preprocess.unwrap_or(cfg.backbone.preprocess);
    let preprocess = Preprocess::for_kind(kind, &snapshot, cfg.augment.target_size)?;
    let mut inputs = collect_inputs(&req.inputs)?;
    if let Some(m) = &req.manifest {
        inputs.extend(manifest_inputs(m, &cfg.paths.datasets)?);
    }
    if inputs.is_empty() {
        bail!("no inputs: give image files, folders or --manifest");
    }
    let bb_key = backbone_key(&snapshot, &cfg.paths.feature_cache)?;
    let mut cache = FeatureCache::open(
        &cfg.paths.feature_cache,
        &bb_key,
        &super::cache::variant(&preprocess.id(), cfg.backbone.dtype),
    )?;
    let job = EmbedJob {
        inputs,
        preprocess: &preprocess,
        batch_size: req.batch_size.unwrap_or(cfg.backbone.batch_size),
        out: req.out.clone(),
        dump_pixels: req.dump_pixels,
        backbone_name: req.backbone.clone(),
        backbone_key: bb_key,
    };
    let index = on_device(
        req.device.unwrap_or(cfg.backbone.device),
        cfg.backbone.dtype,
        EmbedOn {
            snapshot: &snapshot,
            load: crate::model::LoadOptions::inference(cfg.backbone.dtype),
            job: &job,
            cache: &mut cache,
        },
    )?;
    Ok(EmbedOutcome {
        index,
        cache_dir: cache.dir().to_path_buf(),
        cache: cache.stats(),
    })
}

/// [`run_embed`] on the backend `on_device` picks.
struct EmbedOn<'a> {
    snapshot: &'a Path,
    load: crate::model::LoadOptions,
    job: &'a EmbedJob<'a>,
    cache: &'a mut FeatureCache,
}

impl OnBackend for EmbedOn<'_> {
    type Out = EmbedIndex;
    fn run<B: Backend>(self, dev: &B::Device, _name: &str) -> Result<EmbedIndex> {
        let model = crate::model::load_backbone::<B>(self.snapshot, dev, self.load)?;
        run_embed::<B, _>(model.as_ref(), dev, self.job, self.cache)
    }
}

/// The crate-wide rule (`data::decode`): PIL's pixels, EXIF-oriented, alpha dropped.
fn decode(bytes: &[u8]) -> Result<DynamicImage> {
    let rgb = crate::data::decode::decode_rgb_any(bytes).context("not a decodable image")?;
    Ok(DynamicImage::ImageRgb8(rgb))
}

/// The JSON path beside an output `FILE.safetensors`.
pub fn index_path(out: &Path) -> PathBuf {
    out.with_extension("json")
}

/// Embeds `job.inputs` and writes `job.out` + its JSON; bad images are skipped with a reason.
pub fn run_embed<B, E>(
    extractor: &E,
    device: &B::Device,
    job: &EmbedJob<'_>,
    cache: &mut FeatureCache,
) -> Result<EmbedIndex>
where
    B: Backend,
    E: FeatureExtractor<B> + ?Sized,
{
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut paths = Vec::new();
    for p in &job.inputs {
        let shown = p.display().to_string();
        let bytes = match std::fs::read(p) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("warning: skipping {shown}: {e}");
                skipped.push(Skipped {
                    path: shown,
                    reason: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let dims = image::ImageReader::new(Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(anyhow::Error::from)
            .and_then(|r| r.into_dimensions().map_err(anyhow::Error::from));
        match dims {
            Ok((width, height)) => {
                rows.push(EmbedRow {
                    path: shown,
                    id: hash::content_hash(&bytes),
                    width,
                    height,
                });
                paths.push(p.clone());
            }
            Err(e) => {
                eprintln!("warning: skipping {shown}: not an image ({e:#})");
                skipped.push(Skipped {
                    path: shown,
                    reason: format!("not an image: {e:#}"),
                });
            }
        }
    }
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.id.clone(), NO_AUG.to_string()))
        .collect();
    let load = |i: usize| -> Result<DynamicImage> {
        let bytes = std::fs::read(&paths[i])
            .with_context(|| format!("cannot read {}", paths[i].display()))?;
        decode(&bytes)
    };
    let computed = compute_features(
        extractor,
        device,
        &keys,
        load,
        job.preprocess,
        job.batch_size,
        cache,
    )?;
    let mut keep = vec![true; rows.len()];
    for (i, why) in &computed.failed {
        eprintln!("warning: skipping {}: {why}", rows[*i].path);
        skipped.push(Skipped {
            path: rows[*i].path.clone(),
            reason: why.clone(),
        });
        keep[*i] = false;
    }
    let feats: Vec<FeatureRow> = computed.rows.into_iter().flatten().collect();
    let rows: Vec<EmbedRow> = rows
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(r, _)| r)
        .collect();
    let kept_paths: Vec<&PathBuf> = paths
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(p, _)| p)
        .collect();
    if feats.is_empty() {
        bail!(
            "none of the {} inputs could be embedded ({} skipped)",
            job.inputs.len(),
            skipped.len()
        );
    }
    let d = feats[0].cls.len();
    let n = feats.len();
    let mut bufs: Vec<Vec<u8>> = (0..3).map(|_| Vec::with_capacity(n * d * 4)).collect();
    for f in &feats {
        bufs[0].extend_from_slice(bytemuck::cast_slice(&f.cls));
        bufs[1].extend_from_slice(bytemuck::cast_slice(&f.pooler));
        bufs[2].extend_from_slice(bytemuck::cast_slice(&f.patch_mean));
    }
    let mut pix_buf = Vec::new();
    let mut pix_shape = vec![];
    if job.dump_pixels {
        let mut hw = None;
        for p in &kept_paths {
            let img = decode(&std::fs::read(p)?)?;
            let (h, w) = job.preprocess.output_size(img.width(), img.height());
            if *hw.get_or_insert((h, w)) != (h, w) {
                bail!("--dump-pixels needs one pixel size for all inputs, but {} gives {h}x{w}; use a preprocessing with a fixed size", p.display());
            }
            pix_buf.extend_from_slice(bytemuck::cast_slice(&job.preprocess.pixel_values(&img)?));
        }
        let (h, w) = hw.unwrap_or((0, 0));
        pix_shape = vec![n, 3, h as usize, w as usize];
    }
    let mut views = Vec::new();
    for (name, buf) in ["cls", "pooler", "patch_mean"].iter().zip(&bufs) {
        views.push((
            name.to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, d], buf)?,
        ));
    }
    if job.dump_pixels {
        views.push((
            "pixel_values".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, pix_shape, &pix_buf)?,
        ));
    }
    let mut meta = HashMap::new();
    meta.insert("backbone_key".to_string(), job.backbone_key.clone());
    meta.insert("preprocess".to_string(), job.preprocess.id());
    let bytes = safetensors::serialize(views, Some(meta))?;
    let index = EmbedIndex {
        backbone: job.backbone_name.clone(),
        backbone_key: job.backbone_key.clone(),
        preprocess: job.preprocess.id(),
        hidden_size: d,
        rows,
        skipped,
        cache_hits: computed.cache_hits,
        computed: computed.computed,
    };
    fsx::write_atomic(&job.out, &bytes)?;
    fsx::write_json_atomic(&index_path(&job.out), &index)?;
    Ok(index)
}
