//! Resampling kernels shared by position-embedding interpolation and image preprocessing: one
//! Keys cubic, one triangle, and the antialiased per-axis coefficient tables torch and Pillow
//! compute the same way.

use std::ops::{Add, Mul, Sub};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The float types the kernels run in: torch computes the plain bicubic taps in the input's
/// f32, the antialiased tables in f64.
pub trait Real:
    Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self>
{
    fn lit(v: f32) -> Self;
    fn abs(self) -> Self;
}

impl Real for f32 {
    fn lit(v: f32) -> Self {
        v
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
}

impl Real for f64 {
    fn lit(v: f32) -> Self {
        v as f64
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
}

/// Keys' cubic convolution kernel with parameter `a` (-0.75 torch's plain bicubic, -0.5 the
/// antialiased / Pillow one), in torch's operation order so f32 results are bit-identical.
#[inline]
pub fn keys_cubic<T: Real>(x: T, a: T) -> T {
    let (one, two) = (T::lit(1.0), T::lit(2.0));
    let x = x.abs();
    if x < one {
        ((a + two) * x - (a + T::lit(3.0))) * x * x + one
    } else if x < two {
        ((a * x - T::lit(5.0) * a) * x + T::lit(8.0) * a) * x - T::lit(4.0) * a
    } else {
        T::lit(0.0)
    }
}

/// An antialiasing filter: its half-width at scale 1 and its weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Filter {
    /// Bilinear (support 1).
    Triangle,
    /// Keys cubic with parameter `a` (support 2).
    Cubic(f64),
}

impl Filter {
    /// Half-width of the filter at scale 1.
    pub fn support(self) -> f64 {
        match self {
            Self::Triangle => 1.0,
            Self::Cubic(_) => 2.0,
        }
    }

