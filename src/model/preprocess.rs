//! Image → `pixel_values`, matching what `transformers` 5.x feeds the checkpoint.
//!
//! `AutoImageProcessor.from_pretrained(dir)` in transformers 5.x picks the **torchvision** backend
//! by default (`backend=None` → torchvision when installed; only Lanczos processors fall back to
//! PIL on old torchvision). Two pipelines follow from the checkpoint's `image_processor_type`:
//!
//! * BiT / ViT / SigLIP style (DINOv2, DINOv2 with registers, SigLIP): convert to RGB → resize
//!   the **uint8** image (torch's antialiased separable kernel with int16 fixed-point weights,
//!   one uint8 rounding per axis) → centre crop (zero padding when the crop is larger) → fused rescale + normalise in f32.
//! * DINOv3: rescale to f32 first → antialiased **float** resize → (crop) → normalise.
//! * SigLIP 2 NaFlex (`Siglip2ImageProcessor`): the uint8 pipeline, resized to the largest patch
//!   grid within `max_num_patches` that keeps the aspect ratio ([`naflex_size`]); the model
//!   patchifies (transformers' processor does that step, and pads).
//!
//! Both resamplers are implemented here (bilinear = triangle filter, bicubic = Keys a = -0.5, the
//! antialiased kernels torch and Pillow share; the filter widens by the scale when downscaling).
//! RGB conversion is the crate-wide rule of `data::decode` (the subnet miner's pipeline:
//! `exif_transpose` then `convert("RGB")`): grey is replicated, alpha is dropped. The EXIF
//! orientation is applied when decoding (`data::decode::decode_rgb`), before this module sees
//! the pixels.
//!
//! The fixed "validator" path mirrors what validators send (224×224 JPEG): an image of another
//! size is resized to the target with antialiased bilinear (what the subnet's
//! `transforms.Resize` uses), then rescaled and normalised with the checkpoint's mean/std.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{DynamicImage, RgbImage};
use serde::Deserialize;

use super::resample::{coeffs, Coeffs, Filter};

use crate::config::PreprocessKind;

/// Name of the processor config in a snapshot.
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Resampling filter (PIL numbering in configs: 2 = bilinear, 3 = bicubic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Bilinear,
    Bicubic,
}

impl Resample {
    fn from_pil(code: i64, origin: &str) -> Result<Self> {
        match code {
            2 => Ok(Self::Bilinear),
            3 => Ok(Self::Bicubic),
            other => bail!(
                "{origin}: resample = {other} is not supported (only 2 = bilinear, 3 = bicubic)"
            ),
        }
    }

    /// The antialiasing filter (bicubic = Keys a = -0.5, as torch's antialiased kernel and
    /// Pillow use).
    pub fn filter(self) -> Filter {
        match self {
            Self::Bilinear => Filter::Triangle,
            Self::Bicubic => Filter::Cubic(-0.5),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
        }
    }
}

/// Target of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// Shorter side becomes this, the longer one keeps the aspect ratio (truncated).
    ShortestEdge(u32),
    /// Exact `height × width`.
    Exact { height: u32, width: u32 },
    /// SigLIP 2 NaFlex: the largest grid of `patch`-pixel patches, at most `max_patches` of
    /// them, that keeps the aspect ratio (`get_image_size_for_max_num_patches`).
    MaxPatches { patch: u32, max_patches: u32 },
}

/// `(height, width)` that `Siglip2ImageProcessor` resizes a `height × width` image to: its binary
/// search for the largest scale whose patch grid (each side rounded up to whole patches, at least
/// one) has at most `max_patches` patches, in the same f64 arithmetic.
pub fn naflex_size(height: u32, width: u32, patch: u32, max_patches: u32) -> (u32, u32) {
    let p = patch as f64;
    let scaled = |scale: f64, size: u32| ((size as f64 * scale / p).ceil() * p).max(p);
    let (mut lo, mut hi) = (1e-5 / 10.0, 100.0);
    while hi - lo >= 1e-5 {
        let scale = (lo + hi) / 2.0;
        let n = (scaled(scale, height) / p) * (scaled(scale, width) / p);
        if n <= max_patches as f64 {
            lo = scale;
        } else {
            hi = scale;
        }
    }
    (scaled(lo, height) as u32, scaled(lo, width) as u32)
}

