//! `sv72 ab-test` as a library call: both models resolved (`infer::ModelRef`), run on
//! byte-identical validator challenges — through one pass of a shared backbone when both are
//! checkpoints on the same backbone and preprocessing, else each end to end as `serve` loads it —
//! then compared, decided and reported ([`super::ab`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::RgbImage;

use super::ab::{
    compare, decide, write_ab_report, AbOptions, AbReport, DataRef, ModelRecord, PairLatency,
    PairedAnswer, Rule,
};
use super::challenges::{featurizer_for, made_challenges, ChallengeFeatures};
use super::Latency;
use crate::backend::{on_device, Cpu};
use crate::config::Config;
use crate::data::manifest::{parse_on, ManifestRow};
use crate::exit;
use crate::export::card::{ModelCard, MODEL_CARD_FILE};
use crate::infer::{model_loader, ModelRef as Model, Predictor};
use crate::train::checkpoint::{Checkpoint, BUNDLED_BACKBONE};
use crate::train::data::{challenge_views, read_split, ViewKey, LEVELS};
use crate::util::hash::file_hash;

/// How the two models are run on the challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// `features` when both are checkpoints on the same backbone and preprocessing, else `images`.
    #[default]
    Auto,
    /// One pass of the shared backbone through the feature cache, both heads applied to it.
    Features,
    /// Each model run end to end (as `serve` loads it) on the same challenge images.
    Images,
}

/// What to compare, on what.
#[derive(Debug, Clone)]
pub struct AbRequest {
    /// Model A, the incumbent, and B, the challenger: any model reference.
    pub a: PathBuf,
    pub b: PathBuf,
    /// `MANIFEST[:split]`.
    pub on: String,
    /// Report folder (default: under `ab_test.out_dir`).
    pub out: Option<PathBuf>,
    pub mode: Mode,
}

/// A finished A/B test.
#[derive(Debug)]
pub struct AbOutcome {
    pub report: AbReport,
    /// `decision.json`, `report.md`, ... as written.
    pub files: Vec<PathBuf>,
}

/// A model argument resolved: its record and, for checkpoints, the loaded head.
struct Resolved {
    r: ModelRecord,
    /// Folder used to load it.
    load_path: PathBuf,
    ck: Option<Checkpoint<Cpu>>,
}

fn resolve(arg: &Path, which: &str) -> Result<Resolved> {
    if !arg.exists() {
        bail!(
            "model {which} {}: no such checkpoint or export (give a checkpoint folder, a `latest` \
             file, an export folder or exports/deployed)",
            arg.display()
        );
    }
    let model = Model::resolve(arg).with_context(|| format!("model {which}"))?;
    let as_ck = match &model {
        Model::Checkpoint(dir) => Some(dir.clone()),
        Model::Export(_) | Model::Spec(_) => None,
    };
    let folder = model.dir().to_path_buf();
    let canonical = std::fs::canonicalize(&folder).unwrap_or_else(|_| folder.clone());
    let card_path = folder.join(MODEL_CARD_FILE);
    let card = if card_path.is_file() {
        Some(ModelCard::read(&card_path).with_context(|| format!("model {which}"))?)
    } else {
        None
    };
    let ck = match &as_ck {
        Some(dir) => Some(
            Checkpoint::<Cpu>::load(dir, &Default::default())
                .with_context(|| format!("model {which} {}", arg.display()))?,
        ),
        None => None,
    };
    let (kind, id) = match (&card, &ck) {
        _ if model.kind() == "spec" => ("spec", String::new()),
        (Some(c), _) => ("export", format!("{}-{}", c.model_name, c.version)),
        (None, Some(ck)) => ("checkpoint", ck.info.run_id.clone()),
        (None, None) => ("model", String::new()),
    };
    Ok(Resolved {
        r: ModelRecord {
            arg: arg.display().to_string(),
            path: canonical.display().to_string(),
            kind: kind.into(),
            id,
            backbone: ck.as_ref().map(|c| c.info.backbone.name.clone()),
        },
        load_path: folder,
        ck,
    })
}