    /// The filter's weight at distance `x`.
    pub fn weight(self, x: f64) -> f64 {
        match self {
            Self::Triangle => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Cubic(a) => keys_cubic(x, a),
        }
    }
}

/// Antialiased resampling coefficients for one axis (torch `_compute_index_ranges_weights`,
/// the same bounds as Pillow's `precompute_coeffs`): output `i` reads `len[i]` inputs from
/// `start[i]` with weights `w[i * stride..]`, normalised to sum 1.
pub struct Coeffs {
    pub start: Vec<usize>,
    pub len: Vec<usize>,
    pub w: Vec<f64>,
    pub stride: usize,
}

/// [`Coeffs`] for resampling `in_size` samples to `out_size` with `f`; the filter widens by the
/// scale when downsampling.
pub fn coeffs(in_size: usize, out_size: usize, f: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let (support, inv) = if scale >= 1.0 {
        (f.support() * scale, 1.0 / scale)
    } else {
        (f.support(), 1.0)
    };
    let stride = support.ceil() as usize * 2 + 1;
    let mut c = Coeffs {
        start: Vec::with_capacity(out_size),
        len: Vec::with_capacity(out_size),
        w: vec![0.0; out_size * stride],
        stride,
    };
    for i in 0..out_size {
        let center = scale * (i as f64 + 0.5);
        // Truncation toward zero, as the C++ casts do.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
        let len = xmax.saturating_sub(xmin).min(stride);
        let row = &mut c.w[i * stride..i * stride + len];
        let mut total = 0.0;
        for (j, w) in row.iter_mut().enumerate() {
            *w = f.weight((j as f64 + xmin as f64 - center + 0.5) * inv);
            total += *w;
        }
        if total != 0.0 {
            for w in row.iter_mut() {
                *w /= total;
            }
        }
        c.start.push(xmin);
        c.len.push(len);
    }
    c
}

/// Resampling matrix `[n_out, n_in]` (row-major) equal to torch's
/// `interpolate(mode="bicubic", align_corners=False, antialias=…)` along one axis, with the
/// output size given (so the scale is `n_in / n_out`).
///
/// Without antialias torch uses the Keys cubic with a = -0.75 and clamps taps at the borders;
/// with antialias it uses a = -0.5, widens the kernel by the downscale factor, drops taps outside
/// the input and renormalises the weights.
pub fn bicubic_matrix(n_in: usize, n_out: usize, antialias: bool) -> Vec<f32> {
    let mut m = vec![0f64; n_out * n_in];
    if antialias {
        let c = coeffs(n_in, n_out, Filter::Cubic(-0.5));
        for i in 0..n_out {
            let w = &c.w[i * c.stride..i * c.stride + c.len[i]];
            m[i * n_in + c.start[i]..i * n_in + c.start[i] + c.len[i]].copy_from_slice(w);
        }
    } else {
        const A: f32 = -0.75;
        // torch computes the source coordinate in the input's float type.
        let scale = n_in as f32 / n_out as f32;
        for i in 0..n_out {
            let src = scale * (i as f32 + 0.5) - 0.5;
            let base = src.floor();
            let t = src - base;
            let taps = [t + 1.0, t, 1.0 - t, 2.0 - t].map(|x| keys_cubic(x, A));
            for (k, w) in taps.into_iter().enumerate() {
                let j = (base as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
                m[i * n_in + j] += w as f64;
            }
        }
    }
    m.into_iter().map(|w| w as f32).collect()
}

/// Resamples a position table `[gh · gw, D]` to `[rows · cols, D]` separably, out = Wy · P · Wxᵀ
/// per channel as two plain matmuls; `wy` `[rows, gh]` and `wx` `[cols, gw]` are row-major
/// per-axis weights (e.g. [`bicubic_matrix`]).
pub fn resize_grid<B: Backend>(
    pos: Tensor<B, 2>,
    [gh, gw]: [usize; 2],
    [rows, cols]: [usize; 2],
    wy: Vec<f32>,
    wx: Vec<f32>,
) -> Tensor<B, 2> {
    let d = pos.dims()[1];
    let device = pos.device();
    let wy = Tensor::<B, 2>::from_data(TensorData::new(wy, [rows, gh]), &device);
    let wx = Tensor::<B, 2>::from_data(TensorData::new(wx, [cols, gw]), &device);
    let t = wy.matmul(pos.reshape([gh, gw * d])); // [rows, gw * D]
    let t = t
        .reshape([rows, gw, d])
        .swap_dims(0, 1)
        .reshape([gw, rows * d]);
    let t = wx.matmul(t); // [cols, rows * D]
    t.reshape([cols, rows, d])
        .swap_dims(0, 1)
        .reshape([rows * cols, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_rows_sum_to_one_and_identity_at_same_size() {
        for aa in [false, true] {
            for (i, o) in [(16, 7), (4, 16), (37, 16), (5, 3)] {
                let m = bicubic_matrix(i, o, aa);
                for row in m.chunks_exact(i) {
                    let s: f32 = row.iter().sum();
                    assert!((s - 1.0).abs() < 1e-5, "{i}->{o} aa={aa}: {s}");
                }
            }
            let m = bicubic_matrix(6, 6, aa);
            for (r, row) in m.chunks_exact(6).enumerate() {
                for (c, &w) in row.iter().enumerate() {
                    assert_eq!(w, if r == c { 1.0 } else { 0.0 }, "aa={aa}");
                }
            }
        }
        // The two modes really differ (a = -0.75 vs -0.5).
        assert_ne!(bicubic_matrix(4, 16, false), bicubic_matrix(4, 16, true));
    }

    #[test]
    fn cubic_is_keys_kernel_in_both_float_types() {
        // Interpolating at the knots, zero outside the support, and f32 = f64 up to rounding.
        assert_eq!(keys_cubic(0.0f32, -0.75), 1.0);
        assert_eq!(keys_cubic(1.0f32, -0.75), 0.0);
        assert_eq!(keys_cubic(2.0f64, -0.5), 0.0);
        assert_eq!(keys_cubic(2.5f64, -0.5), 0.0);
        for i in 0..40 {
            let x = i as f64 * 0.05 - 1.0;
            let d = keys_cubic(x as f32, -0.5f32) as f64 - keys_cubic(x, -0.5);
            assert!(d.abs() < 1e-6, "{x}: {d}");
        }
        // Weights sum to one after normalisation for both filters.
        for f in [Filter::Triangle, Filter::Cubic(-0.5)] {
            let c = coeffs(640, 224, f);
            for i in 0..224 {
                let s: f64 = c.w[i * c.stride..i * c.stride + c.len[i]].iter().sum();
                assert!((s - 1.0).abs() < 1e-9);
            }
        }
    }
}
