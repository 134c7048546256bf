//! The subnet's reward, simulated exactly as validators compute it.
//!
//! Ground truth: `natix/validator/reward.py` and `natix/validator/miner_performance_tracker.py`
//! of the StreetVision subnet. For every challenge a validator:
//! 1. draws the label 50/50 (`np.random.choice([0, 1])`), then real vs synthetic 50/50
//!    (`fake_prob = 0.5`), then an image of that label from that cache, then an augmentation level;
//! 2. appends the miner's answer and the label to a 100-long history;
//! 3. computes metrics on the last 100 and the last 10 entries, where answers equal to -1 are
//!    dropped, the remaining answers are rounded with `np.round` (half to even, so 0.5 → 0), MCC is
//!    `max(0, mcc)` only when both the labels and the rounded answers hold two distinct values and
//!    0 otherwise, and an empty window gives all-zero metrics;
//! 4. rewards `(0.5 · MCC_100 + 0.5 · accuracy_10) ^ 3`, times 0 when the answer is outside
//!    `[0, 1]`, and 0 for an answer of -1.
//!
//! The per-step reward only depends on the last 100 challenges, so the steady-state expected
//! reward is estimated by drawing independent 100-challenge sequences and scoring the reward of
//! the last step of each.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// `natix/validator/config.py::REWARD_CURVE_EXPONENT`.
pub const REWARD_CURVE_EXPONENT: f64 = 3.0;
/// `MinerPerformanceTracker(store_last_n_predictions=100)`; also the MCC window.
pub const HISTORY_LEN: usize = 100;
/// Window of the accuracy term.
pub const ACCURACY_WINDOW: usize = 10;

/// Metrics of one tracker window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowMetrics {
    pub accuracy: f64,
    /// Already floored at 0 and zeroed for single-class windows, as the tracker does.
    pub mcc: f64,
}

/// One miner's history as a validator keeps it.
#[derive(Debug, Clone, Default)]
pub struct MinerTracker {
    preds: VecDeque<f64>,
    labels: VecDeque<u8>,
}

/// `np.round` on one value: round half to even.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

impl MinerTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an answer and its label, dropping the oldest beyond 100.
    pub fn update(&mut self, pred: f64, label: u8) {
        if self.preds.len() == HISTORY_LEN {
            self.preds.pop_front();
            self.labels.pop_front();
        }
        self.preds.push_back(pred);
        self.labels.push_back(label);
    }

    /// Metrics over the last `window` entries (all of them when fewer).
    pub fn metrics(&self, window: usize) -> WindowMetrics {
        let n = self.preds.len();
        let start = n - window.min(n);
        let mut rounded = Vec::with_capacity(n - start);
        let mut labels = Vec::with_capacity(n - start);
        for (&p, &y) in self.preds.iter().zip(&self.labels).skip(start) {
            if p != -1.0 {
                rounded.push(round_half_even(p));
                labels.push(y);
            }
        }
        if labels.is_empty() {
            return WindowMetrics::default();
        }
        let correct = rounded
            .iter()
            .zip(&labels)
            .filter(|(&p, &y)| p == f64::from(y))
            .count();
        let accuracy = correct as f64 / labels.len() as f64;
        let two_labels = labels.iter().any(|&y| y != labels[0]);
        let two_preds = rounded.iter().any(|&p| p != rounded[0]);
        let mcc = if two_labels && two_preds {
            // Answers outside [0, 1] round to other values; they count as "not roadwork" here
            // (sklearn would treat them as extra classes). sv72 never serves such answers.
            let hard: Vec<u8> = rounded.iter().map(|&p| u8::from(p == 1.0)).collect();
            super::Confusion::from_predictions(&labels, &hard)
                .mcc()
                .max(0.0)
        } else {
            0.0
        };
        WindowMetrics { accuracy, mcc }
    }

    /// Records the answer and returns the reward the validator gives for it.
    pub fn reward(&mut self, pred: f64, label: u8) -> f64 {
        self.update(pred, label);
        if pred == -1.0 {
            return 0.0;
        }
        let m100 = self.metrics(HISTORY_LEN);
        let m10 = self.metrics(ACCURACY_WINDOW);
        let penalty = if (0.0..=1.0).contains(&pred) {
            1.0
        } else {
            0.0
        };
        ((0.5 * m100.mcc + 0.5 * m10.accuracy) * penalty).powf(REWARD_CURVE_EXPONENT)
    }
}

/// One scored answer in an evaluation pool.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreItem {
    pub label: u8,
    pub synthetic: bool,
    /// Validator augmentation level 0–3 of this draw.
    pub level: u8,
    /// The served probability (or any score the caller's decision maps to an answer).
    pub prob: f64,
}

/// Distribution of the simulated reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub sequences: usize,
    pub sequence_len: usize,
    pub mean: f64,
    pub p05: f64,
    pub p50: f64,
    pub p95: f64,
    /// Mean of the two ingredients, to see which one costs reward.
    pub mean_mcc_100: f64,
    pub mean_accuracy_10: f64,
}

/// Pre-drawn challenge sequences (indices into the pool), so that competing answer rules
/// (thresholds, checkpoints) are compared on the same challenges.
pub struct ChallengePlan {
    pub sequences: Vec<Vec<usize>>,
}

