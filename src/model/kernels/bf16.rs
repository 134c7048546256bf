//! `out (+)= x · W` with `W` held in bf16 and `x` rounded to bf16, f32 accumulation: the
//! products of `backbone.dtype: bf16` on a CPU with AMX-BF16 or AVX512-BF16 (issue #11).
//!
//! The weight is the transpose of what the product multiplies by: `wt` `[N, K]`, `K`
//! contiguous, which is torch's own `[out, in]` layout. The loader keeps it that way (a burn
//! BF16 tensor whose `[in, out]` view is a stride swap), so burn's ops still read it correctly
//! and nothing is converted per call. Per call, each 32-column block of the weight is repacked
//! into the pair-interleaved ("VNNI") panels the instructions read (half the bytes the f32
//! kernel streams), and `x` is rounded to bf16 (round to nearest even) once, zero-padded.
//!
//! Engines, picked once per process ([`engine`]):
//! - AMX (`TDPBF16PS` on a 2×2 grid of 16×16 tiles, after asking Linux for the tile state
//!   with `arch_prctl`): one task per 32-column block, each packing its own panels.
//! - else AVX512-BF16 (`VDPBF16PS`, e.g. AMD Zen 4/5): a 14-row × 32-column register tile
//!   (28 accumulators, like the f32 kernel's 14×32 FMA tile, at twice the multiplies per
//!   instruction), its loop in inline assembly so the dev profile (opt-level 1, with bounds,
//!   overflow and alignment checks) runs the same instructions as release. `x` is packed in
//!   14-row tiles laid out so each row's pair is a broadcast at a fixed offset, the weight
//!   panels once per call, both into per-thread buffers reused between calls; tasks split
//!   rows as well as columns ([`split`]), so a 384-column product at batch 1 still has
//!   several tasks per core. Before this, a 4×32 tile written with an inner row loop ran at
//!   opt-level 1 with its accumulators on the stack, and bf16 was slower than f32 (issue #11).
//!
//! Neither: [`engine`] is `None` and the loader refuses bf16 on this CPU.

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

/// Rows and columns of one AMX task's block (two tiles each way); also the AVX512-BF16
/// column block.
const BLOCK: usize = 32;
/// `K` is padded to whole AMX tile rows of 32 bf16 values.
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
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                // SAFETY: row `r < m` of `dst` holds `n` values (caller's contract).
                unsafe { std::slice::from_raw_parts_mut(dst.ptr.offset(r as isize * dst.rs), n) }
                    .fill(0.0);
            }
        }
        return;
    }
    match engine {
        // SAFETY: forwarded from the caller.
        Engine::Amx => unsafe { matmul_amx(m, n, k, dst, accumulate, x, wt, ldw) },
        // SAFETY: forwarded from the caller.
        Engine::Avx512Bf16 => unsafe { matmul_avx512(m, n, k, dst, accumulate, x, wt, ldw) },
    }
}

/// [`matmul`] on AMX: one task per 32-column block, each packing its own weight panels.
///
/// # Safety
/// As [`matmul`], with `m, n, k > 0` and AMX usable.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_amx(
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut,
    accumulate: bool,
    x: MatRef,
    wt: &[bf16],
    ldw: usize,
) {
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
        unsafe { x86::amx_block(&block, ptr, rs) }
    };
    let blocks = n.div_ceil(BLOCK);
    if m * n * k >= 64 * 64 * 64 && blocks > 1 {
        (0..blocks).into_par_iter().for_each(job);
    } else {
        (0..blocks).for_each(job);
    }
}

