//! Pixel primitives of the subnet's challenge pipeline, each reproducing the arithmetic of the
//! library the validators run (Pillow, torchvision/torch, OpenCV, numpy), including their
//! rounding and truncation, so parity tests can compare against reference outputs.
//!
//! Every random choice is an explicit argument; sampling lives in `validator.rs`.

use anyhow::{bail, Result};
use image::RgbImage;

/// A float image in torch's `(C, H, W)` layout with 3 channels, values nominally in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub width: usize,
    pub height: usize,
    /// Channel-major: `data[c * height * width + y * width + x]`.
    pub data: Vec<f32>,
}

impl Planes {
    /// An all-zero image.
    pub fn zeros(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; 3 * width * height],
        }
    }

    /// Value of channel `c` at `(x, y)`.
    pub fn get(&self, c: usize, x: usize, y: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }
}

/// Numpy's `float32 -> uint8` cast on x86: truncation toward zero, then wrap-around modulo 256
/// (`-1.5 -> 255`, `256.7 -> 0`). The subnet relies on it after colour conversions, so it is kept.
#[inline]
pub fn np_u8(v: f32) -> u8 {
    (v as i32) as u8
}

/// torchvision `ToTensor` on an RGB image: `x as f32 / 255`.
pub fn to_tensor(img: &RgbImage) -> Planes {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = Planes::zeros(w, h);
    let n = w * h;
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out.data[c * n + i] = px[c] as f32 / 255.0;
        }
    }
    out
}

/// `ToPILImage` on a float tensor, also the DeeperForensics wrapper's conversion:
/// `(x * 255).astype(uint8)` (truncation).
pub fn to_u8(p: &Planes) -> RgbImage {
    let n = p.width * p.height;
    let mut raw = vec![0u8; 3 * n];
    for (i, px) in raw.chunks_exact_mut(3).enumerate() {
        for c in 0..3 {
            px[c] = np_u8(p.data[c * n + i] * 255.0);
        }
    }
    RgbImage::from_raw(p.width as u32, p.height as u32, raw).expect("buffer matches size")
}

/// Python's `round` (half to even) as torchvision's `center_crop` uses it for the offsets.
fn py_round_half(twice: i64) -> i64 {
    // `twice` is 2 * value; value = twice / 2 is an integer or a half.
    if twice % 2 == 0 {
        twice / 2
    } else {
        let lo = (twice - 1) / 2;
        if lo % 2 == 0 {
            lo
        } else {
            lo + 1
        }
    }
}

/// The subnet's `center_crop()`: a square of the short side, offsets as torchvision computes them.
pub fn center_crop_square(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let m = w.min(h);
    let top = py_round_half(h - m).max(0) as u32;
    let left = py_round_half(w - m).max(0) as u32;
    image::imageops::crop_imm(img, left, top, m as u32, m as u32).to_image()
}

// ---------------------------------------------------------------------------------------------
// Pillow BILINEAR resize (8-bit fixed point, horizontal pass then vertical, uint8 in between).

const PIL_PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first source index and the fixed-point weights (Pillow's `precompute_coeffs`
/// and `normalize_coeffs_8bpc`).
fn pil_coeffs(in_size: usize, out_size: usize) -> (Vec<usize>, Vec<usize>, Vec<i32>, usize) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut starts = Vec::with_capacity(out_size);
    let mut lens = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            let t = t.abs();
            *wx = if t < 1.0 { 1.0 - t } else { 0.0 };
            ww += *wx;
        }
        for x in 0..n {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = v * (1u32 << PIL_PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        starts.push(xmin);
        lens.push(n);
    }
    (starts, lens, kk, ksize)
}

