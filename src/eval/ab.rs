//! `sv72 ab-test`: two models compared on the very same validator challenges.
//!
//! [`compare`] takes paired answers (one row per augmented draw of an image, answered by both
//! models) and computes per-model metrics, McNemar's exact test on the disagreements, and paired
//! bootstrap intervals (resampling images, keeping an image's draws together) for Δaccuracy,
//! ΔMCC and Δexpected subnet score, all as B − A. [`decide`] applies the configured rule and
//! spells out every clause; [`write_ab_report`] writes `decision.json`, `report.md`,
//! `answers.jsonl` and `accuracy_by_level.png`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::config::AbTestConfig;
use crate::data::manifest::SourceKind;
use crate::metrics::classify::hard_label;
use crate::metrics::score::{draw_challenges, score_plan, HISTORY_LEN};
use crate::metrics::stats::{group_bootstrap, mcnemar_exact, percentile_interval, Interval};
use crate::metrics::{BinaryMetrics, Confusion, ScoreItem, ScoreSummary};
use crate::util::fsx;

/// Coverage of the bootstrap intervals.
pub const CI_LEVEL: f64 = 0.95;
/// File names written by [`write_ab_report`].
pub const DECISION_FILE: &str = "decision.json";
pub const REPORT_FILE: &str = "report.md";
pub const ANSWERS_FILE: &str = "answers.jsonl";
pub const PLOT_FILE: &str = "accuracy_by_level.png";

/// One challenge (an augmented draw of one image) answered by both models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedAnswer {
    pub id: String,
    pub label: u8,
    pub source: SourceKind,
    pub generator: String,
    /// Validator augmentation level 0–3.
    pub level: u8,
    pub draw: u32,
    /// Served probability of model A.
    pub prob_a: f64,
    /// Served probability of model B.
    pub prob_b: f64,
}

/// The metric the promotion rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Mcc,
    Accuracy,
    /// Expected subnet score.
    Score,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Mcc => "mcc",
            Metric::Accuracy => "accuracy",
            Metric::Score => "score",
        }
    }
}

impl FromStr for Metric {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mcc" => Ok(Metric::Mcc),
            "accuracy" | "acc" => Ok(Metric::Accuracy),
            "score" => Ok(Metric::Score),
            _ => bail!("ab_test.metric {s:?} is not a metric: use mcc, accuracy or score"),
        }
    }
}

/// The promotion rule (`ab_test` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub metric: Metric,
    pub min_gain: f64,
    pub require_ci_above_zero: bool,
    pub max_mcnemar_p: Option<f64>,
}

impl Rule {
    /// The rule as configured; errors name the offending `ab_test.*` key.
    pub fn from_config(c: &AbTestConfig) -> Result<Self> {
        if !c.min_gain.is_finite() {
            bail!(
                "ab_test.min_gain must be a finite number, got {}",
                c.min_gain
            );
        }
        if let Some(p) = c.max_mcnemar_p {
            if !(p > 0.0 && p <= 1.0) {
                bail!("ab_test.max_mcnemar_p must be in (0, 1] or null, got {p}");
            }
        }
        Ok(Rule {
            metric: c.metric.parse()?,
            min_gain: c.min_gain,
            require_ci_above_zero: c.require_ci_above_zero,
            max_mcnemar_p: c.max_mcnemar_p,
        })
    }
}

/// How the statistics are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbOptions {
    /// Bootstrap resamples (0 = no intervals).
    pub resamples: usize,
    /// Seed of the bootstrap and of the simulated challenge sequences.
    pub seed: u64,
    /// Validator level probabilities (`augment.level_probs`).
    pub level_probs: [f64; 4],
    /// Simulated 100-challenge sequences for the expected-score point estimate.
    pub score_sequences: usize,
    /// Simulated sequences per bootstrap resample for Δscore (0 = no Δscore interval).
    pub resample_sequences: usize,
}

