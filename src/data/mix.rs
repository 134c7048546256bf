//! The training mix: a target synthetic share per label, optionally class-balanced.
//!
//! Three layers, each testable on its own:
//! 1. [`plan_mix`]: pure arithmetic from available train counts per (label, source) to the counts
//!    to take, with every shortfall spelled out.
//! 2. [`build_mix`]: deduplicates the input rows, carries val/test over untouched and samples the
//!    train rows the plan asks for (deterministic hash ranking from the seed).
//! 3. IO (the `synth-mix` CLI): reads and writes manifests and the `mix_report.{json,md}`.
//!
//! # Policy
//! The real images are the anchor: without `per_label`, each label wants all of its real train
//! images plus enough synthetic ones to make the synthetic share exactly the target
//! (`fraction == 1` wants all synthetic images instead). With `balance = equal` every label wants
//! the smallest of those totals, so the larger class is subsampled. `per_label = Some(n)` asks for
//! exactly `n` train images per label instead.
//!
//! When a label has too few images of one source for what it wants:
//! - default ([`ShortfallPolicy::ExactRatio`]): the ratio is kept exact by shrinking the label's
//!   total (fewer images of the other source); with balanced classes the other labels shrink to
//!   the same total so the balance holds too;
//! - [`ShortfallPolicy::AllowRatioShortfall`]: the label keeps every image of the plentiful
//!   source it wanted, takes all of the short source, and fills the gap with spare images of the
//!   plentiful source where there are any; the achieved ratio is reported.
//!
//! Either way each shortfall (label, source, wanted, available) and the target vs achieved ratio
//! per label end up in the plan and the report. The ratio is never changed silently.
//!
//! Counts: a label total `t` splits into `synthetic = round(fraction * t)` (half away from zero)
//! and `real = t - synthetic`. The largest exact mix of what is available ([`exact_capacity`])
//! uses the scarcer source in full and rounds the other, so 100 reals at 0.5 give 100 + 100, not
//! the lopsided 100 + 101 that the rounding rule alone would allow.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::manifest::{ManifestRow, SourceKind, Split};
use crate::util::hash::stable_u64;

/// The labels every mix considers, even when an input lacks one (1 = roadwork, 0 = none).
pub const LABELS: [u8; 2] = [0, 1];

pub use crate::config::Balance;

/// What to do when a label cannot meet the target ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShortfallPolicy {
    /// Keep the ratio exact; shrink the label's total (the default).
    ExactRatio,
    /// Keep the counts; let the ratio fall short of the target.
    AllowRatioShortfall,
}

/// Everything [`plan_mix`] needs besides the counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixRequest {
    /// Target synthetic share within each label's train images, in `[0, 1]`.
    pub fraction: f64,
    pub balance: Balance,
    pub policy: ShortfallPolicy,
    /// Exact train images wanted per label (overrides the real-anchored total and `balance`).
    pub per_label: Option<usize>,
}

/// Train images available for one label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub real: usize,
    pub synthetic: usize,
}

impl SourceCounts {
    pub fn total(&self) -> usize {
        self.real + self.synthetic
    }

    fn get(&self, s: SourceKind) -> usize {
        match s {
            SourceKind::Real => self.real,
            SourceKind::Synthetic => self.synthetic,
        }
    }
}

/// One label that lacks images of one source for what it wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub label: u8,
    pub source: SourceKind,
    pub wanted: usize,
    pub available: usize,
}

/// The plan for one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelPlan {
    pub label: u8,
    pub available: SourceCounts,
    /// What the policy asked for before looking at shortfalls.
    pub wanted: SourceCounts,
    /// What will be taken.
    pub take: SourceCounts,
    pub target_fraction: f64,
    /// Synthetic share of `take` (`None` when the label takes nothing).
    pub achieved_fraction: Option<f64>,
}

/// The arithmetic result of a mix: counts per label and every shortfall, with plain-words notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixPlan {
    pub request: MixRequest,
    pub labels: Vec<LabelPlan>,
    pub shortfalls: Vec<Shortfall>,
    /// What was done and why, one sentence each (also printed by the CLI).
    pub notes: Vec<String>,
}

impl MixPlan {
    /// The plan of one label.
    pub fn label(&self, label: u8) -> Option<&LabelPlan> {
        self.labels.iter().find(|l| l.label == label)
    }

    /// Train images the plan takes in total.
    pub fn total_take(&self) -> usize {
        self.labels.iter().map(|l| l.take.total()).sum()
    }
}