/// Where the uint8 → f32 conversion happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Resize and crop on uint8, then rescale + normalise (BiT, ViT, the validator path).
    ResizeU8First,
    /// Rescale to f32, resize in f32, crop, normalise (DINOv3).
    RescaleFirst,
}

/// A complete preprocessing recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub resize: Option<(ResizeTo, Resample)>,
    /// Centre crop `(height, width)`.
    pub crop: Option<(u32, u32)>,
    pub rescale: Option<f32>,
    /// `(mean, std)` per channel.
    pub normalize: Option<([f32; 3], [f32; 3])>,
    pub order: Order,
    /// `processor` or `validator`: part of [`Preprocess::id`].
    pub kind: &'static str,
}

/// A `size` / `crop_size` entry: an integer (square) or a dict.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Square(u64),
    Dict {
        shortest_edge: Option<u64>,
        longest_edge: Option<u64>,
        height: Option<u64>,
        width: Option<u64>,
    },
}

/// `image_mean` / `image_std`: one number for every channel or three.
#[derive(Deserialize)]
#[serde(untagged)]
enum Triple {
    One(f64),
    Three(Vec<f64>),
}

impl Triple {
    fn get(v: Option<Self>, key: &str, default: [f32; 3], origin: &str) -> Result<[f32; 3]> {
        match v {
            None => Ok(default),
            Some(Self::One(x)) => Ok([x as f32; 3]),
            Some(Self::Three(a)) if a.len() == 3 => Ok([a[0] as f32, a[1] as f32, a[2] as f32]),
            Some(Self::Three(a)) => {
                bail!("{origin}: `{key}` must be a list of 3 numbers, got {a:?}")
            }
        }
    }
}

/// `preprocessor_config.json` as `transformers` writes it (absent or `null` = class default).
#[derive(Deserialize)]
struct RawProcessor {
    image_processor_type: Option<String>,
    resample: Option<i64>,
    do_resize: Option<bool>,
    size: Option<SizeSpec>,
    do_center_crop: Option<bool>,
    crop_size: Option<SizeSpec>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<Triple>,
    image_std: Option<Triple>,
    patch_size: Option<u64>,
    max_num_patches: Option<u64>,
}

fn side(v: Option<u64>, key: &str, origin: &str) -> Result<Option<u32>> {
    match v {
        None => Ok(None),
        Some(n) if n > 0 && n <= 65_536 => Ok(Some(n as u32)),
        Some(_) => bail!("{origin}: `{key}` must be a positive integer"),
    }
}

fn parse_size(v: SizeSpec, origin: &str, what: &str) -> Result<ResizeTo> {
    let (shortest, longest, height, width) = match v {
        SizeSpec::Square(n) => {
            return Ok(ResizeTo::Exact {
                height: n as u32,
                width: n as u32,
            })
        }
        SizeSpec::Dict {
            shortest_edge,
            longest_edge,
            height,
            width,
        } => (shortest_edge, longest_edge, height, width),
    };
    let o = format!("{origin} `{what}`");
    if let Some(se) = side(shortest, "shortest_edge", &o)? {
        if longest.is_some() {
            bail!("{o}: `longest_edge` is not supported");
        }
        return Ok(ResizeTo::ShortestEdge(se));
    }
    match (side(height, "height", &o)?, side(width, "width", &o)?) {
        (Some(height), Some(width)) => Ok(ResizeTo::Exact { height, width }),
        _ => bail!("{o} must have `shortest_edge` or `height` and `width`"),
    }
}