/// Metrics of one model on the paired challenges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub overall: BinaryMetrics,
    pub by_level: BTreeMap<String, BinaryMetrics>,
    /// `None` when the split holds one class only (validators never send such a stream).
    pub expected_score: Option<ScoreSummary>,
}

/// B − A with 95% paired bootstrap intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deltas {
    pub accuracy: Interval,
    pub mcc: Interval,
    /// `None` when the expected score is undefined (one class only).
    pub score: Option<Interval>,
}

impl Deltas {
    /// The interval of the rule's metric.
    pub fn of(&self, m: Metric) -> Option<&Interval> {
        match m {
            Metric::Mcc => Some(&self.mcc),
            Metric::Accuracy => Some(&self.accuracy),
            Metric::Score => self.score.as_ref(),
        }
    }
}

/// McNemar's exact test on the answers where exactly one model is right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// A right, B wrong.
    pub b: u64,
    /// A wrong, B right.
    pub c: u64,
    pub p_value: f64,
}

/// How the intervals were obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapInfo {
    pub resamples: usize,
    pub seed: u64,
    pub level: f64,
    /// Resampled unit.
    pub unit: String,
    pub score_sequences: usize,
    pub score_sequences_per_resample: usize,
}

/// Everything [`compare`] measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbStats {
    pub images: usize,
    pub answers: usize,
    #[serde(rename = "metrics_a")]
    pub a: ModelMetrics,
    #[serde(rename = "metrics_b")]
    pub b: ModelMetrics,
    /// B − A.
    pub delta: Deltas,
    pub mcnemar: McNemar,
    pub bootstrap: BootstrapInfo,
    pub warnings: Vec<String>,
}

fn add_scaled(acc: &mut Confusion, c: &Confusion, k: u64) {
    acc.tp += c.tp * k;
    acc.fp += c.fp * k;
    acc.tn += c.tn * k;
    acc.fn_ += c.fn_ * k;
}

fn model_metrics(
    answers: &[PairedAnswer],
    prob: impl Fn(&PairedAnswer) -> f64,
    score: Option<ScoreSummary>,
) -> ModelMetrics {
    let (labels, probs): (Vec<u8>, Vec<f64>) = answers.iter().map(|a| (a.label, prob(a))).unzip();
    let mut by_level = BTreeMap::new();
    for level in 0..4u8 {
        let (l, p): (Vec<u8>, Vec<f64>) = answers
            .iter()
            .filter(|a| a.level == level)
            .map(|a| (a.label, prob(a)))
            .unzip();
        if !l.is_empty() {
            by_level.insert(level.to_string(), BinaryMetrics::compute(&l, &p));
        }
    }
    ModelMetrics {
        overall: BinaryMetrics::compute(&labels, &probs),
        by_level,
        expected_score: score,
    }
}

fn score_item(a: &PairedAnswer, prob: f64) -> ScoreItem {
    ScoreItem {
        label: a.label,
        synthetic: a.source == SourceKind::Synthetic,
        level: a.level,
        prob,
    }
}

/// Expected scores of A and B on one common set of simulated sequences (common random numbers,
/// so their difference carries little simulation noise); `None` when one label is missing.
fn paired_scores(
    items_a: &[ScoreItem],
    items_b: &[ScoreItem],
    level_probs: [f64; 4],
    sequences: usize,
    seed: u64,
) -> Option<(ScoreSummary, ScoreSummary)> {
    let plan = draw_challenges(items_a, level_probs, sequences, HISTORY_LEN, seed).ok()?;
    Some((
        score_plan(items_a, &plan, |it| it.prob),
        score_plan(items_b, &plan, |it| it.prob),
    ))
}