/// Synthetic count of a label total at `fraction` (half away from zero).
pub fn synthetic_share(total: usize, fraction: f64) -> usize {
    let s = (fraction * total as f64).round();
    (s.max(0.0) as usize).min(total)
}

/// Splits `total` into (real, synthetic) at `fraction`.
fn split_total(total: usize, fraction: f64) -> SourceCounts {
    let synthetic = synthetic_share(total, fraction);
    SourceCounts {
        real: total - synthetic,
        synthetic,
    }
}

/// The largest mix of `avail` at exactly `fraction`: the scarcer source (relative to the target)
/// is used in full and the other gets `round(n * other share / its share)` images. Its split
/// equals [`split_total`] of its total, because the rounding error is below half an image.
pub fn exact_capacity(avail: SourceCounts, fraction: f64) -> SourceCounts {
    if fraction <= 0.0 {
        return SourceCounts {
            real: avail.real,
            synthetic: 0,
        };
    }
    if fraction >= 1.0 {
        return SourceCounts {
            real: 0,
            synthetic: avail.synthetic,
        };
    }
    let synth_for_real = (avail.real as f64 * fraction / (1.0 - fraction)).round();
    if synth_for_real <= avail.synthetic as f64 {
        SourceCounts {
            real: avail.real,
            synthetic: synth_for_real as usize,
        }
    } else {
        let real_for_synth = (avail.synthetic as f64 * (1.0 - fraction) / fraction).round();
        SourceCounts {
            real: (real_for_synth as usize).min(avail.real),
            synthetic: avail.synthetic,
        }
    }
}

/// The total that keeps all real images at `fraction` (all synthetic ones at `fraction == 1`).
fn anchor_total(avail: SourceCounts, fraction: f64) -> usize {
    if fraction >= 1.0 {
        return avail.synthetic;
    }
    let unlimited = SourceCounts {
        real: avail.real,
        synthetic: usize::MAX / 4,
    };
    exact_capacity(unlimited, fraction).total()
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn label_name(label: u8) -> &'static str {
    match label {
        1 => "roadwork (label 1)",
        0 => "none (label 0)",
        _ => "unknown label",
    }
}

