//! `sv72 eval`: a checkpoint scored as validators score it (issue #4).
//!
//! [`build_report`] turns per-draw predictions (every image × validator level 0–3 × draw) into
//! metrics overall and broken down by source, generator, label and level, plus the expected subnet
//! score; [`write_report`] writes `report.json`, `report.md` and the PNG plots.

pub mod ab;
pub mod ab_test;
pub mod calibrate;
pub mod challenges;
pub mod plots;
pub mod stage;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::manifest::SourceKind;
use crate::metrics::{
    reliability_bins, roc_curve, simulate_scores, BinaryMetrics, ReliabilityBin, ScoreItem,
    ScoreSummary, ECE_BINS,
};
use crate::util::fsx;

/// One served answer for one augmented draw of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPrediction {
    pub id: String,
    pub label: u8,
    pub source: SourceKind,
    pub generator: String,
    /// Validator augmentation level 0–3.
    pub level: u8,
    pub draw: u32,
    /// Served probability (`> 0.5` = roadwork).
    pub prob: f64,
}

/// Latency of one image, backbone + head, batch 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub device: String,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Latency {
    /// Percentiles of per-image timings in milliseconds (nearest rank).
    pub fn from_samples(device: &str, mut ms: Vec<f64>) -> Option<Self> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Some(Latency {
            device: device.into(),
            samples: ms.len(),
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
        })
    }
}

/// What was evaluated, for the report header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMeta {
    pub checkpoint: String,
    pub run_id: String,
    pub manifest: String,
    pub manifest_hash: String,
    pub split: String,
    pub seed: u64,
    pub draws_per_image: usize,
    pub level_probs: [f64; 4],
    pub score_sequences: usize,
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub meta: EvalMeta,
    pub created_at: String,
    pub images: usize,
    pub overall: BinaryMetrics,
    pub by_source: BTreeMap<String, BinaryMetrics>,
    pub by_generator: BTreeMap<String, BinaryMetrics>,
    pub by_label: BTreeMap<String, BinaryMetrics>,
    pub by_level: BTreeMap<String, BinaryMetrics>,
    /// Expected subnet reward (validator draw: label 50/50, real/synthetic 50/50, level).
    pub expected_score: ScoreSummary,
    /// Expected reward if every challenge came at this level.
    pub score_by_level: BTreeMap<String, ScoreSummary>,
    pub latency: Option<Latency>,
    pub reliability: Vec<ReliabilityBin>,
}

fn metrics_of<'a>(preds: impl Iterator<Item = &'a EvalPrediction>) -> BinaryMetrics {
    let (labels, probs): (Vec<u8>, Vec<f64>) = preds.map(|p| (p.label, p.prob)).unzip();
    BinaryMetrics::compute(&labels, &probs)
}

fn group_by(
    preds: &[EvalPrediction],
    key: impl Fn(&EvalPrediction) -> String,
) -> BTreeMap<String, BinaryMetrics> {
    let mut groups: BTreeMap<String, Vec<&EvalPrediction>> = BTreeMap::new();
    for p in preds {
        groups.entry(key(p)).or_default().push(p);
    }
    groups
        .into_iter()
        .map(|(k, v)| (k, metrics_of(v.into_iter())))
        .collect()
}

fn score_items(preds: &[EvalPrediction]) -> Vec<ScoreItem> {
    preds
        .iter()
        .map(|p| ScoreItem {
            label: p.label,
            synthetic: p.source == SourceKind::Synthetic,
            level: p.level,
            prob: p.prob,
        })
        .collect()
}

