//! Ensembles: several models' calibrated answers combined by logistic stacking,
//! `p = sigmoid(bias + Σ wᵢ · logit(pᵢ))`, with weights fitted on validation answers
//! ([`fit_stacking`]). Members see the same decoded images; members that are heads on one frozen
//! backbone ([`super::checkpoint::HeadGroup`]) share its forward pass, the others run their own.

use anyhow::{bail, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::predictor::{answers, scorable, Predictor};
use super::views::logit;
use crate::metrics::sigmoid;

/// Stacking weights: one per member, plus a bias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stacking {
    pub weights: Vec<f64>,
    #[serde(default)]
    pub bias: f64,
}

impl Stacking {
    /// Equal weights summing to 1 (the mean logit) until fitted.
    pub fn equal(n: usize) -> Self {
        Stacking {
            weights: vec![1.0 / n.max(1) as f64; n],
            bias: 0.0,
        }
    }

    /// The stacked logit of one image's member probabilities.
    pub fn logit(&self, probs: &[f64]) -> f64 {
        self.bias
            + self
                .weights
                .iter()
                .zip(probs)
                .map(|(w, &p)| w * logit(p))
                .sum::<f64>()
    }
}

/// Ensemble members that answer together: one member, or several heads sharing a forward.
pub trait MemberGroup: Send {
    /// Each member's answers for `images`, member-major.
    fn member_probs(&mut self, images: &[RgbImage]) -> Result<Vec<Vec<f64>>>;
    /// The members' versions, in the order of [`Self::member_probs`].
    fn versions(&self) -> Vec<String>;
    /// Backbone forward passes run so far, where the group counts them.
    fn backbone_forwards(&self) -> Option<usize> {
        None
    }
}

/// Any predictor as a group of one.
struct Single(Box<dyn Predictor>);

/// `p` as a group of one member.
pub fn single(p: Box<dyn Predictor>) -> Box<dyn MemberGroup> {
    Box::new(Single(p))
}

impl MemberGroup for Single {
    fn member_probs(&mut self, images: &[RgbImage]) -> Result<Vec<Vec<f64>>> {
        Ok(vec![self
            .0
            .predict(images)?
            .into_iter()
            .map(f64::from)
            .collect()])
    }
    fn versions(&self) -> Vec<String> {
        vec![self.0.version()]
    }
}

/// Members answering together.
pub struct EnsemblePredictor {
    /// Groups with the member indices (spec order) they answer for.
    groups: Vec<(Box<dyn MemberGroup>, Vec<usize>)>,
    members: usize,
    stacking: Stacking,
    version: String,
}