#[inline]
fn pil_clip8(ss: i64) -> u8 {
    (ss >> PIL_PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize(size, BILINEAR)` on an RGB image (what torchvision's `Resize` does to
/// a PIL image): antialiased triangle filter in fixed point, horizontal pass first.
pub fn pil_resize_bilinear(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if ow == in_w && oh == in_h {
        return img.clone();
    }
    let src = img.as_raw();
    let (ys, yl, ky, ksy) = pil_coeffs(in_h, oh);
    let need_h = ow != in_w;
    let need_v = oh != in_h;
    let round = 1i64 << (PIL_PRECISION_BITS - 1);
    // Horizontal pass over only the rows the vertical pass reads.
    let (tmp, row0) = if need_h {
        let first = ys[0];
        let last = ys[oh - 1] + yl[oh - 1];
        let (xs, xl, kx, ksx) = pil_coeffs(in_w, ow);
        let rows = last - first;
        let mut t = vec![0u8; rows * ow * 3];
        for r in 0..rows {
            let srow = &src[(r + first) * in_w * 3..(r + first + 1) * in_w * 3];
            let drow = &mut t[r * ow * 3..(r + 1) * ow * 3];
            for x in 0..ow {
                let k = &kx[x * ksx..x * ksx + xl[x]];
                let mut acc = [round; 3];
                for (i, &kv) in k.iter().enumerate() {
                    let p = &srow[(xs[x] + i) * 3..(xs[x] + i) * 3 + 3];
                    for c in 0..3 {
                        acc[c] += p[c] as i64 * kv as i64;
                    }
                }
                for c in 0..3 {
                    drow[x * 3 + c] = pil_clip8(acc[c]);
                }
            }
        }
        (t, first)
    } else {
        (src.to_vec(), 0)
    };
    if !need_v {
        return RgbImage::from_raw(out_w, out_h, tmp).expect("size");
    }
    let mut out = vec![0u8; oh * ow * 3];
    for y in 0..oh {
        let k = &ky[y * ksy..y * ksy + yl[y]];
        let y0 = ys[y] - row0;
        let drow = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for (xc, d) in drow.iter_mut().enumerate() {
            let mut acc = round;
            for (i, &kv) in k.iter().enumerate() {
                acc += tmp[(y0 + i) * ow * 3 + xc] as i64 * kv as i64;
            }
            *d = pil_clip8(acc);
        }
    }
    RgbImage::from_raw(out_w, out_h, out).expect("size")
}

// ---------------------------------------------------------------------------------------------
// torchvision tensor rotation: NEAREST, expand=False, zero fill, around the image centre.

/// The sampling grid of `F.rotate(tensor, angle)`, evaluated for output pixel `(x, y)`:
/// returns the source pixel or `None` (outside, filled with 0).
pub struct RotationGrid {
    w: usize,
    h: usize,
    rt: [f32; 4],
    sx: f32,
    sy: f32,
}

impl RotationGrid {
    /// Grid for an image of `w x h` rotated by `angle` degrees (counter-clockwise, as torchvision).
    pub fn new(w: usize, h: usize, angle: f64) -> Self {
        // _get_inverse_affine_matrix(center=0, angle=-angle, translate=0, scale=1, shear=0)
        let rot = (-angle).to_radians();
        let (a, b, c, d) = (rot.cos(), -rot.sin(), rot.sin(), rot.cos());
        let theta = [d as f32, -b as f32, -c as f32, a as f32]; // [[t00 t01] [t10 t11]], t02=t12=0
        let (hw, hh) = (0.5 * w as f32, 0.5 * h as f32);
        // rescaled_theta = theta^T / [0.5 w, 0.5 h]; grid = [x y 1] @ rescaled_theta
        let rt = [theta[0] / hw, theta[1] / hw, theta[2] / hh, theta[3] / hh];
        Self {
            w,
            h,
            rt,
            sx: w as f32 / 2.0,
            sy: h as f32 / 2.0,
        }
    }

    /// Source pixel for output `(x, y)` as torch's `grid_sample(mode="nearest", zeros,
    /// align_corners=False)` picks it (round half to even).
    #[inline]
    pub fn source(&self, x: usize, y: usize) -> Option<(usize, usize)> {
        let bx = x as f32 - (self.w as f32 - 1.0) * 0.5;
        let by = y as f32 - (self.h as f32 - 1.0) * 0.5;
        let gx = bx * self.rt[0] + by * self.rt[1];
        let gy = bx * self.rt[2] + by * self.rt[3];
        self.pick(gx, gy)
    }

    /// `grid_sample` nearest lookup of normalised grid coordinates.
    #[inline]
    fn pick(&self, gx: f32, gy: f32) -> Option<(usize, usize)> {
        let ix = ((gx + 1.0) * self.sx - 0.5).round_ties_even();
        let iy = ((gy + 1.0) * self.sy - 0.5).round_ties_even();
        if ix >= 0.0 && iy >= 0.0 && ix < self.w as f32 && iy < self.h as f32 {
            Some((ix as usize, iy as usize))
        } else {
            None
        }
    }
}

/// Rotation followed by the crop `(top, left, height, width)`: only the cropped part of the
/// rotated image is computed. Works on uint8 because NEAREST only copies values, and `k/255`
/// round-trips exactly through torchvision's float tensor.
pub fn rotate_crop_nearest(img: &RgbImage, angle: f64, crop: CropBox) -> Result<RgbImage> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    crop.check(w, h)?;
    let grid = RotationGrid::new(w, h, angle);
    let src = img.as_raw();
    let mut out = vec![0u8; crop.h * crop.w * 3];
    // The per-column products are the same f32 values `source` computes, so hoisting them
    // keeps the rounding identical.
    let cols: Vec<(f32, f32)> = (crop.j..crop.j + crop.w)
        .map(|x| {
            let bx = x as f32 - (w as f32 - 1.0) * 0.5;
            (bx * grid.rt[0], bx * grid.rt[2])
        })
        .collect();
    for oy in 0..crop.h {
        let by = (crop.i + oy) as f32 - (h as f32 - 1.0) * 0.5;
        let (ry0, ry1) = (by * grid.rt[1], by * grid.rt[3]);
        let drow = &mut out[oy * crop.w * 3..(oy + 1) * crop.w * 3];
        for (d, &(cx0, cx1)) in drow.chunks_exact_mut(3).zip(&cols) {
            if let Some((sx, sy)) = grid.pick(cx0 + ry0, cx1 + ry1) {
                let s = (sy * w + sx) * 3;
                d.copy_from_slice(&src[s..s + 3]);
            }
        }
    }
    Ok(RgbImage::from_raw(crop.w as u32, crop.h as u32, out).expect("size"))
}

/// A crop box in torchvision's `(i, j, h, w)` order: top, left, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CropBox {
    pub i: usize,
    pub j: usize,
    pub h: usize,
    pub w: usize,
}