/// Builds the report from predictions.
pub fn build_report(
    preds: &[EvalPrediction],
    meta: EvalMeta,
    latency: Option<Latency>,
) -> Result<EvalReport> {
    if preds.is_empty() {
        anyhow::bail!(
            "nothing to evaluate: the {} split of {} has no images",
            meta.split,
            meta.manifest
        );
    }
    let items = score_items(preds);
    let expected_score =
        simulate_scores(&items, meta.level_probs, meta.score_sequences, meta.seed)?;
    let mut score_by_level = BTreeMap::new();
    for level in 0..4u8 {
        let sub: Vec<ScoreItem> = items.iter().copied().filter(|i| i.level == level).collect();
        if sub.is_empty() {
            continue;
        }
        let mut probs = [0.0; 4];
        probs[usize::from(level)] = 1.0;
        if let Ok(s) = simulate_scores(&sub, probs, meta.score_sequences, meta.seed) {
            score_by_level.insert(level.to_string(), s);
        }
    }
    let (labels, probs): (Vec<u8>, Vec<f64>) = preds.iter().map(|p| (p.label, p.prob)).unzip();
    let mut ids: Vec<&str> = preds.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(EvalReport {
        created_at: chrono::Utc::now().to_rfc3339(),
        images: ids.len(),
        overall: BinaryMetrics::compute(&labels, &probs),
        by_source: group_by(preds, |p| p.source.as_str().to_string()),
        by_generator: group_by(preds, |p| format!("{}/{}", p.source, p.generator)),
        by_label: group_by(preds, |p| {
            if p.label == 1 {
                "roadwork".into()
            } else {
                "none".into()
            }
        }),
        by_level: group_by(preds, |p| p.level.to_string()),
        expected_score,
        score_by_level,
        latency,
        reliability: reliability_bins(&labels, &probs, ECE_BINS),
        meta,
    })
}

fn row(name: &str, m: &BinaryMetrics) -> String {
    let auc = m.roc_auc.map_or("–".to_string(), |a| format!("{a:.4}"));
    format!(
        "| {name} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {auc} | {:.4} | {:.4} |\n",
        m.n, m.accuracy, m.mcc, m.precision, m.recall, m.f1, m.ece, m.brier
    )
}

/// The Markdown report.
pub fn render_markdown(r: &EvalReport) -> String {
    let mut s = String::new();
    let m = &r.meta;
    let _ = writeln!(s, "# sv72 eval — run {}\n", m.run_id);
    let _ = writeln!(s, "- checkpoint: `{}`", m.checkpoint);
    let _ = writeln!(
        s,
        "- data: `{}` split `{}` (manifest blake3 `{}`), {} images",
        m.manifest, m.split, m.manifest_hash, r.images
    );
    let _ = writeln!(
        s,
        "- validator challenge pipeline: seed {}, {} draw(s) per image per level 0–3",
        m.seed, m.draws_per_image
    );
    let _ = writeln!(s, "- created: {}\n", r.created_at);
    let e = &r.expected_score;
    let _ = writeln!(s, "## Expected subnet score\n");
    let _ = writeln!(s, "(0.5·MCC₁₀₀ + 0.5·accuracy₁₀)³ over {} simulated 100-challenge sequences: **mean {:.4}**, 5th–95th percentile {:.4} – {:.4} (median {:.4}; mean MCC₁₀₀ {:.4}, mean accuracy₁₀ {:.4}).\n", e.sequences, e.mean, e.p05, e.p95, e.p50, e.mean_mcc_100, e.mean_accuracy_10);
    if !r.score_by_level.is_empty() {
        let _ = writeln!(s, "| level | mean | p05 | p95 |\n|---|---|---|---|");
        for (l, sc) in &r.score_by_level {
            let _ = writeln!(
                s,
                "| {l} | {:.4} | {:.4} | {:.4} |",
                sc.mean, sc.p05, sc.p95
            );
        }
        let _ = writeln!(s, "\n![score by level](score_by_level.png)\n");
    }
    if let Some(l) = &r.latency {
        let _ = writeln!(s, "## Latency\n\nbackbone + head, batch 1, on {}: p50 {:.2} ms, p99 {:.2} ms ({} images).\n", l.device, l.p50_ms, l.p99_ms, l.samples);
    }
    let header = "| slice | n | accuracy | MCC | precision | recall | F1 | ECE | ROC-AUC | Brier |\n|---|---|---|---|---|---|---|---|---|---|\n";
    // Column order in `row` is acc, mcc, prec, rec, f1, auc, ece, brier; keep header in step.
    let header = header.replace("| ECE | ROC-AUC |", "| ROC-AUC | ECE |");
    let _ = writeln!(s, "## Metrics (answers rounded at 0.5, as validators do)\n");
    s.push_str(&header);
    s.push_str(&row("overall", &r.overall));
    for (title, map) in [
        ("source", &r.by_source),
        ("generator", &r.by_generator),
        ("label", &r.by_label),
        ("level", &r.by_level),
    ] {
        for (k, v) in map {
            s.push_str(&row(&format!("{title}: {k}"), v));
        }
    }
    let c = &r.overall.confusion;
    let _ = writeln!(s, "\n## Confusion matrix\n\n| true \\ predicted | None | Roadwork |\n|---|---|---|\n| None | {} | {} |\n| Roadwork | {} | {} |\n", c.tn, c.fp, c.fn_, c.tp);
    let _ = writeln!(
        s,
        "![confusion](confusion.png) ![ROC](roc.png) ![reliability](reliability.png)\n"
    );
    s
}