/// Rows of the AVX512-BF16 register tile: 14 rows × 32 columns = 28 accumulators, plus two
/// weight vectors and two broadcast `x` pairs, 32 of the 32 zmm registers.
const MR: usize = 14;
/// `x` pairs per packed chunk: 16 `k` values, 32 bytes of one row.
const CHUNK_PAIRS: usize = 8;
/// `k` values per packed chunk.
const CHUNK_K: usize = 2 * CHUNK_PAIRS;
/// Bytes of packed `x` one task keeps in L2 while it runs its column blocks against them.
const TASK_X_BYTES: usize = 192 << 10;
/// 32-column blocks per task: each task reads its `x` rows from memory once per this many.
const TASK_BLOCKS: usize = 4;
/// Packing buffers kept per thread between calls up to this many `u32` (64 MiB): larger
/// products (big batches) allocate afresh rather than pin the memory.
const KEEP_SCRATCH: usize = 16 << 20;

thread_local! {
    /// The calling thread's packed `x` tiles and weight panels, reused between calls.
    static SCRATCH: std::cell::RefCell<(Vec<u32>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` on this thread's packing buffers, or on fresh ones when they are in use (a rayon
/// worker that stole another product while waiting inside this one).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u32>, &mut Vec<u32>) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            let (xs, ws) = &mut *s;
            let r = f(xs, ws);
            for v in [xs, ws] {
                if v.capacity() > KEEP_SCRATCH {
                    *v = Vec::new();
                }
            }
            r
        }
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    })
}

/// How a product is split into `(row parts, column parts)` tasks: column parts of
/// [`TASK_BLOCKS`] blocks, row parts whose packed `x` fits [`TASK_X_BYTES`], then both
/// refined until there are four tasks per thread (so two cores stay busy to the end even
/// when `n` has only a few blocks, e.g. a 384-wide projection at batch 1).
fn split(tiles: usize, blocks: usize, tile_bytes: usize, threads: usize) -> (usize, usize) {
    let mut cols = blocks.div_ceil(TASK_BLOCKS);
    let mut rows = (tiles * tile_bytes).div_ceil(TASK_X_BYTES).clamp(1, tiles);
    let want = 4 * threads;
    if rows * cols < want {
        rows = want.div_ceil(cols).clamp(rows, tiles);
    }
    if rows * cols < want {
        cols = want.div_ceil(rows).clamp(cols, blocks);
    }
    (rows, cols)
}

/// [`matmul`] on AVX512-BF16. `x` is packed once into 14-row tiles and the weight once into
/// 32-column panels (both per call, into reused buffers); tasks then take a range of row
/// tiles × a range of column blocks ([`split`]) and run the 14×32 register tile over them,
/// column block outermost so each weight panel is reused over the task's rows.
///
/// # Safety
/// As [`matmul`], with `m, n, k > 0` and AVX512-BF16 present.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul_avx512(
    m: usize,
    n: usize,
    k: usize,
    dst: MatMut,
    accumulate: bool,
    x: MatRef,
    wt: &[bf16],
    ldw: usize,
) {
    let kp = k.div_ceil(CHUNK_K) * CHUNK_K;
    let pairs = kp / 2;
    let tiles = m.div_ceil(MR);
    let blocks = n.div_ceil(BLOCK);
    let (tile_len, block_len) = (pairs * MR, pairs * BLOCK);
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && m * n * k >= 64 * 64 * 64;
    with_scratch(|xs, ws| {
        if xs.len() < tiles * tile_len {
            xs.resize(tiles * tile_len, 0);
        }
        if ws.len() < blocks * block_len {
            ws.resize(blocks * block_len, 0);
        }
        let (xs, ws) = (&mut xs[..tiles * tile_len], &mut ws[..blocks * block_len]);
        let src = SendPtr(x.ptr as *mut f32, x.rs);
        let pack_tile = |(t, tile): (usize, &mut [u32])| {
            let (ptr, rs) = src.get();
            // SAFETY: rows `t*MR..` below `m` of `x` are valid for `k` values (caller).
            unsafe { pack_x_tile(m, k, ptr, rs, x.cs, t, tile) }
        };
        let pack_block = |(nb, panels): (usize, &mut [u32])| {
            pack_w_into(wt, ldw, n, k, pairs, nb * BLOCK, panels)
        };
        if parallel {
            xs.par_chunks_mut(tile_len).enumerate().for_each(pack_tile);
            ws.par_chunks_mut(block_len)
                .enumerate()
                .for_each(pack_block);
        } else {
            xs.chunks_mut(tile_len).enumerate().for_each(pack_tile);
            ws.chunks_mut(block_len).enumerate().for_each(pack_block);
        }
        let (row_parts, col_parts) = if parallel {
            split(tiles, blocks, tile_len * 4, threads)
        } else {
            (1, 1)
        };
        let (xs, ws) = (&*xs, &*ws);
        let dst = SendPtr(dst.ptr, dst.rs);
        let task = |task: usize| {
            #[cfg(test)]
            super::testing::touched();
            let (rp, cp) = (task % row_parts, task / row_parts);
            let tile_range = tiles * rp / row_parts..tiles * (rp + 1) / row_parts;
            let block_range = blocks * cp / col_parts..blocks * (cp + 1) / col_parts;
            let (ptr, rs) = dst.get();
            for nb in block_range {
                let n0 = nb * BLOCK;
                let masks: [u16; 2] = std::array::from_fn(|j| {
                    let cols = n.saturating_sub(n0 + 16 * j).min(16);
                    ((1u32 << cols) - 1) as u16
                });
                let panels = &ws[nb * block_len..(nb + 1) * block_len];
                for t in tile_range.clone() {
                    let live = (m - t * MR).min(MR);
                    // SAFETY: the tile and panels are whole packed buffers of `pairs` pairs;
                    // rows t*MR..t*MR+live and the masked columns of block `nb` are inside
                    // `dst`, and no other task writes them (disjoint tile and block ranges).
                    unsafe {
                        x86::avx512_tile(
                            pairs / CHUNK_PAIRS,
                            xs[t * tile_len..].as_ptr(),
                            panels.as_ptr(),
                            panels[pairs * 16..].as_ptr(),
                            ptr.offset((t * MR) as isize * rs).add(n0),
                            rs,
                            live,
                            masks,
                            accumulate,
                        )
                    }
                }
            }
        };
        if row_parts * col_parts > 1 {
            (0..row_parts * col_parts).into_par_iter().for_each(task);
        } else {
            task(0);
        }
    });
}

/// Packs row tile `t` of `x` (rows `t*MR..`, zero past `m`) rounded to bf16: chunk `c` of
/// row `i` (its `k` values `16c..16c+16`, zero past `k`) is the 8 `u32` pairs at
/// `tile[(c*MR + i)*8..]`, so the kernel broadcasts row `i`'s pair from a fixed offset.
///
/// # Safety
/// Rows below `m` of `x` (at `ptr`, strides `rs`, `cs`) valid for `k` values; `tile` holds
/// `kp/2 * MR` values.
unsafe fn pack_x_tile(
    m: usize,
    k: usize,
    ptr: *mut f32,
    rs: isize,
    cs: isize,
    t: usize,
    tile: &mut [u32],
) {
    let chunks = tile.len() / (MR * CHUNK_PAIRS);
    for i in 0..MR {
        let r = t * MR + i;
        if r >= m {
            for c in 0..chunks {
                tile[(c * MR + i) * CHUNK_PAIRS..][..CHUNK_PAIRS].fill(0);
            }
            continue;
        }
        // SAFETY: row `r < m` of `x` is valid for `k` elements at stride `cs`.
        let p = unsafe { ptr.offset(r as isize * rs) } as *const f32;
        if cs == 1 && avx512_bf16() {
            // SAFETY: the row is contiguous, `tile` holds every chunk, the CPU has AVX512-BF16.
            unsafe {
                x86::round_chunks(p, k, chunks, MR * CHUNK_PAIRS, &mut tile[i * CHUNK_PAIRS..])
            };
        } else {
            // SAFETY: element `c < k` of the row.
            let at = |c: usize| bf16::from_f32(unsafe { *p.offset(c as isize * cs) }).to_bits();
            for q in 0..chunks * CHUNK_PAIRS {
                let (lo, hi) = (2 * q, 2 * q + 1);
                let lo = if lo < k { at(lo) } else { 0 };
                let hi = if hi < k { at(hi) } else { 0 };
                tile[((q / CHUNK_PAIRS) * MR + i) * CHUNK_PAIRS + q % CHUNK_PAIRS] =
                    lo as u32 | (hi as u32) << 16;
            }
        }
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
    let mut panels = vec![0u32; kp * 16];
    pack_w_into(wt, ldw, n, k, kp / 2, n0, &mut panels);
    panels
}

/// [`pack_w`] into `panels` (two panels of `rows` pair rows of 16), every value written:
/// zero outside `k × n`, so a reused buffer holds nothing stale.
fn pack_w_into(
    wt: &[bf16],
    ldw: usize,
    n: usize,
    k: usize,
    rows: usize,
    n0: usize,
    panels: &mut [u32],
) {
    for (j, panel) in panels.chunks_exact_mut(rows * 16).enumerate() {
        let c0 = n0 + 16 * j;
        let cols = n.saturating_sub(c0).min(16);
        if cols == 0 {
            panel.fill(0);
            continue;
        }
        // Whole pairs with one gather per panel row (every engine implies AVX-512F); masked
        // lanes are written as zero.
        // SAFETY: columns c0..c0+cols are rows of `wt` (length checked in `matmul`), each read
        // for its first `2 * (k / 2) <= k` values; the panel holds `rows >= k / 2` rows.
        unsafe { x86::gather_pairs(wt[c0 * ldw..].as_ptr(), ldw, cols, k / 2, panel) };
        panel[(k / 2) * 16..].fill(0);
        if k % 2 == 1 {
            for c in 0..cols {
                panel[(k / 2) * 16 + c] = wt[(c0 + c) * ldw + k - 1].to_bits() as u32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{Block, BLOCK, MR};

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

    /// Rounds one row of `x` to bf16 in 16-value chunks: chunk `c` (values `16c..16c+16` of
    /// `src`, zero past `len`) is written as 8 `u32` pairs at `dst[c * stride..]`.
    ///
    /// # Safety
    /// `src` valid for `len` reads; `dst` holds `(chunks - 1) * stride + 8` values and
    /// `chunks * 16 >= len`; the CPU has AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_chunks(
        src: *const f32,
        len: usize,
        chunks: usize,
        stride: usize,
        dst: &mut [u32],
    ) {
        assert!(chunks * 16 >= len && (chunks == 0 || dst.len() >= (chunks - 1) * stride + 8));
        for c in 0..chunks {
            let take = len.saturating_sub(16 * c).min(16);
            let mask = ((1u32 << take) - 1) as u16;
            // SAFETY: the masked load reads only the `take` valid values; the store writes 8
            // values inside `dst` (asserted above).
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, src.wrapping_add(16 * c));
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(dst.as_mut_ptr().add(c * stride) as *mut __m256i, h);
            }
        }
    }

    /// One 14 × 32 tile of `dst` on AVX512-BF16: `c[0..live, cols] (+)= x_tile · panels`,
    /// over `chunks` chunks of 8 pairs. `a` is a packed `x` tile (see `pack_x_tile`), `w0` and
    /// `w1` the two 16-column panels of a block, `masks` their valid columns.
    ///
    /// The loop is inline assembly so that every profile (the dev profile included) keeps the
    /// 28 accumulators in zmm0-27 and issues per pair step just 2 panel loads, 14 broadcasts
    /// and 28 `VDPBF16PS`, with no bounds or alignment checks in between.
    ///
    /// # Safety
    /// `a` valid for `chunks * 112` values, `w0` and `w1` for `chunks * 128`; `c` valid for
    /// rows `0..live` (`ldc` apart) in the columns `masks` select; `chunks >= 1`; the CPU has
    /// AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn avx512_tile(
        chunks: usize,
        a: *const u32,
        w0: *const u32,
        w1: *const u32,
        c: *mut f32,
        ldc: isize,
        live: usize,
        masks: [u16; 2],
        accumulate: bool,
    ) {
        debug_assert!(chunks >= 1 && live <= MR);
        // The tile's rows of `dst` are read (residual products) or written only after the
        // loop: fetch them now, behind its thousands of cycles (a batch-8 forward spent a
        // fifth of this kernel waiting on those loads).
        for r in 0..live {
            let row = c.wrapping_offset(r as isize * ldc) as *const i8;
            // 128 bytes: two cache lines, three when unaligned.
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(127));
        }
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        // SAFETY: reads stay inside the packed tile and panels (caller); registers named
        // here are declared clobbered or in/out.
        unsafe {
            asm!(
                "2:",
                "mov {q:e}, 8",
                "3:",
                "vmovdqu32 zmm28, zmmword ptr [{w0}]",
                "vmovdqu32 zmm29, zmmword ptr [{w1}]",
                "vpbroadcastd zmm30, dword ptr [{a} + 0]",
                "vdpbf16ps zmm0, zmm30, zmm28",
                "vdpbf16ps zmm1, zmm30, zmm29",
                "vpbroadcastd zmm31, dword ptr [{a} + 32]",
                "vdpbf16ps zmm2, zmm31, zmm28",
                "vdpbf16ps zmm3, zmm31, zmm29",
                "vpbroadcastd zmm30, dword ptr [{a} + 64]",
                "vdpbf16ps zmm4, zmm30, zmm28",
                "vdpbf16ps zmm5, zmm30, zmm29",
                "vpbroadcastd zmm31, dword ptr [{a} + 96]",
                "vdpbf16ps zmm6, zmm31, zmm28",
                "vdpbf16ps zmm7, zmm31, zmm29",
                "vpbroadcastd zmm30, dword ptr [{a} + 128]",
                "vdpbf16ps zmm8, zmm30, zmm28",
                "vdpbf16ps zmm9, zmm30, zmm29",
                "vpbroadcastd zmm31, dword ptr [{a} + 160]",
                "vdpbf16ps zmm10, zmm31, zmm28",
                "vdpbf16ps zmm11, zmm31, zmm29",
                "vpbroadcastd zmm30, dword ptr [{a} + 192]",
                "vdpbf16ps zmm12, zmm30, zmm28",
                "vdpbf16ps zmm13, zmm30, zmm29",
                "vpbroadcastd zmm31, dword ptr [{a} + 224]",
                "vdpbf16ps zmm14, zmm31, zmm28",
                "vdpbf16ps zmm15, zmm31, zmm29",
                "vpbroadcastd zmm30, dword ptr [{a} + 256]",
                "vdpbf16ps zmm16, zmm30, zmm28",
                "vdpbf16ps zmm17, zmm30, zmm29",
                "vpbroadcastd zmm31, dword ptr [{a} + 288]",
                "vdpbf16ps zmm18, zmm31, zmm28",
                "vdpbf16ps zmm19, zmm31, zmm29",
                "vpbroadcastd zmm30, dword ptr [{a} + 320]",
                "vdpbf16ps zmm20, zmm30, zmm28",
                "vdpbf16ps zmm21, zmm30, zmm29",
                "vpbroadcastd zmm31, dword ptr [{a} + 352]",
                "vdpbf16ps zmm22, zmm31, zmm28",
                "vdpbf16ps zmm23, zmm31, zmm29",
                "vpbroadcastd zmm30, dword ptr [{a} + 384]",
                "vdpbf16ps zmm24, zmm30, zmm28",
                "vdpbf16ps zmm25, zmm30, zmm29",
                "vpbroadcastd zmm31, dword ptr [{a} + 416]",
                "vdpbf16ps zmm26, zmm31, zmm28",
                "vdpbf16ps zmm27, zmm31, zmm29",
                "add {a}, 4",
                "add {w0}, 64",
                "add {w1}, 64",
                "dec {q:e}",
                "jnz 3b",
                "add {a}, 416",
                "dec {kc}",
                "jnz 2b",
                a = inout(reg) a => _,
                w0 = inout(reg) w0 => _,
                w1 = inout(reg) w1 => _,
                kc = inout(reg) chunks => _,
                q = out(reg) _,
                inout("zmm0") acc[0],
                inout("zmm1") acc[1],
                inout("zmm2") acc[2],
                inout("zmm3") acc[3],
                inout("zmm4") acc[4],
                inout("zmm5") acc[5],
                inout("zmm6") acc[6],
                inout("zmm7") acc[7],
                inout("zmm8") acc[8],
                inout("zmm9") acc[9],
                inout("zmm10") acc[10],
                inout("zmm11") acc[11],
                inout("zmm12") acc[12],
                inout("zmm13") acc[13],
                inout("zmm14") acc[14],
                inout("zmm15") acc[15],
                inout("zmm16") acc[16],
                inout("zmm17") acc[17],
                inout("zmm18") acc[18],
                inout("zmm19") acc[19],
                inout("zmm20") acc[20],
                inout("zmm21") acc[21],
                inout("zmm22") acc[22],
                inout("zmm23") acc[23],
                inout("zmm24") acc[24],
                inout("zmm25") acc[25],
                inout("zmm26") acc[26],
                inout("zmm27") acc[27],
                out("zmm28") _,
                out("zmm29") _,
                out("zmm30") _,
                out("zmm31") _,
                options(nostack, readonly),
            );
        }
        for (r, pair) in acc.chunks_exact(2).take(live).enumerate() {
            // SAFETY: row `r < live` of the tile is inside `dst` in the masked columns.
            unsafe {
                let row = c.offset(r as isize * ldc);
                let (mut lo, mut hi) = (pair[0], pair[1]);
                if accumulate {
                    lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(masks[0], row));
                    hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(masks[1], row.wrapping_add(16)));
                }
                _mm512_mask_storeu_ps(row, masks[0], lo);
                _mm512_mask_storeu_ps(row.wrapping_add(16), masks[1], hi);
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
    pub unsafe fn round_chunks(_: *const f32, _: usize, _: usize, _: usize, _: &mut [u32]) {
        unreachable!("no bf16 engine on this architecture")
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn avx512_tile(
        _: usize,
        _: *const u32,
        _: *const u32,
        _: *const u32,
        _: *mut f32,
        _: isize,
        _: usize,
        _: [u16; 2],
        _: bool,
    ) {
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
            // One row past a 14-row tile; `k` one past a 16-value chunk.
            (15, 33, 17),
            // Long `k`: 3 row tiles (the last with one row), a column edge in block 3.
            (29, 65, 1600),
            // Split into 3 row parts × 3 column parts of uneven sizes, 2-row edge tile.
            (100, 300, 1000),
        ];
        for engine in engines {
            for (s, &(m, n, k)) in shapes.iter().enumerate() {
                for accumulate in [false, true] {
                    run(engine, m, n, k, accumulate, s as u64);
                }
            }
        }
    }

    /// A ViT-sized product on a 2-thread pool runs on both threads (the AVX512-BF16 product
    /// once split over 32-column blocks only and ran a batch-8 forward at 1.0 cores busy).
    #[test]
    fn large_avx512_product_runs_on_more_than_one_thread() {
        if !engines().contains(&Engine::Avx512Bf16) {
            eprintln!("note: no AVX512-BF16 on this CPU; thread test skipped");
            return;
        }
        let (m, n, k) = (261, 384, 1536);
        let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let wt: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32((i % 5) as f32)).collect();
        let mut out = vec![0f32; m * n];
        let used = crate::model::kernels::testing::threads_used("bf16-test", || {
            // SAFETY: buffers match the shapes.
            unsafe {
                matmul(
                    Engine::Avx512Bf16,
                    m,
                    n,
                    k,
                    MatMut {
                        ptr: out.as_mut_ptr(),
                        rs: n as isize,
                    },
                    false,
                    MatRef {
                        ptr: x.as_ptr(),
                        rs: k as isize,
                        cs: 1,
                    },
                    &wt,
                    k,
                )
            }
        });
        assert!(used >= 2, "product ran on {used} thread(s)");
    }

    /// Task splits stay inside the product, keep each row part's `x` within the L2 budget
    /// where rows allow, and give every thread several tasks where the shape allows.
    #[test]
    fn split_bounds() {
        for tiles in 1..40 {
            for blocks in 1..60 {
                for tile_bytes in [1 << 10, 10 << 10, 43 << 10, 300 << 10] {
                    let (rows, cols) = split(tiles, blocks, tile_bytes, 2);
                    assert!((1..=tiles).contains(&rows) && (1..=blocks).contains(&cols));
                    assert!(rows * cols >= (tiles * blocks).min(8), "{tiles} {blocks}");
                    if tile_bytes <= TASK_X_BYTES {
                        assert!(tiles.div_ceil(rows) * tile_bytes <= 2 * TASK_X_BYTES);
                    }
                }
            }
        }
    }

    /// One-thread speed of the AVX512-BF16 product against the f32 one (`gemm::matmul`) on the
    /// ViT-S shapes at batch 1 and 8, timed alternately (median of 15); prints GFLOP/s.
    /// `cargo test --lib bf16_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn bf16_speed_vs_f32() {
        assert!(
            engines().contains(&Engine::Avx512Bf16),
            "no AVX512-BF16 on this CPU"
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for &(m, n, k) in &[
            (261, 1152, 384),
            (261, 384, 384),
            (261, 1536, 384),
            (261, 384, 1536),
            (2088, 1152, 384),
            (2088, 384, 1536),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
            let w: Vec<f32> = (0..k * n).map(|i| (i % 11) as f32 / 5.0 - 1.0).collect();
            let wt: Vec<bf16> = (0..n * k)
                .map(|i| bf16::from_f32(w[(i % k) * n + i / k]))
                .collect();
            let mut out = vec![0f32; m * n];
            let run = |bf: bool, out: &mut [f32]| {
                let t = std::time::Instant::now();
                // SAFETY: buffers match the shapes.
                pool.install(|| unsafe {
                    let dst = MatMut {
                        ptr: out.as_mut_ptr(),
                        rs: n as isize,
                    };
                    let lhs = MatRef {
                        ptr: x.as_ptr(),
                        rs: k as isize,
                        cs: 1,
                    };
                    if bf {
                        matmul(Engine::Avx512Bf16, m, n, k, dst, false, lhs, &wt, k)
                    } else {
                        let rhs = MatRef {
                            ptr: w.as_ptr(),
                            rs: n as isize,
                            cs: 1,
                        };
                        super::super::gemm::matmul(m, n, k, dst, false, lhs, rhs, false)
                    }
                });
                t.elapsed().as_secs_f64()
            };
            let (b, f) =
                crate::model::kernels::testing::alternated_medians(15, |bf| run(bf, &mut out));
            let flops = 2.0 * (m * n * k) as f64;
            println!(
                "{m}x{n}x{k}: bf16 {:.0} GFLOP/s, f32 {:.0} GFLOP/s ({:.2}x)",
                flops / b / 1e9,
                flops / f / 1e9,
                f / b
            );
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
        // The chunked form: 8 pairs per chunk, chunks `stride` apart, zero past the row.
        let (chunks, stride) = (v.len().div_ceil(16), 24);
        let mut packed = vec![u32::MAX; chunks * stride];
        // SAFETY: as above; `packed` holds every chunk.
        unsafe { x86::round_chunks(v.as_ptr(), v.len(), chunks, stride, &mut packed) };
        for c in 0..chunks * 16 {
            let word = packed[(c / 16) * stride + (c % 16) / 2];
            let bits = (word >> (16 * (c % 2))) as u16;
            let want = v.get(c).map_or(0, |x| bf16::from_f32(*x).to_bits());
            assert_eq!(bits, want, "value {c}");
        }
    }
}
