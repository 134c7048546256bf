//! The validators' challenge pipeline (`apply_augmentation_by_level` in the subnet's
//! `natix/utils/image_transforms.py`) and the JPEG encoding of `natix/protocol.py`.
//!
//! Sampling ([`sample_params`]) and applying ([`apply_params`]) are separate so a parity test or a
//! replay can feed exact parameters.

use anyhow::{bail, Context, Result};
use image::{DynamicImage, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::ops::{self, CropBox};
use crate::config::AugmentConfig;

/// DeeperForensics parameter tables (index = level - 1), as in `get_distortion_parameter`.
pub const CS_PARAMS: [f32; 5] = [0.4, 0.3, 0.2, 0.1, 0.0];
pub const CC_PARAMS: [f32; 5] = [0.85, 0.725, 0.6, 0.475, 0.35];
pub const GNC_PARAMS: [f64; 5] = [0.001, 0.002, 0.005, 0.01, 0.05];
pub const GB_PARAMS: [usize; 5] = [7, 9, 13, 17, 21];
pub const JPEG_PARAMS: [u32; 5] = [2, 3, 4, 5, 6];

/// Largest rotation of `RandomRotation(20)`, in degrees.
pub const MAX_ANGLE: f32 = 20.0;
/// `RandomResizedCrop` area range.
pub const CROP_SCALE: (f64, f64) = (0.2, 1.0);

/// Every random choice of one challenge, like the subnet's `tforms.params` (serialisable, so a
/// challenge can be logged and replayed exactly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugParams {
    /// Validator difficulty level 0..=3.
    pub level: u8,
    /// Output side (224 on the subnet).
    pub size: u32,
    /// Rotation in degrees (levels 1-3).
    pub angle: Option<f32>,
    /// `RandomResizedCrop` box on the rotated image (levels 1-3).
    pub crop: Option<CropBox>,
    pub hflip: bool,
    pub vflip: bool,
    /// DeeperForensics levels, 0 = not applied. Level 2 uses CS/CC/JPEG 0-1, level 3 all five 0-2.
    pub cs: u8,
    pub cc: u8,
    pub jpeg: u8,
    pub gnc: u8,
    pub gb: u8,
    /// Seed of the ChaCha8 stream the GNC noise is drawn from (when `gnc > 0`).
    pub noise_seed: Option<u64>,
}

impl AugParams {
    /// The level-0 (no augmentation) parameters.
    pub fn level0(size: u32) -> Self {
        Self {
            level: 0,
            size,
            angle: None,
            crop: None,
            hflip: false,
            vflip: false,
            cs: 0,
            cc: 0,
            jpeg: 0,
            gnc: 0,
            gb: 0,
            noise_seed: None,
        }
    }

    /// Short human-readable id, e.g. `v3.r-7.2.c100,30,150.cs1cc2jp2gn0gb1`.
    pub fn id(&self) -> String {
        let mut s = format!("v{}", self.level);
        if let Some(a) = self.angle {
            s.push_str(&format!(".r{a:.1}"));
        }
        if let Some(c) = self.crop {
            s.push_str(&format!(".c{},{},{}", c.i, c.j, c.h));
        }
        if self.hflip {
            s.push_str(".h");
        }
        if self.vflip {
            s.push_str(".v");
        }
        match self.level {
            2 => s.push_str(&format!(".cs{}cc{}jp{}", self.cs, self.cc, self.jpeg)),
            3 => s.push_str(&format!(
                ".cs{}cc{}jp{}gn{}gb{}",
                self.cs, self.cc, self.jpeg, self.gnc, self.gb
            )),
            _ => {}
        }
        s
    }
}

/// One validator challenge as a miner receives it.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// The challenge decoded from [`Challenge::jpeg`], as the miner sees it.
    pub image: RgbImage,
    /// The JPEG bytes sent (base64-encoded on the wire).
    pub jpeg: Vec<u8>,
    pub level: u8,
    pub params: AugParams,
}

/// Draws a level as the subnet does: `u <= cumulative probability`, levels in order.
pub fn sample_level(probs: &[f64; 4], rng: &mut ChaCha8Rng) -> u8 {
    let u: f64 = rng.random();
    let mut cum = 0.0;
    for (level, p) in probs.iter().enumerate() {
        cum += p;
        if u <= cum {
            return level as u8;
        }
    }
    3
}

/// torchvision `RandomResizedCrop.get_params` with scale (0.2, 1) and ratio 1 on a `w x h` image.
pub fn sample_crop(w: usize, h: usize, rng: &mut ChaCha8Rng) -> CropBox {
    let area = (w * h) as f64;
    for _ in 0..10 {
        let target = area * rng.random_range(CROP_SCALE.0..CROP_SCALE.1);
        // Python's round() on the side is half-to-even; ratio 1 makes the box square.
        let side = target.sqrt().round_ties_even() as usize;
        if side > 0 && side <= w && side <= h {
            let i = rng.random_range(0..=h - side);
            let j = rng.random_range(0..=w - side);
            return CropBox {
                i,
                j,
                h: side,
                w: side,
            };
        }
    }
    // Fallback: the central square of the short side.
    let side = w.min(h);
    CropBox {
        i: (h - side) / 2,
        j: (w - side) / 2,
        h: side,
        w: side,
    }
}

