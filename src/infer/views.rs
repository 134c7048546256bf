//! Test-time views: each query image is cut into several views (identity, mirror, crops, a tile
//! grid), all views of a batch go through the wrapped model in one `predict` call (one batched
//! forward), and the per-view answers are aggregated back into one answer per image, then
//! recalibrated with a temperature and threshold fitted with the same views.
//!
//! The wrapper works on any [`Predictor`] (checkpoint, export, ensemble): it aggregates the
//! model's calibrated probabilities in logit space, so for a checkpoint whose answer is
//! `sigmoid(z / T - logit(τ))` the mean-logit aggregate is the same affine function of the mean
//! margin, and the view calibration on top is fitted on exactly what is served.

use anyhow::{bail, Result};
use image::{imageops, RgbImage};
use serde::{Deserialize, Serialize};

use super::predictor::{answers, scorable, Predictor};
use crate::metrics::sigmoid;

/// Probabilities are clamped this far from 0 and 1 before taking logits (a saturated view would
/// otherwise be an infinite vote).
const P_EPS: f64 = 1e-6;

/// One kind of view of a query image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// The image as sent.
    Identity,
    /// Mirrored left to right.
    Hflip,
    /// The centred crop of `scale` × width by `scale` × height (scale in (0, 1]).
    Centre(f64),
    /// The four corner crops (top-left, top-right, bottom-left, bottom-right) at `scale`.
    Corners(f64),
    /// An `n` × `n` grid of tiles, row by row (the last row/column takes the remainder).
    Grid(u32),
}

impl View {
    /// Checks the parameters; the error names the view.
    pub fn validate(&self) -> Result<()> {
        match *self {
            View::Centre(s) | View::Corners(s) if !(s > 0.0 && s <= 1.0) => {
                bail!("view {self:?}: crop scale must be in (0, 1], got {s}")
            }
            View::Grid(n) if !(1..=8).contains(&n) => {
                bail!("view grid: {n} tiles per side; use 1 to 8")
            }
            _ => Ok(()),
        }
    }

    /// Views this entry makes per image.
    pub fn count(&self) -> usize {
        match *self {
            View::Identity | View::Hflip | View::Centre(_) => 1,
            View::Corners(_) => 4,
            View::Grid(n) => (n * n) as usize,
        }
    }

    /// Appends this entry's views of `im` to `out`.
    pub fn make(&self, im: &RgbImage, out: &mut Vec<RgbImage>) {
        let (w, h) = im.dimensions();
        let crop =
            |x: u32, y: u32, cw: u32, ch: u32| imageops::crop_imm(im, x, y, cw, ch).to_image();
        match *self {
            View::Identity => out.push(im.clone()),
            View::Hflip => out.push(imageops::flip_horizontal(im)),
            View::Centre(s) => {
                let (cw, ch) = (scaled(w, s), scaled(h, s));
                out.push(crop((w - cw) / 2, (h - ch) / 2, cw, ch));
            }
            View::Corners(s) => {
                let (cw, ch) = (scaled(w, s), scaled(h, s));
                for (x, y) in [(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch)] {
                    out.push(crop(x, y, cw, ch));
                }
            }
            View::Grid(n) => {
                // With more tiles than pixels some tiles repeat a pixel: the count stays n²,
                // which is what `count` promised and the aggregation chunks by.
                let edge = |i: u32, len: u32| (u64::from(i) * u64::from(len) / u64::from(n)) as u32;
                for r in 0..n {
                    for c in 0..n {
                        let (x0, x1) = (edge(c, w), edge(c + 1, w));
                        let (y0, y1) = (edge(r, h), edge(r + 1, h));
                        out.push(crop(x0, y0, (x1 - x0).max(1), (y1 - y0).max(1)));
                    }
                }
            }
        }
    }
}

/// `round(len × scale)`, at least one pixel, at most `len`.
fn scaled(len: u32, scale: f64) -> u32 {
    ((f64::from(len) * scale).round() as u32).clamp(1, len.max(1))
}

/// How per-view answers become one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Mean of the views' logits.
    #[default]
    MeanLogit,
    /// Mean of the views' probabilities.
    MeanProb,
    /// Mean logit of the `k` views farthest from 0.5 (the most confident).
    TopK(usize),
}