/// Paired statistics of B against A. See the module docs.
pub fn compare(answers: &[PairedAnswer], opts: &AbOptions) -> Result<AbStats> {
    if answers.is_empty() {
        bail!("ab-test: no paired answers to compare");
    }
    if let Some(a) = answers
        .iter()
        .find(|a| !(a.prob_a.is_finite() && a.prob_b.is_finite()))
    {
        bail!(
            "ab-test: non-finite probability for image {} level {} (A {}, B {})",
            a.id,
            a.level,
            a.prob_a,
            a.prob_b
        );
    }
    let mut warnings = Vec::new();
    // Groups = images, in first-seen order.
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        let g = *group_of.entry(a.id.as_str()).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[g].push(i);
    }
    let conf = |prob: fn(&PairedAnswer) -> f64| -> Vec<Confusion> {
        members
            .iter()
            .map(|m| {
                let mut c = Confusion::default();
                for &i in m {
                    c.add(answers[i].label, hard_label(prob(&answers[i])));
                }
                c
            })
            .collect()
    };
    let conf_a = conf(|a| a.prob_a);
    let conf_b = conf(|a| a.prob_b);

    let (mut b, mut c) = (0u64, 0u64);
    for a in answers {
        let ra = hard_label(a.prob_a) == a.label;
        let rb = hard_label(a.prob_b) == a.label;
        match (ra, rb) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    let mcnemar = McNemar {
        b,
        c,
        p_value: mcnemar_exact(b, c),
    };

    let items_a: Vec<ScoreItem> = answers.iter().map(|a| score_item(a, a.prob_a)).collect();
    let items_b: Vec<ScoreItem> = answers.iter().map(|a| score_item(a, a.prob_b)).collect();
    let two_classes = answers.iter().any(|a| a.label != answers[0].label);
    if !two_classes {
        warnings.push(format!(
            "the split holds label {} only: MCC is 0 for both models and the expected subnet \
             score is undefined; compare on a split with both classes",
            answers[0].label
        ));
    }
    let scores = if two_classes {
        paired_scores(
            &items_a,
            &items_b,
            opts.level_probs,
            opts.score_sequences.max(1),
            opts.seed,
        )
    } else {
        None
    };
    let ma = model_metrics(answers, |a| a.prob_a, scores.as_ref().map(|s| s.0.clone()));
    let mb = model_metrics(answers, |a| a.prob_b, scores.as_ref().map(|s| s.1.clone()));

    // Bootstrap replicates of (Δaccuracy, ΔMCC, Δscore).
    let mut resample = 0u64;
    let want_score = scores.is_some() && opts.resample_sequences > 0;
    let reps = group_bootstrap::<3>(members.len(), opts.resamples, opts.seed, |counts| {
        resample += 1;
        let (mut ca, mut cb) = (Confusion::default(), Confusion::default());
        for (g, &k) in counts.iter().enumerate() {
            if k > 0 {
                add_scaled(&mut ca, &conf_a[g], u64::from(k));
                add_scaled(&mut cb, &conf_b[g], u64::from(k));
            }
        }
        let score = if want_score {
            let (mut ia, mut ib) = (Vec::new(), Vec::new());
            for (g, &k) in counts.iter().enumerate() {
                for _ in 0..k {
                    for &i in &members[g] {
                        ia.push(items_a[i]);
                        ib.push(items_b[i]);
                    }
                }
            }
            // A resample with one label only has no defined score; it is left out.
            paired_scores(
                &ia,
                &ib,
                opts.level_probs,
                opts.resample_sequences,
                opts.seed.wrapping_add(resample),
            )
            .map(|(sa, sb)| sb.mean - sa.mean)
        } else {
            None
        };
        [
            Some(cb.accuracy() - ca.accuracy()),
            Some(cb.mcc() - ca.mcc()),
            score,
        ]
    });
    let [r_acc, r_mcc, r_score] = reps;
    let point = |e: f64| Interval {
        estimate: e,
        lo: e,
        hi: e,
        level: CI_LEVEL,
        resamples: 0,
    };
    let d_acc = mb.overall.accuracy - ma.overall.accuracy;
    let d_mcc = mb.overall.mcc - ma.overall.mcc;
    let d_score = scores.as_ref().map(|(sa, sb)| sb.mean - sa.mean);
    let delta = Deltas {
        accuracy: percentile_interval(d_acc, r_acc, CI_LEVEL).unwrap_or_else(|| point(d_acc)),
        mcc: percentile_interval(d_mcc, r_mcc, CI_LEVEL).unwrap_or_else(|| point(d_mcc)),
        score: d_score
            .map(|d| percentile_interval(d, r_score, CI_LEVEL).unwrap_or_else(|| point(d))),
    };
    if opts.resamples == 0 {
        warnings
            .push("ab_test.bootstrap is 0: the intervals collapse to the point estimates".into());
    }
    Ok(AbStats {
        images: members.len(),
        answers: answers.len(),
        a: ma,
        b: mb,
        delta,
        mcnemar,
        bootstrap: BootstrapInfo {
            resamples: opts.resamples,
            seed: opts.seed,
            level: CI_LEVEL,
            unit: "image (all of an image's draws resampled together)".into(),
            score_sequences: opts.score_sequences.max(1),
            score_sequences_per_resample: opts.resample_sequences,
        },
        warnings,
    })
}

