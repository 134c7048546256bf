//! Statistics of paired comparisons (`sv72 ab-test`): McNemar's exact test and a grouped paired
//! bootstrap with percentile intervals. Pure functions, deterministic given their seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Exact two-sided McNemar test on the discordant pairs: `b` = A right / B wrong,
/// `c` = A wrong / B right. Under H0 (equal error rates) `b ~ Bin(b + c, 1/2)`, and
/// `p = min(1, 2·P(X ≤ min(b, c)))`; `b + c = 0` gives 1.
///
/// Large `b + c` is summed in log space so that it neither overflows nor underflows to a wrong 0.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    if n <= DIRECT_MAX_N {
        // Binomial coefficients as f64 (exact integers while below 2^53, and within range up to
        // n = 1000) over an exact power of two: small cases come out exact.
        let mut coef = 1.0f64;
        let mut sum = 1.0f64;
        for j in 1..=k {
            coef = coef * (n - j + 1) as f64 / j as f64;
            sum += coef;
        }
        return (2.0 * sum / 2f64.powi(n as i32)).min(1.0);
    }
    let ln_half_n = n as f64 * std::f64::consts::LN_2;
    // ln P(X = j) for j = 0..=k; with k ≤ n/2 these grow with j, so the last term is the largest.
    let mut ln_binom = 0.0;
    let mut terms = Vec::with_capacity(k as usize + 1);
    for j in 0..=k {
        if j > 0 {
            ln_binom += ((n - j + 1) as f64).ln() - (j as f64).ln();
        }
        terms.push(ln_binom - ln_half_n);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ln_tail = max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln();
    (2.0 * ln_tail.exp()).min(1.0)
}

/// Largest `b + c` summed directly; beyond it `2^n` leaves f64's range, so logs are used.
const DIRECT_MAX_N: u64 = 1000;

/// `q`-quantile (`q` in [0, 1]) of sorted values by linear interpolation between order
/// statistics (numpy's default `percentile` method); 0 for an empty slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A point estimate with its bootstrap percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the full sample.
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
    /// Nominal coverage, e.g. 0.95.
    pub level: f64,
    /// Resamples the interval rests on (resamples where the statistic was undefined are not
    /// counted).
    pub resamples: usize,
}

/// Percentile interval of `level` coverage from bootstrap replicates of a statistic whose
/// full-sample value is `estimate`; `None` when there are no replicates.
pub fn percentile_interval(
    estimate: f64,
    mut replicates: Vec<f64>,
    level: f64,
) -> Option<Interval> {
    replicates.retain(|v| v.is_finite());
    if replicates.is_empty() {
        return None;
    }
    replicates.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some(Interval {
        estimate,
        lo: quantile_sorted(&replicates, tail),
        hi: quantile_sorted(&replicates, 1.0 - tail),
        level,
        resamples: replicates.len(),
    })
}

/// Paired bootstrap over `n_groups` groups (images): each of `resamples` resamples draws
/// `n_groups` group indices with replacement and calls `stat(counts)`, where `counts[g]` is how
/// often group `g` was drawn, so a group's members (an image's augmented draws, answered by both
/// models) always travel together. Returns, per statistic `k`, the replicates where
/// `stat` gave `Some`. Deterministic given `seed`.
pub fn group_bootstrap<const K: usize>(
    n_groups: usize,
    resamples: usize,
    seed: u64,
    mut stat: impl FnMut(&[u32]) -> [Option<f64>; K],
) -> [Vec<f64>; K] {
    let mut out: [Vec<f64>; K] = std::array::from_fn(|_| Vec::with_capacity(resamples));
    if n_groups == 0 {
        return out;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = vec![0u32; n_groups];
    for _ in 0..resamples {
        counts.iter_mut().for_each(|c| *c = 0);
        for _ in 0..n_groups {
            counts[rng.random_range(0..n_groups)] += 1;
        }
        for (k, v) in stat(&counts).into_iter().enumerate() {
            if let Some(v) = v {
                out[k].push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_small_cases_by_hand() {
        // b=1, c=9: 2·(1 + 10)/1024.
        assert!((mcnemar_exact(1, 9) - 0.021484375).abs() < 1e-15);
        assert!((mcnemar_exact(9, 1) - 0.021484375).abs() < 1e-15);
        // b=0, c=5: 2/32.
        assert!((mcnemar_exact(0, 5) - 0.0625).abs() < 1e-15);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(4, 4), 1.0);
        // Large n stays finite and tiny rather than NaN or 0 by underflow of each term.
        let p = mcnemar_exact(4000, 6000);
        assert!(p > 0.0 && p < 1e-80, "{p}");
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&v, 0.0), 1.0);
        assert_eq!(quantile_sorted(&v, 1.0), 4.0);
        assert!((quantile_sorted(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile_sorted(&v, 0.025) - 1.075).abs() < 1e-12);
    }
}