/// Pure mix arithmetic: from available train counts per label to the counts to take.
///
/// `available` may omit labels (they count as empty); [`LABELS`] are always planned.
pub fn plan_mix(available: &BTreeMap<u8, SourceCounts>, req: &MixRequest) -> Result<MixPlan> {
    let f = req.fraction;
    if !(0.0..=1.0).contains(&f) || f.is_nan() {
        bail!("synthetic fraction {f} must be within [0, 1]");
    }
    let mut labels: Vec<u8> = LABELS.to_vec();
    labels.extend(available.keys().copied().filter(|l| !LABELS.contains(l)));
    let avail = |l: u8| available.get(&l).copied().unwrap_or_default();
    let mut notes = Vec::new();

    // 1. What each label wants.
    let balanced = req.per_label.is_some() || req.balance == Balance::Equal;
    let wanted_total: BTreeMap<u8, usize> = match req.per_label {
        Some(n) => {
            notes.push(format!(
                "each label wants exactly {n} train images (--per-label), {} synthetic",
                pct(f)
            ));
            labels.iter().map(|&l| (l, n)).collect()
        }
        None => {
            let anchors: BTreeMap<u8, usize> = labels
                .iter()
                .map(|&l| (l, anchor_total(avail(l), f)))
                .collect();
            if req.balance == Balance::Equal {
                let (&min_label, &min) = anchors
                    .iter()
                    .min_by_key(|(l, t)| (**t, **l))
                    .expect("LABELS is not empty");
                notes.push(format!(
                    "balance equal: every label wants {min} train images, the most that \
                     {} supports at {} synthetic while keeping all its {}",
                    label_name(min_label),
                    pct(f),
                    if f >= 1.0 {
                        "synthetic images"
                    } else {
                        "real images"
                    }
                ));
                labels.iter().map(|&l| (l, min)).collect()
            } else {
                anchors
            }
        }
    };
    let wanted: BTreeMap<u8, SourceCounts> = wanted_total
        .iter()
        .map(|(&l, &t)| (l, split_total(t, f)))
        .collect();

    // 2. Shortfalls.
    let mut shortfalls = Vec::new();
    for &l in &labels {
        let (w, a) = (wanted[&l], avail(l));
        for src in [SourceKind::Synthetic, SourceKind::Real] {
            if w.get(src) > a.get(src) {
                shortfalls.push(Shortfall {
                    label: l,
                    source: src,
                    wanted: w.get(src),
                    available: a.get(src),
                });
            }
        }
    }

    // 3. What to take.
    let mut take: BTreeMap<u8, SourceCounts> = BTreeMap::new();
    match req.policy {
        ShortfallPolicy::ExactRatio => {
            let totals: BTreeMap<u8, usize> = labels
                .iter()
                .map(|&l| (l, wanted_total[&l].min(exact_capacity(avail(l), f).total())))
                .collect();
            let common = totals.values().copied().min().unwrap_or(0);
            for &l in &labels {
                let t = if balanced { common } else { totals[&l] };
                take.insert(l, split_total(t, f));
            }
            for s in &shortfalls {
                let got = take[&s.label];
                notes.push(format!(
                    "{}: wanted {} {} train images but only {} are available; kept the ratio \
                     exact at {} synthetic by shrinking this label to {} images ({} real + {} \
                     synthetic) instead of {} (pass --allow-ratio-shortfall to keep the counts \
                     and accept a different ratio)",
                    label_name(s.label),
                    s.wanted,
                    s.source,
                    s.available,
                    pct(f),
                    got.total(),
                    got.real,
                    got.synthetic,
                    wanted_total[&s.label],
                ));
            }
            if balanced && !shortfalls.is_empty() {
                for &l in &labels {
                    if take[&l].total() < totals[&l] {
                        notes.push(format!(
                            "{}: reduced to {} train images so the classes stay balanced",
                            label_name(l),
                            common
                        ));
                    }
                }
            }
        }
        ShortfallPolicy::AllowRatioShortfall => {
            for &l in &labels {
                let (w, a) = (wanted[&l], avail(l));
                let mut t = SourceCounts {
                    real: w.real.min(a.real),
                    synthetic: w.synthetic.min(a.synthetic),
                };
                // Fill the gap left by the short source with spare images of the other one.
                let gap = w.total() - t.total();
                let spare_real = (a.real - t.real).min(gap);
                t.real += spare_real;
                t.synthetic += (a.synthetic - t.synthetic).min(gap - spare_real);
                take.insert(l, t);
            }
            for s in &shortfalls {
                let got = take[&s.label];
                notes.push(format!(
                    "{}: wanted {} {} train images but only {} are available; \
                     --allow-ratio-shortfall: took {} real + {} synthetic, so the synthetic share \
                     is {} instead of the target {}",
                    label_name(s.label),
                    s.wanted,
                    s.source,
                    s.available,
                    got.real,
                    got.synthetic,
                    if got.total() > 0 {
                        pct(got.synthetic as f64 / got.total() as f64)
                    } else {
                        "undefined (no images)".into()
                    },
                    pct(f),
                ));
            }
            if balanced && !shortfalls.is_empty() {
                let totals: HashSet<usize> = take.values().map(|t| t.total()).collect();
                if totals.len() > 1 {
                    notes.push(
                        "--allow-ratio-shortfall: the labels no longer have equal train counts \
                         (see the table)"
                            .to_string(),
                    );
                }
            }
        }
    }
    for &l in &labels {
        if take[&l].total() == 0 && avail(l).total() > 0 {
            notes.push(format!(
                "{} gets no train images although {} are available",
                label_name(l),
                avail(l).total()
            ));
        } else if avail(l).total() == 0 {
            notes.push(format!(
                "{} has no train images in the inputs",
                label_name(l)
            ));
        }
    }

    let labels = labels
        .iter()
        .map(|&l| {
            let t = take[&l];
            LabelPlan {
                label: l,
                available: avail(l),
                wanted: wanted[&l],
                take: t,
                target_fraction: f,
                achieved_fraction: (t.total() > 0).then(|| t.synthetic as f64 / t.total() as f64),
            }
        })
        .collect();
    Ok(MixPlan {
        request: *req,
        labels,
        shortfalls,
        notes,
    })
}

/// Train images available per (label, source) in `rows`.
pub fn count_train(rows: &[ManifestRow]) -> BTreeMap<u8, SourceCounts> {
    let mut m: BTreeMap<u8, SourceCounts> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.split == Split::Train) {
        let c = m.entry(r.label).or_default();
        match r.source {
            SourceKind::Real => c.real += 1,
            SourceKind::Synthetic => c.synthetic += 1,
        }
    }
    m
}

