//! Multi-head self-attention over a fused `q|k|v` projection, one task per (image, head):
//! `softmax(q·kᵀ/√d)·v` with the `T×T` scores in a per-thread scratch buffer, q and k gathered
//! from their strided columns (scaled, and rotated when RoPE applies), v read in place, and the
//! context written straight into its head's columns of the `[N·T, D]` output — no split,
//! transpose or concatenation copies, no allocation after the first call on a thread.

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::{matmul, MatMut, MatRef};
use super::math;

/// RoPE tables for the patch tokens (`[patches, head_dim]` row-major each); the first
/// `prefix` tokens (CLS, registers) are not rotated.
pub struct RopeRef<'a> {
    pub cos: &'a [f32],
    pub sin_signed: &'a [f32],
    pub prefix: usize,
}

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    /// Images in the batch.
    pub n: usize,
    /// Tokens per image.
    pub t: usize,
    pub heads: usize,
    pub head_dim: usize,
}

thread_local! {
    /// Per-thread q, k and score scratch, grown to the largest call seen.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Raw output pointer shared by the head tasks; each writes only its own head's columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint (image, head) column blocks; see `self_attention`.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the `Send` wrapper, not its field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Self-attention of `qkv` (`[N·T, 3·D]`, row-major, q | k | v) into `out` (`[N·T, D]`).
pub fn self_attention(qkv: &[f32], dims: Dims, rope: Option<&RopeRef<'_>>, out: &mut [f32]) {
    let Dims {
        n,
        t,
        heads,
        head_dim: hd,
    } = dims;
    let d = heads * hd;
    assert_eq!(qkv.len(), n * t * 3 * d, "qkv size");
    assert_eq!(out.len(), n * t * d, "output size");
    if let Some(r) = rope {
        assert_eq!(r.cos.len(), (t - r.prefix) * hd, "rope table size");
        assert_eq!(r.sin_signed.len(), r.cos.len(), "rope table size");
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let out_ptr = Out(out.as_mut_ptr());
    (0..n * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        let rows = &qkv[b * t * 3 * d..(b + 1) * t * 3 * d];
        SCRATCH.with_borrow_mut(|scratch| {
            let need = 2 * t * hd + t * t;
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let (q, rest) = scratch.split_at_mut(t * hd);
            let (k, s) = rest.split_at_mut(t * hd);
            let s = &mut s[..t * t];
            gather_qk(rows, dims, h, rope, scale, q, k);
            // SAFETY: q, k are t×hd, s is t×t, all in this thread's scratch; v is read inside
            // `rows`; the output block (rows of image b, columns of head h) belongs to this
            // task alone, and `out` outlives the parallel loop.
            unsafe {
                matmul(
                    t,
                    t,
                    hd,
                    MatMut {
                        ptr: s.as_mut_ptr(),
                        rs: t as isize,
                    },
                    false,
                    MatRef {
                        ptr: q.as_ptr(),
                        rs: hd as isize,
                        cs: 1,
                    },
                    // kᵀ: element (c, j) = k[j][c].
                    MatRef {
                        ptr: k.as_ptr(),
                        rs: 1,
                        cs: hd as isize,
                    },
                    false,
                );
                math::softmax_rows(s, t);
                matmul(
                    t,
                    hd,
                    t,
                    MatMut {
                        ptr: out_ptr.get().add(b * t * d + h * hd),
                        rs: d as isize,
                    },
                    false,
                    MatRef {
                        ptr: s.as_ptr(),
                        rs: t as isize,
                        cs: 1,
                    },
                    MatRef {
                        ptr: rows.as_ptr().add(2 * d + h * hd),
                        rs: 3 * d as isize,
                        cs: 1,
                    },
                    false,
                );
            }
        });
    });
}

thread_local! {
    /// Per-thread scratch of the backward: q, k, dq, dk (`T×hd` each), probabilities and
    /// their gradient (`T×T` each).
    static BACKWARD_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Gathers head `h`'s q (scaled, rotated) and k (rotated) of one image's `rows` into `q`, `k`,
/// exactly as the forward does.
fn gather_qk(
    rows: &[f32],
    dims: Dims,
    h: usize,
    rope: Option<&RopeRef<'_>>,
    scale: f32,
    q: &mut [f32],
    k: &mut [f32],
) {
    let (t, hd) = (dims.t, dims.head_dim);
    let d = dims.heads * hd;
    for i in 0..t {
        let row = &rows[i * 3 * d..(i + 1) * 3 * d];
        let (qs, ks) = (
            &row[h * hd..(h + 1) * hd],
            &row[d + h * hd..d + (h + 1) * hd],
        );
        let (qd, kd) = (&mut q[i * hd..(i + 1) * hd], &mut k[i * hd..(i + 1) * hd]);
        match rope {
            Some(r) if i >= r.prefix => {
                let p = (i - r.prefix) * hd;
                let (c, sn) = (&r.cos[p..p + hd], &r.sin_signed[p..p + hd]);
                math::rope_row(qd, qs, c, sn, scale);
                math::rope_row(kd, ks, c, sn, 1.0);
            }
            _ => {
                math::scaled_copy(qd, qs, scale);
                kd.copy_from_slice(ks);
            }
        }
    }
}

/// The gradient of [`self_attention`] with respect to `qkv`: given the forward's input `qkv`
/// and the context's gradient `d_out` (`[N·T, D]`), writes `d_qkv` (`[N·T, 3·D]`). One task per
/// (image, head) recomputes its softmax probabilities `P` (cheaper than keeping `N·heads·T²`
/// floats per layer), then `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`,
/// `dq = dS·k`, `dk = dSᵀ·q`, and undoes the scale and rotation of q and k.
pub fn self_attention_backward(
    qkv: &[f32],
    d_out: &[f32],
    dims: Dims,
    rope: Option<&RopeRef<'_>>,
    d_qkv: &mut [f32],
) {
    let Dims {
        n,
        t,
        heads,
        head_dim: hd,
    } = dims;
    let d = heads * hd;
    assert_eq!(qkv.len(), n * t * 3 * d, "qkv size");
    assert_eq!(d_out.len(), n * t * d, "output gradient size");
    assert_eq!(d_qkv.len(), qkv.len(), "qkv gradient size");
    if let Some(r) = rope {
        assert_eq!(r.cos.len(), (t - r.prefix) * hd, "rope table size");
        assert_eq!(r.sin_signed.len(), r.cos.len(), "rope table size");
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let dst = Out(d_qkv.as_mut_ptr());
    (0..n * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        let rows = &qkv[b * t * 3 * d..(b + 1) * t * 3 * d];
        let g_rows = &d_out[b * t * d..(b + 1) * t * d];
        BACKWARD_SCRATCH.with_borrow_mut(|scratch| {
            let need = 4 * t * hd + 2 * t * t;
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let (q, rest) = scratch.split_at_mut(t * hd);
            let (k, rest) = rest.split_at_mut(t * hd);
            let (dq, rest) = rest.split_at_mut(t * hd);
            let (dk, rest) = rest.split_at_mut(t * hd);
            let (p, rest) = rest.split_at_mut(t * t);
            let dp = &mut rest[..t * t];
            gather_qk(rows, dims, h, rope, scale, q, k);
            let (ti, hdi, di) = (t as isize, hd as isize, d as isize);
            let mat = |ptr: *const f32, rs: isize, cs: isize| MatRef { ptr, rs, cs };
            // SAFETY: q, k, dq, dk (t×hd), p, dp (t×t) are this thread's scratch; v and the
            // output gradient are read in place within `rows` and `g_rows`; the written block
            // of `d_qkv` (image b's rows, head h's q, k and v columns) belongs to this task
            // alone, and `d_qkv` outlives the loop.
            unsafe {
                let g = g_rows.as_ptr().add(h * hd);
                let v = rows.as_ptr().add(2 * d + h * hd);
                let base = dst.get().add(b * t * 3 * d);
                // P = softmax(q·kᵀ).
                let pm = MatMut {
                    ptr: p.as_mut_ptr(),
                    rs: ti,
                };
                matmul(
                    t,
                    t,
                    hd,
                    pm,
                    false,
                    mat(q.as_ptr(), hdi, 1),
                    mat(k.as_ptr(), 1, hdi),
                    false,
                );
                math::softmax_rows(p, t);
                // dV = Pᵀ·dO, straight into v's columns.
                let dv = MatMut {
                    ptr: base.add(2 * d + h * hd),
                    rs: 3 * di,
                };
                matmul(
                    t,
                    hd,
                    t,
                    dv,
                    false,
                    mat(p.as_ptr(), 1, ti),
                    mat(g, di, 1),
                    false,
                );
                // dP = dO·Vᵀ.
                let dpm = MatMut {
                    ptr: dp.as_mut_ptr(),
                    rs: ti,
                };
                matmul(
                    t,
                    t,
                    hd,
                    dpm,
                    false,
                    mat(g, di, 1),
                    mat(v, 1, 3 * di),
                    false,
                );
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)), into dp.
                math::softmax_backward_rows(dp, p, t);
                // dq' = dS·k, dk' = dSᵀ·q'.
                let dqm = MatMut {
                    ptr: dq.as_mut_ptr(),
                    rs: hdi,
                };
                matmul(
                    t,
                    hd,
                    t,
                    dqm,
                    false,
                    mat(dp.as_ptr(), ti, 1),
                    mat(k.as_ptr(), hdi, 1),
                    false,
                );
                let dkm = MatMut {
                    ptr: dk.as_mut_ptr(),
                    rs: hdi,
                };
                matmul(
                    t,
                    hd,
                    t,
                    dkm,
                    false,
                    mat(dp.as_ptr(), 1, ti),
                    mat(q.as_ptr(), hdi, 1),
                    false,
                );
                // Undo the rotation (and q's scale) into q's and k's columns.
                for i in 0..t {
                    let row = base.add(i * 3 * d);
                    let dq_dst = std::slice::from_raw_parts_mut(row.add(h * hd), hd);
                    let dk_dst = std::slice::from_raw_parts_mut(row.add(d + h * hd), hd);
                    let (gq, gk) = (&dq[i * hd..(i + 1) * hd], &dk[i * hd..(i + 1) * hd]);
                    match rope {
                        Some(r) if i >= r.prefix => {
                            let o = (i - r.prefix) * hd;
                            let (c, sn) = (&r.cos[o..o + hd], &r.sin_signed[o..o + hd]);
                            math::rope_row_backward(dq_dst, gq, c, sn, scale);
                            math::rope_row_backward(dk_dst, gk, c, sn, 1.0);
                        }
                        _ => {
                            math::scaled_copy(dq_dst, gq, scale);
                            dk_dst.copy_from_slice(gk);
                        }
                    }
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain f64 reference: per head, scores, softmax, weighted sum.
    fn reference(qkv: &[f32], dims: Dims, rope: Option<&RopeRef<'_>>) -> Vec<f32> {
        let Dims {
            n,
            t,
            heads,
            head_dim: hd,
        } = dims;
        let d = heads * hd;
        let mut out = vec![0f32; n * t * d];
        let rot = |x: &[f32], i: usize| -> Vec<f64> {
            match rope {
                Some(r) if i >= r.prefix => {
                    let p = (i - r.prefix) * hd;
                    (0..hd)
                        .map(|j| {
                            let other = x[(j + hd / 2) % hd] as f64;
                            x[j] as f64 * r.cos[p + j] as f64 + other * r.sin_signed[p + j] as f64
                        })
                        .collect()
                }
                _ => x.iter().map(|v| *v as f64).collect(),
            }
        };
        for b in 0..n {
            for h in 0..heads {
                let at = |i: usize, part: usize| {
                    let s = (b * t + i) * 3 * d + part * d + h * hd;
                    &qkv[s..s + hd]
                };
                for i in 0..t {
                    let q = rot(at(i, 0), i);
                    let scores: Vec<f64> = (0..t)
                        .map(|j| {
                            let k = rot(at(j, 1), j);
                            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..hd {
                        let v: f64 = (0..t).map(|j| e[j] / z * at(j, 2)[c] as f64).sum();
                        out[(b * t + i) * d + h * hd + c] = v as f32;
                    }
                }
            }
        }
        out
    }

    fn data(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 2654435761) % 1000) as f32 / 500.0 - 1.0) * 1.5)
            .collect()
    }

    #[test]
    fn matches_reference_with_and_without_rope() {
        let dims = Dims {
            n: 2,
            t: 11,
            heads: 3,
            head_dim: 8,
        };
        let d = dims.heads * dims.head_dim;
        let qkv = data(dims.n * dims.t * 3 * d);
        let prefix = 2;
        let table = (dims.t - prefix) * dims.head_dim;
        let cos: Vec<f32> = (0..table).map(|i| (i as f32 * 0.37).cos()).collect();
        let sin: Vec<f32> = (0..table)
            .map(|i| (i as f32 * 0.37).sin() * if i % 8 < 4 { -1.0 } else { 1.0 })
            .collect();
        let rope = RopeRef {
            cos: &cos,
            sin_signed: &sin,
            prefix,
        };
        for r in [None, Some(&rope)] {
            let mut out = vec![f32::NAN; dims.n * dims.t * d];
            self_attention(&qkv, dims, r, &mut out);
            let want = reference(&qkv, dims, r);
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b} (rope: {})", r.is_some());
            }
        }
    }
}
