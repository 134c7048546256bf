//! Dash-cam weather and capture conditions the validators' pipeline never simulates but street
//! images contain: rain streaks, fog, night with sensor noise, motion blur, lens dirt.
//!
//! Each op is deterministic given its seed; `severity` in [0, 1] scales its strength.

use anyhow::{bail, Result};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// The kinds of weather/capture ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeatherKind {
    Rain,
    Fog,
    Night,
    MotionBlur,
    LensDirt,
}

impl WeatherKind {
    /// All kinds, in a fixed order (sampling indexes into it).
    pub const ALL: [WeatherKind; 5] = [
        WeatherKind::Rain,
        WeatherKind::Fog,
        WeatherKind::Night,
        WeatherKind::MotionBlur,
        WeatherKind::LensDirt,
    ];

    /// Short name used in augmentation ids.
    pub fn name(self) -> &'static str {
        match self {
            WeatherKind::Rain => "rain",
            WeatherKind::Fog => "fog",
            WeatherKind::Night => "night",
            WeatherKind::MotionBlur => "motion",
            WeatherKind::LensDirt => "dirt",
        }
    }
}

/// One weather op with all its randomness reduced to a seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeatherOp {
    pub kind: WeatherKind,
    /// Strength in [0, 1].
    pub severity: f32,
    pub seed: u64,
}

impl WeatherOp {
    /// Draws a kind, a severity in [0.3, 1) and a seed.
    pub fn sample(rng: &mut ChaCha8Rng) -> Self {
        let kind = WeatherKind::ALL[rng.random_range(0..WeatherKind::ALL.len())];
        Self {
            kind,
            severity: rng.random_range(0.3..1.0),
            seed: rng.random(),
        }
    }

    /// Id fragment like `fog0.62`.
    pub fn id(&self) -> String {
        format!("{}{:.2}", self.kind.name(), self.severity)
    }

    /// Applies the op, returning a new image of the same size.
    pub fn apply(&self, img: &RgbImage) -> Result<RgbImage> {
        if !(0.0..=1.0).contains(&self.severity) {
            bail!("weather severity {} is outside [0, 1]", self.severity);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let s = self.severity;
        Ok(match self.kind {
            WeatherKind::Rain => rain(img, s, &mut rng),
            WeatherKind::Fog => fog(img, s, &mut rng),
            WeatherKind::Night => night(img, s, &mut rng),
            WeatherKind::MotionBlur => motion_blur(img, s, &mut rng),
            WeatherKind::LensDirt => lens_dirt(img, s, &mut rng),
        })
    }
}

#[inline]
fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Haze that thickens towards the top of the frame (the horizon of a forward dash-cam):
/// `I * t + A * (1 - t)` with a bright grey airlight A.
fn fog(img: &RgbImage, s: f32, rng: &mut ChaCha8Rng) -> RgbImage {
    let mut out = img.clone();
    let h = img.height().max(1) as f32;
    let airlight = 200.0 + 40.0 * rng.random::<f32>();
    let density = 0.35 + 0.55 * s;
    for (y, row) in out
        .as_mut()
        .chunks_exact_mut(img.width() as usize * 3)
        .enumerate()
    {
        let depth = 1.0 - 0.5 * (y as f32 / h); // 1 at the top, 0.5 at the bottom
        let t = 1.0 - density * depth;
        for v in row.iter_mut() {
            *v = to_u8(*v as f32 * t + airlight * (1.0 - t));
        }
    }
    out
}

/// Low light: darker, gamma-crushed, slightly blue, with Gaussian sensor noise.
fn night(img: &RgbImage, s: f32, rng: &mut ChaCha8Rng) -> RgbImage {
    let gain = 1.0 - 0.75 * s;
    let gamma = 1.0 + 1.2 * s;
    let tint = [0.9, 0.95, 1.1];
    let sigma = 2.0 + 8.0 * s;
    let noise = Normal::new(0.0f32, sigma).expect("positive sigma");
    let mut lut = [[0f32; 256]; 3];
    for (c, l) in lut.iter_mut().enumerate() {
        for (v, e) in l.iter_mut().enumerate() {
            *e = 255.0 * (v as f32 / 255.0).powf(gamma) * gain * tint[c];
        }
    }
    let mut out = img.clone();
    for px in out.as_mut().chunks_exact_mut(3) {
        // Shot noise is mostly luminance: one draw per pixel plus a weaker per-channel part.
        let l = noise.sample(rng);
        for c in 0..3 {
            px[c] = to_u8(lut[c][px[c] as usize] + l + 0.3 * noise.sample(rng));
        }
    }
    out
}

/// Linear motion blur along a near-horizontal direction; the kernel is normalised, so the mean
/// brightness is kept (up to edge clamping).
fn motion_blur(img: &RgbImage, s: f32, rng: &mut ChaCha8Rng) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let len = (3.0 + 22.0 * s).round() as i64;
    let angle = rng.random_range(-0.35f32..0.35);
    let (dx, dy) = (angle.cos(), angle.sin());
    let taps: Vec<(i64, i64)> = (0..len)
        .map(|k| {
            let t = k as f32 - (len - 1) as f32 / 2.0;
            ((t * dx).round() as i64, (t * dy).round() as i64)
        })
        .collect();
    let src = img.as_raw();
    let mut out = img.clone();
    let inv = 1.0 / taps.len() as f32;
    for (i, px) in out.as_mut().chunks_exact_mut(3).enumerate() {
        let (x, y) = (i as i64 % w, i as i64 / w);
        let mut acc = [0f32; 3];
        for &(ox, oy) in &taps {
            let sx = (x + ox).clamp(0, w - 1);
            let sy = (y + oy).clamp(0, h - 1);
            let s = ((sy * w + sx) * 3) as usize;
            for c in 0..3 {
                acc[c] += src[s + c] as f32;
            }
        }
        for c in 0..3 {
            px[c] = to_u8(acc[c] * inv);
        }
    }
    out
}

