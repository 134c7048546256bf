//! `sv72 mine-hard`: active learning that closes the synthetic-data loop.
//!
//! Hard cases come from serve's prediction log (validator images kept because the answer was
//! uncertain) and from eval predictions (misclassified answers, answers in the uncertainty band,
//! and answers on which a second model disagrees). Among them, k-centre greedy on backbone
//! embeddings keeps a diverse `max_cases` (falling back to a hardness ranking without a
//! backbone). The selection is written as a manifest, a labeller CSV that `sv72 ingest --csv`
//! reads, generator prompts, a summary and a contact sheet.

pub mod diversity;
pub mod prompts;
pub mod select;
pub mod stage;
pub mod write;

use std::path::{Path, PathBuf};

use anyhow::Result;
use image::imageops;

pub use diversity::{distance, embed_images, k_center_greedy, Distance, Embedded};
pub use prompts::{measure, prompt_for, Prompt, SceneAttrs, Target};
pub use select::{
    apply_judge, apply_second_model, hardness, merge_cases, reasons_of, select_eval, select_serve,
    Case, Criteria, EvalSelection, Origin, Reason, ServeSelection,
};
pub use stage::{parse_since, run_mine_hard, MineRequest};
pub use write::{write_outputs, Selected, Summary};

use crate::data::decode::{analyze, DecodeLimits};
use crate::data::manifest::{ManifestRow, SourceKind, Split};
use crate::eval::EvalPrediction;
use crate::infer::Predictor;
use crate::serve::predlog::PredictionLogRead;

/// Generator name given to validator images from the serve log (their origin is unknown).
pub const SERVE_GENERATOR: &str = "serve-log";

/// Serve-log input.
#[derive(Debug, Clone)]
pub struct ServeInput {
    pub log: PathBuf,
    pub read: PredictionLogRead,
}

/// Eval input: model A's predictions, optionally model B's on the same manifest.
#[derive(Debug, Clone)]
pub struct EvalInput {
    pub predictions_path: PathBuf,
    pub predictions: Vec<EvalPrediction>,
    pub compare: Option<(PathBuf, Vec<EvalPrediction>)>,
    pub manifest_path: PathBuf,
    pub manifest: Vec<ManifestRow>,
}

/// Computes `[CLS ; patch mean]` for `(id, path)` images (the CLI binds it to a backbone).
pub type Embedder<'a> = dyn FnMut(&[(String, PathBuf)]) -> Result<Embedded> + 'a;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub criteria: Criteria,
    pub max_cases: usize,
    pub seed: u64,
    pub distance: Distance,
    pub contact_sheet_max: usize,
    /// Root that relative manifest paths are resolved against.
    pub datasets_root: PathBuf,
    /// Images beyond these limits are skipped, as ingest would quarantine them.
    pub limits: DecodeLimits,
    /// The VLM judge asked about every candidate (`mine-hard --judge`).
    pub judge: Option<std::sync::Arc<crate::judge::Judge>>,
}

/// Asks the VLM judge's opinion of each case's image (`None` where there is none); the
/// second value counts the images that could not be read and the reasons for no opinion.
pub fn judge_cases(
    judge: &std::sync::Arc<crate::judge::Judge>,
    cases: &[Case],
) -> (Vec<Option<f64>>, std::collections::BTreeMap<String, usize>) {
    let (_, timeout) = judge.describe();
    let mut why = std::collections::BTreeMap::new();
    let bar = crate::util::progress::bar(cases.len() as u64, "judge");
    let out = cases
        .iter()
        .map(|c| {
            bar.inc(1);
            let Ok(bytes) = std::fs::read(&c.path) else {
                *why.entry("image unreadable".to_string()).or_default() += 1;
                return None;
            };
            // Each call gets the configured timeout (plus the reserve it keeps back).
            let deadline = std::time::Instant::now() + timeout + judge.reserve();
            match judge.opinion(&bytes, &c.id, deadline) {
                Ok((p, _)) => Some(p),
                Err(reason) => {
                    let key = reason.split(": ").next().unwrap_or("error").to_string();
                    *why.entry(key).or_default() += 1;
                    None
                }
            }
        })
        .collect();
    bar.finish_and_clear();
    (out, why)
}

