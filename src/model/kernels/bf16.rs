//! `out (+)= x · W` with `W` held in bf16 and `x` rounded to bf16, f32 accumulation: the
//! products of `backbone.dtype: bf16` on a CPU with AMX-BF16 or AVX512-BF16 (issue #11).
//!
//! The weight is the transpose of what the product multiplies by: `wt` `[N, K]`, `K`
//! contiguous, which is torch's own `[out, in]` layout. The loader keeps it that way (a burn
//! BF16 tensor whose `[in, out]` view is a stride swap), so burn's ops still read it correctly
//! and nothing is converted per call. Per call, and per thread, each 32-column block of the
//! weight is repacked into the pair-interleaved ("VNNI") panels the instructions read: half
//! the bytes the f32 kernel streams, reused over every row block of `x`. `x` is rounded to bf16
//! (round to nearest even) once, into a zero-padded copy.
//!
//! Engines, picked once per process ([`engine`]): AMX (`TDPBF16PS` on a 2×2 grid of 16×16
//! tiles, after asking Linux for the tile state with `arch_prctl`), else AVX512-BF16
//! (`VDPBF16PS`, 4 rows × 32 columns of registers). Neither: [`engine`] is `None` and the
//! loader refuses bf16 on this CPU.

use std::sync::OnceLock;

use half::bf16;
use rayon::prelude::*;

use super::gemm::{MatMut, MatRef};

/// Which instructions run the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Advanced Matrix Extensions tiles (Sapphire Rapids and later).
    Amx,
    /// AVX512-BF16 dot products (Cooper Lake, Zen 4 and later).
    Avx512Bf16,
}

/// Rows and columns of one task's block (two AMX tiles each way).
const BLOCK: usize = 32;
/// `K` is padded to whole tile rows of 32 bf16 values.
const KSTEP: usize = 32;

/// The engine this CPU (and kernel, for AMX) allows, or `None`: bf16 products unavailable.
pub fn engine() -> Option<Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    *ENGINE.get_or_init(detect)
}

/// Every engine this machine can run, best first (tests cover each).
pub fn engines() -> Vec<Engine> {
    let mut v = Vec::new();
    if engine() == Some(Engine::Amx) {
        v.push(Engine::Amx);
    }
    if avx512_bf16() {
        v.push(Engine::Avx512Bf16);
    }
    v
}

fn detect() -> Option<Engine> {
    if x86::amx_usable() {
        Some(Engine::Amx)
    } else if avx512_bf16() {
        Some(Engine::Avx512Bf16)
    } else {
        None
    }
}

fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Why bf16 is refused here, for errors.
pub const UNAVAILABLE: &str = "backbone.dtype bf16 on the CPU needs AMX-BF16 or AVX512-BF16 \
    (Intel Sapphire Rapids / Cooper Lake, AMD Zen 4 or later), which this CPU lacks; use f32";

/// `dst = (accumulate ? dst : 0) + x · wtᵀ` for `x` `m×k` (f32, rounded to bf16 here) and
/// `wt` `n×k` bf16 with row stride `ldw` (elements), over the rayon pool.
///
/// # Safety
/// `x` must be valid for `m×k` at its strides, `dst` for `m×n` (row stride `rs`, unit column
/// stride) and not overlap `x` or `wt`, nor memory another thread touches during the call;
/// `engine` must be one of [`engines`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul(
    engine: Engine,
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut,
    accumulate: bool,
    x: MatRef,
    wt: &[bf16],
    ldw: usize,
) {
    assert!(
        n == 0 || wt.len() >= (n - 1) * ldw + k,
        "bf16 weight too short"
    );
    if m == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(KSTEP) * KSTEP;
    let mp = m.div_ceil(BLOCK) * BLOCK;
    // SAFETY: forwarded from the caller.
    let xp = unsafe { pack_x(m, k, kp, mp, x) };
    let dst = SendPtr(dst.ptr, dst.rs);
    let job = |nb: usize| {
        let n0 = nb * BLOCK;
        let panels = pack_w(wt, ldw, n, k, kp, n0);
        let block = Block {
            m,
            n,
            kp,
            n0,
            xp: &xp,
            panels: &panels,
            accumulate,
        };
        let (ptr, rs) = dst.get();
        // SAFETY: each task writes only its own columns n0..n0+32 of `dst`.
        unsafe {
            match engine {
                Engine::Amx => x86::amx_block(&block, ptr, rs),
                Engine::Avx512Bf16 => x86::avx512_block(&block, ptr, rs),
            }
        }
    };
    let blocks = n.div_ceil(BLOCK);
    if m * n * k >= 64 * 64 * 64 && blocks > 1 {
        (0..blocks).into_par_iter().for_each(job);
    } else {
        (0..blocks).for_each(job);
    }
}