impl Preprocess {
    /// Reads `dir/preprocessor_config.json`.
    pub fn from_snapshot(dir: &Path) -> Result<Self> {
        let path = dir.join(PREPROCESSOR_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (a backbone snapshot needs its processor config)",
                path.display()
            )
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses a processor config; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let v: RawProcessor = super::parse_config(text, Path::new(origin))?;
        let ty = v
            .image_processor_type
            .as_deref()
            .unwrap_or("BitImageProcessor");
        let base = ty.strip_suffix("Fast").unwrap_or(ty);
        // Class defaults of the processors transformers would instantiate.
        let (order, d_resample, d_size, d_crop, d_mean, d_std) = match base {
            "BitImageProcessor" => (
                Order::ResizeU8First,
                3,
                Some(ResizeTo::ShortestEdge(224)),
                Some((224, 224)),
                CLIP_MEAN,
                CLIP_STD,
            ),
            "ViTImageProcessor" => (
                Order::ResizeU8First,
                2,
                Some(ResizeTo::Exact {
                    height: 224,
                    width: 224,
                }),
                None,
                [0.5; 3],
                [0.5; 3],
            ),
            // SigLIP / SigLIP 2 at fixed resolution: resize to `size` on uint8 (no crop), then
            // one fused rescale + normalise (the torchvision backend, like ViT's).
            "SiglipImageProcessor" => (
                Order::ResizeU8First,
                3,
                Some(ResizeTo::Exact {
                    height: 224,
                    width: 224,
                }),
                None,
                [0.5; 3],
                [0.5; 3],
            ),
            // SigLIP 2 NaFlex: aspect-preserving resize to a patch grid (below), on uint8 as
            // the torchvision backend does, then the fused rescale + normalise.
            "Siglip2ImageProcessor" => (
                Order::ResizeU8First,
                2,
                None,
                None,
                [0.5; 3],
                [0.5; 3],
            ),
            "DINOv3ViTImageProcessor" => (
                Order::RescaleFirst,
                2,
                Some(ResizeTo::Exact {
                    height: 224,
                    width: 224,
                }),
                None,
                IMAGENET_MEAN,
                IMAGENET_STD,
            ),
            other => bail!(
                "{origin}: image_processor_type {other:?} is not supported (sv72 knows BitImageProcessor, ViTImageProcessor, DINOv3ViTImageProcessor, SiglipImageProcessor, Siglip2ImageProcessor)"
            ),
        };
        let resample = Resample::from_pil(v.resample.unwrap_or(d_resample), origin)?;
        let resize = if base == "Siglip2ImageProcessor" {
            // `size` is ignored: the target follows from the patch budget.
            if !v.do_resize.unwrap_or(true) {
                bail!(
                    "{origin}: `do_resize: false` is not supported for Siglip2ImageProcessor \
                     (images would need whole-patch sides); remove it"
                );
            }
            let patch = side(Some(v.patch_size.unwrap_or(16)), "patch_size", origin)?.unwrap();
            let max_patches = side(
                Some(v.max_num_patches.unwrap_or(256)),
                "max_num_patches",
                origin,
            )?
            .unwrap();
            Some((ResizeTo::MaxPatches { patch, max_patches }, resample))
        } else if v.do_resize.unwrap_or(true) {
            let size = match v.size {
                None => d_size,
                Some(s) => Some(parse_size(s, origin, "size")?),
            };
            size.map(|s| (s, resample))
        } else {
            None
        };
        let crop = if v.do_center_crop.unwrap_or(d_crop.is_some()) {
            match v.crop_size {
                None => d_crop,
                Some(s) => match parse_size(s, origin, "crop_size")? {
                    ResizeTo::Exact { height, width } => Some((height, width)),
                    ResizeTo::ShortestEdge(_) | ResizeTo::MaxPatches { .. } => {
                        bail!("{origin}: `crop_size` needs `height` and `width`")
                    }
                },
            }
        } else {
            None
        };
        let rescale = if v.do_rescale.unwrap_or(true) {
            Some(v.rescale_factor.unwrap_or(1.0 / 255.0) as f32)
        } else {
            None
        };
        let normalize = if v.do_normalize.unwrap_or(true) {
            Some((
                Triple::get(v.image_mean, "image_mean", d_mean, origin)?,
                Triple::get(v.image_std, "image_std", d_std, origin)?,
            ))
        } else {
            None
        };
        if let Some((_, std)) = normalize {
            if std.iter().any(|s| !s.is_finite() || *s == 0.0) {
                bail!("{origin}: `image_std` must be finite and non-zero");
            }
        }
        Ok(Self {
            resize,
            crop,
            rescale,
            normalize,
            order,
            kind: "processor",
        })
    }