/// Draws `n` sequences of `len` challenges the way a validator does; see the module docs.
/// A (label, source) cache with no items falls back to the other source of that label.
pub fn draw_challenges(
    items: &[ScoreItem],
    level_probs: [f64; 4],
    n: usize,
    len: usize,
    seed: u64,
) -> anyhow::Result<ChallengePlan> {
    // buckets[label][synthetic][level]
    let mut buckets: [[[Vec<usize>; 4]; 2]; 2] = Default::default();
    for (i, it) in items.iter().enumerate() {
        buckets[usize::from(it.label != 0)][usize::from(it.synthetic)]
            [usize::from(it.level.min(3))]
        .push(i);
    }
    for (label, b) in buckets.iter().enumerate() {
        if b.iter().all(|s| s.iter().all(Vec::is_empty)) {
            anyhow::bail!(
                "the score simulation needs images of both labels, but none has label {label}: \
                 evaluate on a split that holds roadwork and no-roadwork images"
            );
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sequences = Vec::with_capacity(n);
    for _ in 0..n {
        let mut seq = Vec::with_capacity(len);
        for _ in 0..len {
            let label = usize::from(rng.random::<f64>() < 0.5);
            let mut synth = usize::from(rng.random::<f64>() < 0.5);
            if buckets[label][synth].iter().all(Vec::is_empty) {
                synth = 1 - synth;
            }
            let levels = &buckets[label][synth];
            let total: f64 = (0..4)
                .filter(|&l| !levels[l].is_empty())
                .map(|l| level_probs[l])
                .sum();
            let mut u = rng.random::<f64>() * total;
            let mut level = (0..4).rev().find(|&l| !levels[l].is_empty()).unwrap_or(0);
            for (l, lv) in levels.iter().enumerate() {
                if lv.is_empty() || level_probs[l] <= 0.0 {
                    continue;
                }
                if u < level_probs[l] {
                    level = l;
                    break;
                }
                u -= level_probs[l];
            }
            let pool = &levels[level];
            seq.push(pool[rng.random_range(0..pool.len())]);
        }
        sequences.push(seq);
    }
    Ok(ChallengePlan { sequences })
}

/// Scores a plan, mapping each pool item to the answer the miner would serve.
pub fn score_plan(
    items: &[ScoreItem],
    plan: &ChallengePlan,
    answer: impl Fn(&ScoreItem) -> f64,
) -> ScoreSummary {
    let mut rewards = Vec::with_capacity(plan.sequences.len());
    let (mut sum_mcc, mut sum_acc) = (0.0, 0.0);
    for seq in &plan.sequences {
        let mut tracker = MinerTracker::new();
        let mut last = 0.0;
        for (k, &i) in seq.iter().enumerate() {
            let it = &items[i];
            let p = answer(it);
            if k + 1 == seq.len() {
                last = tracker.reward(p, it.label);
            } else {
                tracker.update(p, it.label);
            }
        }
        sum_mcc += tracker.metrics(HISTORY_LEN).mcc;
        sum_acc += tracker.metrics(ACCURACY_WINDOW).accuracy;
        rewards.push(last);
    }
    summarise(rewards, plan, sum_mcc, sum_acc)
}

fn summarise(mut r: Vec<f64>, plan: &ChallengePlan, sum_mcc: f64, sum_acc: f64) -> ScoreSummary {
    let n = r.len();
    r.sort_by(f64::total_cmp);
    let q = |f: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        // Linear interpolation between order statistics (numpy's default percentile).
        let pos = f * (n - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        r[lo] + (r[hi] - r[lo]) * (pos - lo as f64)
    };
    let nf = n.max(1) as f64;
    ScoreSummary {
        sequences: n,
        sequence_len: plan.sequences.first().map_or(0, Vec::len),
        mean: r.iter().sum::<f64>() / nf,
        p05: q(0.05),
        p50: q(0.5),
        p95: q(0.95),
        mean_mcc_100: sum_mcc / nf,
        mean_accuracy_10: sum_acc / nf,
    }
}

/// Expected subnet score of served probabilities `items[i].prob` over `n` simulated sequences.
pub fn simulate_scores(
    items: &[ScoreItem],
    level_probs: [f64; 4],
    n: usize,
    seed: u64,
) -> anyhow::Result<ScoreSummary> {
    let plan = draw_challenges(items, level_probs, n, HISTORY_LEN, seed)?;
    Ok(score_plan(items, &plan, |it| it.prob))
}

/// Picks the decision threshold on calibrated probabilities (`items[i].prob`) that maximises the
/// expected subnet score; candidates are 0.5 and the midpoints between neighbouring distinct
/// probabilities (thinned evenly to at most 512 when there are more). Ties go to the candidate closest to 0.5. Returns `(threshold, score)`.
pub fn choose_threshold(
    items: &[ScoreItem],
    level_probs: [f64; 4],
    n: usize,
    seed: u64,
) -> anyhow::Result<(f64, ScoreSummary)> {
    let plan = draw_challenges(items, level_probs, n, HISTORY_LEN, seed)?;
    let mut probs: Vec<f64> = items.iter().map(|it| it.prob).collect();
    probs.sort_by(f64::total_cmp);
    probs.dedup();
    let mut cands = vec![0.5];
    let mids: Vec<f64> = probs.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    const MAX_CANDIDATES: usize = 512;
    if mids.len() <= MAX_CANDIDATES {
        cands.extend(mids);
    } else {
        cands
            .extend((0..MAX_CANDIDATES).map(|k| mids[k * (mids.len() - 1) / (MAX_CANDIDATES - 1)]));
    }
    let mut best: Option<(f64, ScoreSummary)> = None;
    for t in cands {
        let s = score_plan(items, &plan, |it| if it.prob > t { 1.0 } else { 0.0 });
        let better = match &best {
            None => true,
            Some((bt, bs)) => {
                s.mean > bs.mean + 1e-12
                    || ((s.mean - bs.mean).abs() <= 1e-12 && (t - 0.5).abs() < (bt - 0.5).abs())
            }
        };
        if better {
            best = Some((t, s));
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("no threshold candidates"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(0.51), 1.0);
        assert_eq!(round_half_even(0.49), 0.0);
    }
}
