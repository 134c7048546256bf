//! `sv72 train-head`: trains a classification head on cached backbone features.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use image::DynamicImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Ctx;
use crate::config::{AugmentConfig, BackboneConfig, Config};
use crate::data::manifest::{manifest_path, read_manifest, ManifestRow, Split};
use crate::features::embed::NO_AUG;
use crate::features::{backbone_key, FeatureCache};
use crate::model::preprocess::Preprocess;
use crate::model::{hub, load_backbone};
use crate::train::data::{challenge_views, gather, rows_of, training_views, view_seed, ViewKey};
use crate::train::{run_training, BackboneInfo, FeatureSet, ManifestInfo, RunInputs, RunOptions};
use crate::util::hash::file_hash;

/// Validator levels every challenge set covers (validation and eval).
pub const LEVELS: [u8; 4] = [0, 1, 2, 3];

/// Flags of `sv72 train-head`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The training mix: a dataset name under `paths.datasets`, its folder, or a `.parquet`
    /// manifest. Its `train` rows train the head, its `val` rows drive early stopping,
    /// calibration and the threshold.
    /// Required; optional for clap only so config errors are reported first.
    #[arg(long, value_name = "DATASET")]
    pub manifest: Option<String>,
    /// Backbone snapshot folder or HF name (default: `backbone.model`).
    #[arg(long, value_name = "MODEL")]
    pub backbone: Option<String>,
    /// Augmented training views per image (default: `train.views`).
    #[arg(long, value_name = "K")]
    pub views: Option<usize>,
    /// Training epochs (default: `train.epochs`).
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// `cpu` or `cuda` for feature extraction (default: `backbone.device`).
    #[arg(long)]
    pub device: Option<String>,
    /// Checkpoints root (default: `paths.checkpoints`).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,
}

/// Decodes a manifest row's image file.
pub fn open_image(row: &ManifestRow, datasets_root: &Path) -> Result<DynamicImage> {
    let p = row.resolve_path(datasets_root);
    image::ImageReader::open(&p)
        .with_context(|| format!("cannot open image {} (row {})", p.display(), row.id))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", p.display()))?
        .decode()
        .with_context(|| format!("cannot decode image {} (row {})", p.display(), row.id))
}

/// Makes a training view: the clean image for [`NO_AUG`], otherwise
/// `augment::training_view` seeded by [`view_seed`].
pub fn load_training_view(
    row: &ManifestRow,
    view: &ViewKey,
    datasets_root: &Path,
    aug: &AugmentConfig,
    seed: u64,
) -> Result<DynamicImage> {
    let img = open_image(row, datasets_root)?;
    if view.aug_id == NO_AUG {
        return Ok(img);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(view_seed(seed, &row.id, &view.aug_id));
    let (out, _) = crate::augment::training_view(&img, aug, &mut rng)?;
    Ok(DynamicImage::ImageRgb8(out))
}

/// Makes a validator challenge at the view's level, as the miner receives it (JPEG round trip).
pub fn load_challenge(
    row: &ManifestRow,
    view: &ViewKey,
    datasets_root: &Path,
    aug: &AugmentConfig,
    seed: u64,
) -> Result<DynamicImage> {
    let img = open_image(row, datasets_root)?;
    let mut rng = ChaCha8Rng::seed_from_u64(view_seed(seed, &row.id, &view.aug_id));
    let ch = crate::augment::validator_challenge(&img, Some(view.level), aug, &mut rng)?;
    Ok(DynamicImage::ImageRgb8(ch.image))
}

/// Work generic over the backbone's backend, so one code path serves every `--device`/dtype.
pub trait OnBackend {
    type Out;
    /// Runs on backend `B`; `device_name` is for reports (e.g. `cuda-f16`).
    fn run<B: Backend>(self, device: &B::Device, device_name: &str) -> Result<Self::Out>;
}

/// Runs `job` on `cpu` or `cuda` (with `backbone.dtype`).
pub fn on_device<J: OnBackend>(device: &str, dtype: &str, job: J) -> Result<J::Out> {
    match device {
        "cpu" => job.run::<crate::backend::Cpu>(&Default::default(), "cpu"),
        "cuda" => run_cuda(dtype, job),
        other => bail!("--device {other:?}: use `cpu` or `cuda`"),
    }
}

#[cfg(feature = "cuda")]
fn run_cuda<J: OnBackend>(dtype: &str, job: J) -> Result<J::Out> {
    use burn::backend::Cuda;
    let dev = Default::default();
    match dtype {
        "f16" => job.run::<Cuda<half::f16>>(&dev, "cuda-f16"),
        "bf16" => job.run::<Cuda<half::bf16>>(&dev, "cuda-bf16"),
        _ => job.run::<Cuda<f32>>(&dev, "cuda-f32"),
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: OnBackend>(_dtype: &str, _job: J) -> Result<J::Out> {
    bail!("--device cuda needs a CUDA build: rebuild with `cargo build --release --features cuda`, or use --device cpu")
}

/// The backbone, preprocessing and feature cache a run uses.
pub struct Featurizer {
    pub snapshot: PathBuf,
    pub preprocess: Preprocess,
    pub backbone_key: String,
    pub cache: FeatureCache,
}

impl Featurizer {
    /// Resolves `bb.model` (folder or HF cache name), builds its `bb.preprocess` recipe and opens
    /// its feature cache under `cache_root`.
    pub fn open(bb: &BackboneConfig, target_size: u32, cache_root: &Path) -> Result<Self> {
        let snapshot = hub::resolve_backbone(&bb.model, &bb.revision)?;
        let preprocess = Preprocess::for_kind(&bb.preprocess, &snapshot, target_size)?;
        let backbone_key = backbone_key(&snapshot, cache_root)?;
        let cache = FeatureCache::open(cache_root, &backbone_key, &preprocess.id())?;
        Ok(Featurizer {
            snapshot,
            preprocess,
            backbone_key,
            cache,
        })
    }
}

struct TrainFeatures<'a> {
    cfg: &'a Config,
    fz: &'a mut Featurizer,
    train: &'a [&'a ManifestRow],
    val: &'a [&'a ManifestRow],
}