/// Slanted bright streaks blended over a slightly dimmed, hazier scene.
fn rain(img: &RgbImage, s: f32, rng: &mut ChaCha8Rng) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut buf: Vec<f32> = img.as_raw().iter().map(|&v| v as f32 * 0.9 + 8.0).collect();
    let drops = ((w * h) as f32 * (0.002 + 0.01 * s)) as usize;
    let slant = rng.random_range(-0.3f32..0.3);
    let len = (h as f32 * (0.03 + 0.06 * s)).max(2.0) as usize;
    let alpha = 0.25 + 0.35 * s;
    for _ in 0..drops {
        let x0 = rng.random_range(0..w) as f32;
        let y0 = rng.random_range(0..h) as f32;
        for k in 0..len {
            let x = (x0 + slant * k as f32).round() as i64;
            let y = y0 as i64 + k as i64;
            if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
                break;
            }
            let p = (y as usize * w + x as usize) * 3;
            for c in 0..3 {
                buf[p + c] = buf[p + c] * (1.0 - alpha) + 220.0 * alpha;
            }
        }
    }
    let raw = buf.into_iter().map(to_u8).collect();
    RgbImage::from_raw(w as u32, h as u32, raw).expect("size")
}

/// Soft dark-brown blotches on the lens (out of focus, so with smooth edges) and a faint veil.
fn lens_dirt(img: &RgbImage, s: f32, rng: &mut ChaCha8Rng) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let short = w.min(h) as f32;
    let n = 3 + (s * 8.0) as usize;
    let blobs: Vec<(f32, f32, f32, f32)> = (0..n)
        .map(|_| {
            (
                rng.random_range(0.0..w as f32),
                rng.random_range(0.0..h as f32),
                short * rng.random_range(0.04..0.12 + 0.1 * s),
                rng.random_range(0.3..0.5 + 0.4 * s),
            )
        })
        .collect();
    let dirt = [60.0f32, 50.0, 40.0];
    let mut out = img.clone();
    for (i, px) in out.as_mut().chunks_exact_mut(3).enumerate() {
        let (x, y) = ((i % w) as f32, (i / w) as f32);
        let mut a = 0.0f32;
        for &(cx, cy, r, op) in &blobs {
            let d2 = ((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (r * r);
            if d2 < 4.0 {
                a = a.max(op * (-d2).exp());
            }
        }
        for c in 0..3 {
            let v = px[c] as f32 * (1.0 - 0.05 * s) + 0.05 * s * 180.0;
            px[c] = to_u8(v * (1.0 - a) + dirt[c] * a);
        }
    }
    out
}
