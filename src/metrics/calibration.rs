//! Calibration: expected calibration error, Brier score, reliability bins, temperature scaling.
//!
//! ECE here is the reliability-diagram form for the positive class: bins over the served
//! probability `p`, each weighted by its share of samples, `|mean p - fraction positive|`.

use serde::{Deserialize, Serialize};

/// Bins used for ECE and the reliability diagram.
pub const ECE_BINS: usize = 15;

/// Numerically safe logistic function.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// One bin of a reliability diagram over `[lo, hi)` (the last bin includes 1.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean served probability in the bin (0 when empty).
    pub mean_pred: f64,
    /// Fraction of positives in the bin (0 when empty).
    pub frac_pos: f64,
}

/// Equal-width reliability bins over `[0, 1]`.
pub fn reliability_bins(labels: &[u8], probs: &[f64], bins: usize) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut sum_p = vec![0.0; bins];
    let mut sum_y = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    for (&y, &p) in labels.iter().zip(probs) {
        let b = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sum_p[b] += p;
        sum_y[b] += f64::from(y);
        count[b] += 1;
    }
    (0..bins)
        .map(|b| {
            let n = count[b];
            ReliabilityBin {
                lo: b as f64 / bins as f64,
                hi: (b + 1) as f64 / bins as f64,
                count: n,
                mean_pred: if n > 0 { sum_p[b] / n as f64 } else { 0.0 },
                frac_pos: if n > 0 { sum_y[b] / n as f64 } else { 0.0 },
            }
        })
        .collect()
}

/// Expected calibration error (0 for an empty set).
pub fn ece(labels: &[u8], probs: &[f64], bins: usize) -> f64 {
    let n = labels.len();
    if n == 0 {
        return 0.0;
    }
    reliability_bins(labels, probs, bins)
        .iter()
        .map(|b| b.count as f64 / n as f64 * (b.mean_pred - b.frac_pos).abs())
        .sum()
}

/// Mean squared error of the probability against the 0/1 label (0 for an empty set).
pub fn brier(labels: &[u8], probs: &[f64]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    labels
        .iter()
        .zip(probs)
        .map(|(&y, &p)| (p - f64::from(y)).powi(2))
        .sum::<f64>()
        / labels.len() as f64
}

/// Mean negative log-likelihood of `sigmoid(z / t)`.
pub fn nll_at_temperature(margins: &[f64], labels: &[u8], t: f64) -> f64 {
    if margins.is_empty() {
        return 0.0;
    }
    let s = 1.0 / t;
    margins
        .iter()
        .zip(labels)
        .map(|(&z, &y)| {
            // -log sigmoid(x) = softplus(-x), computed stably.
            let x = if y != 0 { s * z } else { -s * z };
            softplus(-x)
        })
        .sum::<f64>()
        / margins.len() as f64
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Fits the temperature `t` minimising the NLL of `sigmoid(z / t)` over logit margins
/// `z = logit_roadwork - logit_none`.
///
/// The NLL is convex in `1/t`, so a golden-section search over `1/t ∈ [0.01, 100]` (on a log
/// scale) finds the optimum; returns 1.0 for an empty or single-class set, where the NLL keeps
/// falling as `t → 0` and scaling would only produce overconfidence.
pub fn fit_temperature(margins: &[f64], labels: &[u8]) -> f64 {
    let pos = labels.iter().filter(|&&y| y != 0).count();
    if margins.is_empty() || pos == 0 || pos == labels.len() {
        return 1.0;
    }
    let f = |log_s: f64| nll_at_temperature(margins, labels, (-log_s).exp());
    let (mut a, mut b) = (0.01f64.ln(), 100f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..100 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    1.0 / ((a + b) / 2.0).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_and_brier_by_hand() {
        // Two bins (bins=2): [0,0.5): p=0.2,0.4 labels 0,1 -> mean 0.3, frac 0.5 -> 0.2
        // [0.5,1]: p=0.9,1.0 labels 1,1 -> mean 0.95, frac 1 -> 0.05; ECE = 0.5*0.2+0.5*0.05
        let labels = [0, 1, 1, 1];
        let probs = [0.2, 0.4, 0.9, 1.0];
        assert!((ece(&labels, &probs, 2) - 0.125).abs() < 1e-12);
        let b = (0.04 + 0.36 + 0.01 + 0.0) / 4.0;
        assert!((brier(&labels, &probs) - b).abs() < 1e-12);
        let bins = reliability_bins(&labels, &probs, 2);
        assert_eq!(bins[1].count, 2);
    }

    #[test]
    fn temperature_recovers_known_scale() {
        // Labels drawn so that P(y=1|z) = sigmoid(z / 3): the fitted temperature is near 3.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut z = Vec::new();
        let mut y = Vec::new();
        for _ in 0..20000 {
            let m: f64 = rng.random_range(-12.0..12.0);
            z.push(m);
            y.push(u8::from(rng.random::<f64>() < sigmoid(m / 3.0)));
        }
        let t = fit_temperature(&z, &y);
        assert!((t - 3.0).abs() < 0.25, "t = {t}");
        assert_eq!(fit_temperature(&[1.0, 2.0], &[1, 1]), 1.0);
    }
}
