//! Elementwise and row kernels over host `f32` slices, written as plain loops that LLVM
//! vectorises: each entry point runs under the widest SIMD the CPU has (AVX-512, AVX2+FMA, SSE,
//! or scalar; chosen at run time by `macerator`), so one portable build uses AVX-512 where it
//! exists and stays safe where it does not.

// `#[macerator::with_simd]` needs the `S: Simd` parameter to compile each entry point once per
// instruction set, even where the body never names it.
#![allow(clippy::extra_unused_type_parameters)]

use macerator::Simd;

/// Lanes of the manual accumulators: 16 f32 fill one AVX-512 register (two AVX2 ones), and
/// independent lanes let a reduction vectorise without fast-math reassociation.
const LANES: usize = 16;

/// `e^x` for `x` in f32 range, relative error below 2e-7 (Cody–Waite reduction to
/// `r ∈ [-ln2/2, ln2/2]`, then the Cephes degree-6 polynomial). Inputs below -87 give ~1e-38
/// rather than 0, which no caller can tell apart.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + 0.5).floor();
    let r = x - k * LN2_HI - k * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5; // Cephes writes 5.0000001e-1, which is 0.5 in f32
    let y = p * r2 + r + 1.0;
    // 2^k through the exponent bits, k ∈ [-126, 127] after the clamp. Adding 1.5·2²³ + 127
    // leaves the integer k + 127 in the low mantissa bits, which the shift moves into the
    // exponent (the higher bits fall off the u32). A float-to-int cast instead (`k as i32`)
    // saturates and maps NaN to 0, which LLVM lowered to per-lane scalar code that made GELU and
    // softmax ~9 % of a release-profile forward (perf, issue #11).
    const MAGIC: f32 = 12_582_912.0 + 127.0;
    let pow2 = f32::from_bits((k + MAGIC).to_bits().wrapping_shl(23));
    y * pow2
}

/// `(erfc(|x|/√2) / 2, exp(-x²/2))`, `erfc` from Abramowitz & Stegun 7.1.26 (absolute error
/// ≤ 1.5e-7, below f32's own rounding of `erf` near 1): shared by [`gelu`] and [`gelu_grad`].
#[inline(always)]
fn half_erfc_and_gauss(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1 * std::f32::consts::FRAC_1_SQRT_2;
    // a1..a5, halved so that the polynomial gives erfc(z) / 2 / exp(-z^2).
    const A: [f32; 5] = [
        0.254_829_6 * 0.5,
        -0.284_496_74 * 0.5,
        1.421_413_7 * 0.5,
        -1.453_152 * 0.5,
        1.061_405_4 * 0.5,
    ];
    let t = 1.0 / (1.0 + P * x.abs());
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let g = exp(-0.5 * x * x);
    (poly * g, g)
}

/// Exact (erf) GELU `x·Φ(x)` as `relu(x) - |x|·erfc(|x|/√2)/2`; the form avoids cancellation
/// for negative `x`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let (half_erfc, _) = half_erfc_and_gauss(x);
    x.max(0.0) - x.abs() * half_erfc
}

/// `d/dx gelu(x) = Φ(x) + x·φ(x)`, with `Φ` from the same `erfc` approximation as [`gelu`].
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    // 1/√(2π)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let (half_erfc, g) = half_erfc_and_gauss(x);
    let cdf = if x >= 0.0 { 1.0 - half_erfc } else { half_erfc };
    cdf + x * g * INV_SQRT_2PI
}

/// `dy[i] *= gelu'(z[i])`: the gradient through GELU at pre-activations `z`.
#[macerator::with_simd]
pub fn gelu_backward<S: Simd>(dy: &mut [f32], z: &[f32]) {
    for (d, v) in dy.iter_mut().zip(z) {
        *d *= gelu_grad(*v);
    }
}

/// GELU in place.
#[macerator::with_simd]
pub fn gelu_inplace<S: Simd>(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu(*v);
    }
}

#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = tail.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for a in acc {
        m = m.max(a);
    }
    m
}

/// `row[i] = e^(row[i] - max)`, returning the sum.
#[inline(always)]
fn exp_shift_sum(row: &mut [f32], max: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let e = exp(c[i] - max);
            c[i] = e;
            acc[i] += e;
        }
    }
    let mut s = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        s += *v;
    }
    s + acc.iter().sum::<f32>()
}