impl Aggregate {
    /// The aggregated logit of one image's per-view probabilities (non-empty).
    pub fn logit(&self, probs: &[f64]) -> f64 {
        let logits = probs.iter().map(|&p| logit(p));
        match *self {
            Aggregate::MeanLogit => mean(logits),
            Aggregate::MeanProb => logit(mean(probs.iter().copied())),
            Aggregate::TopK(k) => {
                let mut z: Vec<f64> = logits.collect();
                z.sort_by(|a, b| b.abs().total_cmp(&a.abs()));
                z.truncate(k.clamp(1, z.len().max(1)));
                mean(z.into_iter())
            }
        }
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// `ln(p / (1 - p))` with `p` clamped to `[P_EPS, 1 - P_EPS]`.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(P_EPS, 1.0 - P_EPS);
    (p / (1.0 - p)).ln()
}

/// Temperature and threshold on top of an aggregate logit `z`:
/// `p = sigmoid(z / temperature - logit(threshold))`, the checkpoint's own formula.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub temperature: f64,
    pub threshold: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            temperature: 1.0,
            threshold: 0.5,
        }
    }
}

impl Calibration {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!(
                "calibration.temperature must be a positive number, got {}",
                self.temperature
            );
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            bail!(
                "calibration.threshold must be in (0, 1), got {}",
                self.threshold
            );
        }
        Ok(())
    }

    /// The served probability of aggregate logit `z`.
    pub fn apply(&self, z: f64) -> f64 {
        sigmoid(z / self.temperature - logit(self.threshold))
    }
}

/// The views of a model and how they are combined (the `views`, `aggregate`, `calibration`
/// keys of a model spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub views: Vec<View>,
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub aggregate: Aggregate,
    /// Fitted by `sv72 calibrate`; identity until then.
    #[serde(default)]
    pub calibration: Calibration,
}

impl ViewSpec {
    /// Checks every view and the calibration.
    pub fn validate(&self) -> Result<()> {
        if self.views.is_empty() {
            bail!("views: empty list; give at least `identity`");
        }
        for v in &self.views {
            v.validate()?;
        }
        if let Aggregate::TopK(0) = self.aggregate {
            bail!("aggregate top_k: k must be at least 1");
        }
        self.calibration.validate()
    }

    /// Views made per image.
    pub fn per_image(&self) -> usize {
        self.views.iter().map(View::count).sum()
    }

    /// All views of `im`, in spec order.
    pub fn make(&self, im: &RgbImage) -> Vec<RgbImage> {
        let mut out = Vec::with_capacity(self.per_image());
        for v in &self.views {
            v.make(im, &mut out);
        }
        out
    }

    /// A short label for versions and reports, e.g. `identity+hflip+grid3/top3`.
    pub fn label(&self) -> String {
        let v: Vec<String> = self
            .views
            .iter()
            .map(|v| match v {
                View::Identity => "identity".into(),
                View::Hflip => "hflip".into(),
                View::Centre(s) => format!("centre{s}"),
                View::Corners(s) => format!("corners{s}"),
                View::Grid(n) => format!("grid{n}"),
            })
            .collect();
        let a = match self.aggregate {
            Aggregate::MeanLogit => "meanlogit".to_string(),
            Aggregate::MeanProb => "meanprob".to_string(),
            Aggregate::TopK(k) => format!("top{k}"),
        };
        format!("{}/{a}", v.join("+"))
    }
}

/// A predictor answering with the aggregate of its inner model over [`ViewSpec`] views.
pub struct ViewPredictor {
    inner: Box<dyn Predictor>,
    spec: ViewSpec,
    version: String,
}

impl ViewPredictor {
    /// Wraps `inner`; errors for an invalid spec.
    pub fn new(inner: Box<dyn Predictor>, spec: ViewSpec) -> Result<Self> {
        spec.validate()?;
        let version = format!("{}~{}", inner.version(), spec.label());
        Ok(Self {
            inner,
            spec,
            version,
        })
    }

    /// The spec in use.
    pub fn spec(&self) -> &ViewSpec {
        &self.spec
    }

    /// Replaces the calibration (after fitting it).
    pub fn set_calibration(&mut self, c: Calibration) -> Result<()> {
        c.validate()?;
        self.spec.calibration = c;
        Ok(())
    }

