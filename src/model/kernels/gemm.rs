//! `f32` matrix products with strides, so that views (a head's columns of a fused q|k|v, a
//! transposed key) are read in place.
//!
//! On x86-64 the product runs on sv72's own register-tile kernel when the CPU has one: the ViT
//! shapes (`M` = a few hundred to a few thousand token rows, `K` ≤ 1536, `N` ≤ 4096) are too
//! small for the `gemm` crate's general blocking and its rayon split to keep two cores busy
//! (issue #11), so the work is split into one task per thread over column blocks, the weights
//! are read in place (they need no packing: rows are contiguous), and each task runs a register
//! tile on the shared [`tiled`] driver: 14×32 with AVX-512F ([`avx512`]), else 6×16 with
//! AVX2+FMA ([`avx2`]). Elsewhere the `gemm` crate runs the product.

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
    {
        if avx512::available() {
            // SAFETY: forwarded from the caller; the CPU has AVX-512F.
            unsafe { tiled::matmul::<avx512::Tile>(m, n, k, dst, accumulate, lhs, rhs, parallel) };
            return;
        }
        if avx2::available() {
            // SAFETY: forwarded from the caller; the CPU has AVX2 and FMA.
            unsafe { tiled::matmul::<avx2::Tile>(m, n, k, dst, accumulate, lhs, rhs, parallel) };
            return;
        }
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
pub mod tiled {
    //! The driver shared by the register-tile kernels. Per task (a block of rows × a block of
    //! columns): for each `KC`-deep slice of `k`, a group of `GROUP` `MR`-row tiles of `lhs` is
    //! packed `k`-major (once per tile and slice: packing is a visible cost), then each
    //! `NR`-wide column panel of the task, read straight from `rhs` (unit column stride; packed
    //! otherwise), is multiplied by every tile of the group in turn. On Zen 3's 512 KiB L2 the
    //! task's share of a ViT-S/B weight slice (`KC` × ≤ 768 columns) did not stay in L2 with one
    //! tile at a time, so the AVX2 kernel groups 16 tiles and each panel stays in L1 while the
    //! group runs; the AVX-512 kernel groups 8 (each kernel's `GROUP` says what was measured).

    use std::cell::RefCell;

    use rayon::prelude::*;

    use super::{MatMut, MatRef};

    /// A register-tile kernel: `c[0..MR, 0..nr] (+)= a · b` over `kc` steps, `a` packed
    /// `[kc][MR]`, `b` rows `ldb` apart with `nr` readable floats each.
    pub trait Kernel {
        /// Rows of the register tile.
        const MR: usize;
        /// Columns of the register tile.
        const NR: usize;
        /// Depth of one `k` slice (the packed `lhs` tile, `MR·KC` floats, stays in L1).
        const KC: usize;
        /// `lhs` tiles packed together and run against each `rhs` panel in turn, so that the
        /// panel's `KC·NR` floats are read from L2 or L3 once per group rather than once per
        /// tile (1: panel after panel for one tile).
        const GROUP: usize;

        /// `FULL`: `nr == NR` (no masks).
        ///
        /// # Safety
        /// The CPU has the kernel's features; `a` holds `MR·kc` floats, `b` `kc` rows of `nr`
        /// floats, `c` `MR` rows of `nr` writable floats.
        #[allow(clippy::too_many_arguments)]
        unsafe fn run<const FULL: bool>(
            kc: usize,
            a: *const f32,
            b: *const f32,
            ldb: isize,
            c: *mut f32,
            ldc: isize,
            nr: usize,
            load_c: bool,
        );
    }

    /// The largest `MR·NR` of any kernel (the edge-tile scratch).
    const MAX_TILE: usize = 14 * 32;

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
    /// As [`super::matmul`], and the CPU must have `K`'s features.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn matmul<K: Kernel>(
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
            unsafe { block::<K>(job, 0..m, 0..n) };
            return;
        }
        let (mr, nr) = (K::MR, K::NR);
        // Column blocks first (each task then reads only its share of `rhs`, the weights), in
        // whole panels; rows split as well when there are fewer panels than threads.
        let panels = n.div_ceil(nr);
        let col_parts = threads.min(panels);
        let row_parts = threads.div_ceil(col_parts).min(m.div_ceil(mr));
        let row_tiles = m.div_ceil(mr);
        (0..col_parts * row_parts).into_par_iter().for_each(|task| {
            let (c, r) = (task % col_parts, task / col_parts);
            let cols =
                (panels * c / col_parts * nr).min(n)..(panels * (c + 1) / col_parts * nr).min(n);
            let rows = (row_tiles * r / row_parts * mr).min(m)
                ..(row_tiles * (r + 1) / row_parts * mr).min(m);
            // SAFETY: blocks of distinct tasks are disjoint.
            unsafe { block::<K>(job, rows, cols) };
        });
    }

    /// `dst[rows, cols] (+)= lhs[rows, :] · rhs[:, cols]` on the calling thread.
    unsafe fn block<K: Kernel>(
        job: Job,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        let (mr_max, nr_max, kc_max) = (K::MR, K::NR, K::KC);
        let tile_len = mr_max * kc_max;
        PACK.with_borrow_mut(|(a_pack, b_pack)| {
            if a_pack.len() < K::GROUP * tile_len {
                a_pack.resize(K::GROUP * tile_len, 0.0);
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
            crate::model::kernels::testing::touched();
            for p0 in (0..k.max(1)).step_by(kc_max) {
                let kc = kc_max.min(k - p0);
                let load_c = accumulate || p0 > 0;
                // Where panel `j` (a column index) of this slice starts, and its row stride.
                let (b_base, ldb, panel_stride): (*const f32, isize, isize);
                // SAFETY (whole block): indices stay within the shapes the caller vouched for;
                // packed buffers are sized before use.
                unsafe {
                    if direct {
                        b_base = rhs.ptr.offset(p0 as isize * rhs.rs + j0 as isize);
                        ldb = rhs.rs;
                        panel_stride = nr_max as isize;
                    } else {
                        let panels = (j1 - j0).div_ceil(nr_max);
                        let need = panels * kc * nr_max;
                        if b_pack.len() < need {
                            b_pack.resize(need, 0.0);
                        }
                        pack_rhs(nr_max, rhs, p0, kc, j0, j1, b_pack);
                        b_base = b_pack.as_ptr();
                        ldb = nr_max as isize;
                        panel_stride = (kc * nr_max) as isize;
                    }
                    for g0 in rows.clone().step_by(mr_max * K::GROUP) {
                        let g1 = (g0 + mr_max * K::GROUP).min(rows.end);
                        for (t, i0) in (g0..g1).step_by(mr_max).enumerate() {
                            let mr = mr_max.min(rows.end - i0);
                            pack_lhs(mr_max, lhs, i0, mr, p0, kc, &mut a_pack[t * tile_len..]);
                        }
                        for (pi, j) in (j0..j1).step_by(nr_max).enumerate() {
                            let nr = nr_max.min(j1 - j);
                            let b = b_base.offset(pi as isize * panel_stride);
                            for (t, i0) in (g0..g1).step_by(mr_max).enumerate() {
                                let mr = mr_max.min(rows.end - i0);
                                let a = a_pack.as_ptr().add(t * tile_len);
                                let c = dst.ptr.offset(i0 as isize * dst.rs + j as isize);
                                tile::<K>(mr, nr, kc, a, b, ldb, c, dst.rs, load_c);
                            }
                        }
                    }
                }
            }
        });
    }

    /// Packs `lhs[i0..i0+mr, p0..p0+kc]` `k`-major, `tr` (the tile's rows) wide:
    /// `out[p·tr + i]`, rows past `mr` zero.
    unsafe fn pack_lhs(
        tr: usize,
        lhs: MatRef,
        i0: usize,
        mr: usize,
        p0: usize,
        kc: usize,
        out: &mut [f32],
    ) {
        let out = &mut out[..kc * tr];
        if mr < tr {
            out.fill(0.0);
        }
        // Plain pointer walks: the dev profile keeps iterator adapters and the UB checks of
        // `offset`/`get_unchecked`, which made this loop a visible share of the forward.
        let dst = out.as_mut_ptr();
        for i in 0..mr {
            let mut s = lhs
                .ptr
                .wrapping_offset((i0 + i) as isize * lhs.rs + p0 as isize * lhs.cs);
            let mut d = dst.wrapping_add(i);
            for _ in 0..kc {
                // SAFETY: `s` walks row `i0 + i` within the caller's shape, `d` column `i` of
                // `out` (tr·kc floats).
                unsafe { *d = *s };
                s = s.wrapping_offset(lhs.cs);
                d = d.wrapping_add(tr);
            }
        }
    }

    /// Packs `rhs[p0..p0+kc, j0..j1]` into `tc`-wide panels (the tile's columns),
    /// `out[panel][p][tc]`, the last panel zero-padded.
    unsafe fn pack_rhs(
        tc: usize,
        rhs: MatRef,
        p0: usize,
        kc: usize,
        j0: usize,
        j1: usize,
        out: &mut [f32],
    ) {
        for (pi, j) in (j0..j1).step_by(tc).enumerate() {
            let panel = &mut out[pi * kc * tc..(pi + 1) * kc * tc];
            let nr = tc.min(j1 - j);
            if nr < tc {
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
                    panel[p * tc + jj] = unsafe { *col.offset(p as isize * rhs.rs) };
                }
            }
        }
    }

    /// One `mr × nr` tile. The kernel always computes `MR` rows (its loop is written out so
    /// that even the dev profile keeps the accumulators in registers); a short edge tile runs
    /// on zero-padded `lhs` rows into a scratch tile that is then copied out.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile<K: Kernel>(
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
        const { assert!(K::MR * K::NR <= MAX_TILE) };
        let (mr_max, nr_max) = (K::MR, K::NR);
        // SAFETY: forwarded; the scratch tile holds MR×NR.
        unsafe {
            if mr == mr_max {
                if nr == nr_max {
                    K::run::<true>(kc, a, b, ldb, c, ldc, nr, load_c);
                } else {
                    K::run::<false>(kc, a, b, ldb, c, ldc, nr, load_c);
                }
                return;
            }
            let mut tmp = [0f32; MAX_TILE];
            if load_c {
                for i in 0..mr {
                    std::ptr::copy_nonoverlapping(
                        c.offset(i as isize * ldc),
                        tmp.as_mut_ptr().add(i * nr_max),
                        nr,
                    );
                }
            }
            let (t, ldt) = (tmp.as_mut_ptr(), nr_max as isize);
            if nr == nr_max {
                K::run::<true>(kc, a, b, ldb, t, ldt, nr, load_c);
            } else {
                K::run::<false>(kc, a, b, ldb, t, ldt, nr, load_c);
            }
            for i in 0..mr {
                std::ptr::copy_nonoverlapping(
                    tmp.as_ptr().add(i * nr_max),
                    c.offset(i as isize * ldc),
                    nr,
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    //! The AVX-512F register tile for [`super::tiled`], `MR` × `NR` = 14 × 32: 28 zmm
    //! accumulators, two `rhs` loads and fourteen broadcast `lhs` operands per step, enough
    //! independent FMAs to fill both FMA pipes through their latency.

    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// Rows of the register tile.
    pub const MR: usize = 14;
    /// Columns of the register tile (two 16-lane vectors).
    pub const NR: usize = 32;
    /// Depth of one `k` slice: a packed `lhs` tile is `MR·KC` floats (21 KiB), a `rhs` panel
    /// `KC·NR` (48 KiB). Measured on Zen 5 (48 KiB L1, 1 MiB L2): 256 was slower (up to 20 %
    /// at 2088×1152×384), 512 no faster.
    const KC: usize = 384;
    /// `lhs` tiles per group (measured on Zen 5, one thread: 1 ≈ 2 < 4 ≈ 8 ≈ 16 by 5 % at
    /// 2088×1152×384, equal within noise on the 261-row shapes): 8 × 21 KiB stay in L2 and
    /// each 48 KiB panel is read from L2 or L3 once per 8 tiles.
    const GROUP: usize = 8;

    /// Whether the CPU runs AVX-512F (checked once).
    pub fn available() -> bool {
        static AVX512: OnceLock<bool> = OnceLock::new();
        *AVX512.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }

    /// The 14×32 AVX-512F kernel for [`super::tiled`].
    pub struct Tile;

    impl super::tiled::Kernel for Tile {
        const MR: usize = MR;
        const NR: usize = NR;
        const KC: usize = KC;
        const GROUP: usize = GROUP;

        #[inline]
        unsafe fn run<const FULL: bool>(
            kc: usize,
            a: *const f32,
            b: *const f32,
            ldb: isize,
            c: *mut f32,
            ldc: isize,
            nr: usize,
            load_c: bool,
        ) {
            // SAFETY: forwarded; the caller checked `available()`.
            unsafe { kernel::<FULL>(kc, a, b, ldb, c, ldc, nr, load_c) }
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
        // The assembly below steps `a` by 14 floats and reads 32 columns of `b`.
        const { assert!(MR == 14 && NR == 32) };
        if FULL {
            if kc > 0 {
                // The full tile's loop in assembly, as for the AVX2 kernel: the dev profile
                // passes both `rhs` vectors through the stack (a store and reload of each per
                // step) and checks every pointer step; the assembly measured 10–20 % faster.
                // SAFETY: `a` holds MR floats per step and `b` NR per row, for `kc` steps.
                unsafe {
                    std::arch::asm!(
                        "2:",
                        "vmovups {b0}, zmmword ptr [{b}]",
                        "vmovups {b1}, zmmword ptr [{b} + 64]",
                        "vbroadcastss {t}, dword ptr [{a}]",
                        "vfmadd231ps {c00}, {t}, {b0}",
                        "vfmadd231ps {c01}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 4]",
                        "vfmadd231ps {c10}, {t}, {b0}",
                        "vfmadd231ps {c11}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 8]",
                        "vfmadd231ps {c20}, {t}, {b0}",
                        "vfmadd231ps {c21}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 12]",
                        "vfmadd231ps {c30}, {t}, {b0}",
                        "vfmadd231ps {c31}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 16]",
                        "vfmadd231ps {c40}, {t}, {b0}",
                        "vfmadd231ps {c41}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 20]",
                        "vfmadd231ps {c50}, {t}, {b0}",
                        "vfmadd231ps {c51}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 24]",
                        "vfmadd231ps {c60}, {t}, {b0}",
                        "vfmadd231ps {c61}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 28]",
                        "vfmadd231ps {c70}, {t}, {b0}",
                        "vfmadd231ps {c71}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 32]",
                        "vfmadd231ps {c80}, {t}, {b0}",
                        "vfmadd231ps {c81}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 36]",
                        "vfmadd231ps {c90}, {t}, {b0}",
                        "vfmadd231ps {c91}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 40]",
                        "vfmadd231ps {c100}, {t}, {b0}",
                        "vfmadd231ps {c101}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 44]",
                        "vfmadd231ps {c110}, {t}, {b0}",
                        "vfmadd231ps {c111}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 48]",
                        "vfmadd231ps {c120}, {t}, {b0}",
                        "vfmadd231ps {c121}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 52]",
                        "vfmadd231ps {c130}, {t}, {b0}",
                        "vfmadd231ps {c131}, {t}, {b1}",
                        "add {a}, 56",
                        "add {b}, {ldb}",
                        "dec {k}",
                        "jnz 2b",
                        a = inout(reg) a => _,
                        b = inout(reg) b => _,
                        k = inout(reg) kc => _,
                        ldb = in(reg) ldb * 4,
                        b0 = out(zmm_reg) _,
                        b1 = out(zmm_reg) _,
                        t = out(zmm_reg) _,
                        c00 = inout(zmm_reg) acc0[0],
                        c01 = inout(zmm_reg) acc1[0],
                        c10 = inout(zmm_reg) acc0[1],
                        c11 = inout(zmm_reg) acc1[1],
                        c20 = inout(zmm_reg) acc0[2],
                        c21 = inout(zmm_reg) acc1[2],
                        c30 = inout(zmm_reg) acc0[3],
                        c31 = inout(zmm_reg) acc1[3],
                        c40 = inout(zmm_reg) acc0[4],
                        c41 = inout(zmm_reg) acc1[4],
                        c50 = inout(zmm_reg) acc0[5],
                        c51 = inout(zmm_reg) acc1[5],
                        c60 = inout(zmm_reg) acc0[6],
                        c61 = inout(zmm_reg) acc1[6],
                        c70 = inout(zmm_reg) acc0[7],
                        c71 = inout(zmm_reg) acc1[7],
                        c80 = inout(zmm_reg) acc0[8],
                        c81 = inout(zmm_reg) acc1[8],
                        c90 = inout(zmm_reg) acc0[9],
                        c91 = inout(zmm_reg) acc1[9],
                        c100 = inout(zmm_reg) acc0[10],
                        c101 = inout(zmm_reg) acc1[10],
                        c110 = inout(zmm_reg) acc0[11],
                        c111 = inout(zmm_reg) acc1[11],
                        c120 = inout(zmm_reg) acc0[12],
                        c121 = inout(zmm_reg) acc1[12],
                        c130 = inout(zmm_reg) acc0[13],
                        c131 = inout(zmm_reg) acc1[13],
                        options(nostack, readonly),
                    );
                }
            }
        } else {
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
    //! The AVX2+FMA register tile for CPUs without AVX-512 (e.g. AMD Zen 2/3), `MR` × `NR` =
    //! 6 × 16 in the 16 ymm registers: 12 accumulators, two `rhs` loads and one broadcast `lhs`
    //! operand per row, twelve independent FMAs per step for two FMA pipes of latency 4.

    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// Rows of the register tile.
    pub const MR: usize = 6;
    /// Columns of the register tile (two 8-lane vectors).
    pub const NR: usize = 16;
    /// Depth of one `k` slice: a packed `lhs` tile is `MR·KC` floats (9 KiB), L1-resident.
    const KC: usize = 384;
    /// `lhs` tiles per group (measured: 8 < 16 ≈ 32): 16 × 9 KiB stay in L2 while each 24 KiB
    /// `rhs` panel stays in L1.
    const GROUP: usize = 16;

    /// Whether the CPU runs AVX2 and FMA (checked once).
    pub fn available() -> bool {
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// The 6×16 AVX2+FMA kernel for [`super::tiled`].
    pub struct Tile;

    impl super::tiled::Kernel for Tile {
        const MR: usize = MR;
        const NR: usize = NR;
        const KC: usize = KC;
        const GROUP: usize = GROUP;

        #[inline]
        unsafe fn run<const FULL: bool>(
            kc: usize,
            a: *const f32,
            b: *const f32,
            ldb: isize,
            c: *mut f32,
            ldc: isize,
            nr: usize,
            load_c: bool,
        ) {
            // SAFETY: forwarded; the caller checked `available()`.
            unsafe { kernel::<FULL>(kc, a, b, ldb, c, ldc, nr, load_c) }
        }
    }

    /// `c[0..MR, 0..nr] (+)= a · b` over `kc` steps: `a` packed `[kc][MR]`, `b` rows `ldb`
    /// apart. `FULL`: `nr == NR` (no masks; a masked load never touches the lanes it skips).
    #[target_feature(enable = "avx2,fma")]
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
        // Lane `l` of mask 0 (columns 0..8) and mask 1 (8..16) is set when its column < nr.
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr as i32), lanes);
        let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr as i32 - 8), lanes);
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
        // The assembly below steps `a` by 6 floats and reads 16 columns of `b`.
        const { assert!(MR == 6 && NR == 16) };
        if FULL {
            if kc > 0 {
                // The full tile's loop in assembly: the dev profile (`opt-level = 1`, debug
                // assertions) compiles `_mm256_loadu_ps` and pointer steps with their UB checks
                // and passes the `rhs` vectors through the stack, which halved the kernel's speed.
                // SAFETY: `a` holds MR floats per step and `b` NR per row, for `kc` steps.
                unsafe {
                    std::arch::asm!(
                        "2:",
                        "vmovups {b0}, ymmword ptr [{b}]",
                        "vmovups {b1}, ymmword ptr [{b} + 32]",
                        "vbroadcastss {t}, dword ptr [{a}]",
                        "vfmadd231ps {c00}, {t}, {b0}",
                        "vfmadd231ps {c01}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 4]",
                        "vfmadd231ps {c10}, {t}, {b0}",
                        "vfmadd231ps {c11}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 8]",
                        "vfmadd231ps {c20}, {t}, {b0}",
                        "vfmadd231ps {c21}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 12]",
                        "vfmadd231ps {c30}, {t}, {b0}",
                        "vfmadd231ps {c31}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 16]",
                        "vfmadd231ps {c40}, {t}, {b0}",
                        "vfmadd231ps {c41}, {t}, {b1}",
                        "vbroadcastss {t}, dword ptr [{a} + 20]",
                        "vfmadd231ps {c50}, {t}, {b0}",
                        "vfmadd231ps {c51}, {t}, {b1}",
                        "add {a}, 24",
                        "add {b}, {ldb}",
                        "dec {k}",
                        "jnz 2b",
                        a = inout(reg) a => _,
                        b = inout(reg) b => _,
                        k = inout(reg) kc => _,
                        ldb = in(reg) ldb * 4,
                        b0 = out(ymm_reg) _,
                        b1 = out(ymm_reg) _,
                        t = out(ymm_reg) _,
                        c00 = inout(ymm_reg) acc0[0],
                        c01 = inout(ymm_reg) acc1[0],
                        c10 = inout(ymm_reg) acc0[1],
                        c11 = inout(ymm_reg) acc1[1],
                        c20 = inout(ymm_reg) acc0[2],
                        c21 = inout(ymm_reg) acc1[2],
                        c30 = inout(ymm_reg) acc0[3],
                        c31 = inout(ymm_reg) acc1[3],
                        c40 = inout(ymm_reg) acc0[4],
                        c41 = inout(ymm_reg) acc1[4],
                        c50 = inout(ymm_reg) acc0[5],
                        c51 = inout(ymm_reg) acc1[5],
                        options(nostack, readonly),
                    );
                }
            }
        } else {
            for _ in 0..kc {
                // SAFETY: `b` row has `nr` readable floats (masked beyond), `a` holds MR per
                // step.
                unsafe {
                    let (b0, b1) = (_mm256_maskload_ps(b, m0), _mm256_maskload_ps(b.add(8), m1));
                    macro_rules! fma {
                        ($i:literal) => {
                            let ai = _mm256_broadcast_ss(&*a.add($i));
                            acc0[$i] = _mm256_fmadd_ps(ai, b0, acc0[$i]);
                            acc1[$i] = _mm256_fmadd_ps(ai, b1, acc1[$i]);
                        };
                    }
                    rows!(fma);
                    a = a.add(MR);
                    b = b.offset(ldb);
                }
            }
        }
        macro_rules! store {
            ($i:literal) => {
                // SAFETY: row `i` of the tile has `nr` writable floats.
                unsafe {
                    let row = c.offset($i * ldc);
                    if FULL {
                        if load_c {
                            acc0[$i] = _mm256_add_ps(acc0[$i], _mm256_loadu_ps(row));
                            acc1[$i] = _mm256_add_ps(acc1[$i], _mm256_loadu_ps(row.add(8)));
                        }
                        _mm256_storeu_ps(row, acc0[$i]);
                        _mm256_storeu_ps(row.add(8), acc1[$i]);
                    } else {
                        if load_c {
                            acc0[$i] = _mm256_add_ps(acc0[$i], _mm256_maskload_ps(row, m0));
                            acc1[$i] = _mm256_add_ps(acc1[$i], _mm256_maskload_ps(row.add(8), m1));
                        }
                        _mm256_maskstore_ps(row, m0, acc0[$i]);
                        _mm256_maskstore_ps(row.add(8), m1, acc1[$i]);
                    }
                }
            };
        }
        rows!(store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature shared by every product path.
    type Product = unsafe fn(usize, usize, usize, MatMut, bool, MatRef, MatRef, bool);

    /// sv72's own register-tile kernels this CPU runs (none without AVX2+FMA or AVX-512F).
    fn own_kernels() -> Vec<(&'static str, Product)> {
        #[allow(unused_mut)]
        let mut v: Vec<(&'static str, Product)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if avx512::available() {
                v.push(("avx512", tiled::matmul::<avx512::Tile>));
            }
            if avx2::available() {
                v.push(("avx2", tiled::matmul::<avx2::Tile>));
            }
        }
        v
    }

    /// Every path: the dispatching entry, each own kernel the CPU has, the `gemm` crate.
    fn all_paths() -> Vec<(&'static str, Product)> {
        let mut v: Vec<(&'static str, Product)> =
            vec![("matmul", matmul), ("gemm crate", matmul_gemm_crate)];
        v.extend(own_kernels());
        v
    }

    /// A ViT-sized product on a 2-thread pool runs on both threads, on each own kernel the CPU
    /// has (issue #11: the CPU forward once ran on one core).
    #[test]
    fn large_matmul_runs_on_more_than_one_thread() {
        let (m, n, k) = (8 * 261, 1152, 384);
        let (a, b) = (data(m * k, 1), data(k * n, 2));
        let mut out = vec![0f32; m * n];
        for (name, product) in own_kernels() {
            let used = crate::model::kernels::testing::threads_used("gemm-test", || {
                // SAFETY: buffers match the shapes.
                unsafe {
                    product(
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
            assert!(used >= 2, "{name}: product ran on {used} thread(s)");
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

    /// Every tile shape of both kernels (rows 1..=14 and beyond, ragged columns, `k` past one
    /// slice, `k` = 0, a row split when there are fewer panels than threads), strided and transposed
    /// operands, accumulate on and off, one thread and the pool, on every path the CPU has.
    #[test]
    fn matmul_matches_reference_over_edge_shapes() {
        let paths = all_paths();
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 31, 7),
            (29, 70, 400),
            (261, 96, 64),
            (15, 33, 800),
            (3, 700, 5),
            (6, 16, 3),
            (13, 1, 9),
            (20, 17, 385),
            (15, 40, 0),
        ] {
            // lhs either row-major m×k or the transpose of a row-major k×m; rhs either
            // row-major k×n or the transpose of a row-major n×k.
            let a = data(m * k, 1);
            let b = data(k * n, 2);
            let acc = data(m * n, 3);
            let zero = vec![0f32; m * n];
            for lhs_t in [false, true] {
                let (ars, acs) = if lhs_t { (1, m) } else { (k, 1) };
                for transposed in [false, true] {
                    let (brs, bcs) = if transposed { (1, k) } else { (n, 1) };
                    for accumulate in [false, true] {
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
                        for (name, product) in &paths {
                            for threads in [false, true] {
                                let mut out = if accumulate {
                                    acc.clone()
                                } else {
                                    vec![f32::NAN; m * n]
                                };
                                // SAFETY: buffers match the shapes and strides.
                                unsafe {
                                    product(
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
                                        "{name} {m}x{n}x{k} lhs_t={lhs_t} t={transposed} \
                                         acc={accumulate} threads={threads}: {x} vs {y}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// One-thread speed of each own kernel the CPU has against the `gemm` crate on the ViT-S
    /// shapes, each timed alternately (median of 15); prints GFLOP/s. `cargo test --lib gemm_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn gemm_speed_vs_gemm_crate() {
        let kernels = own_kernels();
        assert!(!kernels.is_empty(), "no own kernel on this CPU");
        for (name, product) in kernels {
            for &(m, n, k) in &[
                (261, 1152, 384),
                (261, 384, 384),
                (261, 1536, 384),
                (261, 384, 1536),
                (2088, 1152, 384),
            ] {
                let (a, b) = (data(m * k, 1), data(k * n, 2));
                let mut out = vec![0f32; m * n];
                let run = |own: bool, out: &mut [f32]| {
                    let (dst, l, r) = (
                        MatMut {
                            ptr: out.as_mut_ptr(),
                            rs: n as isize,
                        },
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
                    );
                    let t = std::time::Instant::now();
                    // SAFETY: buffers match the shapes.
                    unsafe {
                        if own {
                            product(m, n, k, dst, false, l, r, false)
                        } else {
                            matmul_gemm_crate(m, n, k, dst, false, l, r, false)
                        }
                    }
                    t.elapsed().as_secs_f64()
                };
                let (o, c) = crate::model::kernels::testing::alternated_medians(15, |own| {
                    run(own, &mut out)
                });
                let flops = 2.0 * (m * n * k) as f64;
                println!(
                    "{name} {m}x{n}x{k}: own {:.0} GFLOP/s, gemm crate {:.0} GFLOP/s ({:.2}x)",
                    flops / o / 1e9,
                    flops / c / 1e9,
                    c / o
                );
            }
        }
    }
}