/// Train and val feature sets, the backbone width, and skipped views.
type Sets = (FeatureSet, FeatureSet, usize, usize);

impl OnBackend for TrainFeatures<'_> {
    type Out = Sets;
    fn run<B: Backend>(self, dev: &B::Device, _name: &str) -> Result<Sets> {
        let cfg = self.cfg;
        let model = load_backbone::<B>(&self.fz.snapshot, dev)?;
        let root = &cfg.paths.datasets;
        let aug = &cfg.augment;
        let tviews = training_views(self.train.len(), cfg.train.views, aug.seed, aug);
        eprintln!(
            "train-head: {} training views ({} images x (clean + {} augmented))",
            tviews.len(),
            self.train.len(),
            cfg.train.views
        );
        let (train, _, skipped_t) = gather::<B, _, _>(
            model.as_ref(),
            dev,
            self.train,
            &tviews,
            |r, v| load_training_view(r, v, root, aug, aug.seed),
            &self.fz.preprocess,
            cfg.backbone.batch_size,
            &mut self.fz.cache,
        )?;
        let vviews = challenge_views(
            self.val.len(),
            &LEVELS,
            cfg.eval.draws_per_image.max(1),
            cfg.eval.seed,
            aug,
        );
        eprintln!(
            "train-head: {} validation challenges ({} images x levels 0-3 x {} draw(s))",
            vviews.len(),
            self.val.len(),
            cfg.eval.draws_per_image.max(1)
        );
        let (val, _, skipped_v) = gather::<B, _, _>(
            model.as_ref(),
            dev,
            self.val,
            &vviews,
            |r, v| load_challenge(r, v, root, aug, cfg.eval.seed),
            &self.fz.preprocess,
            cfg.backbone.batch_size,
            &mut self.fz.cache,
        )?;
        Ok((train, val, model.hidden_size(), skipped_t + skipped_v))
    }
}

/// Runs `sv72 train-head`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let mut cfg = ctx.config.clone();
    if let Some(b) = args.backbone {
        cfg.backbone.model = b;
    }
    if let Some(v) = args.views {
        cfg.train.views = v;
    }
    if let Some(e) = args.epochs {
        if e == 0 {
            bail!("--epochs must be at least 1");
        }
        cfg.train.epochs = e;
    }
    if let Some(d) = args.device {
        cfg.backbone.device = d;
    }
    if let Some(c) = args.checkpoints {
        cfg.paths.checkpoints = c;
    }
    let Some(manifest) = args.manifest else {
        bail!("train-head needs --manifest DATASET (the mix built by `sv72 synth-mix`)");
    };
    let path = manifest_path(&cfg.paths.datasets, &manifest);
    let rows = read_manifest(&path).with_context(|| {
        format!(
            "cannot read the training manifest {} (build one with `sv72 synth-mix`)",
            path.display()
        )
    })?;
    let (train, val) = (rows_of(&rows, Split::Train), rows_of(&rows, Split::Val));
    if train.is_empty() || val.is_empty() {
        bail!(
            "{} has {} train and {} val rows; train-head needs both splits",
            path.display(),
            train.len(),
            val.len()
        );
    }
    let mut fz = Featurizer::open(
        &cfg.backbone,
        cfg.augment.target_size,
        &cfg.paths.feature_cache,
    )?;
    let job = TrainFeatures {
        cfg: &cfg,
        fz: &mut fz,
        train: &train,
        val: &val,
    };
    let (train_set, val_set, hidden, skipped) =
        on_device(&cfg.backbone.device, &cfg.backbone.dtype, job)?;
    if skipped > 0 {
        eprintln!("train-head: warning: {skipped} view(s) could not be loaded and were skipped");
    }
    let inputs = RunInputs {
        backbone: BackboneInfo {
            name: cfg.backbone.model.clone(),
            weights_hash: fz.backbone_key.clone(),
            hidden_size: hidden,
            preprocess: fz.preprocess.id(),
        },
        manifest: ManifestInfo {
            path: path.display().to_string(),
            hash: file_hash(&path)?,
            train_images: train.len(),
            val_images: val.len(),
            train_rows: train_set.len(),
            val_rows: val_set.len(),
        },
        train: train_set,
        val: val_set,
    };
    // The head is tiny next to the backbone: it trains on the CPU whatever --device says.
    let out = run_training::<Autodiff<crate::backend::Cpu>>(
        &cfg,
        &inputs,
        RunOptions::from_config(&cfg),
        &Default::default(),
    )?;
    let m = &out.info.metrics;
    println!("run {} -> {}", out.run_id, out.dir.display());
    println!(
        "  val MCC {:.4}  accuracy {:.4}  expected score {:.4}  (best epoch {} of {})",
        m.val.mcc, m.val.accuracy, m.val_expected_score.mean, m.best_epoch, m.epochs_run
    );
    println!(
        "  threshold {:.4}  temperature {:.4}  ({} train rows, {} val rows)",
        out.info.threshold,
        out.info.temperature,
        inputs.manifest.train_rows,
        inputs.manifest.val_rows
    );
    Ok(ExitCode::SUCCESS)
}