/// Rows that [`build_mix`] left out before sampling, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedRows {
    /// Same id as an earlier val/test row (kept once, in its first split).
    pub duplicate_eval: usize,
    /// Train rows whose id is also in val or test: kept out of train so nothing leaks.
    pub train_in_eval: usize,
    /// Same id as an earlier train row.
    pub duplicate_train: usize,
    /// Materialised augmented variants of an earlier mix (not re-mixed).
    pub variants: usize,
}

impl DroppedRows {
    pub fn total(&self) -> usize {
        self.duplicate_eval + self.train_in_eval + self.duplicate_train + self.variants
    }
}

/// The result of [`build_mix`]: the rows of the new manifest and how they were chosen.
#[derive(Debug, Clone)]
pub struct MixOutcome {
    /// Val/test rows in input order, then the sampled train rows in input order.
    pub rows: Vec<ManifestRow>,
    pub plan: MixPlan,
    pub dropped: DroppedRows,
}

impl MixOutcome {
    /// The mixed train rows (what augmentation materialisation and previews start from).
    pub fn train_rows(&self) -> impl Iterator<Item = &ManifestRow> {
        self.rows.iter().filter(|r| r.split == Split::Train)
    }
}

/// The sampling rank of a row: a seeded hash of its id, so the choice does not depend on input
/// order and a larger count for the same seed takes a superset.
pub fn sample_rank(seed: u64, id: &str) -> u64 {
    stable_u64(&format!("sv72-mix/{seed}/{id}"))
}

/// Deduplicates `inputs`, carries val/test rows over unchanged, and samples the train rows that
/// [`plan_mix`] asks for. Deterministic in `seed`; never emits one id twice.
pub fn build_mix(inputs: &[ManifestRow], req: &MixRequest, seed: u64) -> Result<MixOutcome> {
    let mut dropped = DroppedRows::default();
    let mut eval_ids: HashSet<&str> = HashSet::new();
    let mut keep = vec![false; inputs.len()];
    for (i, r) in inputs.iter().enumerate() {
        if r.split != Split::Train {
            if eval_ids.insert(r.id.as_str()) {
                keep[i] = true;
            } else {
                dropped.duplicate_eval += 1;
            }
        }
    }

    let mut train_ids: HashSet<&str> = HashSet::new();
    let mut candidates: HashMap<(u8, SourceKind), Vec<usize>> = HashMap::new();
    for (i, r) in inputs.iter().enumerate() {
        if r.split != Split::Train {
            continue;
        }
        if r.variant_of.is_some() {
            dropped.variants += 1;
        } else if eval_ids.contains(r.id.as_str()) {
            dropped.train_in_eval += 1;
        } else if !train_ids.insert(r.id.as_str()) {
            dropped.duplicate_train += 1;
        } else {
            candidates.entry((r.label, r.source)).or_default().push(i);
        }
    }

    let mut available: BTreeMap<u8, SourceCounts> = BTreeMap::new();
    for (&(label, source), v) in &candidates {
        let c = available.entry(label).or_default();
        match source {
            SourceKind::Real => c.real = v.len(),
            SourceKind::Synthetic => c.synthetic = v.len(),
        }
    }
    let plan = plan_mix(&available, req)?;

    for lp in &plan.labels {
        for source in [SourceKind::Real, SourceKind::Synthetic] {
            let want = lp.take.get(source);
            let Some(pool) = candidates.get_mut(&(lp.label, source)) else {
                continue;
            };
            pool.sort_by_cached_key(|&i| (sample_rank(seed, &inputs[i].id), i));
            for &i in pool.iter().take(want) {
                keep[i] = true;
            }
        }
    }

    let eval = inputs
        .iter()
        .zip(&keep)
        .filter(|(r, k)| **k && r.split != Split::Train);
    let train = inputs
        .iter()
        .zip(&keep)
        .filter(|(r, k)| **k && r.split == Split::Train);
    let rows = eval.chain(train).map(|(r, _)| r.clone()).collect();
    Ok(MixOutcome {
        rows,
        plan,
        dropped,
    })
}