/// Scores images with a second model; `None` where an image cannot be decoded.
pub fn score_images(model: &mut dyn Predictor, paths: &[PathBuf]) -> Result<Vec<Option<f64>>> {
    let mut out = vec![None; paths.len()];
    let bar = crate::util::progress::bar(paths.len() as u64, "model B");
    for (chunk_i, chunk) in paths.chunks(16).enumerate() {
        let mut idx = Vec::new();
        let mut imgs = Vec::new();
        for (j, p) in chunk.iter().enumerate() {
            if let Ok(img) = diversity::open_any(p) {
                idx.push(chunk_i * 16 + j);
                imgs.push(img.to_rgb8());
            }
        }
        if !imgs.is_empty() {
            let probs = model.predict(&imgs)?;
            if probs.len() != imgs.len() {
                anyhow::bail!(
                    "model B returned {} answers for {} images",
                    probs.len(),
                    imgs.len()
                );
            }
            for (i, p) in idx.into_iter().zip(probs) {
                out[i] = Some(f64::from(p));
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn bump(summary: &mut Summary, key: &str, n: usize) {
    if n > 0 {
        *summary.skipped.entry(key.to_string()).or_default() += n;
    }
}

/// Reads, measures and describes one case; errors mean the image cannot be used.
fn inspect(case: &Case, s: &Settings, now: &str) -> Result<Selected> {
    let bytes = std::fs::read(&case.path)?;
    let info = analyze(&bytes, &s.limits).map_err(|r| anyhow::anyhow!("{r:?}"))?;
    let img = crate::data::decode::decode_rgb_any(&bytes)?;
    let attrs = measure(&img);
    let thumb = imageops::thumbnail(&img, write::TILE, write::TILE);
    let label = case.suggested_label();
    let row = match &case.row {
        Some(r) => ManifestRow { label, ..r.clone() },
        None => {
            let path = case.path.canonicalize().unwrap_or(case.path.clone());
            ManifestRow {
                id: case.id.clone(),
                path: path.display().to_string(),
                label,
                source: SourceKind::Real,
                generator: SERVE_GENERATOR.into(),
                width: info.width,
                height: info.height,
                format: info.format.into(),
                split: Split::Train,
                phash: info.phash,
                group: format!("hard-{}", &case.id[..case.id.len().min(16)]),
                ingested_at: now.into(),
                origin: path.display().to_string(),
                variant_of: None,
                aug: None,
                group_key: None,
                parent: None,
            }
        }
    };
    let prompt = prompt_for(case, Some(attrs), s.seed);
    Ok(Selected {
        case: case.clone(),
        row,
        attrs,
        prompt,
        thumb,
    })
}

/// Runs the whole selection and writes the artifacts into `out`; returns the summary.
///
/// `model_b` scores the serve-log images for disagreement; `s.judge` gives its opinion on every
/// candidate (disagreement with model A is one more reason, its answer a suggested label in
/// the CSV); `embed` (with the backbone's name)
/// enables k-centre greedy diversity, otherwise `no_embed_reason` says why cases are ranked by
/// hardness alone.
pub fn mine(
    serve: Option<ServeInput>,
    eval: Option<EvalInput>,
    model_b: Option<(String, &mut dyn Predictor)>,
    embed: Option<(String, &mut Embedder<'_>)>,
    no_embed_reason: &str,
    s: &Settings,
    out: &Path,
) -> Result<Summary> {
    if serve.is_none() && eval.is_none() {
        anyhow::bail!("nothing to mine: give --serve-log and/or --eval");
    }
    write::check_out_dir(out)?;
    let now = chrono::Utc::now().to_rfc3339();
    let mut summary = Summary {
        created_at: now.clone(),
        max_cases: s.max_cases,
        ..Default::default()
    };
    let mut candidates = Vec::new();
    if let Some(sv) = serve {
        let sel = select_serve(&sv.read.records, &sv.log, &s.criteria);
        summary.inputs.push(format!(
            "serve log `{}`: {} answer(s) in the window ({} older, {} bad line(s)), {} saved image(s) hard",
            sv.log.display(),
            sel.records,
            sv.read.older,
            sv.read.bad_lines,
            sel.cases.len()
        ));
        bump(
            &mut summary,
            "serve: unreadable log lines",
            sv.read.bad_lines,
        );
        bump(
            &mut summary,
            "serve: unscored fallback answers",
            sel.unscored,
        );
        bump(
            &mut summary,
            "serve: hard answers without a saved image",
            sel.without_image,
        );
        bump(
            &mut summary,
            "serve: saved images missing",
            sel.missing_files,
        );
        let mut cases = sel.cases;
        if let Some((name, model)) = model_b {
            let paths: Vec<PathBuf> = cases.iter().map(|c| c.path.clone()).collect();
            let p_b = score_images(model, &paths)?;
            let failed = p_b.iter().filter(|p| p.is_none()).count();
            bump(&mut summary, "model B: images it could not read", failed);
            let n = apply_second_model(&mut cases, &p_b, &s.criteria);
            summary.inputs.push(format!(
                "model B `{name}` on the serve-log images: {n} disagreement(s)"
            ));
        }
        candidates.extend(cases);
    }
    if let Some(ev) = eval {
        let b = ev.compare.as_ref().map(|(_, p)| p.as_slice());
        let sel = select_eval(
            &ev.predictions,
            b,
            &ev.manifest,
            &s.datasets_root,
            &s.criteria,
        );
        summary.inputs.push(format!(
            "eval predictions `{}` on `{}`: {} answer(s), {} hard, {} image(s)",
            ev.predictions_path.display(),
            ev.manifest_path.display(),
            sel.answers,
            sel.hard_answers,
            sel.cases.len()
        ));
        if let Some((p, preds)) = &ev.compare {
            summary.inputs.push(format!(
                "model B eval predictions `{}`: {} answer(s)",
                p.display(),
                preds.len()
            ));
        }
        bump(
            &mut summary,
            "eval: answers with no model-B answer for the same image/level/draw",
            sel.unmatched,
        );
        bump(
            &mut summary,
            "eval: hard answers whose image is not in the manifest",
            sel.not_in_manifest,
        );
        candidates.extend(sel.cases);
    }
    let mut candidates = merge_cases(candidates);
    if let Some(j) = &s.judge {
        let (p_j, why) = judge_cases(j, &candidates);
        let asked = p_j.len();
        let answered = p_j.iter().filter(|p| p.is_some()).count();
        for (k, n) in why {
            bump(&mut summary, &format!("judge: no opinion ({k})"), n);
        }
        let n = apply_judge(&mut candidates, &p_j, &s.criteria);
        let (model, _) = j.describe();
        summary.inputs.push(format!(
            "VLM judge `{model}` on the candidates: {answered} of {asked} answered, \
             {n} disagreement(s) with model A (its answers are suggestions in \
             `p_judge`/`judge_suggested_label`, not labels)"
        ));
    }
    let order: Vec<usize> = match embed {
        Some((backbone, embedder)) if !candidates.is_empty() => {
            let items: Vec<(String, PathBuf)> = candidates
                .iter()
                .map(|c| (c.id.clone(), c.path.clone()))
                .collect();
            let e = embedder(&items)?;
            bump(&mut summary, "unreadable images", e.failed.len());
            let (idx, pts): (Vec<usize>, Vec<Vec<f32>>) = e
                .vectors
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .unzip();
            summary.selection = format!(
                "k-centre greedy ({} distance) on [CLS ; patch mean] of `{backbone}`, \
                 starting at the hardest case ({} embedded: {} from cache, {} computed)",
                s.distance.as_str(),
                pts.len(),
                e.cache_hits,
                e.computed
            );
            k_center_greedy(&pts, s.max_cases, 0, s.distance)
                .into_iter()
                .map(|k| idx[k])
                .collect()
        }
        _ => {
            summary.selection = format!("hardness ranking, no diversity ({no_embed_reason})");
            if !candidates.is_empty() {
                summary.notes.push(format!(
                    "No embeddings ({no_embed_reason}): cases are the hardest {} by rank, \
                     not a diverse set; near-identical scenes may repeat.",
                    s.max_cases
                ));
            }
            (0..candidates.len()).collect()
        }
    };
    let bar = crate::util::progress::bar(order.len().min(s.max_cases) as u64, "inspect");
    let mut selected = Vec::new();
    let mut unreadable = 0;
    for i in order {
        if selected.len() >= s.max_cases {
            break;
        }
        match inspect(&candidates[i], s, &now) {
            Ok(sel) => selected.push(sel),
            Err(_) => unreadable += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // k-centre greedy decides which cases; the labeller reads them hardest first.
    selected.sort_by(|a, b| {
        b.case
            .hardness
            .total_cmp(&a.case.hardness)
            .then(a.case.id.cmp(&b.case.id))
    });
    bump(&mut summary, "unreadable images", unreadable);
    write::count(&mut summary, &candidates, &selected);
    write_outputs(
        out,
        &selected,
        &summary,
        &s.datasets_root,
        s.contact_sheet_max,
    )?;
    Ok(summary)
}