/// The destination pointer, shared by the column-block tasks (disjoint columns).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32, isize);
impl SendPtr {
    /// The pointer and row stride (a method, so closures capture the whole `Send` value).
    fn get(self) -> (*mut f32, isize) {
        (self.0, self.1)
    }
}

// SAFETY: tasks write disjoint column ranges through it (see `matmul`).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// One task's inputs: every row of `x` against columns `n0..n0 + 32`.
struct Block<'a> {
    m: usize,
    n: usize,
    kp: usize,
    n0: usize,
    /// `x` as bf16 bits, `mp × kp`, zero-padded.
    xp: &'a [u16],
    /// Two panels of 16 columns, each `kp/2` rows of 16 (even k, odd k) pairs.
    panels: &'a [u32],
    accumulate: bool,
}

/// `x` rounded to bf16 bits, `mp × kp` row-major, zero outside `m × k`.
///
/// # Safety
/// `x` valid for `m×k` at its strides.
unsafe fn pack_x(m: usize, k: usize, kp: usize, mp: usize, x: MatRef) -> Vec<u16> {
    let mut xp = vec![0u16; mp * kp];
    let src = SendPtr(x.ptr as *mut f32, x.rs);
    let cs = x.cs;
    xp.par_chunks_mut(kp)
        .take(m)
        .enumerate()
        .with_min_len(16)
        .for_each(|(r, row)| {
            let (ptr, rs) = src.get();
            // SAFETY: row `r < m` of `x` is valid for `k` elements at stride `cs`.
            let p = unsafe { ptr.offset(r as isize * rs) } as *const f32;
            if cs == 1 && avx512_bf16() {
                // SAFETY: the row is contiguous and the CPU has AVX512-BF16.
                unsafe { x86::round_row(p, k, &mut row[..k]) };
            } else {
                for (c, v) in row[..k].iter_mut().enumerate() {
                    // SAFETY: as above, element `c < k`.
                    *v = bf16::from_f32(unsafe { *p.offset(c as isize * cs) }).to_bits();
                }
            }
        });
    xp
}