/// Draws all parameters of a challenge at `level` for an image of `w x h`.
pub fn sample_params(
    w: usize,
    h: usize,
    level: u8,
    cfg: &AugmentConfig,
    rng: &mut ChaCha8Rng,
) -> Result<AugParams> {
    if level > 3 {
        bail!("validator level {level} does not exist (levels are 0 to 3)");
    }
    if w == 0 || h == 0 {
        bail!("cannot augment an empty {w}x{h} image");
    }
    let mut p = AugParams::level0(cfg.target_size);
    p.level = level;
    if level == 0 {
        return Ok(p);
    }
    // torch draws the angle as float32.
    p.angle = Some(rng.random_range(-MAX_ANGLE..MAX_ANGLE));
    p.crop = Some(sample_crop(w, h, rng));
    if cfg.validator_flips {
        p.hflip = rng.random_bool(0.5);
        p.vflip = rng.random_bool(0.5);
    }
    let max = if level == 3 { 2 } else { 1 };
    if level >= 2 {
        p.cs = rng.random_range(0..=max);
        p.cc = rng.random_range(0..=max);
        p.jpeg = rng.random_range(0..=max);
    }
    if level == 3 {
        p.gnc = rng.random_range(0..=max);
        p.gb = rng.random_range(0..=max);
        if p.gnc > 0 {
            p.noise_seed = Some(rng.random());
        }
    }
    Ok(p)
}

/// Standard normal noise for GNC on a `w x h` image, drawn from `seed`.
pub fn gnc_noise(seed: u64, w: usize, h: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..w * h * 3)
        .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
        .collect()
}

fn table<T: Copy>(t: &[T; 5], level: u8, name: &str) -> Result<T> {
    t.get(level as usize - 1)
        .copied()
        .with_context(|| format!("{name} level {level} is outside 1..=5"))
}

/// Applies the DeeperForensics ops of `p` in the subnet's order (CS, CC, JPEG, GNC, GB).
/// `noise` overrides the GNC noise drawn from `p.noise_seed` (parity tests pass the reference's).
pub fn apply_distortions(img: &mut RgbImage, p: &AugParams, noise: Option<&[f32]>) -> Result<()> {
    if p.cs > 0 {
        ops::color_saturation(img, table(&CS_PARAMS, p.cs, "CS")?);
    }
    if p.cc > 0 {
        ops::color_contrast(img, table(&CC_PARAMS, p.cc, "CC")?);
    }
    if p.jpeg > 0 {
        *img = ops::jpeg_resample(img, table(&JPEG_PARAMS, p.jpeg, "JPEG")?)?;
    }
    if p.gnc > 0 {
        let param = table(&GNC_PARAMS, p.gnc, "GNC")?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        match noise {
            Some(n) => ops::gaussian_noise_color(img, param, n)?,
            None => {
                let seed = p.noise_seed.context("GNC level set but no noise_seed")?;
                ops::gaussian_noise_color(img, param, &gnc_noise(seed, w, h))?
            }
        }
    }
    if p.gb > 0 {
        let k = table(&GB_PARAMS, p.gb, "GB")?;
        *img = ops::gaussian_blur(img, k, k as f64 / 6.0);
    }
    Ok(())
}

/// Runs the pipeline with fixed parameters up to the image the validator JPEG-encodes
/// (`ToPILImage` of the augmented tensor).
pub fn apply_params(img: &DynamicImage, p: &AugParams, noise: Option<&[f32]>) -> Result<RgbImage> {
    let rgb = img.to_rgb8();
    if rgb.width() == 0 || rgb.height() == 0 {
        bail!("cannot augment an empty image");
    }
    if p.level == 0 {
        let sq = ops::center_crop_square(&rgb);
        return Ok(ops::pil_resize_bilinear(&sq, p.size, p.size));
    }
    let crop = p
        .crop
        .with_context(|| format!("level {} parameters lack a crop box", p.level))?;
    let angle = p.angle.unwrap_or(0.0) as f64;
    let cropped = ops::rotate_crop_nearest(&rgb, angle, crop)?;
    let mut t =
        ops::resize_bilinear_aa(&ops::to_tensor(&cropped), p.size as usize, p.size as usize);
    if p.hflip {
        ops::hflip(&mut t);
    }
    if p.vflip {
        ops::vflip(&mut t);
    }
    // The DeeperForensics wrapper truncates to uint8 once; k/255 round-trips exactly afterwards,
    // so the later ops and ToPILImage see the same bytes.
    let mut u8img = ops::to_u8(&t);
    apply_distortions(&mut u8img, p, noise)?;
    Ok(u8img)
}

/// Encodes what the validator sends: PIL `image.save(format="JPEG")` (`natix/protocol.py`),
/// byte for byte (libjpeg-turbo's encoder with Pillow's defaults, `util::pil`).
pub fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    crate::util::pil::encode_jpeg_pil(img)
        .map_err(|e| anyhow::anyhow!("JPEG encoding of a challenge failed: {e}"))
}

/// Decodes challenge bytes as the miner does (libjpeg-turbo, Pillow's pixels; challenges carry no
/// EXIF).
pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage> {
    crate::util::pil::decode_jpeg(bytes, &|_, _| Ok(()))
        .map(|(img, _)| img)
        .map_err(|e| anyhow::anyhow!("cannot decode challenge JPEG: {e:?}"))
}

/// Builds one challenge: samples a level (from `cfg.level_probs` unless `level` is given) and its
/// parameters, augments, JPEG-encodes and decodes it as the miner would.
pub fn validator_challenge(
    img: &DynamicImage,
    level: Option<u8>,
    cfg: &AugmentConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Challenge> {
    let level = match level {
        Some(l) => l,
        None => sample_level(&cfg.level_probs, rng),
    };
    let params = sample_params(img.width() as usize, img.height() as usize, level, cfg, rng)?;
    let pre = apply_params(img, &params, None)?;
    let jpeg = encode_jpeg(&pre)?;
    let image = decode_jpeg(&jpeg)?;
    Ok(Challenge {
        image,
        jpeg,
        level,
        params,
    })
}