/// Softmax over each row of `rows` (`cols` wide), in place. A row that is all `-inf` would
/// divide by zero; attention scores never are.
#[macerator::with_simd]
pub fn softmax_rows<S: Simd>(rows: &mut [f32], cols: usize) {
    for row in rows.chunks_exact_mut(cols) {
        let m = row_max(row);
        let inv = 1.0 / exp_shift_sum(row, m);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// Softmax's backward per row: `grad[i] = p[i]·(grad[i] − Σ_j grad[j]·p[j])`, in place
/// (`grad` enters as the gradient of the probabilities `p`, leaves as that of the scores).
#[macerator::with_simd]
pub fn softmax_backward_rows<S: Simd>(grad: &mut [f32], p: &[f32], cols: usize) {
    for (g, p) in grad.chunks_exact_mut(cols).zip(p.chunks_exact(cols)) {
        let mut acc = [0f32; LANES];
        let gc = g.chunks_exact(LANES);
        let tail: f32 = gc
            .remainder()
            .iter()
            .zip(&p[cols - cols % LANES..])
            .map(|(a, b)| a * b)
            .sum();
        for (a, b) in gc.zip(p.chunks_exact(LANES)) {
            for i in 0..LANES {
                acc[i] += a[i] * b[i];
            }
        }
        let dot = tail + acc.iter().sum::<f32>();
        for (g, p) in g.iter_mut().zip(p) {
            *g = *p * (*g - dot);
        }
    }
}

/// Adds `bias` (`cols` wide) to every row of `rows`.
#[macerator::with_simd]
pub fn add_rows<S: Simd>(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += *b;
        }
    }
}

/// Fills every row of `rows` with `bias`.
pub fn fill_rows(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// `dst[i] = src[i] * scale`.
#[macerator::with_simd]
pub fn scaled_copy<S: Simd>(dst: &mut [f32], src: &[f32], scale: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s * scale;
    }
}

/// RoPE on one head row: `dst[j] = (x[j]·cos[j] + x[(j + hd/2) % hd]·sin_signed[j])·scale`,
/// i.e. `x·cos + rotate_half(x)·sin` with the sign of `rotate_half` folded into `sin_signed`.
#[macerator::with_simd]
pub fn rope_row<S: Simd>(dst: &mut [f32], x: &[f32], cos: &[f32], sin_signed: &[f32], scale: f32) {
    let half = x.len() / 2;
    let (x0, x1) = x.split_at(half);
    let (d0, d1) = dst.split_at_mut(half);
    let (c0, c1) = cos.split_at(half);
    let (s0, s1) = sin_signed.split_at(half);
    for j in 0..half {
        d0[j] = (x0[j] * c0[j] + x1[j] * s0[j]) * scale;
        d1[j] = (x1[j] * c1[j] + x0[j] * s1[j]) * scale;
    }
}

/// The transpose of [`rope_row`] (the gradient of its input): `dst[j] = (g[j]·cos[j] +
/// g[σ(j)]·sin_signed[σ(j)])·scale` with `σ(j) = (j + hd/2) % hd`.
#[macerator::with_simd]
pub fn rope_row_backward<S: Simd>(
    dst: &mut [f32],
    g: &[f32],
    cos: &[f32],
    sin_signed: &[f32],
    scale: f32,
) {
    let half = g.len() / 2;
    let (g0, g1) = g.split_at(half);
    let (d0, d1) = dst.split_at_mut(half);
    let (c0, c1) = cos.split_at(half);
    let (s0, s1) = sin_signed.split_at(half);
    for j in 0..half {
        d0[j] = (g0[j] * c0[j] + g1[j] * s1[j]) * scale;
        d1[j] = (g1[j] * c1[j] + g0[j] * s0[j]) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_over_the_softmax_range() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 2e-7 * want + 1e-37,
                "exp({x}) = {got}, std {want}"
            );
        }
    }

    #[test]
    fn gelu_matches_libm_erf_gelu() {
        use crate::backend::Cpu;
        use burn::tensor::{activation, Tensor, TensorData};
        // Dense over the range where erf varies, plus far tails.
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).collect();
        xs.extend([-30.0, -12.0, 12.0, 30.0, 1e-7, -1e-7, 0.0]);
        let n = xs.len();
        let x = Tensor::<Cpu, 1>::from_data(TensorData::new(xs.clone(), [n]), &Default::default());
        let exact: Vec<f32> = activation::gelu(x).into_data().to_vec().unwrap();
        let mut fast = xs.clone();
        gelu_inplace(&mut fast);
        for ((x, f), e) in xs.iter().zip(&fast).zip(&exact) {
            assert!(f.is_finite(), "gelu({x}) = {f}");
            assert!(
                (f - e).abs() <= 5e-7 * x.abs().max(1.0),
                "gelu({x}): {f} vs {e}"
            );
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_order() {
        let cols = 37;
        let mut rows: Vec<f32> = (0..3 * cols)
            .map(|i| ((i * 7919) % 113) as f32 * 0.3 - 15.0)
            .collect();
        let orig = rows.clone();
        softmax_rows(&mut rows, cols);
        for (r, o) in rows.chunks(cols).zip(orig.chunks(cols)) {
            let s: f32 = r.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "row sums to {s}");
            let m = o.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let denom: f64 = o.iter().map(|v| ((v - m) as f64).exp()).sum();
            for (p, v) in r.iter().zip(o) {
                let want = ((v - m) as f64).exp() / denom;
                assert!((*p as f64 - want).abs() < 1e-6, "{p} vs {want}");
            }
        }
    }
}