/// Columns `n0..n0 + 32` of `wt`ᵀ as two pair-interleaved panels (see [`Block::panels`]),
/// zero outside `k × n`.
fn pack_w(wt: &[bf16], ldw: usize, n: usize, k: usize, kp: usize, n0: usize) -> Vec<u32> {
    let rows = kp / 2;
    let mut panels = vec![0u32; 2 * rows * 16];
    for (j, panel) in panels.chunks_exact_mut(rows * 16).enumerate() {
        let c0 = n0 + 16 * j;
        let cols = n.saturating_sub(c0).min(16);
        if cols == 0 {
            break;
        }
        // Whole pairs with one gather per panel row (every engine implies AVX-512F).
        // SAFETY: columns c0..c0+cols are rows of `wt` (length checked in `matmul`), each read
        // for its first `2 * (k / 2) <= k` values; the panel holds `rows >= k / 2` rows.
        unsafe { x86::gather_pairs(wt[c0 * ldw..].as_ptr(), ldw, cols, k / 2, panel) };
        if k % 2 == 1 {
            for c in 0..cols {
                panel[(k / 2) * 16 + c] = wt[(c0 + c) * ldw + k - 1].to_bits() as u32;
            }
        }
    }
    panels
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{Block, BLOCK};

    /// Whether the CPU has AMX-TILE and AMX-BF16 and Linux grants this process the tile state.
    pub fn amx_usable() -> bool {
        // CPUID.(7,0):EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
        let has = __cpuid(0).eax >= 7 && {
            let edx = __cpuid_count(7, 0).edx;
            edx & (1 << 22) != 0 && edx & (1 << 24) != 0
        };
        if !has || !super::avx512_bf16() {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these arguments only changes this process's permissions.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    /// `panel[p * 16 + c] = (wt[c][2p], wt[c][2p + 1])` for `c < cols`, `p < pairs`, where row
    /// `c` of `wt` starts `c * ldw` values after `wt`; other lanes are left as they are.
    ///
    /// # Safety
    /// Rows `0..cols` valid for `2 * pairs` values; `panel` holds `pairs * 16` values; the CPU
    /// has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gather_pairs(
        wt: *const half::bf16,
        ldw: usize,
        cols: usize,
        pairs: usize,
        panel: &mut [u32],
    ) {
        assert!(panel.len() >= pairs * 16 && cols <= 16);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((ldw * 2) as i32));
        let mask = ((1u32 << cols) - 1) as u16;
        for p in 0..pairs {
            // SAFETY: lane `c < cols` reads the 4 bytes of values 2p, 2p+1 of row `c`; masked
            // lanes read nothing; the store is inside `panel`.
            unsafe {
                let base = (wt as *const u8).add(4 * p) as *const i32;
                let v =
                    _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), mask, offsets, base);
                _mm512_storeu_si512(panel.as_mut_ptr().add(p * 16) as *mut __m512i, v);
            }
        }
    }

    /// Rounds `len` contiguous f32 values at `src` to bf16 bits (round to nearest even).
    ///
    /// # Safety
    /// `src` valid for `len` reads; the CPU has AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_row(src: *const f32, len: usize, dst: &mut [u16]) {
        let mut c = 0;
        while c < len {
            let take = (len - c).min(32);
            let mask = if take == 32 {
                u32::MAX
            } else {
                (1u32 << take) - 1
            };
            // SAFETY: masked loads read only the `take` valid values; the store writes 32
            // bf16 into `dst[c..]` through a mask as well.
            unsafe {
                let lo = _mm512_maskz_loadu_ps(mask as u16, src.add(c));
                let hi = _mm512_maskz_loadu_ps((mask >> 16) as u16, src.wrapping_add(c + 16));
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_mask_storeu_epi16(dst.as_mut_ptr().add(c) as *mut i16, mask, v);
            }
            c += take;
        }
    }

    /// Where one 16×16 tile of `dst` is read and written: in place when whole, else through a
    /// zero-padded scratch tile.
    struct Tile {
        row: usize,
        col: usize,
        rows: usize,
        cols: usize,
    }

    fn tiles(b: &Block<'_>, m0: usize) -> [Tile; 4] {
        std::array::from_fn(|t| {
            let (row, col) = (m0 + 16 * (t / 2), b.n0 + 16 * (t % 2));
            Tile {
                row,
                col,
                rows: b.m.saturating_sub(row).min(16),
                cols: b.n.saturating_sub(col).min(16),
            }
        })
    }

    macro_rules! tile_load {
        ($t:literal, $ptr:expr, $stride:expr) => {
            asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"), p = in(reg) $ptr,
                 s = in(reg) $stride, options(nostack, readonly))
        };
    }
    macro_rules! tile_store {
        ($t:literal, $ptr:expr, $stride:expr) => {
            asm!(concat!("tilestored [{p} + {s}*1], tmm", $t), p = in(reg) $ptr,
                 s = in(reg) $stride, options(nostack))
        };
    }

    /// One task on AMX: tiles 0..3 accumulate the 2×2 grid of `dst` tiles, 4 and 5 hold two
    /// 16-row slices of `x`, 6 and 7 the two weight panels.
    ///
    /// # Safety
    /// `dst` valid for `b.m × b.n` at row stride `rs`; the process has AMX permission.
    pub unsafe fn amx_block(b: &Block<'_>, dst: *mut f32, rs: isize) {
        // Palette 1, every tile 16 rows of 64 bytes.
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = 16;
        }
        let mut scratch = [[0f32; 256]; 4];
        let xstride = b.kp * 2;
        let chunks = b.kp / 32;
        let panel_len = b.kp / 2 * 16;
        // SAFETY: the config is a valid palette-1 layout; every tile load below reads 16 rows
        // of 64 bytes inside `xp` (padded to whole 32-row blocks), the panels, `dst` (whole
        // tiles only) or `scratch`; stores go to the same places.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
            for m0 in (0..b.m).step_by(BLOCK) {
                let tiles = tiles(b, m0);
                let mut place = [(std::ptr::null_mut::<f32>(), 0usize, false); 4];
                for (t, tile) in tiles.iter().enumerate() {
                    place[t] = if tile.rows == 16 && tile.cols == 16 {
                        (
                            dst.offset(tile.row as isize * rs).add(tile.col),
                            rs as usize * 4,
                            false,
                        )
                    } else {
                        let s = &mut scratch[t];
                        s.fill(0.0);
                        if b.accumulate {
                            for r in 0..tile.rows {
                                let src = dst.offset((tile.row + r) as isize * rs).add(tile.col);
                                std::ptr::copy_nonoverlapping(
                                    src,
                                    s[r * 16..].as_mut_ptr(),
                                    tile.cols,
                                );
                            }
                        }
                        (s.as_mut_ptr(), 64, true)
                    };
                }
                if b.accumulate {
                    tile_load!("0", place[0].0, place[0].1);
                    tile_load!("1", place[1].0, place[1].1);
                    tile_load!("2", place[2].0, place[2].1);
                    tile_load!("3", place[3].0, place[3].1);
                } else {
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    );
                }
                let a0 = b.xp.as_ptr().add(m0 * b.kp);
                asm!(
                    "2:",
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "add {a0}, 64",
                    "add {a1}, 64",
                    "add {b0}, 1024",
                    "add {b1}, 1024",
                    "dec {kc}",
                    "jnz 2b",
                    a0 = inout(reg) a0 => _,
                    a1 = inout(reg) a0.add(16 * b.kp) => _,
                    b0 = inout(reg) b.panels.as_ptr() => _,
                    b1 = inout(reg) b.panels.as_ptr().add(panel_len) => _,
                    kc = inout(reg) chunks => _,
                    sa = in(reg) xstride,
                    sb = in(reg) 64usize,
                    options(nostack, readonly),
                );
                tile_store!("0", place[0].0, place[0].1);
                tile_store!("1", place[1].0, place[1].1);
                tile_store!("2", place[2].0, place[2].1);
                tile_store!("3", place[3].0, place[3].1);
                for (t, tile) in tiles.iter().enumerate() {
                    if place[t].2 {
                        for r in 0..tile.rows {
                            let d = dst.offset((tile.row + r) as isize * rs).add(tile.col);
                            std::ptr::copy_nonoverlapping(
                                scratch[t][r * 16..].as_ptr(),
                                d,
                                tile.cols,
                            );
                        }
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// One task on AVX512-BF16: 4 rows × 32 columns of accumulators, one `x` pair broadcast
    /// against a 16-pair panel row per instruction.
    ///
    /// # Safety
    /// `dst` valid for `b.m × b.n` at row stride `rs`; the CPU has AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn avx512_block(b: &Block<'_>, dst: *mut f32, rs: isize) {
        let masks: [u16; 2] = std::array::from_fn(|j| {
            let cols = b.n.saturating_sub(b.n0 + 16 * j).min(16);
            ((1u32 << cols) - 1) as u16
        });
        let rows = b.kp / 2;
        let panels = b.panels.as_ptr();
        let xp = b.xp.as_ptr() as *const u32;
        for m0 in (0..b.m).step_by(4) {
            let live = (b.m - m0).min(4);
            // SAFETY: rows m0..m0+4 exist in `xp` (padded to 32-row blocks); `dst` accesses
            // are masked to the valid columns and limited to the `live` rows.
            unsafe {
                let mut acc = [_mm512_setzero_ps(); 8];
                if b.accumulate {
                    for r in 0..live {
                        let d = dst.offset((m0 + r) as isize * rs).add(b.n0);
                        acc[2 * r] = _mm512_maskz_loadu_ps(masks[0], d);
                        acc[2 * r + 1] = _mm512_maskz_loadu_ps(masks[1], d.wrapping_add(16));
                    }
                }
                for p in 0..rows {
                    let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                        panels.add(p * 16) as *const __m512i
                    ));
                    let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                        panels.add((rows + p) * 16) as *const __m512i,
                    ));
                    for r in 0..4 {
                        let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(
                            *xp.add((m0 + r) * rows + p) as i32,
                        ));
                        acc[2 * r] = _mm512_dpbf16_ps(acc[2 * r], a, w0);
                        acc[2 * r + 1] = _mm512_dpbf16_ps(acc[2 * r + 1], a, w1);
                    }
                }
                for r in 0..live {
                    let d = dst.offset((m0 + r) as isize * rs).add(b.n0);
                    _mm512_mask_storeu_ps(d, masks[0], acc[2 * r]);
                    _mm512_mask_storeu_ps(d.wrapping_add(16), masks[1], acc[2 * r + 1]);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    //! No bf16 engine off x86-64: [`super::engine`] is `None`, so nothing here is reached.
    use super::Block;

    pub fn amx_usable() -> bool {
        false
    }
    pub unsafe fn gather_pairs(_: *const half::bf16, _: usize, _: usize, _: usize, _: &mut [u32]) {
        unreachable!("no bf16 engine on this architecture")
    }
    pub unsafe fn round_row(_: *const f32, _: usize, _: &mut [u16]) {
        unreachable!("no bf16 engine on this architecture")
    }
    pub unsafe fn amx_block(_: &Block<'_>, _: *mut f32, _: isize) {
        unreachable!("no bf16 engine on this architecture")
    }
    pub unsafe fn avx512_block(_: &Block<'_>, _: *mut f32, _: isize) {
        unreachable!("no bf16 engine on this architecture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn run(engine: Engine, m: usize, n: usize, k: usize, accumulate: bool, seed: u64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut normal = || rng.random_range(-2.0f32..2.0);
        // `x` is read through a strided view (every other column of a wider buffer) when `k`
        // is odd, contiguous otherwise: both packing paths run.
        let cs = if k % 2 == 1 { 2 } else { 1 };
        let xs: Vec<f32> = (0..m * k * cs).map(|_| normal()).collect();
        let ldw = k + 3;
        let wt: Vec<bf16> = (0..n * ldw).map(|_| bf16::from_f32(normal())).collect();
        let init: Vec<f32> = (0..m * n).map(|_| normal()).collect();
        let mut out = if accumulate {
            init.clone()
        } else {
            vec![0.0; m * n]
        };
        // SAFETY: every buffer is sized for its shape and strides.
        unsafe {
            matmul(
                engine,
                m,
                n,
                k,
                MatMut {
                    ptr: out.as_mut_ptr(),
                    rs: n as isize,
                },
                accumulate,
                MatRef {
                    ptr: xs.as_ptr(),
                    rs: (k * cs) as isize,
                    cs: cs as isize,
                },
                &wt,
                ldw,
            );
        }
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut rounded, mut mag) = (0f64, 0f64, 0f64);
                for c in 0..k {
                    let x = xs[i * k * cs + c * cs];
                    let w = wt[j * ldw + c].to_f64();
                    exact += x as f64 * w;
                    rounded += bf16::from_f32(x).to_f64() * w;
                    mag += (x as f64 * w).abs();
                }
                let base = if accumulate {
                    init[i * n + j] as f64
                } else {
                    0.0
                };
                let got = out[i * n + j] as f64 - base;
                // Against the bf16-rounded inputs only f32 accumulation error remains; against
                // the f32 inputs, each x carries a rounding error of at most 2^-9 relative.
                let tight = 1e-5 * mag + 1e-5 * base.abs() + 1e-6;
                let loose = 2f64.powi(-8) * mag + tight;
                assert!(
                    (got - rounded).abs() <= tight && (got - exact).abs() <= loose,
                    "{engine:?} {m}x{n}x{k} acc={accumulate} at ({i},{j}): {got} vs {rounded} \
                     (rounded inputs), {exact} (f32 inputs)"
                );
            }
        }
    }

    #[test]
    fn bf16_product_matches_f64_reference_on_edge_shapes() {
        let engines = engines();
        if engines.is_empty() {
            eprintln!("note: no AMX-BF16 / AVX512-BF16 on this CPU; bf16 product test skipped");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (5, 7, 3),
            (16, 16, 32),
            (33, 47, 65),
            (31, 33, 31),
            (64, 96, 128),
            (70, 40, 384),
            (261, 100, 77),
        ];
        for engine in engines {
            for (s, &(m, n, k)) in shapes.iter().enumerate() {
                for accumulate in [false, true] {
                    run(engine, m, n, k, accumulate, s as u64);
                }
            }
        }
    }

    #[test]
    fn rounding_is_nearest_even_as_half() {
        if !avx512_bf16() {
            eprintln!("note: no AVX512-BF16 on this CPU; vector rounding test skipped");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut v: Vec<f32> = (0..100).map(|_| rng.random_range(-1e3f32..1e3)).collect();
        // Ties (exactly halfway between two bf16 values) both ways.
        v.extend([
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            -0.0,
            65504.0,
        ]);
        let mut got = vec![0u16; v.len()];
        // SAFETY: `v` holds `v.len()` values and the CPU has AVX512-BF16.
        unsafe { x86::round_row(v.as_ptr(), v.len(), &mut got) };
        for (x, g) in v.iter().zip(&got) {
            assert_eq!(*g, bf16::from_f32(*x).to_bits(), "{x}");
        }
    }
}
