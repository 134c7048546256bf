//! PNG plots for the eval report, drawn directly with `image` (no font or plotting dependency).
//!
//! Plots carry no text: axes span [0, 1] unless noted, a light grid marks tenths, and the
//! numbers live in `report.md` next to each plot.

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};

use crate::metrics::{Confusion, ReliabilityBin};
use crate::util::fsx;

const W: u32 = 400;
const H: u32 = 400;
const M: i64 = 30;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const AXIS: Rgb<u8> = Rgb([40, 40, 40]);
const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const GREY: Rgb<u8> = Rgb([150, 150, 150]);

struct Canvas(RgbImage);

impl Canvas {
    fn new() -> Self {
        let mut c = Canvas(RgbImage::from_pixel(W, H, WHITE));
        for k in 0..=10 {
            let f = f64::from(k) / 10.0;
            c.line(0.0, f, 1.0, f, GRID);
            c.line(f, 0.0, f, 1.0, GRID);
        }
        c.line(0.0, 0.0, 1.0, 0.0, AXIS);
        c.line(0.0, 0.0, 0.0, 1.0, AXIS);
        c
    }

    /// Data coordinates in [0, 1]² to pixels (y up).
    fn px(&self, x: f64, y: f64) -> (i64, i64) {
        let pw = (W as i64 - 2 * M) as f64;
        let ph = (H as i64 - 2 * M) as f64;
        (
            M + (x.clamp(0.0, 1.0) * pw).round() as i64,
            H as i64 - M - (y.clamp(0.0, 1.0) * ph).round() as i64,
        )
    }

    fn put(&mut self, x: i64, y: i64, c: Rgb<u8>) {
        if x >= 0 && y >= 0 && x < W as i64 && y < H as i64 {
            self.0.put_pixel(x as u32, y as u32, c);
        }
    }

    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: Rgb<u8>) {
        let (mut x, mut y) = self.px(x0, y0);
        let (xe, ye) = self.px(x1, y1);
        let (dx, dy) = ((xe - x).abs(), -(ye - y).abs());
        let (sx, sy) = (if x < xe { 1 } else { -1 }, if y < ye { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.put(x, y, c);
            if x == xe && y == ye {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn thick_polyline(&mut self, pts: &[(f64, f64)], c: Rgb<u8>) {
        let d = 1.0 / (W as f64 - 2.0 * M as f64);
        for w in pts.windows(2) {
            for o in [-d, 0.0, d] {
                self.line(w[0].0, w[0].1 + o, w[1].0, w[1].1 + o, c);
            }
        }
    }

    fn rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: Rgb<u8>) {
        let (a, b) = self.px(x0, y0);
        let (e, f) = self.px(x1, y1);
        for x in a.min(e)..=a.max(e) {
            for y in b.min(f)..=b.max(f) {
                self.put(x, y, c);
            }
        }
    }

    fn dot(&mut self, x: f64, y: f64, c: Rgb<u8>) {
        let (a, b) = self.px(x, y);
        for dx in -3..=3 {
            for dy in -3..=3 {
                if dx * dx + dy * dy <= 9 {
                    self.put(a + dx, b + dy, c);
                }
            }
        }
    }

    fn save(self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        self.0.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )?;
        fsx::write_atomic(path, &bytes)
    }
}

/// ROC curve (blue) over the chance diagonal (grey).
pub fn roc_png(path: &Path, curve: &[(f64, f64)]) -> Result<()> {
    let mut c = Canvas::new();
    c.line(0.0, 0.0, 1.0, 1.0, GREY);
    c.thick_polyline(curve, BLUE);
    c.save(path)
}

/// Reliability diagram: fraction positive per bin (blue bars, width ∝ bin), mean prediction
/// (orange dots), perfect calibration (grey diagonal).
pub fn reliability_png(path: &Path, bins: &[ReliabilityBin]) -> Result<()> {
    let mut c = Canvas::new();
    for b in bins.iter().filter(|b| b.count > 0) {
        let pad = (b.hi - b.lo) * 0.1;
        c.rect(b.lo + pad, 0.0, b.hi - pad, b.frac_pos, BLUE);
    }
    c.line(0.0, 0.0, 1.0, 1.0, GREY);
    for b in bins.iter().filter(|b| b.count > 0) {
        c.dot((b.lo + b.hi) / 2.0, b.mean_pred, ORANGE);
    }
    c.save(path)
}

/// Bars of the expected score (mean, blue) and its 5th–95th percentile (orange whisker) per
/// augmentation level 0..3, left to right; y spans [0, 1].
pub fn score_by_level_png(path: &Path, levels: &[(u8, f64, f64, f64)]) -> Result<()> {
    let mut c = Canvas::new();
    for &(l, mean, p05, p95) in levels {
        let x0 = f64::from(l) * 0.25 + 0.05;
        c.rect(x0, 0.0, x0 + 0.15, mean, BLUE);
        let xm = x0 + 0.075;
        c.line(xm, p05, xm, p95, ORANGE);
        c.line(xm - 0.03, p05, xm + 0.03, p05, ORANGE);
        c.line(xm - 0.03, p95, xm + 0.03, p95, ORANGE);
    }
    c.save(path)
}

/// Confusion matrix as a 2×2 heat map (rows = true None/Roadwork top to bottom, columns =
/// predicted None/Roadwork); darker blue = larger share of its true row.
pub fn confusion_png(path: &Path, m: &Confusion) -> Result<()> {
    let mut c = Canvas(RgbImage::from_pixel(W, H, WHITE));
    let rows = [[m.tn, m.fp], [m.fn_, m.tp]];
    for (r, row) in rows.iter().enumerate() {
        let total = (row[0] + row[1]).max(1) as f64;
        for (col, &v) in row.iter().enumerate() {
            let share = v as f64 / total;
            let shade = |base: u8| (255.0 - (255.0 - f64::from(base)) * share) as u8;
            let color = Rgb([shade(BLUE[0]), shade(BLUE[1]), shade(BLUE[2])]);
            let x0 = col as f64 * 0.5;
            let y1 = 1.0 - r as f64 * 0.5;
            c.rect(x0 + 0.01, y1 - 0.49, x0 + 0.49, y1 - 0.01, color);
        }
    }
    c.save(path)
}

/// Pairs of bars left to right (A grey, B blue), one pair per group, y spans [0, 1]; used by
/// `ab-test` for accuracy overall and per level.
pub fn paired_bars_png(path: &Path, pairs: &[(f64, f64)]) -> Result<()> {
    let mut c = Canvas::new();
    let w = 1.0 / pairs.len().max(1) as f64;
    for (i, &(a, b)) in pairs.iter().enumerate() {
        let x0 = i as f64 * w + w * 0.1;
        let bar = w * 0.38;
        c.rect(x0, 0.0, x0 + bar, a, GREY);
        c.rect(x0 + bar, 0.0, x0 + 2.0 * bar, b, BLUE);
    }
    c.save(path)
}