/// Why the shared-features path cannot be used (`None` = it can).
fn features_blocker(a: &Resolved, b: &Resolved) -> Option<String> {
    let (Some(ca), Some(cb)) = (&a.ck, &b.ck) else {
        return Some("A or B is not an sv72 checkpoint (head.safetensors + run.yaml)".into());
    };
    if [&ca.dir, &cb.dir]
        .iter()
        .any(|d| d.join(BUNDLED_BACKBONE).join("config.json").is_file())
    {
        return Some("A or B bundles its own backbone".into());
    }
    let (ia, ib) = (&ca.info.backbone, &cb.info.backbone);
    // A fine-tuned backbone's key includes its trained tensors.
    let (ka, kb) = (ca.info.features_key(), cb.info.features_key());
    if ka != kb {
        return Some(format!(
            "different backbones ({} {ka} vs {} {kb})",
            ia.name, ib.name
        ));
    }
    if ia.preprocess != ib.preprocess {
        return Some(format!(
            "different preprocessing ({} vs {})",
            ia.preprocess, ib.preprocess
        ));
    }
    None
}

/// A challenge view with A's and B's served probabilities.
type Paired = (ViewKey, f64, f64);

/// Both heads on one pass of the shared backbone (through the feature cache).
fn answers_by_features(
    cfg: &Config,
    a: &Checkpoint<Cpu>,
    b: &Checkpoint<Cpu>,
    rows: &[&ManifestRow],
    views: &[ViewKey],
) -> Result<(Vec<Paired>, usize)> {
    let mut fz = featurizer_for(a, &cfg.paths.feature_cache)?;
    let job = ChallengeFeatures {
        cfg,
        fz: &mut fz,
        rows,
        views,
        seed: cfg.ab_test.seed,
        latency: None,
    };
    let (set, kept, skipped, _) = on_device(cfg.backbone.device, cfg.backbone.dtype, job)?;
    let cpu = Default::default();
    let pa = a.predict_proba(&set.x, &cpu)?;
    let pb = b.predict_proba(&set.x, &cpu)?;
    if pa.len() != kept.len() || pb.len() != kept.len() {
        bail!(
            "internal: {} views but {}/{} answers",
            kept.len(),
            pa.len(),
            pb.len()
        );
    }
    Ok((
        kept.into_iter()
            .zip(pa.into_iter().zip(pb))
            .map(|(v, (x, y))| (v, x, y))
            .collect(),
        skipped,
    ))
}

/// Challenge images timed one at a time per model for the latency line.
const LATENCY_SAMPLES: usize = 48;

/// Batch-1 latency of A and B on the same images, alternating A and B so both see the same
/// machine load.
fn probe_latency(
    pa: &mut dyn Predictor,
    pb: &mut dyn Predictor,
    images: &[RgbImage],
    device: &str,
) -> Result<Option<PairLatency>> {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    // The first round warms both up and is not counted; a small first chunk is cycled so the
    // percentiles always rest on LATENCY_SAMPLES timings each.
    for (i, im) in images.iter().cycle().take(LATENCY_SAMPLES + 1).enumerate() {
        let one = std::slice::from_ref(im);
        let start = std::time::Instant::now();
        pa.predict(one)?;
        let a = start.elapsed().as_secs_f64() * 1e3;
        let start = std::time::Instant::now();
        pb.predict(one)?;
        let b = start.elapsed().as_secs_f64() * 1e3;
        if i > 0 {
            ta.push(a);
            tb.push(b);
        }
    }
    Ok(Latency::from_samples(device, ta)
        .zip(Latency::from_samples(device, tb))
        .map(|(a, b)| PairLatency { a, b }))
}

/// Paired answers, skipped challenges, both models' versions and their batch-1 latencies.
type ImageAnswers = (Vec<Paired>, usize, String, String, Option<PairLatency>);

/// Each model run end to end on the same challenge images, made once per chunk.
fn answers_by_images(
    cfg: &Config,
    a: &Resolved,
    b: &Resolved,
    rows: &[&ManifestRow],
    views: &[ViewKey],
) -> Result<ImageAnswers> {
    let loader = model_loader(cfg, cfg.backbone.device)?;
    let mut pa =
        loader(&a.load_path).with_context(|| format!("cannot load model A {}", a.r.arg))?;
    let mut pb =
        loader(&b.load_path).with_context(|| format!("cannot load model B {}", b.r.arg))?;
    let mut out = Vec::with_capacity(views.len());
    let mut latency = None;
    let skipped = made_challenges(
        cfg,
        rows,
        views,
        cfg.ab_test.seed,
        "ab-test",
        |kept, images| {
            if latency.is_none() {
                let device = cfg.backbone.device.to_string();
                latency = probe_latency(pa.as_mut(), pb.as_mut(), images, &device)?;
            }
            let ya = pa.predict(images).context("model A")?;
            let yb = pb.predict(images).context("model B")?;
            if ya.len() != images.len() || yb.len() != images.len() {
                bail!(
                    "a model answered {}/{} times for {} images",
                    ya.len(),
                    yb.len(),
                    images.len()
                );
            }
            for ((v, x), y) in kept.iter().zip(ya).zip(yb) {
                out.push(((*v).clone(), f64::from(x), f64::from(y)));
            }
            Ok(())
        },
    )?;
    if out.is_empty() {
        bail!("none of the {} challenges could be made", views.len());
    }
    Ok((out, skipped, pa.version(), pb.version(), latency))
}

