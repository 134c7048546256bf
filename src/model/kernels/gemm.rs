//! `f32` matrix products with strides, so that views (a head's columns of a fused q|k|v, a
//! transposed key) are read in place.
//!
//! On x86-64 with AVX-512 the product runs on the kernel in [`avx512`]: the ViT shapes
//! (`M` = a few hundred to a few thousand token rows, `K` ≤ 1536, `N` ≤ 4096) are too small for
//! the `gemm` crate's general blocking and its rayon split to keep two cores busy (issue #11), so
//! the work is split into one task per thread over column blocks, the weights are read in
//! place (they need no packing: rows are contiguous), and each task runs a 14×32 register tile.
//! With AVX2 and FMA only (AMD Zen 2/3, older Intel) the same split runs the 6×16 tile of
//! [`avx2`]. Elsewhere the `gemm` crate runs the product.

/// A read-only strided matrix: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// A writable strided matrix with unit column stride.
#[derive(Clone, Copy)]
pub struct MatMut {
    pub ptr: *mut f32,
    pub rs: isize,
}

/// Below this many multiply-adds a product runs on the calling thread (burn-flex's threshold).
const PARALLEL_FLOPS: usize = 192 * 192 * 192;

/// `dst = (accumulate ? dst : 0) + lhs · rhs` for `lhs` `m×k`, `rhs` `k×n`.
/// `threads`: split the product over the rayon pool when it is large enough.
///
/// # Safety
/// The three matrices must be valid for their shapes and strides, and `dst` must not overlap
/// `lhs`, `rhs`, or memory another thread touches during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut,
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
    threads: bool,
) {
    let parallel = threads && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_FLOPS;
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: forwarded from the caller; the CPU has AVX-512F.
        unsafe { avx512::matmul(m, n, k, dst, accumulate, lhs, rhs, parallel) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: forwarded from the caller; the CPU has AVX2 and FMA.
        unsafe { avx2::matmul(m, n, k, dst, accumulate, lhs, rhs, parallel) };
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { matmul_gemm_crate(m, n, k, dst, accumulate, lhs, rhs, parallel) }
}

/// [`matmul`] on the `gemm` crate (the portable path; also the reference in tests).
///
/// # Safety
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_gemm_crate(
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut,
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
    parallel: bool,
) {
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            1,
            dst.rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    //! The AVX-512 product. Per task (a block of rows × a block of columns):
    //! for each `KC`-deep slice of `k`, each `MR`-row tile of `lhs` is packed `k`-major into a
    //! small buffer that stays in L1 (once per tile and slice: packing is a visible cost), then
    //! multiplied against every `NR`-wide column panel of the task, read straight from `rhs`
    //! (unit column stride; packed otherwise) and streamed from L2 (a task's share of a ViT-S/B
    //! weight slice, `KC` × ≤ 768 columns, fits there). The register tile is `MR` × `NR` = 14 × 32: 28 accumulators, two `rhs` loads and
    //! fourteen broadcast `lhs` operands per step, enough independent FMAs to fill both FMA
    //! pipes through their latency.

    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::sync::OnceLock;

    use rayon::prelude::*;

    use super::{MatMut, MatRef};

    /// Rows of the register tile.
    pub const MR: usize = 14;
    /// Columns of the register tile (two 16-lane vectors).
    pub const NR: usize = 32;
    /// Depth of one `k` slice: a packed `lhs` tile is `MR·KC` floats (21 KiB), L1-resident.
    const KC: usize = 384;

    /// Whether the CPU runs AVX-512F (checked once).
    pub fn available() -> bool {
        static AVX512: OnceLock<bool> = OnceLock::new();
        *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }

    thread_local! {
        /// Per-thread packing scratch: the `lhs` tile, then (for a strided `rhs`) its panels.
        static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// The three matrices, shared read-only by the tasks (each writes its own block of `dst`).
    #[derive(Clone, Copy)]
    struct Job {
        dst: MatMut,
        lhs: MatRef,
        rhs: MatRef,
        k: usize,
        accumulate: bool,
    }
    // SAFETY: tasks write disjoint blocks of `dst` and only read `lhs` and `rhs`; the caller of
    // `matmul` guarantees nothing else touches them during the call.
    unsafe impl Send for Job {}
    unsafe impl Sync for Job {}

    /// See [`super::matmul`]; `parallel` splits the product into one task per rayon thread.
    ///
    /// # Safety
    /// As [`super::matmul`], and the CPU must have AVX-512F.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul(
        m: usize,
        n: usize,
        k: usize,
        dst: MatMut,
        accumulate: bool,
        lhs: MatRef,
        rhs: MatRef,
        parallel: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        let job = Job {
            dst,
            lhs,
            rhs,
            k,
            accumulate,
        };
        let threads = if parallel {
            rayon::current_num_threads()
        } else {
            1
        };
        if threads <= 1 {
            // SAFETY: forwarded.
            unsafe { block(job, 0..m, 0..n) };
            return;
        }
        // Column blocks first (each task then reads only its share of `rhs`, the weights), in
        // whole panels; rows split as well when there are fewer panels than threads.
        let panels = n.div_ceil(NR);
        let col_parts = threads.min(panels);
        let row_parts = threads.div_ceil(col_parts).min(m.div_ceil(MR));
        let row_tiles = m.div_ceil(MR);
        (0..col_parts * row_parts).into_par_iter().for_each(|task| {
            let (c, r) = (task % col_parts, task / col_parts);
            let cols =
                (panels * c / col_parts * NR).min(n)..(panels * (c + 1) / col_parts * NR).min(n);
            let rows = (row_tiles * r / row_parts * MR).min(m)
                ..(row_tiles * (r + 1) / row_parts * MR).min(m);
            // SAFETY: blocks of distinct tasks are disjoint.
            unsafe { block(job, rows, cols) };
        });
    }

    /// `dst[rows, cols] (+)= lhs[rows, :] · rhs[:, cols]` on the calling thread.
    unsafe fn block(job: Job, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        PACK.with_borrow_mut(|(a_pack, b_pack)| {
            if a_pack.len() < MR * KC {
                a_pack.resize(MR * KC, 0.0);
            }
            let Job {
                dst,
                lhs,
                rhs,
                k,
                accumulate,
            } = job;
            let direct = rhs.cs == 1;
            let (j0, j1) = (cols.start, cols.end);
            #[cfg(test)]
            super::tests_hook::touched();
            for p0 in (0..k.max(1)).step_by(KC) {
                let kc = KC.min(k - p0);
                let load_c = accumulate || p0 > 0;
                // Where panel `j` (a column index) of this slice starts, and its row stride.
                let (b_base, ldb, panel_stride): (*const f32, isize, isize);
                // SAFETY (whole block): indices stay within the shapes the caller vouched for;
                // packed buffers are sized before use.
                unsafe {
                    if direct {
                        b_base = rhs.ptr.offset(p0 as isize * rhs.rs + j0 as isize);
                        ldb = rhs.rs;
                        panel_stride = NR as isize;
                    } else {
                        let panels = (j1 - j0).div_ceil(NR);
                        let need = panels * kc * NR;
                        if b_pack.len() < need {
                            b_pack.resize(need, 0.0);
                        }
                        pack_rhs(rhs, p0, kc, j0, j1, b_pack);
                        b_base = b_pack.as_ptr();
                        ldb = NR as isize;
                        panel_stride = (kc * NR) as isize;
                    }
                    for i0 in rows.clone().step_by(MR) {
                        let mr = MR.min(rows.end - i0);
                        pack_lhs(lhs, i0, mr, p0, kc, a_pack);
                        for (pi, j) in (j0..j1).step_by(NR).enumerate() {
                            let nr = NR.min(j1 - j);
                            let b = b_base.offset(pi as isize * panel_stride);
                            let c = dst.ptr.offset(i0 as isize * dst.rs + j as isize);
                            tile(mr, nr, kc, a_pack.as_ptr(), b, ldb, c, dst.rs, load_c);
                        }
                    }
                }
            }
        });
    }

    /// Packs `lhs[i0..i0+mr, p0..p0+kc]` `k`-major, `MR` wide: `out[p·MR + i]`, rows past `mr`
    /// zero.
    unsafe fn pack_lhs(lhs: MatRef, i0: usize, mr: usize, p0: usize, kc: usize, out: &mut [f32]) {
        let out = &mut out[..kc * MR];
        if mr < MR {
            out.fill(0.0);
        }
        if lhs.cs == 1 {
            for i in 0..mr {
                // SAFETY: row `i0 + i` has `kc` floats from column `p0`.
                let row = unsafe {
                    std::slice::from_raw_parts(
                        lhs.ptr.offset((i0 + i) as isize * lhs.rs + p0 as isize),
                        kc,
                    )
                };
                for (o, v) in out[i..].iter_mut().step_by(MR).zip(row) {
                    *o = *v;
                }
            }
            return;
        }
        for i in 0..mr {
            // SAFETY: within the caller's shape.
            let row = unsafe {
                lhs.ptr
                    .offset((i0 + i) as isize * lhs.rs + p0 as isize * lhs.cs)
            };
            for p in 0..kc {
                // SAFETY: as above; `out` holds MR·KC floats.
                unsafe { *out.get_unchecked_mut(p * MR + i) = *row.offset(p as isize * lhs.cs) };
            }
        }
    }

    /// Packs `rhs[p0..p0+kc, j0..j1]` into `NR`-wide panels, `out[panel][p][NR]`, the last
    /// panel zero-padded.
    unsafe fn pack_rhs(rhs: MatRef, p0: usize, kc: usize, j0: usize, j1: usize, out: &mut [f32]) {
        for (pi, j) in (j0..j1).step_by(NR).enumerate() {
            let panel = &mut out[pi * kc * NR..(pi + 1) * kc * NR];
            let nr = NR.min(j1 - j);
            if nr < NR {
                panel.fill(0.0);
            }
            for jj in 0..nr {
                // SAFETY: within the caller's shape.
                let col = unsafe {
                    rhs.ptr
                        .offset(p0 as isize * rhs.rs + (j + jj) as isize * rhs.cs)
                };
                for p in 0..kc {
                    // SAFETY: as above.
                    panel[p * NR + jj] = unsafe { *col.offset(p as isize * rhs.rs) };
                }
            }
        }
    }

    /// One `mr × nr` tile. The kernel always computes `MR` rows (its loop is written out so
    /// that even the dev profile keeps the accumulators in registers); a short edge tile runs
    /// on zero-padded `lhs` rows into a scratch tile that is then copied out.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile(
        mr: usize,
        nr: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        ldb: isize,
        c: *mut f32,
        ldc: isize,
        load_c: bool,
    ) {
        // SAFETY: forwarded; the scratch tile is MR×NR.
        unsafe {
            if mr == MR {
                if nr == NR {
                    kernel::<true>(kc, a, b, ldb, c, ldc, nr, load_c);
                } else {
                    kernel::<false>(kc, a, b, ldb, c, ldc, nr, load_c);
                }
                return;
            }
            let mut tmp = [0f32; MR * NR];
            if load_c {
                for i in 0..mr {
                    std::ptr::copy_nonoverlapping(
                        c.offset(i as isize * ldc),
                        tmp.as_mut_ptr().add(i * NR),
                        nr,
                    );
                }
            }
            kernel::<false>(kc, a, b, ldb, tmp.as_mut_ptr(), NR as isize, nr, load_c);
            for i in 0..mr {
                std::ptr::copy_nonoverlapping(
                    tmp.as_ptr().add(i * NR),
                    c.offset(i as isize * ldc),
                    nr,
                );
            }
        }
    }

    /// `c[0..MR, 0..nr] (+)= a · b` over `kc` steps: `a` packed `[kc][MR]`, `b` rows `ldb`
    /// apart. `FULL`: `nr == NR` (no masks).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const FULL: bool>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        ldb: isize,
        c: *mut f32,
        ldc: isize,
        nr: usize,
        load_c: bool,
    ) {
        let (m0, m1): (__mmask16, __mmask16) = if FULL {
            (!0, !0)
        } else {
            (
                (((1u32 << nr.min(16)) - 1) & 0xffff) as u16,
                (((1u32 << nr.saturating_sub(16)) - 1) & 0xffff) as u16,
            )
        };
        let mut acc0 = [_mm512_setzero_ps(); MR];
        let mut acc1 = [_mm512_setzero_ps(); MR];
        let (mut a, mut b) = (a, b);
        // Rows written out with literal indices: no inner loop for the optimiser to keep.
        macro_rules! rows {
            ($body:ident) => {
                $body!(0);
                $body!(1);
                $body!(2);
                $body!(3);
                $body!(4);
                $body!(5);
                $body!(6);
                $body!(7);
                $body!(8);
                $body!(9);
                $body!(10);
                $body!(11);
                $body!(12);
                $body!(13);
            };
        }
        for _ in 0..kc {
            // SAFETY: `b` row has `nr` readable floats (masked beyond), `a` holds MR per step.
            unsafe {
                let (b0, b1) = if FULL {
                    (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)))
                } else {
                    (
                        _mm512_maskz_loadu_ps(m0, b),
                        _mm512_maskz_loadu_ps(m1, b.add(16)),
                    )
                };
                macro_rules! fma {
                    ($i:literal) => {
                        let ai = _mm512_set1_ps(*a.add($i));
                        acc0[$i] = _mm512_fmadd_ps(ai, b0, acc0[$i]);
                        acc1[$i] = _mm512_fmadd_ps(ai, b1, acc1[$i]);
                    };
                }
                rows!(fma);
                a = a.add(MR);
                b = b.offset(ldb);
            }
        }
        macro_rules! store {
            ($i:literal) => {
                // SAFETY: row `i` of the tile has `nr` writable floats.
                unsafe {
                    let row = c.offset($i * ldc);
                    if FULL {
                        if load_c {
                            acc0[$i] = _mm512_add_ps(acc0[$i], _mm512_loadu_ps(row));
                            acc1[$i] = _mm512_add_ps(acc1[$i], _mm512_loadu_ps(row.add(16)));
                        }
                        _mm512_storeu_ps(row, acc0[$i]);
                        _mm512_storeu_ps(row.add(16), acc1[$i]);
                    } else {
                        if load_c {
                            acc0[$i] = _mm512_add_ps(acc0[$i], _mm512_maskz_loadu_ps(m0, row));
                            acc1[$i] =
                                _mm512_add_ps(acc1[$i], _mm512_maskz_loadu_ps(m1, row.add(16)));
                        }
                        _mm512_mask_storeu_ps(row, m0, acc0[$i]);
                        _mm512_mask_storeu_ps(row.add(16), m1, acc1[$i]);
                    }
                }
            };
        }
        rows!(store);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    //! The AVX2 + FMA product (no AVX-512: AMD Zen 2/3, Intel before Skylake-X), in the
    //! classic blocked order for a 32 KiB L1 and a 512 KiB L2. Per task (a block of rows × a
    //! block of columns) and `KC`-deep slice of `k`: the task's `rhs` slice is packed once into
    //! `NR`-wide panels (`KC × NR` floats, 16 KiB: one stays in L1 while every row tile of a
    //! block runs against it; reading it in place would thrash L1 sets for row strides of
    //! 1536 or 6144 bytes); then per `MC`-row block the `lhs` rows are packed into `MR`-row
    //! tiles (`MC × KC`, 96 KiB, L2-resident) and each column panel runs against every tile.
    //! The register tile is `MR × NR` = 6 × 16: 12 accumulators, two `rhs` loads and six
    //! broadcasts per step, which fills both FMA pipes through their latency with the 16 `ymm`
    //! registers.

    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::sync::OnceLock;

    use rayon::prelude::*;

    use super::{MatMut, MatRef};

    /// Rows of the register tile.
    pub const MR: usize = 6;
    /// Columns of the register tile (two 8-lane vectors).
    pub const NR: usize = 16;
    /// Depth of one `k` slice: a packed `rhs` panel is `KC·NR` floats (16 KiB), L1-resident.
    const KC: usize = 256;
    /// Rows of one packed `lhs` block (`MC·KC` floats, 96 KiB, L2-resident).
    const MC: usize = 16 * MR;

    /// Whether the CPU runs AVX2 and FMA (checked once).
    pub fn available() -> bool {
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    thread_local! {
        /// Per-thread packing scratch: the `lhs` block, then the `rhs` slice.
        static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// The three matrices, shared read-only by the tasks (each writes its own block of `dst`).
    #[derive(Clone, Copy)]
    struct Job {
        dst: MatMut,
        lhs: MatRef,
        rhs: MatRef,
        k: usize,
        accumulate: bool,
    }
    // SAFETY: tasks write disjoint blocks of `dst` and only read `lhs` and `rhs`; the caller of
    // `matmul` guarantees nothing else touches them during the call.
    unsafe impl Send for Job {}
    unsafe impl Sync for Job {}

    /// See [`super::matmul`]; `parallel` splits the product into one task per rayon thread.
    ///
    /// # Safety
    /// As [`super::matmul`], and the CPU must have AVX2 and FMA.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul(
        m: usize,
        n: usize,
        k: usize,
        dst: MatMut,
        accumulate: bool,
        lhs: MatRef,
        rhs: MatRef,
        parallel: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        let job = Job {
            dst,
            lhs,
            rhs,
            k,
            accumulate,
        };
        let threads = if parallel {
            rayon::current_num_threads()
        } else {
            1
        };
        if threads <= 1 {
            // SAFETY: forwarded.
            unsafe { block(job, 0..m, 0..n) };
            return;
        }
        // Every task packs its rows of `lhs` and its columns of `rhs` (at scalar speed, a cost
        // of about 16 multiply-adds per element packed), so split the longer side: rows for
        // the training products (thousands of token rows), columns for a small batch's. The
        // other side splits as well when the first has fewer tiles than threads.
        let panels = n.div_ceil(NR);
        let row_tiles = m.div_ceil(MR);
        let (row_parts, col_parts) = if m >= n {
            let r = threads.min(row_tiles);
            (r, threads.div_ceil(r).min(panels))
        } else {
            let c = threads.min(panels);
            (threads.div_ceil(c).min(row_tiles), c)
        };
        (0..col_parts * row_parts).into_par_iter().for_each(|task| {
            let (c, r) = (task % col_parts, task / col_parts);
            let cols =
                (panels * c / col_parts * NR).min(n)..(panels * (c + 1) / col_parts * NR).min(n);
            let rows = (row_tiles * r / row_parts * MR).min(m)
                ..(row_tiles * (r + 1) / row_parts * MR).min(m);
            // SAFETY: blocks of distinct tasks are disjoint.
            unsafe { block(job, rows, cols) };
        });
    }

    /// `dst[rows, cols] (+)= lhs[rows, :] · rhs[:, cols]` on the calling thread.
    unsafe fn block(job: Job, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        PACK.with_borrow_mut(|(a_pack, b_pack)| {
            let Job {
                dst,
                lhs,
                rhs,
                k,
                accumulate,
            } = job;
            let (j0, j1) = (cols.start, cols.end);
            let panels = (j1 - j0).div_ceil(NR);
            #[cfg(test)]
            super::tests_hook::touched();
            if k == 0 {
                if !accumulate {
                    for i in rows {
                        // SAFETY: row `i` of `dst` has the columns `j0..j1`.
                        unsafe {
                            std::ptr::write_bytes(
                                dst.ptr.offset(i as isize * dst.rs + j0 as isize),
                                0,
                                j1 - j0,
                            )
                        };
                    }
                }
                return;
            }
            let a_need = MC * KC.min(k);
            if a_pack.len() < a_need {
                a_pack.resize(a_need, 0.0);
            }
            let b_need = panels * KC.min(k) * NR;
            if b_pack.len() < b_need {
                b_pack.resize(b_need, 0.0);
            }
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                let load_c = accumulate || p0 > 0;
                // SAFETY (whole loop): indices stay within the shapes the caller vouched for;
                // packed buffers are sized above.
                unsafe {
                    pack_rhs(rhs, p0, kc, j0, j1, b_pack);
                    for ib in rows.clone().step_by(MC) {
                        let mc = MC.min(rows.end - ib);
                        pack_lhs(lhs, ib, mc, p0, kc, a_pack);
                        for (pi, j) in (j0..j1).step_by(NR).enumerate() {
                            let nr = NR.min(j1 - j);
                            let b = b_pack.as_ptr().add(pi * kc * NR);
                            for (ti, i0) in (ib..ib + mc).step_by(MR).enumerate() {
                                let mr = MR.min(ib + mc - i0);
                                let a = a_pack.as_ptr().add(ti * kc * MR);
                                let c = dst.ptr.offset(i0 as isize * dst.rs + j as isize);
                                tile(mr, nr, kc, a, b, c, dst.rs, load_c);
                            }
                        }
                    }
                }
            }
        });
    }

    /// Packs `lhs[i0..i0+mc, p0..p0+kc]` into `MR`-row tiles, each `k`-major:
    /// `out[tile·kc·MR + p·MR + i]`, rows past `mc` zero.
    unsafe fn pack_lhs(lhs: MatRef, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [f32]) {
        for (ti, t0) in (0..mc).step_by(MR).enumerate() {
            let mr = MR.min(mc - t0);
            let out = &mut out[ti * kc * MR..(ti + 1) * kc * MR];
            if mr < MR {
                out.fill(0.0);
            }
            let base = |i: usize, p: usize| {
                // SAFETY: within the caller's shape.
                unsafe {
                    lhs.ptr
                        .offset((i0 + t0 + i) as isize * lhs.rs + (p0 + p) as isize * lhs.cs)
                }
            };
            if lhs.cs == 1 && mr == MR {
                // SAFETY: rows `i0 + t0 ..+ MR` have `kc` floats from column `p0`.
                let rows: [&[f32]; MR] =
                    std::array::from_fn(|i| unsafe { std::slice::from_raw_parts(base(i, 0), kc) });
                for (p, o) in out.chunks_exact_mut(MR).enumerate() {
                    for i in 0..MR {
                        o[i] = rows[i][p];
                    }
                }
            } else if lhs.cs == 1 {
                for i in 0..mr {
                    // SAFETY: row `i0 + t0 + i` has `kc` floats from column `p0`.
                    let row = unsafe { std::slice::from_raw_parts(base(i, 0), kc) };
                    for (o, v) in out[i..].iter_mut().step_by(MR).zip(row) {
                        *o = *v;
                    }
                }
            } else if lhs.rs == 1 && mr == MR {
                // A transposed operand (`xᵀ` of a weight gradient): the tile's rows are adjacent.
                for (p, o) in out.chunks_exact_mut(MR).enumerate() {
                    // SAFETY: column `p0 + p` has `MR` adjacent floats from row `i0 + t0`.
                    let col = unsafe { &*(base(0, p) as *const [f32; MR]) };
                    o.copy_from_slice(col);
                }
            } else if lhs.rs == 1 {
                for p in 0..kc {
                    // SAFETY: column `p0 + p` has `mr` adjacent floats from row `i0 + t0`.
                    let col = unsafe { std::slice::from_raw_parts(base(0, p), mr) };
                    out[p * MR..p * MR + mr].copy_from_slice(col);
                }
            } else {
                for i in 0..mr {
                    for p in 0..kc {
                        // SAFETY: within the caller's shape.
                        out[p * MR + i] = unsafe { *base(i, p) };
                    }
                }
            }
        }
    }

    /// Packs `rhs[p0..p0+kc, j0..j1]` into `NR`-wide panels, `out[panel][p][NR]`, the last
    /// panel zero-padded.
    unsafe fn pack_rhs(rhs: MatRef, p0: usize, kc: usize, j0: usize, j1: usize, out: &mut [f32]) {
        for (pi, j) in (j0..j1).step_by(NR).enumerate() {
            let panel = &mut out[pi * kc * NR..(pi + 1) * kc * NR];
            let nr = NR.min(j1 - j);
            if nr < NR {
                panel.fill(0.0);
            }
            let at = |p: usize, jj: usize| {
                // SAFETY: within the caller's shape.
                unsafe {
                    rhs.ptr
                        .offset((p0 + p) as isize * rhs.rs + (j + jj) as isize * rhs.cs)
                }
            };
            if rhs.cs == 1 && nr == NR {
                for (p, o) in panel.chunks_exact_mut(NR).enumerate() {
                    // SAFETY: row `p0 + p` has `NR` floats from column `j`.
                    o.copy_from_slice(unsafe { &*(at(p, 0) as *const [f32; NR]) });
                }
            } else if rhs.cs == 1 {
                for p in 0..kc {
                    // SAFETY: row `p0 + p` has `nr` floats from column `j`.
                    let row = unsafe { std::slice::from_raw_parts(at(p, 0), nr) };
                    panel[p * NR..p * NR + nr].copy_from_slice(row);
                }
            } else if rhs.rs == 1 && nr == NR {
                // A transposed weight (`Wᵀ` of an input gradient): its `NR` columns are rows
                // of `W`; write the panel in order, reading the sixteen rows side by side.
                // SAFETY: column `j + jj` has `kc` adjacent floats from row `p0`.
                let cols: [&[f32]; NR] =
                    std::array::from_fn(|jj| unsafe { std::slice::from_raw_parts(at(0, jj), kc) });
                for (p, o) in panel.chunks_exact_mut(NR).enumerate() {
                    for jj in 0..NR {
                        o[jj] = cols[jj][p];
                    }
                }
            } else {
                // A strided or ragged panel: read each column in order.
                for jj in 0..nr {
                    for p in 0..kc {
                        // SAFETY: within the caller's shape.
                        panel[p * NR + jj] = unsafe { *at(p, jj) };
                    }
                }
            }
        }
    }

    /// One `mr × nr` tile; an edge tile runs into a scratch tile that is then copied out.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile(
        mr: usize,
        nr: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: isize,
        load_c: bool,
    ) {
        // SAFETY: forwarded; the scratch tile is MR×NR.
        unsafe {
            if mr == MR && nr == NR {
                kernel(kc, a, b, c, ldc, load_c);
                return;
            }
            let mut tmp = [0f32; MR * NR];
            if load_c {
                for i in 0..mr {
                    std::ptr::copy_nonoverlapping(
                        c.offset(i as isize * ldc),
                        tmp.as_mut_ptr().add(i * NR),
                        nr,
                    );
                }
            }
            kernel(kc, a, b, tmp.as_mut_ptr(), NR as isize, load_c);
            for i in 0..mr {
                std::ptr::copy_nonoverlapping(
                    tmp.as_ptr().add(i * NR),
                    c.offset(i as isize * ldc),
                    nr,
                );
            }
        }
    }

    /// `c[0..MR, 0..NR] (+)= a · b` over `kc` steps: `a` packed `[kc][MR]`, `b` `[kc][NR]`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: isize,
        load_c: bool,
    ) {
        let mut acc0 = [_mm256_setzero_ps(); MR];
        let mut acc1 = [_mm256_setzero_ps(); MR];
        let (mut a, mut b) = (a, b);
        // Rows written out with literal indices: no inner loop for the optimiser to keep.
        macro_rules! rows {
            ($body:ident) => {
                $body!(0);
                $body!(1);
                $body!(2);
                $body!(3);
                $body!(4);
                $body!(5);
            };
        }
        // Raw-pointer loads and `wrapping_add` steps: with debug assertions (the dev profile),
        // `ptr::add`, references from raw pointers and range steps each carry a run-time
        // check, a few percent of this loop.
        let mut left = kc;
        while left != 0 {
            left -= 1;
            // SAFETY: `b` holds NR floats per step, `a` MR.
            unsafe {
                let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.wrapping_add(8)));
                macro_rules! fma {
                    ($i:literal) => {
                        let ai = _mm256_broadcastss_ps(_mm_load_ss(a.wrapping_add($i)));
                        acc0[$i] = _mm256_fmadd_ps(ai, b0, acc0[$i]);
                        acc1[$i] = _mm256_fmadd_ps(ai, b1, acc1[$i]);
                    };
                }
                rows!(fma);
            }
            a = a.wrapping_add(MR);
            b = b.wrapping_add(NR);
        }
        macro_rules! store {
            ($i:literal) => {
                // SAFETY: row `i` of the tile has NR writable floats.
                unsafe {
                    let row = c.offset($i * ldc);
                    if load_c {
                        acc0[$i] = _mm256_add_ps(acc0[$i], _mm256_loadu_ps(row));
                        acc1[$i] = _mm256_add_ps(acc1[$i], _mm256_loadu_ps(row.add(8)));
                    }
                    _mm256_storeu_ps(row, acc0[$i]);
                    _mm256_storeu_ps(row.add(8), acc1[$i]);
                }
            };
        }
        rows!(store);
    }
}