/// A short table for the terminal.
pub fn summary_table(r: &EvalReport) -> String {
    let o = &r.overall;
    let e = &r.expected_score;
    let mut s = format!(
        "run {} on {}:{} ({} images, {} answers)\n  accuracy {:.4}  MCC {:.4}  F1 {:.4}  AUC {}  ECE {:.4}  Brier {:.4}\n  expected score {:.4} (p05 {:.4}, p95 {:.4})\n",
        r.meta.run_id, r.meta.manifest, r.meta.split, r.images, o.n, o.accuracy, o.mcc, o.f1,
        o.roc_auc.map_or("–".into(), |a| format!("{a:.4}")), o.ece, o.brier, e.mean, e.p05, e.p95
    );
    for (l, m) in &r.by_level {
        let _ = writeln!(
            s,
            "  level {l}: accuracy {:.4}  MCC {:.4}",
            m.accuracy, m.mcc
        );
    }
    if let Some(l) = &r.latency {
        let _ = writeln!(
            s,
            "  latency ({}): p50 {:.2} ms  p99 {:.2} ms",
            l.device, l.p50_ms, l.p99_ms
        );
    }
    s
}

/// File name of the per-answer predictions an eval leaves for `retrain-check` and `mine-hard`.
pub const PREDICTIONS_FILE: &str = "predictions.jsonl";

/// Writes one JSON [`EvalPrediction`] per line, atomically.
pub fn write_predictions(path: &Path, preds: &[EvalPrediction]) -> Result<()> {
    let mut text = String::with_capacity(preds.len() * 120);
    for p in preds {
        text.push_str(&serde_json::to_string(p)?);
        text.push('\n');
    }
    fsx::write_atomic(path, text.as_bytes())
}

/// Reads a `predictions.jsonl` written by [`write_predictions`]; errors name the line.
pub fn read_predictions(path: &Path) -> Result<Vec<EvalPrediction>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read eval predictions {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "{} line {}: not an sv72 eval prediction; re-run `sv72 eval`",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// Writes `report.json`, `report.md`, `predictions.jsonl`, `roc.png`, `reliability.png`,
/// `score_by_level.png` and `confusion.png` into `dir`; returns the paths written.
pub fn write_report(dir: &Path, r: &EvalReport, preds: &[EvalPrediction]) -> Result<Vec<PathBuf>> {
    let p = |n: &str| dir.join(n);
    fsx::write_json_atomic(&p("report.json"), r)?;
    write_predictions(&p(PREDICTIONS_FILE), preds)?;
    fsx::write_atomic(&p("report.md"), render_markdown(r).as_bytes())?;
    let (labels, probs): (Vec<u8>, Vec<f64>) = preds.iter().map(|x| (x.label, x.prob)).unzip();
    plots::roc_png(
        &p("roc.png"),
        &roc_curve(&labels, &probs),
        r.overall.roc_auc,
    )?;
    plots::reliability_png(&p("reliability.png"), &r.reliability)?;
    let levels: Vec<(u8, f64, f64, f64)> = r
        .score_by_level
        .iter()
        .filter_map(|(l, s)| Some((l.parse().ok()?, s.mean, s.p05, s.p95)))
        .collect();
    plots::score_by_level_png(&p("score_by_level.png"), &levels)?;
    plots::confusion_png(&p("confusion.png"), &r.overall.confusion)?;
    Ok([
        "report.json",
        "report.md",
        PREDICTIONS_FILE,
        "roc.png",
        "reliability.png",
        "score_by_level.png",
        "confusion.png",
    ]
    .iter()
    .map(|n| p(n))
    .collect())
}