fn slug(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "model".into()
    } else {
        s
    }
}

/// Runs an A/B test: both models on the same challenges, the paired statistics, the decision,
/// and the report written to `req.out` (default `<ab_test.out_dir>/<time>-<A>-vs-<B>/`).
pub fn run_ab_test(cfg: &Config, req: &AbRequest) -> Result<AbOutcome> {
    let rule = Rule::from_config(&cfg.ab_test)?;
    let (name, split) = parse_on(&req.on)?;
    let (path, owned) = read_split(&cfg.paths.datasets, &name, split, "ab-test")?;
    let rows: Vec<&ManifestRow> = owned.iter().collect();
    let mut a = resolve(&req.a, "A")?;
    let mut b = resolve(&req.b, "B")?;
    let blocker = features_blocker(&a, &b);
    let use_features = match (req.mode, &blocker) {
        (Mode::Images, _) => false,
        (Mode::Auto, Some(_)) => false,
        (_, None) => true,
        (Mode::Features, Some(why)) => bail!("--mode features: {why}; use --mode images"),
    };
    let draws = cfg.ab_test.draws_per_image.max(1);
    let views = challenge_views(rows.len(), &LEVELS, draws, cfg.ab_test.seed, &cfg.augment);
    eprintln!(
        "ab-test: {} challenges ({} {split} images x levels 0-3 x {draws} draw(s)), mode {}",
        views.len(),
        rows.len(),
        if use_features { "features" } else { "images" }
    );
    let mut latency = None;
    let (pairs, skipped) = match (use_features, &a.ck, &b.ck) {
        (true, Some(ca), Some(cb)) => answers_by_features(cfg, ca, cb, &rows, &views)?,
        _ => {
            let (p, s, va, vb, l) = answers_by_images(cfg, &a, &b, &rows, &views)?;
            latency = l;
            for (m, v) in [(&mut a, va), (&mut b, vb)] {
                if m.r.id.is_empty() {
                    m.r.id = v;
                }
            }
            (p, s)
        }
    };
    if skipped > 0 {
        eprintln!("ab-test: warning: {skipped} challenge(s) could not be made and were skipped for both models");
    }
    let answers: Vec<PairedAnswer> = pairs
        .into_iter()
        .map(|(v, pa, pb)| {
            let r = rows[v.row];
            PairedAnswer {
                id: r.id.clone(),
                label: r.label,
                source: r.source,
                generator: r.generator.clone(),
                level: v.level,
                draw: v.draw,
                prob_a: pa,
                prob_b: pb,
            }
        })
        .collect();
    let opts = AbOptions {
        resamples: cfg.ab_test.bootstrap,
        seed: cfg.ab_test.seed,
        level_probs: cfg.augment.level_probs,
        score_sequences: cfg.eval.score_sequences,
        resample_sequences: cfg.ab_test.bootstrap_score_sequences,
    };
    let spinner = crate::util::progress::spinner("ab-test: bootstrap");
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let stats = compare(&answers, &opts)?;
    spinner.finish_and_clear();
    for w in &stats.warnings {
        eprintln!("ab-test: warning: {w}");
    }
    let decision = decide(&stats, &rule);
    let exit_code = if decision.promote {
        exit::OK
    } else {
        exit::AB_KEEP
    };
    let report = AbReport {
        created_at: chrono::Utc::now().to_rfc3339(),
        data: DataRef {
            manifest: path.display().to_string(),
            manifest_hash: file_hash(&path)?,
            split: split.to_string(),
            seed: cfg.ab_test.seed,
            draws_per_image: draws,
            levels: LEVELS.to_vec(),
            skipped,
        },
        mode: if use_features { "features" } else { "images" }.into(),
        stats,
        rule: cfg.ab_test.clone(),
        decision,
        exit_code,
        latency,
        a: a.r,
        b: b.r,
    };
    let out = req.out.clone().unwrap_or_else(|| {
        cfg.ab_test.out_dir.join(format!(
            "{}-{}-vs-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            slug(&report.a.id),
            slug(&report.b.id)
        ))
    });
    let files = write_ab_report(&out, &report, &answers)?;
    Ok(AbOutcome { report, files })
}
