//! `f32` matrix products through the `gemm` crate (the one burn-flex uses), with strides so
//! that views (a head's columns of a fused q|k|v, a transposed key) are read in place.

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

/// `dst = (accumulate ? dst : 0) + scale · lhs · rhs` for `lhs` `m×k`, `rhs` `k×n`.
/// `threads`: let gemm split the product over the rayon pool when it is large enough.
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
    scale: f32,
    threads: bool,
) {
    let parallelism = if threads && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_FLOPS {
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
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}