/// Counts per split, label and source (for the report).
pub fn split_counts(rows: &[ManifestRow]) -> BTreeMap<String, BTreeMap<u8, SourceCounts>> {
    let mut m: BTreeMap<String, BTreeMap<u8, SourceCounts>> = BTreeMap::new();
    for r in rows {
        let c = m
            .entry(r.split.to_string())
            .or_default()
            .entry(r.label)
            .or_default();
        match r.source {
            SourceKind::Real => c.real += 1,
            SourceKind::Synthetic => c.synthetic += 1,
        }
    }
    m
}

/// One input manifest as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSummary {
    pub path: String,
    /// `real`, `synthetic` or `any` (how it was passed).
    pub role: String,
    pub rows: usize,
}

/// `mix_report.json`: everything needed to judge the mix later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixReport {
    pub name: String,
    pub created_at: String,
    pub seed: u64,
    pub inputs: Vec<InputSummary>,
    pub plan: MixPlan,
    pub dropped: DroppedRows,
    /// Output counts per split, label and source.
    pub output: BTreeMap<String, BTreeMap<u8, SourceCounts>>,
}

impl MixReport {
    /// Builds the report of a finished mix.
    pub fn new(name: &str, seed: u64, inputs: Vec<InputSummary>, outcome: &MixOutcome) -> Self {
        Self {
            name: name.to_string(),
            created_at: chrono::Utc::now().to_rfc3339(),
            seed,
            inputs,
            plan: outcome.plan.clone(),
            dropped: outcome.dropped.clone(),
            output: split_counts(&outcome.rows),
        }
    }

    /// The human-readable `mix_report.md`.
    pub fn to_markdown(&self) -> String {
        let p = &self.plan;
        let r = &p.request;
        let mut s = String::new();
        let _ = writeln!(s, "# Training mix `{}`\n", self.name);
        let _ = writeln!(s, "Created {}.\n", self.created_at);
        let _ = writeln!(
            s,
            "- target synthetic share per label: {}\n- balance: {}\n- per label: {}\n\
             - shortfall policy: {}\n- seed: {}\n",
            pct(r.fraction),
            match r.balance {
                Balance::Equal => "equal",
                Balance::None => "none",
            },
            r.per_label
                .map(|n| n.to_string())
                .unwrap_or_else(|| "(from the real images)".into()),
            match r.policy {
                ShortfallPolicy::ExactRatio => "exact ratio (shrink the label)",
                ShortfallPolicy::AllowRatioShortfall => "allow ratio shortfall (keep counts)",
            },
            self.seed
        );
        let _ = writeln!(s, "## Inputs\n");
        for i in &self.inputs {
            let _ = writeln!(s, "- `{}` ({}, {} rows)", i.path, i.role, i.rows);
        }
        let _ = writeln!(s, "\n## Train split per label\n");
        let _ = writeln!(
            s,
            "| label | available real | available synthetic | wanted real | wanted synthetic \
             | taken real | taken synthetic | target | achieved |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for l in &p.labels {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                label_name(l.label),
                l.available.real,
                l.available.synthetic,
                l.wanted.real,
                l.wanted.synthetic,
                l.take.real,
                l.take.synthetic,
                pct(l.target_fraction),
                l.achieved_fraction.map(pct).unwrap_or_else(|| "-".into())
            );
        }
        let _ = writeln!(s, "\n## Shortfalls\n");
        if p.shortfalls.is_empty() {
            let _ = writeln!(s, "None: every label met its target.");
        }
        for sf in &p.shortfalls {
            let _ = writeln!(
                s,
                "- {}: wanted {} {} images, {} available",
                label_name(sf.label),
                sf.wanted,
                sf.source,
                sf.available
            );
        }
        let _ = writeln!(s, "\n## What was done\n");
        for n in &p.notes {
            let _ = writeln!(s, "- {n}");
        }
        let d = &self.dropped;
        let _ = writeln!(
            s,
            "- rows left out before sampling: {} duplicate val/test ids, {} train ids also in \
             val/test, {} duplicate train ids, {} materialised variants",
            d.duplicate_eval, d.train_in_eval, d.duplicate_train, d.variants
        );
        let _ = writeln!(s, "- val and test rows are carried over unchanged");
        let _ = writeln!(s, "\n## Output rows\n");
        let _ = writeln!(s, "| split | label | real | synthetic |");
        let _ = writeln!(s, "|---|---|---|---|");
        for split in Split::ALL {
            if let Some(m) = self.output.get(split.as_str()) {
                for (l, c) in m {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} |",
                        split,
                        label_name(*l),
                        c.real,
                        c.synthetic
                    );
                }
            }
        }
        s
    }
}