    /// The fixed validator path: `size`×`size`, bilinear when resizing, rescale 1/255, then the
    /// checkpoint's mean/std.
    pub fn validator(size: u32, mean: [f32; 3], std: [f32; 3]) -> Self {
        Self {
            resize: Some((
                ResizeTo::Exact {
                    height: size,
                    width: size,
                },
                Resample::Bilinear,
            )),
            crop: None,
            rescale: Some(1.0 / 255.0),
            normalize: Some((mean, std)),
            order: Order::ResizeU8First,
            kind: "validator",
        }
    }

    /// The recipe named by `kind` (`backbone.preprocess`): `processor` = the snapshot's own
    /// `preprocessor_config.json`, `validator` = the fixed `target_size` square path.
    pub fn for_kind(kind: PreprocessKind, snapshot: &Path, target_size: u32) -> Result<Self> {
        match kind {
            PreprocessKind::Processor => Self::from_snapshot(snapshot),
            PreprocessKind::Validator => Self::validator_for(snapshot, target_size),
        }
    }

    /// The validator path with the mean/std of a snapshot's processor config.
    pub fn validator_for(dir: &Path, size: u32) -> Result<Self> {
        let p = Self::from_snapshot(dir)?;
        let (mean, std) = p.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        Ok(Self::validator(size, mean, std))
    }

    /// A stable identifier of the recipe (a cache key component): changes whenever any
    /// parameter that changes `pixel_values` changes.
    pub fn id(&self) -> String {
        let desc = format!(
            "v1|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.kind,
            self.order,
            self.resize
                .map(|(r, s)| format!("{r:?}/{}", s.name()))
                .unwrap_or_default(),
            self.crop,
            self.rescale.map(f32::to_bits),
            self.normalize
                .map(|(m, s)| (m.map(f32::to_bits), s.map(f32::to_bits))),
        );
        format!(
            "{}-{}",
            self.kind,
            &crate::util::hash::content_hash(desc.as_bytes())[..16]
        )
    }

    /// Output `(height, width)` for an input of `width × height`.
    pub fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        if let Some((h, w)) = self.crop {
            return (h, w);
        }
        self.resized_size(width, height)
    }

    fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.resize {
            None => (height, width),
            Some((ResizeTo::Exact { height, width }, _)) => (height, width),
            Some((ResizeTo::MaxPatches { patch, max_patches }, _)) => {
                naflex_size(height, width, patch, max_patches)
            }
            Some((ResizeTo::ShortestEdge(s), _)) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                let new_long = ((s as u64 * long as u64) as f64 / short as f64) as u32;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// `pixel_values` `[3, H, W]` (row-major) of a decoded image.
    pub fn pixel_values(&self, img: &DynamicImage) -> Result<Vec<f32>> {
        if img.width() == 0 || img.height() == 0 {
            bail!("image has zero size");
        }
        Ok(self.pixel_values_rgb(&to_rgb(img)))
    }

    /// `pixel_values` `[3, H, W]` of an RGB image.
    pub fn pixel_values_rgb(&self, rgb: &RgbImage) -> Vec<f32> {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let (rh, rw) = self.resized_size(rgb.width(), rgb.height());
        let (rh, rw) = (rh as usize, rw as usize);
        let planes = planar_u8(rgb);
        match self.order {
            Order::ResizeU8First => {
                let resized = match self.resize {
                    Some((_, f)) => resize_u8(&planes, h, w, rh, rw, f),
                    None => planes,
                };
                let (cropped, ch, cw) = match self.crop {
                    Some((ch, cw)) => center_crop(&resized, rh, rw, ch as usize, cw as usize, 0u8),
                    None => (resized, rh, rw),
                };
                let n = ch * cw;
                let mut out = vec![0f32; 3 * n];
                for c in 0..3 {
                    // transformers fuses rescale into normalise: (x - mean/s) / (std/s), in f32.
                    let (sub, div) = match (self.rescale, self.normalize) {
                        (Some(s), Some((m, d))) => (m[c] * (1.0 / s), d[c] * (1.0 / s)),
                        (None, Some((m, d))) => (m[c], d[c]),
                        (Some(s), None) => (0.0, 1.0 / s),
                        (None, None) => (0.0, 1.0),
                    };
                    let src = &cropped[c * n..(c + 1) * n];
                    let dst = &mut out[c * n..(c + 1) * n];
                    if self.normalize.is_none() && self.rescale.is_some() {
                        let s = self.rescale.unwrap_or(1.0);
                        for (d, &x) in dst.iter_mut().zip(src) {
                            *d = x as f32 * s;
                        }
                    } else {
                        for (d, &x) in dst.iter_mut().zip(src) {
                            *d = (x as f32 - sub) / div;
                        }
                    }
                }
                out
            }
            Order::RescaleFirst => {
                let s = self.rescale.unwrap_or(1.0);
                let f: Vec<f32> = planes.iter().map(|&x| x as f32 * s).collect();
                let resized = match self.resize {
                    Some((_, filt)) => resize_f32(&f, h, w, rh, rw, filt),
                    None => f,
                };
                let (mut out, _, _) = match self.crop {
                    Some((ch, cw)) => center_crop(&resized, rh, rw, ch as usize, cw as usize, 0f32),
                    None => (resized, rh, rw),
                };
                if let Some((m, d)) = self.normalize {
                    let n = out.len() / 3;
                    for c in 0..3 {
                        for x in &mut out[c * n..(c + 1) * n] {
                            *x = (*x - m[c]) / d[c];
                        }
                    }
                }
                out
            }
        }
    }
}