    /// Aggregate logits before calibration, one per image: every view of every image in one
    /// inner `predict` call.
    pub fn aggregate_logits(&mut self, images: &[RgbImage]) -> Result<Vec<f64>> {
        if !scorable(images)? {
            return Ok(Vec::new());
        }
        let per = self.spec.per_image();
        let views: Vec<RgbImage> = images.iter().flat_map(|im| self.spec.make(im)).collect();
        let probs = self.inner.predict(&views)?;
        if probs.len() != views.len() {
            bail!(
                "model {} answered {} times for {} views",
                self.inner.version(),
                probs.len(),
                views.len()
            );
        }
        Ok(probs
            .chunks(per)
            .map(|c| {
                let p: Vec<f64> = c.iter().map(|&x| f64::from(x)).collect();
                self.spec.aggregate.logit(&p)
            })
            .collect())
    }
}

impl Predictor for ViewPredictor {
    fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
        let z = self.aggregate_logits(images)?;
        let c = self.spec.calibration;
        answers(z.into_iter().map(|z| c.apply(z)), &self.version)
    }

    fn version(&self) -> String {
        self.version.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4×2 image whose red channel is the pixel index (row-major) so every crop is checkable.
    fn indexed(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(y * w + x) as u8, 0, 0]))
    }

    fn reds(im: &RgbImage) -> Vec<u8> {
        im.pixels().map(|p| p.0[0]).collect()
    }

    fn views(v: View, im: &RgbImage) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        v.make(im, &mut out);
        assert_eq!(out.len(), v.count());
        out.iter().map(reds).collect()
    }

    #[test]
    fn each_view_cuts_the_hand_computed_pixels() {
        // 4 wide, 2 high:  0 1 2 3 / 4 5 6 7
        let im = indexed(4, 2);
        assert_eq!(
            views(View::Identity, &im),
            vec![vec![0, 1, 2, 3, 4, 5, 6, 7]]
        );
        assert_eq!(views(View::Hflip, &im), vec![vec![3, 2, 1, 0, 7, 6, 5, 4]]);
        // 0.5 → 2×1 in the middle: x 1..3, y 0 (floor((2-1)/2) = 0).
        assert_eq!(views(View::Centre(0.5), &im), vec![vec![1, 2]]);
        assert_eq!(
            views(View::Corners(0.5), &im),
            vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]
        );
        assert_eq!(
            views(View::Grid(2), &im),
            vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]]
        );
        // 5×5, grid 2: edges at 0, 2, 5 → tiles 2×2, 3×2, 2×3, 3×3.
        let im = indexed(5, 5);
        let g = views(View::Grid(2), &im);
        assert_eq!(g[0], vec![0, 1, 5, 6]);
        assert_eq!(g[1], vec![2, 3, 4, 7, 8, 9]);
        assert_eq!(g[2], vec![10, 11, 15, 16, 20, 21]);
        assert_eq!(g[3].len(), 9);
        assert_eq!(g[3][0], 12);
        // Scale 1 is the whole image; a tiny scale still keeps one pixel.
        assert_eq!(views(View::Centre(1.0), &im)[0].len(), 25);
        assert_eq!(views(View::Centre(0.01), &im), vec![vec![12]]);
        // More tiles than pixels: still n² tiles (the count chunks the answers), none empty.
        let tiny = indexed(2, 2);
        let g = views(View::Grid(3), &tiny);
        assert!(g.iter().all(|t| t.len() == 1), "{g:?}");
        assert_eq!(g[0], vec![0]);
        assert_eq!(g[8], vec![3]);
    }

    #[test]
    fn bad_views_are_named_errors() {
        for (v, want) in [
            (View::Centre(0.0), "crop scale"),
            (View::Corners(1.5), "crop scale"),
            (View::Grid(0), "tiles per side"),
            (View::Grid(9), "tiles per side"),
        ] {
            let e = v.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{v:?}: {e}");
        }
        let spec: ViewSpec = serde_yaml::from_str("views: []").unwrap();
        assert!(spec.validate().unwrap_err().to_string().contains("empty"));
        let e = serde_yaml::from_str::<ViewSpec>("views: [identity]\nbogus: 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn aggregations_match_hand_computed_values() {
        // Probabilities with logits ln 3, -ln 3, ln 9 (0.75, 0.25, 0.9).
        let p = [0.75, 0.25, 0.9];
        let l3 = 3f64.ln();
        let z = Aggregate::MeanLogit.logit(&p);
        assert!((z - 9f64.ln() / 3.0).abs() < 1e-9, "{z}");
        let z = Aggregate::MeanProb.logit(&p);
        // mean p = 1.9 / 3.
        let m: f64 = 1.9 / 3.0;
        assert!((z - (m / (1.0 - m)).ln()).abs() < 1e-9, "{z}");
        // Most confident two: ln 9 and ±ln 3 (tie by |z|; either way one of ±ln 3).
        let z = Aggregate::TopK(1).logit(&p);
        assert!((z - 9f64.ln()).abs() < 1e-9);
        let z = Aggregate::TopK(2).logit(&[0.75, 0.1, 0.6]);
        // |logit 0.1| = ln 9 > ln 3 > logit 0.6 = ln 1.5.
        assert!((z - (l3 - 9f64.ln()) / 2.0).abs() < 1e-9, "{z}");
        // k beyond the number of views = all of them.
        let z = Aggregate::TopK(10).logit(&p);
        assert!((z - Aggregate::MeanLogit.logit(&p)).abs() < 1e-12);
        // Saturated views stay finite.
        assert!(Aggregate::MeanLogit.logit(&[1.0, 0.0, 1.0]).is_finite());
    }

    #[test]
    fn calibration_is_the_checkpoint_formula() {
        let c = Calibration {
            temperature: 2.0,
            threshold: 0.25,
        };
        // sigmoid(z/2 - logit(0.25)) = sigmoid(z/2 + ln 3); at z = -2 ln 3 it is 0.5.
        let z = -2.0 * 3f64.ln();
        assert!((c.apply(z) - 0.5).abs() < 1e-9);
        assert!((Calibration::default().apply(3f64.ln()) - 0.75).abs() < 1e-9);
        assert!(Calibration {
            temperature: 0.0,
            threshold: 0.5
        }
        .validate()
        .is_err());
    }

    /// Answers the mean red value / 255 of each image, counting calls.
    struct MeanRed(usize);
    impl Predictor for MeanRed {
        fn predict(&mut self, images: &[RgbImage]) -> Result<Vec<f32>> {
            self.0 += 1;
            Ok(images
                .iter()
                .map(|im| {
                    let r = reds(im);
                    r.iter().map(|&x| f32::from(x)).sum::<f32>() / r.len() as f32 / 255.0
                })
                .collect())
        }
        fn version(&self) -> String {
            "red".into()
        }
    }

    #[test]
    fn all_views_of_a_batch_go_in_one_call_and_come_back_in_order() {
        let spec: ViewSpec = serde_yaml::from_str(
            "views: [identity, hflip, {corners: 0.5}]\naggregate: mean_prob\n",
        )
        .unwrap();
        assert_eq!(spec.per_image(), 6);
        let mut vp = ViewPredictor::new(Box::new(MeanRed(0)), spec).unwrap();
        // Left half bright: corners at 0.5 of a 4x2 image are 2x1, two bright, two dark.
        let a = RgbImage::from_fn(4, 2, |x, _| image::Rgb([if x < 2 { 204 } else { 0 }, 0, 0]));
        let b = RgbImage::from_pixel(4, 2, image::Rgb([51, 0, 0]));
        let out = vp.predict(&[a, b]).unwrap();
        // a: identity 0.4, hflip 0.4, corners 0.8, 0, 0.8, 0 → mean 0.4; b: 0.2 everywhere.
        assert!((out[0] - 0.4).abs() < 1e-5, "{out:?}");
        assert!((out[1] - 0.2).abs() < 1e-5, "{out:?}");
        assert!(vp
            .version()
            .starts_with("red~identity+hflip+corners0.5/meanprob"));
        assert!(vp.predict(&[]).unwrap().is_empty());
    }

    #[test]
    fn wrong_answer_count_is_an_error() {
        struct Short;
        impl Predictor for Short {
            fn predict(&mut self, _: &[RgbImage]) -> Result<Vec<f32>> {
                Ok(vec![0.5])
            }
            fn version(&self) -> String {
                "short".into()
            }
        }
        let spec: ViewSpec = serde_yaml::from_str("views: [identity, hflip]").unwrap();
        let mut vp = ViewPredictor::new(Box::new(Short), spec).unwrap();
        let e = vp.predict(&[RgbImage::new(2, 2)]).unwrap_err().to_string();
        assert!(e.contains("1 times for 2 views"), "{e}");
    }
}