/// One clause of the rule and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The verdict: promote B or keep A, with every clause spelled out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub promote: bool,
    /// `"promote"` or `"keep"`.
    pub decision: String,
    pub clauses: Vec<Clause>,
    /// The failed clauses' details (empty when promoting).
    pub reasons: Vec<String>,
}

/// Applies `rule`: promote B when B answers differently from A somewhere, Δmetric ≥ min_gain,
/// (if required) the interval's lower bound is above 0, and (if set) McNemar's p is below the
/// limit. Identical answers always keep A: there is nothing to gain by switching.
pub fn decide(stats: &AbStats, rule: &Rule) -> Decision {
    let m = rule.metric.as_str();
    let mut clauses = Vec::new();
    let disc = stats.mcnemar.b + stats.mcnemar.c;
    clauses.push(Clause {
        name: "differs".into(),
        passed: disc > 0,
        detail: if disc > 0 {
            format!(
                "B's answer differs from A's on {disc} of {} challenges",
                stats.answers
            )
        } else {
            "A and B give the same answer on every challenge (b + c = 0): nothing to promote".into()
        },
    });
    let d = stats.delta.of(rule.metric);
    clauses.push(match d {
        Some(d) => Clause {
            name: "min_gain".into(),
            passed: d.estimate >= rule.min_gain,
            detail: format!(
                "Δ{m} = {:+.4} {} min_gain {}",
                d.estimate,
                if d.estimate >= rule.min_gain {
                    "≥"
                } else {
                    "<"
                },
                rule.min_gain
            ),
        },
        None => Clause {
            name: "min_gain".into(),
            passed: false,
            detail: format!("Δ{m} is undefined on this split (one class only)"),
        },
    });
    if rule.require_ci_above_zero {
        clauses.push(match d {
            Some(d) if d.resamples > 0 => Clause {
                name: "ci_above_zero".into(),
                passed: d.lo > 0.0,
                detail: format!(
                    "lower bound of Δ{m}'s {:.0}% interval is {:+.4}, {} 0",
                    d.level * 100.0,
                    d.lo,
                    if d.lo > 0.0 { "above" } else { "not above" }
                ),
            },
            Some(_) => Clause {
                name: "ci_above_zero".into(),
                passed: false,
                detail: format!(
                    "Δ{m} has no bootstrap interval (ab_test.bootstrap or, for score, \
                     ab_test.bootstrap_score_sequences is 0)"
                ),
            },
            None => Clause {
                name: "ci_above_zero".into(),
                passed: false,
                detail: format!("Δ{m} has no interval on this split"),
            },
        });
    }
    if let Some(max_p) = rule.max_mcnemar_p {
        let p = stats.mcnemar.p_value;
        clauses.push(Clause {
            name: "mcnemar".into(),
            passed: p < max_p,
            detail: format!(
                "McNemar exact p = {p:.4} (b = {}, c = {}) {} max_mcnemar_p {max_p}",
                stats.mcnemar.b,
                stats.mcnemar.c,
                if p < max_p { "<" } else { "≥" }
            ),
        });
    }
    let promote = clauses.iter().all(|c| c.passed);
    Decision {
        promote,
        decision: if promote { "promote" } else { "keep" }.into(),
        reasons: clauses
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.detail.clone())
            .collect(),
        clauses,
    }
}

