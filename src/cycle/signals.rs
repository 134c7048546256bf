//! Drift signals from `serve`'s prediction log: uncertain answers, hard cases, and how far the
//! served probabilities moved from the last eval's (PSI over fixed bins, two-sample KS D).

use std::collections::HashSet;

use serde::Serialize;

use crate::serve::predlog::LoggedPrediction;

/// Equal-width probability bins of the PSI: `[0, 0.1), [0.1, 0.2), …, [0.9, 1.0]`.
pub const PSI_BINS: usize = 10;
/// Share given to an empty bin so PSI stays finite (the usual small-epsilon convention).
pub const PSI_EPSILON: f64 = 1e-4;

fn bin_of(p: f64) -> usize {
    ((p.clamp(0.0, 1.0) * PSI_BINS as f64) as usize).min(PSI_BINS - 1)
}

/// Shares of `probs` per PSI bin, empty bins raised to [`PSI_EPSILON`].
pub fn bin_shares(probs: &[f64]) -> [f64; PSI_BINS] {
    let mut counts = [0usize; PSI_BINS];
    for p in probs {
        counts[bin_of(*p)] += 1;
    }
    let n = probs.len().max(1) as f64;
    counts.map(|c| (c as f64 / n).max(PSI_EPSILON))
}

/// Population stability index of `actual` against `expected`:
/// `Σ (a_i − e_i) · ln(a_i / e_i)` over [`PSI_BINS`] fixed probability bins. `None` when either
/// sample is empty. Rule of thumb: < 0.1 stable, 0.1–0.2 moderate, > 0.2 a real shift.
pub fn psi(expected: &[f64], actual: &[f64]) -> Option<f64> {
    if expected.is_empty() || actual.is_empty() {
        return None;
    }
    let (e, a) = (bin_shares(expected), bin_shares(actual));
    Some(e.iter().zip(&a).map(|(e, a)| (a - e) * (a / e).ln()).sum())
}

/// Two-sample Kolmogorov–Smirnov statistic D = sup |F_a(x) − F_e(x)|. `None` when either sample
/// is empty; NaNs are ignored.
pub fn ks(expected: &[f64], actual: &[f64]) -> Option<f64> {
    let sorted = |v: &[f64]| {
        let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        s.sort_by(f64::total_cmp);
        s
    };
    let (e, a) = (sorted(expected), sorted(actual));
    if e.is_empty() || a.is_empty() {
        return None;
    }
    let (ne, na) = (e.len() as f64, a.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < e.len() && j < a.len() {
        // Step past every value equal to the smaller head in both samples before comparing,
        // so ties do not produce a spurious gap.
        let x = e[i].min(a[j]);
        while i < e.len() && e[i] <= x {
            i += 1;
        }
        while j < a.len() && a[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / ne - j as f64 / na).abs());
    }
    Some(d)
}

/// The signals `retrain-check` reports; `None` = "n/a" (no log, no answers, no baseline).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Signals {
    /// Scored answers in the window (`None` when there is no serve log).
    pub answers: Option<usize>,
    /// Share of answers inside `cycle.uncertain_band`.
    pub uncertain_share: Option<f64>,
    /// PSI of the window's answers against the baseline eval's.
    pub psi: Option<f64>,
    /// KS D of the same two samples.
    pub ks: Option<f64>,
    /// Distinct images (by `image_hash`) answered inside the uncertain band.
    pub hard_cases: Option<usize>,
    /// Answers in the baseline eval's `predictions.jsonl`.
    pub baseline_answers: Option<usize>,
}

/// Computes the signals of `window` (scored answers only; fallbacks no model made are skipped)
/// against `baseline` probabilities. `window = None` means no serve log exists.
pub fn compute(
    window: Option<&[LoggedPrediction]>,
    baseline: Option<&[f64]>,
    band: [f64; 2],
) -> Signals {
    let Some(window) = window else {
        return Signals {
            baseline_answers: baseline.map(<[f64]>::len),
            ..Signals::default()
        };
    };
    let probs: Vec<f64> = window
        .iter()
        .filter(|r| r.scored)
        .map(|r| r.prediction)
        .collect();
    let in_band = |p: f64| p >= band[0] && p <= band[1];
    let uncertain = probs.iter().filter(|p| in_band(**p)).count();
    let hard: HashSet<&str> = window
        .iter()
        .filter(|r| r.scored && in_band(r.prediction))
        .map(|r| r.image_hash.as_str())
        .collect();
    Signals {
        answers: Some(probs.len()),
        uncertain_share: (!probs.is_empty()).then(|| uncertain as f64 / probs.len() as f64),
        psi: baseline.and_then(|b| psi(b, &probs)),
        ks: baseline.and_then(|b| ks(b, &probs)),
        hard_cases: Some(hard.len()),
        baseline_answers: baseline.map(<[f64]>::len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_handles_ties() {
        assert_eq!(ks(&[0.5, 0.5], &[0.5]), Some(0.0));
        assert_eq!(ks(&[], &[0.5]), None);
    }

    #[test]
    fn top_edge_falls_in_last_bin() {
        assert_eq!(bin_of(1.0), PSI_BINS - 1);
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(0.1), 1);
    }
}