impl EnsemblePredictor {
    /// Combines `members` with `stacking` (one weight per member); each runs its own forward.
    pub fn new(members: Vec<Box<dyn Predictor>>, stacking: Stacking) -> Result<Self> {
        let groups = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| (Box::new(Single(m)) as Box<dyn MemberGroup>, vec![i]))
            .collect();
        Self::from_groups(groups, stacking)
    }

    /// Combines groups of members; `groups[g].1` are the spec-order indices of the members group
    /// `g` answers for (together, every index from 0 once).
    pub fn from_groups(
        groups: Vec<(Box<dyn MemberGroup>, Vec<usize>)>,
        stacking: Stacking,
    ) -> Result<Self> {
        let members: usize = groups.iter().map(|(_, ix)| ix.len()).sum();
        if members == 0 {
            bail!("an ensemble needs at least one member");
        }
        let mut names = vec![String::new(); members];
        let mut seen = vec![false; members];
        for (g, ix) in &groups {
            let v = g.versions();
            if v.len() != ix.len() {
                bail!(
                    "an ensemble group names {} members but answers for {}",
                    ix.len(),
                    v.len()
                );
            }
            for (&i, name) in ix.iter().zip(v) {
                if i >= members || seen[i] {
                    bail!("ensemble member index {i} is out of range or given twice");
                }
                seen[i] = true;
                names[i] = name;
            }
        }
        if stacking.weights.len() != members {
            bail!(
                "stacking has {} weights for {} members",
                stacking.weights.len(),
                members
            );
        }
        if !(stacking.bias.is_finite() && stacking.weights.iter().all(|w| w.is_finite())) {
            bail!("stacking weights must be finite numbers");
        }
        let version = format!("ensemble[{}]", names.join(","));
        Ok(Self {
            groups,
            members,
            stacking,
            version,
        })
    }

    /// Each member's answers for `images`, member-major (spec order).
    pub fn member_probs(&mut self, images: &[RgbImage]) -> Result<Vec<Vec<f64>>> {
        let mut out = vec![Vec::new(); self.members];
        for (g, ix) in &mut self.groups {
            let per = g.member_probs(images)?;
            let names = g.versions();
            if per.len() != ix.len() {
                bail!(
                    "ensemble group {names:?} answered for {} members, not {}",
                    per.len(),
                    ix.len()
                );
            }
            for ((&i, v), name) in ix.iter().zip(per).zip(names) {
                if v.len() != images.len() {
                    bail!(
                        "member {name} answered {} times for {} images",
                        v.len(),
                        images.len()
                    );
                }
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Backbone forward passes run so far by the groups that count them (heads on a shared
    /// backbone).
    pub fn backbone_forwards(&self) -> usize {
        self.groups
            .iter()
            .filter_map(|(g, _)| g.backbone_forwards())
            .sum()
    }

    /// How many backbones the members run on, counting each unshared member as its own.
    pub fn forward_groups(&self) -> usize {
        self.groups.len()
    }

    /// Replaces the stacking (after fitting it).
    pub fn set_stacking(&mut self, s: Stacking) -> Result<()> {
        if s.weights.len() != self.members {
            bail!(
                "stacking has {} weights for {} members",
                s.weights.len(),
                self.members
            );
        }
        self.stacking = s;
        Ok(())
    }
}

impl Predictor for EnsemblePredictor {
    fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
        if !scorable(images)? {
            return Ok(Vec::new());
        }
        let per = self.member_probs(images)?;
        let z = (0..images.len()).map(|i| {
            let p: Vec<f64> = per.iter().map(|m| m[i]).collect();
            sigmoid(self.stacking.logit(&p))
        });
        answers(z, &self.version)
    }

    fn version(&self) -> String {
        self.version.clone()
    }
}

/// Logistic regression of `labels` on the members' logits (`probs[i]` = member answers for
/// sample i), by Newton's method with a small ridge (`1e-3`, not on the bias) so separable or
/// collinear members stay finite. At most 100 iterations.
// Dense normal equations read clearer with indices than with zipped iterators.
#[allow(clippy::needless_range_loop)]
pub fn fit_stacking(probs: &[Vec<f64>], labels: &[u8]) -> Result<Stacking> {
    let n = probs.len();
    if n == 0 || n != labels.len() {
        bail!("stacking: {} samples for {} labels", n, labels.len());
    }
    let m = probs[0].len();
    if m == 0 || probs.iter().any(|p| p.len() != m) {
        bail!("stacking: every sample needs one answer per member");
    }
    let pos = labels.iter().filter(|&&y| y != 0).count();
    if pos == 0 || pos == n {
        bail!("stacking: the validation answers hold one class only; fit on a split with both");
    }
    const RIDGE: f64 = 1e-3;
    let d = m + 1;
    let x: Vec<Vec<f64>> = probs
        .iter()
        .map(|p| {
            let mut r: Vec<f64> = p.iter().map(|&q| logit(q)).collect();
            r.push(1.0);
            r
        })
        .collect();
    let mut beta = vec![0.0; d];
    for _ in 0..100 {
        let mut g = vec![0.0; d];
        let mut h = vec![vec![0.0; d]; d];
        for (xi, &y) in x.iter().zip(labels) {
            let z: f64 = xi.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let p = sigmoid(z);
            let r = p - f64::from(y.min(1));
            let w = (p * (1.0 - p)).max(1e-12);
            for a in 0..d {
                g[a] += r * xi[a];
                for b in 0..d {
                    h[a][b] += w * xi[a] * xi[b];
                }
            }
        }
        for a in 0..m {
            g[a] += RIDGE * n as f64 * beta[a];
            h[a][a] += RIDGE * n as f64;
        }
        let step = solve(h, g).ok_or_else(|| anyhow::anyhow!("stacking: singular system"))?;
        let mut biggest = 0f64;
        for a in 0..d {
            beta[a] -= step[a];
            biggest = biggest.max(step[a].abs());
        }
        if biggest < 1e-10 {
            break;
        }
    }
    if beta.iter().any(|b| !b.is_finite()) {
        bail!("stacking: the fit diverged");
    }
    let bias = beta.pop().unwrap_or(0.0);
    Ok(Stacking {
        weights: beta,
        bias,
    })
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (small, dense systems).
#[allow(clippy::needless_range_loop)]
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[piv][c].abs() < 1e-300 {
            return None;
        }
        a.swap(c, piv);
        b.swap(c, piv);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacking_recovers_known_weights() {
        // Member logits on a grid; labels in exact proportion to sigmoid(1.5 z1 + 0 z2 - 0.5):
        // the maximum-likelihood weights are (1.5, 0, -0.5) up to the count rounding and ridge.
        let mut probs = Vec::new();
        let mut labels = Vec::new();
        for a in -4..=4 {
            for b in -4..=4 {
                let (z1, z2) = (f64::from(a) * 0.5, f64::from(b) * 0.5);
                let p = sigmoid(1.5 * z1 - 0.5);
                let k = (p * 400.0).round() as usize;
                for i in 0..400 {
                    probs.push(vec![sigmoid(z1), sigmoid(z2)]);
                    labels.push(u8::from(i < k));
                }
            }
        }
        let s = fit_stacking(&probs, &labels).unwrap();
        assert!((s.weights[0] - 1.5).abs() < 0.03, "{s:?}");
        assert!(s.weights[1].abs() < 0.03, "{s:?}");
        assert!((s.bias + 0.5).abs() < 0.03, "{s:?}");
    }

    #[test]
    fn separable_and_degenerate_cases_stay_finite_or_error() {
        // Perfectly separable by member 1: large but finite weights thanks to the ridge.
        let probs: Vec<Vec<f64>> = (0..20)
            .map(|i| vec![if i < 10 { 0.2 } else { 0.8 }, 0.5])
            .collect();
        let labels: Vec<u8> = (0..20).map(|i| u8::from(i >= 10)).collect();
        let s = fit_stacking(&probs, &labels).unwrap();
        assert!(
            s.weights[0] > 1.0 && s.weights.iter().all(|w| w.is_finite()),
            "{s:?}"
        );
        assert!(fit_stacking(&probs, &[1; 20])
            .unwrap_err()
            .to_string()
            .contains("one class"));
        assert!(fit_stacking(&[], &[]).is_err());
    }

    struct Fixed(f32);
    impl Predictor for Fixed {
        fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
            Ok(vec![self.0; images.len()])
        }
        fn version(&self) -> String {
            format!("f{}", self.0)
        }
    }

    #[test]
    fn ensemble_answer_is_the_stacked_logit() {
        // logit 0.75 = ln 3, logit 0.25 = -ln 3: weights (1, 0.5), bias 0 → 0.5 ln 3.
        let mut e = EnsemblePredictor::new(
            vec![Box::new(Fixed(0.75)), Box::new(Fixed(0.25))],
            Stacking {
                weights: vec![1.0, 0.5],
                bias: 0.0,
            },
        )
        .unwrap();
        let out = e.predict(&[RgbImage::new(2, 2)]).unwrap();
        assert!((f64::from(out[0]) - sigmoid(0.5 * 3f64.ln())).abs() < 1e-6);
        assert_eq!(e.version(), "ensemble[f0.75,f0.25]");
        assert!(EnsemblePredictor::new(vec![Box::new(Fixed(0.5))], Stacking::equal(2)).is_err());
    }
}