/// The RGB pixels of a decoded image by the crate-wide rule (`util::pil::convert_rgb`: what
/// the subnet miner's pipeline does with `convert("RGB")` before the image processor; alpha is
/// dropped, not composited).
pub fn to_rgb(img: &DynamicImage) -> RgbImage {
    crate::util::pil::convert_rgb(img)
}

fn planar_u8(rgb: &RgbImage) -> Vec<u8> {
    let n = (rgb.width() * rgb.height()) as usize;
    let mut out = vec![0u8; 3 * n];
    for (i, p) in rgb.pixels().enumerate() {
        out[i] = p[0];
        out[n + i] = p[1];
        out[2 * n + i] = p[2];
    }
    out
}

/// Converts weights to int16 fixed point with torch's dynamic precision (largest that keeps the
/// largest weight below 2^15).
fn int16_weights(c: &Coeffs) -> (Vec<i32>, u32) {
    let wmax = c.w.iter().cloned().fold(0.0f64, f64::max);
    let mut prec = 0u32;
    while prec < 22 {
        let next = (0.5 + wmax * (1u64 << (prec + 1)) as f64) as i64;
        if next >= 1 << 15 {
            break;
        }
        prec += 1;
    }
    let k =
        c.w.iter()
            .map(|&w| {
                let v = w * (1u64 << prec) as f64;
                (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32 as i16 as i32
            })
            .collect();
    (k, prec)
}

/// Separable antialiased resize of a planar uint8 `[3, h, w]` image, horizontal pass first, each
/// pass rounded to uint8 (torch's CPU uint8 kernel; a pass is skipped when that side is unchanged).
fn resize_u8(src: &[u8], h: usize, w: usize, oh: usize, ow: usize, f: Resample) -> Vec<u8> {
    let mut cur = src.to_vec();
    let mut cw = w;
    if ow != w {
        let c = coeffs(w, ow, f.filter());
        let (k, prec) = int16_weights(&c);
        let half = if prec > 0 { 1i32 << (prec - 1) } else { 0 };
        let mut out = vec![0u8; 3 * h * ow];
        for ch in 0..3 {
            for y in 0..h {
                let row = &cur[(ch * h + y) * w..(ch * h + y + 1) * w];
                let orow = &mut out[(ch * h + y) * ow..(ch * h + y + 1) * ow];
                for (x, o) in orow.iter_mut().enumerate() {
                    let ks = &k[x * c.stride..x * c.stride + c.len[x]];
                    let px = &row[c.start[x]..c.start[x] + c.len[x]];
                    let mut acc = half;
                    for (&kv, &p) in ks.iter().zip(px) {
                        acc += kv * p as i32;
                    }
                    *o = (acc >> prec).clamp(0, 255) as u8;
                }
            }
        }
        cur = out;
        cw = ow;
    }
    if oh != h {
        let c = coeffs(h, oh, f.filter());
        let (k, prec) = int16_weights(&c);
        let half = if prec > 0 { 1i32 << (prec - 1) } else { 0 };
        let mut out = vec![0u8; 3 * oh * cw];
        let mut acc = vec![0i32; cw];
        for ch in 0..3 {
            let plane = &cur[ch * h * cw..(ch + 1) * h * cw];
            for y in 0..oh {
                acc.iter_mut().for_each(|a| *a = half);
                let ks = &k[y * c.stride..y * c.stride + c.len[y]];
                for (j, &kv) in ks.iter().enumerate() {
                    let row = &plane[(c.start[y] + j) * cw..(c.start[y] + j + 1) * cw];
                    for (a, &p) in acc.iter_mut().zip(row) {
                        *a += kv * p as i32;
                    }
                }
                let orow = &mut out[(ch * oh + y) * cw..(ch * oh + y + 1) * cw];
                for (o, &a) in orow.iter_mut().zip(&acc) {
                    *o = (a >> prec).clamp(0, 255) as u8;
                }
            }
        }
        cur = out;
    }
    cur
}

/// Separable antialiased resize of a planar f32 `[3, h, w]` image (torch's float kernel: f32
/// arithmetic, no clamping).
fn resize_f32(src: &[f32], h: usize, w: usize, oh: usize, ow: usize, f: Resample) -> Vec<f32> {
    let mut cur = src.to_vec();
    let mut cw = w;
    if ow != w {
        let c = coeffs(w, ow, f.filter());
        let k: Vec<f32> = c.w.iter().map(|&x| x as f32).collect();
        let mut out = vec![0f32; 3 * h * ow];
        for ch in 0..3 {
            for y in 0..h {
                let row = &cur[(ch * h + y) * w..(ch * h + y + 1) * w];
                let orow = &mut out[(ch * h + y) * ow..(ch * h + y + 1) * ow];
                for (x, o) in orow.iter_mut().enumerate() {
                    let ks = &k[x * c.stride..x * c.stride + c.len[x]];
                    let px = &row[c.start[x]..c.start[x] + c.len[x]];
                    *o = ks.iter().zip(px).map(|(a, b)| a * b).sum();
                }
            }
        }
        cur = out;
        cw = ow;
    }
    if oh != h {
        let c = coeffs(h, oh, f.filter());
        let k: Vec<f32> = c.w.iter().map(|&x| x as f32).collect();
        let mut out = vec![0f32; 3 * oh * cw];
        for ch in 0..3 {
            let plane = &cur[ch * h * cw..(ch + 1) * h * cw];
            for y in 0..oh {
                let orow = &mut out[(ch * oh + y) * cw..(ch * oh + y + 1) * cw];
                let ks = &k[y * c.stride..y * c.stride + c.len[y]];
                for (j, &kv) in ks.iter().enumerate() {
                    let row = &plane[(c.start[y] + j) * cw..(c.start[y] + j + 1) * cw];
                    for (o, &p) in orow.iter_mut().zip(row) {
                        *o += kv * p;
                    }
                }
            }
        }
        cur = out;
    }
    cur
}

/// torchvision-style centre crop of a planar `[3, h, w]` image, padding with `fill` (split as
/// torchvision does) when the crop is larger than the image.
fn center_crop<T: Copy>(
    src: &[T],
    h: usize,
    w: usize,
    ch: usize,
    cw: usize,
    fill: T,
) -> (Vec<T>, usize, usize) {
    // Offsets of the crop window in the (conceptually padded) image.
    let pad_top = if ch > h { (ch - h) / 2 } else { 0 };
    let pad_left = if cw > w { (cw - w) / 2 } else { 0 };
    // After padding a side equals the crop, so only an unpadded side has an offset.
    let top = ((h.max(ch) - ch) as f64 / 2.0) as usize;
    let left = ((w.max(cw) - cw) as f64 / 2.0) as usize;
    let mut out = vec![fill; 3 * ch * cw];
    for c in 0..3 {
        for y in 0..ch {
            let sy = (top + y) as isize - pad_top as isize;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            for x in 0..cw {
                let sx = (left + x) as isize - pad_left as isize;
                if sx < 0 || sx >= w as isize {
                    continue;
                }
                out[(c * ch + y) * cw + x] = src[(c * h + sy as usize) * w + sx as usize];
            }
        }
    }
    (out, ch, cw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naflex_size_matches_transformers_binary_search() {
        // (h, w, patch, max) -> transformers 5.24 get_image_size_for_max_num_patches.
        for (h, w, p, m, want) in [
            (240, 180, 8, 24, (48, 32)),
            (500, 300, 8, 48, (72, 40)),
            (53, 37, 8, 48, (64, 48)),
            (1080, 1920, 16, 256, (192, 336)),
            (1, 5000, 16, 256, (16, 4096)),
            (224, 224, 16, 256, (256, 256)),
            (384, 640, 16, 1024, (384, 640)),
        ] {
            assert_eq!(naflex_size(h, w, p, m), want, "{h}x{w} p{p} max {m}");
        }
        let p = Preprocess::from_json(
            r#"{"image_processor_type": "Siglip2ImageProcessor", "size": {"height": 10, "width": 10}}"#,
            "t",
        )
        .unwrap();
        // Defaults: patch 16, 256 patches, bilinear; `size` is ignored.
        assert_eq!(p.output_size(1920, 1080), (192, 336));
        assert_eq!(p.resize.unwrap().1, Resample::Bilinear);
        let e = Preprocess::from_json(
            r#"{"image_processor_type": "Siglip2ImageProcessor", "do_resize": false}"#,
            "pp.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pp.json") && e.contains("do_resize"), "{e}");
    }

    #[test]
    fn shortest_edge_keeps_aspect() {
        let p = Preprocess::from_json(
            r#"{"size":{"shortest_edge":256},"crop_size":{"height":224,"width":224}}"#,
            "t",
        )
        .unwrap();
        assert_eq!(p.resized_size(640, 480), (256, 341));
        assert_eq!(p.resized_size(37, 53), (366, 256));
        assert_eq!(p.output_size(640, 480), (224, 224));
    }

    #[test]
    fn weights_sum_to_one_and_ids_differ() {
        let c = coeffs(640, 224, Resample::Bicubic.filter());
        for i in 0..224 {
            let s: f64 = c.w[i * c.stride..i * c.stride + c.len[i]].iter().sum();
            assert!((s - 1.0).abs() < 1e-9);
        }
        let a = Preprocess::validator(224, IMAGENET_MEAN, IMAGENET_STD);
        let b = Preprocess::validator(112, IMAGENET_MEAN, IMAGENET_STD);
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn bad_config_names_file_and_field() {
        let e = Preprocess::from_json(r#"{"resample": 1}"#, "x/preprocessor_config.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x/preprocessor_config.json") && e.contains("resample"),
            "{e}"
        );
        for (json, field) in [
            (r#"{"do_resize": "yes"}"#, "do_resize"),
            (r#"{"image_mean": [0.5, 0.5]}"#, "image_mean"),
            (r#"{"size": {"shortest_edge": 0}}"#, "shortest_edge"),
            (r#"{"crop_size": {"shortest_edge": 224}}"#, "crop_size"),
        ] {
            let e = Preprocess::from_json(json, "x/preprocessor_config.json")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("x/preprocessor_config.json") && e.contains(field),
                "{json}: {e}"
            );
        }
        // Numbers for every channel and integer sizes are accepted, as transformers reads them.
        let p = Preprocess::from_json(
            r#"{"image_mean": 0.5, "image_std": 0.25, "size": 64, "do_center_crop": false}"#,
            "t",
        )
        .unwrap();
        assert_eq!(p.normalize, Some(([0.5; 3], [0.25; 3])));
        assert_eq!(p.output_size(100, 80), (64, 64));
    }
}