impl CropBox {
    /// Errors unless the box is non-empty and inside a `width x height` image.
    pub fn check(&self, width: usize, height: usize) -> Result<()> {
        if self.h == 0 || self.w == 0 || self.i + self.h > height || self.j + self.w > width {
            bail!(
                "crop box (top {}, left {}, {}x{}) does not fit a {width}x{height} image",
                self.i,
                self.j,
                self.w,
                self.h
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// torch `interpolate(mode="bilinear", antialias=True, align_corners=False)` on float tensors.

struct AaWeights {
    starts: Vec<usize>,
    lens: Vec<usize>,
    k: Vec<f32>,
    ksize: usize,
}

/// torch's `_compute_weights_aa` for the triangle filter, in the same float precision.
fn aa_weights(in_size: usize, out_size: usize) -> AaWeights {
    let scale = in_size as f32 / out_size as f32;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let ksize = (support.ceil() as usize) * 2 + 1;
    let invscale: f32 = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut starts = Vec::with_capacity(out_size);
    let mut lens = Vec::with_capacity(out_size);
    let mut k = vec![0f32; out_size * ksize];
    for i in 0..out_size {
        let center = (scale as f64 * (i as f64 + 0.5)) as f32;
        // `center - support` is a float32 operation in torch; only `+ 0.5` is done in double.
        let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
        let xsize = ((((center + support) as f64 + 0.5) as i64).min(in_size as i64) - xmin)
            .clamp(0, ksize as i64) as usize;
        let row = &mut k[i * ksize..i * ksize + ksize];
        let mut total = 0f32;
        for (j, r) in row.iter_mut().enumerate().take(xsize) {
            let t = ((((j as i64 + xmin) as f32 - center) as f64 + 0.5) * invscale as f64) as f32;
            let t = t.abs();
            *r = if t < 1.0 { 1.0 - t } else { 0.0 };
            total += *r;
        }
        if total != 0.0 {
            for r in row.iter_mut().take(xsize) {
                *r /= total;
            }
        }
        starts.push(xmin as usize);
        lens.push(xsize);
    }
    AaWeights {
        starts,
        lens,
        k,
        ksize,
    }
}

/// `a * b + c` rounded once (a hardware FMA). The f32 product is exact in f64, so this matches
/// FMA except for very rare double rounding, and stays fast where the target lacks FMA
/// (`f32::mul_add` would call libm).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

/// torch's `interpolate_aa_single_dim` sum `t0*w0 + t1*w1 + ...` with the rounding its compiled
/// code has (found by probing torch 2.15's CPU build): the loop over taps 1.. is unrolled by 4
/// with separately rounded products and sums, and the leftover `(n - 1) % 4` taps are fused
/// multiply-adds. Reproducing this makes the float output bit-identical.
#[inline(always)]
fn aa_dot(k: &[f32], src: impl Fn(usize) -> f32) -> f32 {
    let n = k.len();
    if n == 0 {
        return 0.0;
    }
    let mut t = src(0) * k[0];
    let plain = (n - 1) / 4 * 4;
    for (j, kv) in k.iter().enumerate().take(plain + 1).skip(1) {
        t += src(j) * kv;
    }
    for (j, kv) in k.iter().enumerate().skip(plain + 1) {
        t = fma(src(j), *kv, t);
    }
    t
}

/// torchvision `F.resize(tensor, (out_h, out_w), BILINEAR, antialias=True)`, as used by
/// `RandomResizedCrop` on a tensor: separable triangle filter, width first, in f32.
pub fn resize_bilinear_aa(src: &Planes, out_w: usize, out_h: usize) -> Planes {
    let (w, h) = (src.width, src.height);
    let wx = aa_weights(w, out_w);
    let wy = aa_weights(h, out_h);
    let mut tmp = vec![0f32; 3 * h * out_w];
    for c in 0..3 {
        for y in 0..h {
            let srow = &src.data[(c * h + y) * w..(c * h + y + 1) * w];
            let drow = &mut tmp[(c * h + y) * out_w..(c * h + y + 1) * out_w];
            for (x, d) in drow.iter_mut().enumerate() {
                let k = &wx.k[x * wx.ksize..x * wx.ksize + wx.lens[x]];
                let s = &srow[wx.starts[x]..wx.starts[x] + wx.lens[x]];
                *d = aa_dot(k, |i| s[i]);
            }
        }
    }
    let mut out = Planes::zeros(out_w, out_h);
    for c in 0..3 {
        for y in 0..out_h {
            let k = &wy.k[y * wy.ksize..y * wy.ksize + wy.lens[y]];
            let y0 = wy.starts[y];
            let drow = &mut out.data[(c * out_h + y) * out_w..(c * out_h + y + 1) * out_w];
            let base = c * h * out_w;
            for (x, d) in drow.iter_mut().enumerate() {
                *d = aa_dot(k, |i| tmp[base + (y0 + i) * out_w + x]);
            }
        }
    }
    out
}

/// Horizontal flip of a float image.
pub fn hflip(p: &mut Planes) {
    let w = p.width;
    for row in p.data.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// Vertical flip of a float image.
pub fn vflip(p: &mut Planes) {
    let (w, h) = (p.width, p.height);
    for plane in p.data.chunks_exact_mut(w * h) {
        for y in 0..h / 2 {
            let (top, bottom) = plane.split_at_mut((h - 1 - y) * w);
            top[y * w..(y + 1) * w].swap_with_slice(&mut bottom[..w]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DeeperForensics distortions (uint8 in, uint8 out), as the subnet runs them through OpenCV.
// The subnet hands BGR arrays to these; here pixels stay RGB and each formula names its channel.

const Y_R: f32 = 0.299;
const Y_G: f32 = 0.587;
const Y_B: f32 = 0.114;
const CR_K: f32 = 0.713;
const CB_K: f32 = 0.564;
const R_CR: f32 = 1.403;
const G_CR: f32 = -0.714;
const G_CB: f32 = -0.344;
const B_CB: f32 = 1.773;
/// OpenCV's chroma offset for float images; the subnet feeds 0..255 floats, so this is 0.5 even
/// though 128 would be right for that range.
const CV_DELTA: f32 = 0.5;

/// The subnet's `bgr2ycbcr` for one pixel: `cv2.cvtColor(float32 0..255, BGR2YCrCb)` then its
/// studio-range rescale. Returns `(y, cb, cr)`.
#[inline]
fn bgr2ycbcr(r: f32, g: f32, b: f32) -> [f32; 3] {
    let y = b * Y_B + g * Y_G + r * Y_R;
    let cr = (r - y) * CR_K + CV_DELTA;
    let cb = (b - y) * CB_K + CV_DELTA;
    [
        (y * 219.0 + 16.0) / 255.0,
        (cb * 224.0 + 16.0) / 255.0,
        (cr * 224.0 + 16.0) / 255.0,
    ]
}

/// The subnet's `ycbcr2bgr` for one pixel, returning float `(r, g, b)` before any cast.
#[inline]
fn ycbcr2rgb(ycc: [f32; 3]) -> [f32; 3] {
    let y = (ycc[0] * 255.0 - 16.0) / 219.0;
    let cb = (ycc[1] * 255.0 - 16.0) / 224.0;
    let cr = (ycc[2] * 255.0 - 16.0) / 224.0;
    let b = y + (cb - CV_DELTA) * B_CB;
    let g = y + (cb - CV_DELTA) * G_CB + (cr - CV_DELTA) * G_CR;
    let r = y + (cr - CV_DELTA) * R_CR;
    [r, g, b]
}

/// DeeperForensics CS (colour saturation) with factor `param` (0.4, 0.3, ... by level).
pub fn color_saturation(img: &mut RgbImage, param: f32) {
    for px in img.as_mut().chunks_exact_mut(3) {
        let mut ycc = bgr2ycbcr(px[0] as f32, px[1] as f32, px[2] as f32);
        ycc[1] = 0.5 + (ycc[1] - 0.5) * param;
        ycc[2] = 0.5 + (ycc[2] - 0.5) * param;
        let rgb = ycbcr2rgb(ycc);
        for c in 0..3 {
            px[c] = np_u8(rgb[c]);
        }
    }
}

/// DeeperForensics CC (colour contrast): `(x * param).astype(uint8)`.
pub fn color_contrast(img: &mut RgbImage, param: f32) {
    for v in img.as_mut() {
        *v = np_u8(*v as f32 * param);
    }
}

/// DeeperForensics GNC (Gaussian noise in YCbCr) with variance `param`. `noise` holds one
/// standard normal per pixel and channel in `(y, x, [Y, Cb, Cr])` order, as `np.random.randn`
/// fills the subnet's `(H, W, 3)` array.
pub fn gaussian_noise_color(img: &mut RgbImage, param: f64, noise: &[f32]) -> Result<()> {
    let n = img.as_raw().len();
    if noise.len() != n {
        bail!(
            "GNC noise has {} values, the {}x{} image needs {n}",
            noise.len(),
            img.width(),
            img.height()
        );
    }
    let sd = param.sqrt();
    for (px, nz) in img.as_mut().chunks_exact_mut(3).zip(noise.chunks_exact(3)) {
        let ycc = bgr2ycbcr(px[0] as f32, px[1] as f32, px[2] as f32);
        let mut b = [0f32; 3];
        for c in 0..3 {
            // float32 / 255, then float64 noise and * 255, then back to float32.
            let v = (ycc[c] / 255.0) as f64;
            b[c] = ((v + sd * nz[c] as f64) * 255.0) as f32;
        }
        let rgb = ycbcr2rgb(b);
        for c in 0..3 {
            px[c] = np_u8(rgb[c].clamp(0.0, 255.0));
        }
    }
    Ok(())
}

/// DeeperForensics JPEG op: `cv2.resize` down by the integer `factor` (`h // factor`) and back up,
/// both INTER_LINEAR (which OpenCV turns into exact 2x2 averaging for an exact halving).
pub fn jpeg_resample(img: &RgbImage, factor: u32) -> Result<RgbImage> {
    let (w, h) = (img.width(), img.height());
    let (sw, sh) = (w / factor.max(1), h / factor.max(1));
    if sw == 0 || sh == 0 {
        bail!("a {w}x{h} image is too small to downsample by {factor}");
    }
    let small = cv_resize_linear(img, sw, sh);
    Ok(cv_resize_linear(&small, w, h))
}

/// OpenCV `cv2.resize(img, (w, h))` (INTER_LINEAR) on uint8 RGB, fixed point as OpenCV computes it.
pub fn cv_resize_linear(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    if ow == in_w && oh == in_h {
        return img.clone();
    }
    let scale_x = 1.0 / (ow as f64 / in_w as f64);
    let scale_y = 1.0 / (oh as f64 / in_h as f64);
    let src = img.as_raw();
    let mut out = vec![0u8; ow * oh * 3];
    // Exact 2x downscale: OpenCV switches INTER_LINEAR to its fast INTER_AREA path.
    let is_int = |s: f64| (s - s.round()).abs() < f64::EPSILON;
    if is_int(scale_x) && is_int(scale_y) && scale_x.round() == 2.0 && scale_y.round() == 2.0 {
        for y in 0..oh {
            for x in 0..ow {
                for c in 0..3 {
                    let p = |yy: usize, xx: usize| src[(yy * in_w + xx) * 3 + c] as u32;
                    let s = p(2 * y, 2 * x)
                        + p(2 * y, 2 * x + 1)
                        + p(2 * y + 1, 2 * x)
                        + p(2 * y + 1, 2 * x + 1);
                    out[(y * ow + x) * 3 + c] = ((s + 2) >> 2) as u8;
                }
            }
        }
        return RgbImage::from_raw(out_w, out_h, out).expect("size");
    }
    const SCALE: f32 = 2048.0;
    // OpenCV clamps the fraction at the borders only horizontally; vertically it keeps it and
    // clamps the row indices, which changes the SIMD rounding on the first and last rows.
    let coeffs = |dst: usize, src_len: usize, scale: f64, clamp_frac: bool| {
        let mut ofs = Vec::with_capacity(dst);
        let mut a = Vec::with_capacity(dst);
        for d in 0..dst {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut fr = f - s as f32;
            if clamp_frac && s < 0 {
                fr = 0.0;
                s = 0;
            }
            if clamp_frac && s >= src_len as i64 - 1 {
                fr = 0.0;
                s = src_len as i64 - 1;
            }
            let a0 = ((1.0 - fr) * SCALE).round_ties_even() as i32;
            let a1 = (fr * SCALE).round_ties_even() as i32;
            ofs.push(s);
            a.push((a0, a1));
        }
        ofs.into_iter().zip(a).collect::<Vec<(i64, (i32, i32))>>()
    };
    let hx = coeffs(ow, in_w, scale_x, true);
    let vy = coeffs(oh, in_h, scale_y, false);
    // Horizontal pass into int rows (value * 2048), computed per needed source row.
    let hrow = |y: usize, buf: &mut [i32]| {
        let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
        for (x, &(sx, (a0, a1))) in hx.iter().enumerate() {
            let sx = sx as usize;
            let sx1 = (sx + 1).min(in_w - 1);
            for c in 0..3 {
                let p0 = row[sx * 3 + c] as i32;
                let p1 = row[sx1 * 3 + c] as i32;
                buf[x * 3 + c] = if sx + 1 >= in_w {
                    p0 * SCALE as i32
                } else {
                    p0 * a0 + p1 * a1
                };
            }
        }
    };
    let mut r0 = vec![0i32; ow * 3];
    let mut r1 = vec![0i32; ow * 3];
    let mut cached = (usize::MAX, usize::MAX);
    let last = in_h as i64 - 1;
    for (y, &(sy, (b0, b1))) in vy.iter().enumerate() {
        let (sy, sy1) = (sy.clamp(0, last) as usize, (sy + 1).clamp(0, last) as usize);
        if cached != (sy, sy1) {
            if cached.1 == sy {
                std::mem::swap(&mut r0, &mut r1);
            } else {
                hrow(sy, &mut r0);
            }
            hrow(sy1, &mut r1);
            cached = (sy, sy1);
        }
        let (b0, b1) = (b0 as i16 as i32, b1 as i16 as i32);
        let drow = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for (i, d) in drow.iter_mut().enumerate() {
            // OpenCV's SIMD vertical pass (VResizeLinearVec_32s8u): >>4, mulhi by the 16-bit
            // coefficients, then a rounding >>2.
            let s0 = (r0[i] >> 4) as i16 as i32;
            let s1 = (r1[i] >> 4) as i16 as i32;
            let v = ((s0 * b0) >> 16) + ((s1 * b1) >> 16);
            *d = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    RgbImage::from_raw(out_w, out_h, out).expect("size")
}

/// OpenCV's bit-exact Gaussian kernel for 8-bit images (`getGaussianKernelBitExact` followed by
/// error-diffused rounding to 8 fractional bits); entries sum to exactly 256.
pub fn cv_gaussian_kernel_u8(n: usize, sigma: f64) -> Vec<u32> {
    let n = n.max(1) | 1;
    let sigma = if sigma > 0.0 {
        sigma
    } else {
        n as f64 * 0.15 + 0.35
    };
    let scale2x = -0.125 / (sigma * sigma);
    let half = (n - 1) / 2;
    let mut values = Vec::with_capacity(half);
    let mut sum = 0.0;
    let mut x = 1 - n as i64;
    for _ in 0..half {
        let t = (((x * x) as f64) * scale2x).exp();
        values.push(t);
        sum += t;
        x += 2;
    }
    sum *= 2.0;
    sum += 1.0;
    let mul = 1.0 / sum;
    let mut out = vec![0u32; n];
    let mut err = 0.0f64;
    let mut total: i64 = 0;
    for (i, v) in values.iter().enumerate() {
        let adj = v * mul * 256.0 + err;
        let r = adj.round_ties_even();
        err = adj - r;
        out[i] = r as u32;
        out[n - 1 - i] = r as u32;
        total += r as i64;
    }
    out[half] = (256 - 2 * total) as u32;
    out
}

/// Index under OpenCV's default border (BORDER_REFLECT_101: `gfedcb|abcdefgh|gfedcba`).
#[inline]
fn reflect101(i: i64, n: i64) -> usize {
    if n == 1 {
        return 0;
    }
    let mut i = i;
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * n - 2 - i;
        } else {
            return i as usize;
        }
    }
}

/// `cv2.GaussianBlur(img, (k, k), sigma)` on uint8, OpenCV's exact fixed-point path.
pub fn gaussian_blur(img: &RgbImage, k: usize, sigma: f64) -> RgbImage {
    let kern = cv_gaussian_kernel_u8(k, sigma);
    let r = kern.len() / 2;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let row_len = w * 3;
    // Row pass: exact, 8 fractional bits. Each row is padded by reflection once so the taps
    // read contiguous memory.
    let mut tmp = vec![0u32; w * h * 3];
    let mut padded = vec![0u32; (w + 2 * r) * 3];
    for y in 0..h {
        let row = &src[y * row_len..(y + 1) * row_len];
        for (px, dst) in padded.chunks_exact_mut(3).enumerate() {
            let sx = reflect101(px as i64 - r as i64, w as i64);
            for c in 0..3 {
                dst[c] = row[sx * 3 + c] as u32;
            }
        }
        let out = &mut tmp[y * row_len..(y + 1) * row_len];
        for (t, &kv) in kern.iter().enumerate() {
            let shifted = &padded[t * 3..t * 3 + row_len];
            for (o, &v) in out.iter_mut().zip(shifted) {
                *o += kv * v;
            }
        }
    }
    // Column pass: 16 fractional bits, rounded to uint8.
    let mut out = vec![0u8; w * h * 3];
    let mut acc = vec![0u32; row_len];
    for y in 0..h {
        acc.iter_mut().for_each(|a| *a = 1 << 15);
        for (t, &kv) in kern.iter().enumerate() {
            let sy = reflect101(y as i64 + t as i64 - r as i64, h as i64);
            let srow = &tmp[sy * row_len..(sy + 1) * row_len];
            for (a, &v) in acc.iter_mut().zip(srow) {
                *a += kv * v;
            }
        }
        for (o, &a) in out[y * row_len..(y + 1) * row_len].iter_mut().zip(&acc) {
            *o = (a >> 16).min(255) as u8;
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_round_is_half_even() {
        assert_eq!(py_round_half(1), 0); // round(0.5) == 0
        assert_eq!(py_round_half(3), 2); // round(1.5) == 2
        assert_eq!(py_round_half(5), 2); // round(2.5) == 2
        assert_eq!(py_round_half(4), 2);
    }

    #[test]
    fn np_cast_wraps_like_numpy() {
        assert_eq!(np_u8(-1.5), 255);
        assert_eq!(np_u8(-0.3), 0);
        assert_eq!(np_u8(256.7), 0);
        assert_eq!(np_u8(300.2), 44);
    }

    #[test]
    fn gaussian_kernel_sums_to_one() {
        for k in [7, 9, 13, 17, 21] {
            let g = cv_gaussian_kernel_u8(k, k as f64 / 6.0);
            assert_eq!(g.iter().sum::<u32>(), 256, "k={k}: {g:?}");
            assert!(g.windows(2).take(k / 2).all(|p| p[0] <= p[1]));
        }
    }

    #[test]
    fn flips_are_involutions() {
        let mut p = Planes::zeros(3, 3);
        for (i, v) in p.data.iter_mut().enumerate() {
            *v = i as f32;
        }
        let orig = p.clone();
        hflip(&mut p);
        assert_eq!(p.get(0, 0, 0), orig.get(0, 2, 0));
        vflip(&mut p);
        assert_eq!(p.get(1, 0, 0), orig.get(1, 2, 2));
        hflip(&mut p);
        vflip(&mut p);
        assert_eq!(p, orig);
    }
}