/// A compared model as named on the command line and as resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The argument as given.
    pub arg: String,
    /// The folder it resolved to (symlinks and `latest` followed).
    pub path: String,
    /// `checkpoint`, `export` or `model`.
    pub kind: String,
    /// Run id (checkpoints), `<model_name>-<version>` (exports) or the predictor's version.
    pub id: String,
    pub backbone: Option<String>,
}

/// The challenges both models answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRef {
    pub manifest: String,
    pub manifest_hash: String,
    pub split: String,
    pub seed: u64,
    pub draws_per_image: usize,
    pub levels: Vec<u8>,
    /// Challenges that could not be made (unreadable images) and were left out for both models.
    pub skipped: usize,
}

/// `decision.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbReport {
    pub created_at: String,
    pub a: ModelRecord,
    pub b: ModelRecord,
    pub data: DataRef,
    /// `features` (both heads on one set of cached backbone features) or `images` (each model
    /// run end to end on the same challenge images).
    pub mode: String,
    #[serde(flatten)]
    pub stats: AbStats,
    pub rule: AbTestConfig,
    #[serde(flatten)]
    pub decision: Decision,
    /// The process exit status that goes with the decision.
    pub exit_code: u8,
    /// Batch-1 latency per answer of each model, end to end (images mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<PairLatency>,
}

/// Batch-1 latencies of A and B, timed alternately on the same challenge images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairLatency {
    pub a: super::Latency,
    pub b: super::Latency,
}

fn latency_line(l: &PairLatency) -> String {
    format!(
        "latency per answer (batch 1, {}, {} timings each, A and B alternated): A p50 {:.1} ms p99 {:.1} ms; \
         B p50 {:.1} ms p99 {:.1} ms",
        l.a.device, l.a.samples, l.a.p50_ms, l.a.p99_ms, l.b.p50_ms, l.b.p99_ms
    )
}

fn fmt_iv(iv: &Interval) -> String {
    format!("{:+.4} [{:+.4}, {:+.4}]", iv.estimate, iv.lo, iv.hi)
}

fn score_mean(m: &ModelMetrics) -> String {
    m.expected_score
        .as_ref()
        .map_or("–".into(), |s| format!("{:.4}", s.mean))
}

