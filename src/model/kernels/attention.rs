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