#[cfg(test)]
pub(crate) mod tests_hook {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::thread::ThreadId;

    pub static THREADS: Mutex<Option<HashSet<ThreadId>>> = Mutex::new(None);

    pub fn touched() {
        // Only the test's own pool: other tests run products at the same time.
        let me = std::thread::current();
        if me.name().is_some_and(|n| n.starts_with("gemm-test")) {
            if let Some(set) = THREADS.lock().unwrap().as_mut() {
                set.insert(me.id());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ViT-sized product on a 2-thread pool runs on both threads (issue #11: the CPU forward
    /// once ran on one core).
    #[test]
    fn large_matmul_runs_on_more_than_one_thread() {
        #[cfg(target_arch = "x86_64")]
        if avx512::available() || avx2::available() {
            let (m, n, k) = (8 * 261, 1152, 384);
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let mut out = vec![0f32; m * n];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .thread_name(|i| format!("gemm-test-{i}"))
                .build()
                .unwrap();
            *tests_hook::THREADS.lock().unwrap() = Some(Default::default());
            // A few products: on a loaded machine the second worker may wake too late for one.
            for _ in 0..20 {
                pool.install(|| {
                    // SAFETY: buffers match the shapes.
                    unsafe {
                        matmul(
                            m,
                            n,
                            k,
                            MatMut {
                                ptr: out.as_mut_ptr(),
                                rs: n as isize,
                            },
                            false,
                            MatRef {
                                ptr: a.as_ptr(),
                                rs: k as isize,
                                cs: 1,
                            },
                            MatRef {
                                ptr: b.as_ptr(),
                                rs: n as isize,
                                cs: 1,
                            },
                            true,
                        )
                    }
                });
                if tests_hook::THREADS.lock().unwrap().as_ref().unwrap().len() >= 2 {
                    break;
                }
            }
            let seen = tests_hook::THREADS.lock().unwrap().take().unwrap();
            assert!(seen.len() >= 2, "product ran on {} thread(s)", seen.len());
        }
    }

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i + seed) * 2654435761) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Plain f64 reference of `acc + a·b` with strides.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ars: usize,
        acs: usize,
        b: &[f32],
        brs: usize,
        bcs: usize,
        acc: &[f32],
    ) -> Vec<f32> {
        let mut out = acc.to_vec();
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a[i * ars + p * acs] as f64 * b[p * brs + j * bcs] as f64)
                    .sum();
                out[i * n + j] = (out[i * n + j] as f64 + s) as f32;
            }
        }
        out
    }

    /// Every tile shape (rows 1..=14 and beyond, ragged columns, `k` past one slice, rows past
    /// one packed block, products large enough to split over the pool by rows and by columns),
    /// row-major, transposed and strided operands, accumulate on and off, one thread and the pool.
    #[test]
    fn matmul_matches_reference_over_edge_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 31, 7),
            (29, 70, 400),
            (261, 96, 64),
            (15, 33, 800),
            (3, 700, 5),
            (4, 9, 0),
            (203, 200, 300),
            (40, 500, 400),
        ] {
            let acc = data(m * n, 3);
            // lhs: row-major m×k, the transpose of a row-major k×m, or every other column of a
            // row-major m×2k.
            for lhs_layout in 0..3 {
                let (a, ars, acs) = match lhs_layout {
                    0 => (data(m * k, 1), k, 1),
                    1 => (data(m * k, 1), 1, m),
                    _ => (data(m * 2 * k, 1), 2 * k, 2),
                };
                // rhs: row-major k×n or the transpose of a row-major n×k.
                let b = data(k * n, 2);
                for transposed in [false, true] {
                    let (brs, bcs) = if transposed { (1, k) } else { (n, 1) };
                    for accumulate in [false, true] {
                        for threads in [false, true] {
                            let mut out = if accumulate {
                                acc.clone()
                            } else {
                                vec![f32::NAN; m * n]
                            };
                            let zero = vec![0f32; m * n];
                            let want = reference(
                                m,
                                n,
                                k,
                                &a,
                                ars,
                                acs,
                                &b,
                                brs,
                                bcs,
                                if accumulate { &acc } else { &zero },
                            );
                            // SAFETY: buffers match the shapes and strides.
                            unsafe {
                                matmul(
                                    m,
                                    n,
                                    k,
                                    MatMut {
                                        ptr: out.as_mut_ptr(),
                                        rs: n as isize,
                                    },
                                    accumulate,
                                    MatRef {
                                        ptr: a.as_ptr(),
                                        rs: ars as isize,
                                        cs: acs as isize,
                                    },
                                    MatRef {
                                        ptr: b.as_ptr(),
                                        rs: brs as isize,
                                        cs: bcs as isize,
                                    },
                                    threads,
                                );
                            }
                            for (x, y) in out.iter().zip(&want) {
                                assert!(
                                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                                    "{m}x{n}x{k} lhs={lhs_layout} t={transposed} acc={accumulate}: {x} vs {y}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// One-thread speed of this product against the `gemm` crate on the ViT-S shapes of the
    /// forward (`x·W`) and of the backward (`dY·Wᵀ`, `Xᵀ·dY`: strided operands), each timed
    /// alternately (median of 15); prints GFLOP/s.
    /// `cargo test --lib gemm_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn gemm_speed_vs_gemm_crate() {
        // (m, n, k, lhs transposed, rhs transposed)
        for &(m, n, k, lt, rt) in &[
            (261, 1152, 384, false, false),
            (261, 384, 384, false, false),
            (261, 1536, 384, false, false),
            (261, 384, 1536, false, false),
            (2088, 1152, 384, false, false),
            (2088, 384, 1536, false, true),
            (2088, 1536, 384, false, true),
            (384, 1536, 2088, true, false),
            (1536, 384, 2088, true, false),
        ] {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let mut out = vec![0f32; m * n];
            let (ars, acs) = if lt { (1, m as isize) } else { (k as isize, 1) };
            let (brs, bcs) = if rt { (1, k as isize) } else { (n as isize, 1) };
            let run = |own: bool, out: &mut [f32]| {
                let (dst, l, r) = (
                    MatMut {
                        ptr: out.as_mut_ptr(),
                        rs: n as isize,
                    },
                    MatRef {
                        ptr: a.as_ptr(),
                        rs: ars,
                        cs: acs,
                    },
                    MatRef {
                        ptr: b.as_ptr(),
                        rs: brs,
                        cs: bcs,
                    },
                );
                let t = std::time::Instant::now();
                // SAFETY: buffers match the shapes.
                unsafe {
                    if own {
                        matmul(m, n, k, dst, false, l, r, false)
                    } else {
                        matmul_gemm_crate(m, n, k, dst, false, l, r, false)
                    }
                }
                t.elapsed().as_secs_f64()
            };
            let (mut own, mut krate) = (Vec::new(), Vec::new());
            for _ in 0..15 {
                own.push(run(true, &mut out));
                krate.push(run(false, &mut out));
            }
            let med = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let flops = 2.0 * (m * n * k) as f64;
            let (o, c) = (med(&mut own), med(&mut krate));
            println!(
                "{m}x{n}x{k} lhsT={lt} rhsT={rt}: own {:.0} GFLOP/s, gemm crate {:.0} GFLOP/s ({:.2}x)",
                flops / o / 1e9,
                flops / c / 1e9,
                c / o
            );
        }
    }
}