/// The Markdown report.
pub fn render_markdown(r: &AbReport) -> String {
    let mut s = String::new();
    let st = &r.stats;
    let _ = writeln!(
        s,
        "# sv72 ab-test — {}: {}\n",
        r.decision.decision.to_uppercase(),
        if r.decision.promote {
            "promote B"
        } else {
            "keep A"
        }
    );
    let _ = writeln!(
        s,
        "| | model | kind | id | backbone |\n|---|---|---|---|---|"
    );
    for (n, m) in [("A", &r.a), ("B", &r.b)] {
        let _ = writeln!(
            s,
            "| {n} | `{}` → `{}` | {} | {} | {} |",
            m.arg,
            m.path,
            m.kind,
            m.id,
            m.backbone.as_deref().unwrap_or("–")
        );
    }
    let d = &r.data;
    let _ = writeln!(
        s,
        "\n- data: `{}` split `{}` (manifest blake3 `{}`): {} images, {} paired answers ({} draw(s) per image per level {:?}, seed {}; {} challenge(s) skipped)",
        d.manifest, d.split, d.manifest_hash, st.images, st.answers, d.draws_per_image, d.levels, d.seed, d.skipped
    );
    let _ = writeln!(s, "- mode: {}", r.mode);
    if let Some(l) = &r.latency {
        let _ = writeln!(s, "- {}", latency_line(l));
    }
    let _ = writeln!(s, "- created: {}\n", r.created_at);

    let _ = writeln!(s, "## Decision\n");
    let _ = writeln!(
        s,
        "Rule: metric `{}`, min_gain {}, require_ci_above_zero {}, max_mcnemar_p {}. Exit status {}.\n",
        r.rule.metric,
        r.rule.min_gain,
        r.rule.require_ci_above_zero,
        r.rule.max_mcnemar_p.map_or("null".into(), |p| p.to_string()),
        r.exit_code
    );
    for c in &r.decision.clauses {
        let _ = writeln!(
            s,
            "- {} `{}`: {}",
            if c.passed { "✔" } else { "✘" },
            c.name,
            c.detail
        );
    }
    for w in &st.warnings {
        let _ = writeln!(s, "- warning: {w}");
    }

    let _ = writeln!(
        s,
        "\n## Metrics (answers rounded at 0.5, as validators do)\n"
    );
    let _ = writeln!(
        s,
        "| | accuracy | MCC | F1 | ROC-AUC | expected score |\n|---|---|---|---|---|---|"
    );
    for (n, m) in [("A", &st.a), ("B", &st.b)] {
        let o = &m.overall;
        let _ = writeln!(
            s,
            "| {n} | {:.4} | {:.4} | {:.4} | {} | {} |",
            o.accuracy,
            o.mcc,
            o.f1,
            o.roc_auc.map_or("–".into(), |a| format!("{a:.4}")),
            score_mean(m)
        );
    }
    let _ = writeln!(
        s,
        "| B − A (95% CI) | {} | {} | | | {} |\n",
        fmt_iv(&st.delta.accuracy),
        fmt_iv(&st.delta.mcc),
        st.delta.score.as_ref().map_or("–".into(), fmt_iv)
    );
    let _ = writeln!(
        s,
        "| level | n | accuracy A | accuracy B | MCC A | MCC B |\n|---|---|---|---|---|---|"
    );
    for (l, a) in &st.a.by_level {
        if let Some(b) = st.b.by_level.get(l) {
            let _ = writeln!(
                s,
                "| {l} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
                a.n, a.accuracy, b.accuracy, a.mcc, b.mcc
            );
        }
    }
    let _ = writeln!(s, "\n![accuracy by level]({PLOT_FILE})\n");
    let m = &st.mcnemar;
    let _ = writeln!(s, "## McNemar exact test\n\nA right / B wrong b = {}, A wrong / B right c = {}: two-sided p = {:.4}. Draws of one image are counted as separate pairs, so with several draws per image p is optimistic; the image-level bootstrap intervals are the primary evidence.\n", m.b, m.c, m.p_value);
    let bi = &st.bootstrap;
    let _ = writeln!(s, "## Method\n\nPaired bootstrap: {} resamples of the {} images with replacement (seed {}), each image's draws kept together and answered by both models; percentile {:.0}% intervals of B − A. Expected score: {} simulated 100-challenge validator sequences shared by A and B for the estimate, {} per resample for its interval (an unbiased estimate of each resample's expected score).", bi.resamples, st.images, bi.seed, bi.level * 100.0, bi.score_sequences, bi.score_sequences_per_resample);
    s
}

