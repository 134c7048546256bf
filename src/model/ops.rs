//! The tensor operations every block calls: the seam where faster kernels (issue #11) go.
//!
//! Blocks never call burn's `Linear`/`LayerNorm` forward or `attention` directly; they call
//! these, so a CPU kernel (or a fused CUDA one) replaces an op everywhere at once, for inference
//! and training alike. Each function must keep burn's autodiff semantics when `B` is an
//! autodiff backend.

use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

pub use super::activation::gelu_erf as gelu;

/// `x · w + b` over rows: `x` `[M, in]`, `w` `[in, out]`, `b` `[out]`.
#[inline]
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    module::linear(x, w, b)
}

/// Layer norm over the last dimension of rows `[M, D]`.
#[inline]
pub fn layer_norm<B: Backend>(norm: &LayerNorm<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    norm.forward(x)
}

/// Softmax attention `softmax(q kᵀ · scale) v` over `[N, heads, T, head_dim]`, no mask.
#[inline]
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
) -> Tensor<B, 4> {
    let options = AttentionModuleOptions {
        scale: Some(scale),
        softcap: None,
        is_causal: false,
    };
    module::attention(q, k, v, None, None, options)
}