/// A short table for the terminal.
pub fn summary_table(r: &AbReport) -> String {
    let st = &r.stats;
    let mut s = format!(
        "ab-test on {}:{} ({} images, {} paired answers, mode {})\n",
        r.data.manifest, r.data.split, st.images, st.answers, r.mode
    );
    for (n, m) in [("A", &r.a), ("B", &r.b)] {
        let _ = writeln!(s, "  {n} = {} ({} {})", m.id, m.kind, m.arg);
    }
    let _ = writeln!(
        s,
        "  {:<10} {:>9} {:>9} {:>9}",
        "", "accuracy", "MCC", "score"
    );
    for (n, m) in [("A", &st.a), ("B", &st.b)] {
        let _ = writeln!(
            s,
            "  {n:<10} {:>9.4} {:>9.4} {:>9}",
            m.overall.accuracy,
            m.overall.mcc,
            score_mean(m)
        );
    }
    let _ = writeln!(s, "  Δ accuracy {}", fmt_iv(&st.delta.accuracy));
    let _ = writeln!(s, "  Δ MCC      {}", fmt_iv(&st.delta.mcc));
    let _ = writeln!(
        s,
        "  Δ score    {}",
        st.delta.score.as_ref().map_or("–".into(), fmt_iv)
    );
    let _ = writeln!(
        s,
        "  McNemar b={} c={} p={:.4}",
        st.mcnemar.b, st.mcnemar.c, st.mcnemar.p_value
    );
    if let Some(l) = &r.latency {
        let _ = writeln!(s, "  {}", latency_line(l));
    }
    for w in &st.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    let _ = writeln!(
        s,
        "decision: {} (exit {})",
        if r.decision.promote {
            "PROMOTE B"
        } else {
            "KEEP A"
        },
        r.exit_code
    );
    for reason in &r.decision.reasons {
        let _ = writeln!(s, "  - {reason}");
    }
    s
}

/// A model's legend entry in the plot: `A: <id>`, shortened to fit.
fn plot_name(side: &str, m: &ModelRecord) -> String {
    const MAX: usize = 40;
    let id = if m.id.chars().count() > MAX {
        let tail: String = m.id.chars().rev().take(MAX - 1).collect();
        format!("…{}", tail.chars().rev().collect::<String>())
    } else {
        m.id.clone()
    };
    format!("{side}: {id}")
}

/// Writes `decision.json`, `report.md`, `answers.jsonl` and `accuracy_by_level.png` into `dir`.
/// A new `dir` appears only once everything is written; in an existing folder (which may hold
/// other things, e.g. a checkpoint) each file is replaced atomically and nothing else is touched.
pub fn write_ab_report(dir: &Path, r: &AbReport, answers: &[PairedAnswer]) -> Result<Vec<PathBuf>> {
    let names = [DECISION_FILE, REPORT_FILE, ANSWERS_FILE, PLOT_FILE];
    let write = |d: &Path| -> Result<()> {
        fsx::write_json_atomic(&d.join(DECISION_FILE), r)?;
        fsx::write_atomic(&d.join(REPORT_FILE), render_markdown(r).as_bytes())?;
        let mut text = String::with_capacity(answers.len() * 140);
        for a in answers {
            text.push_str(&serde_json::to_string(a)?);
            text.push('\n');
        }
        fsx::write_atomic(&d.join(ANSWERS_FILE), text.as_bytes())?;
        let (a, b) = (&r.stats.a, &r.stats.b);
        let mut bars = vec![(
            "overall".to_string(),
            a.overall.accuracy,
            b.overall.accuracy,
        )];
        for (l, la) in &a.by_level {
            if let Some(lb) = b.by_level.get(l) {
                bars.push((format!("level {l}"), la.accuracy, lb.accuracy));
            }
        }
        let names = [plot_name("A", &r.a), plot_name("B", &r.b)];
        super::plots::paired_bars_png(
            &d.join(PLOT_FILE),
            "Accuracy on the same validator challenges",
            &bars,
            [&names[0], &names[1]],
        )
    };
    if dir.is_dir() {
        write(dir)?;
    } else {
        fsx::write_dir_atomic(dir, write)?;
    }
    Ok(names.iter().map(|n| dir.join(n)).collect())
}
