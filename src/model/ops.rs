//! The tensor operations every block calls: the seam where faster kernels go (issue #11).
//!
//! Blocks never call burn's `Linear`/`LayerNorm` forward or `attention` directly; they call
//! these, so a kernel replaces an op everywhere at once. Each op goes through [`Kernels`], a
//! backend extension trait whose default methods are burn's own (differentiable) ops. burn-flex
//! ([`crate::backend::Cpu`]) has a specialised implementation ([`super::kernels`]) with fused
//! host kernels, and so does `Autodiff<Cpu>` (custom autodiff ops whose forward and backward
//! run those kernels, [`super::kernels::autodiff`]); every other backend takes the defaults. [`kernels`] picks the implementation for `B` without adding a bound to
//! every generic caller.

use std::any::Any;

use burn::module::Param;
use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

pub use super::activation::gelu_erf as gelu;
use super::activation::Activation;

/// Token layout of a self-attention call: `n` images of `t` tokens, `heads` heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub n: usize,
    pub t: usize,
    pub heads: usize,
}

/// RoPE tables of one input size, flattened to `[1, patches * head_dim]` (every elementwise op
/// then broadcasts over rows of a 2D tensor, which burn-flex runs far faster than a 4D
/// broadcast). The first `prefix` tokens (CLS, registers) are not rotated.
pub struct Rope<B: Backend> {
    pub cos: Tensor<B, 2>,
    /// `sin` with its first half negated, so `rotate_half(x) * sin` becomes
    /// `swap_halves(x) * sin_signed` (negation is exact, the result is bit-identical).
    pub sin_signed: Tensor<B, 2>,
    pub prefix: usize,
}

impl<B: Backend> Rope<B> {
    /// RoPE on the patch tokens of `x` `[N, H, T, hd]` with burn ops.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, h, t, hd] = x.dims();
        let prefix = self.prefix;
        let hw = t - prefix;
        let head = x.clone().narrow(2, 0, prefix);
        let patches = x.narrow(2, prefix, hw);
        let swapped = Tensor::cat(
            vec![
                patches.clone().narrow(3, hd / 2, hd / 2),
                patches.clone().narrow(3, 0, hd / 2),
            ],
            3,
        );
        let flat = |v: Tensor<B, 4>| v.reshape([n * h, hw * hd]);
        let rotated = flat(patches) * self.cos.clone() + flat(swapped) * self.sin_signed.clone();
        Tensor::cat(vec![head, rotated.reshape([n, h, hw, hd])], 2)
    }
}

/// Operations a backend may run faster than burn's generic composition. The defaults are
/// burn's ops; an implementation must give the same results up to float rounding.
pub trait Kernels<B: Backend>: Sync {
    /// `x · w + b` over rows: `x` `[M, in]`, `w` `[in, out]`, `b` `[out]`.
    fn linear(&self, x: Tensor<B, 2>, w: Tensor<B, 2>, b: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
        module::linear(x, w, b)
    }

    /// `act(x · w + b)`.
    fn linear_act(
        &self,
        x: Tensor<B, 2>,
        w: Tensor<B, 2>,
        b: Option<Tensor<B, 1>>,
        act: Activation,
    ) -> Tensor<B, 2> {
        act.apply(self.linear(x, w, b))
    }

    /// `residual + x · w + b`.
    fn linear_add(
        &self,
        x: Tensor<B, 2>,
        w: Tensor<B, 2>,
        b: Option<Tensor<B, 1>>,
        residual: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        residual + self.linear(x, w, b)
    }

    /// Multi-head self-attention of a fused projection `qkv` `[N·T, 3·D]` (q | k | v), scaled
    /// by `1/√head_dim`, with RoPE on q and k when given; the context `[N·T, D]`, heads side by
    /// side as `transformers` concatenates them.
    fn self_attention(
        &self,
        qkv: Tensor<B, 2>,
        shape: AttnShape,
        rope: Option<&Rope<B>>,
    ) -> Tensor<B, 2> {
        let AttnShape { n, t, heads } = shape;
        let d = qkv.dims()[1] / 3;
        let hd = d / heads;
        let split = |i: usize| {
            qkv.clone()
                .narrow(1, i * d, d)
                .reshape([n, t, heads, hd])
                .swap_dims(1, 2)
        };
        let (mut q, mut k) = (split(0), split(1));
        if let Some(r) = rope {
            q = r.apply(q);
            k = r.apply(k);
        }
        attention(q, k, split(2), 1.0 / (hd as f64).sqrt())
            .swap_dims(1, 2)
            .reshape([n * t, d])
    }
}

/// burn's ops, for every backend without kernels of its own.
struct BurnOps;

impl<B: Backend> Kernels<B> for BurnOps {}

/// The kernels for backend `B`: burn-flex's own for [`crate::backend::Cpu`], custom autodiff
/// ops over the same kernels for `Autodiff<Cpu>` (both checkpoint strategies `finetune` uses;
/// see [`super::kernels::autodiff`]), burn's ops for every other backend (CUDA, ndarray,
/// candle, their autodiff wrappers).
pub fn kernels<B: Backend>() -> &'static dyn Kernels<B> {
    use super::kernels::{autodiff::AutodiffKernels, FlexKernels};
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
    use burn::backend::{Autodiff, Flex};
    let flex: &'static dyn Kernels<Flex> = &FlexKernels;
    let ad: &'static dyn Kernels<Autodiff<Flex, NoCheckpointing>> = &AutodiffKernels;
    let balanced: &'static dyn Kernels<Autodiff<Flex, BalancedCheckpointing>> = &AutodiffKernels;
    // Each cast succeeds exactly when `B` is that backend.
    let candidates: [&dyn Any; 3] = [&flex, &ad, &balanced];
    let found = candidates
        .into_iter()
        .find_map(|k| k.downcast_ref::<&'static dyn Kernels<B>>().copied());
    found.unwrap_or(&BurnOps)
}

/// `x · w + b` over rows: `x` `[M, in]`, `w` `[in, out]`, `b` `[out]`.
#[inline]
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    kernels::<B>().linear(x, w, b)
}

/// `act(x · w + b)` (bias and activation fused into the product where the backend can).
#[inline]
pub fn linear_act<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 1>>,
    act: Activation,
) -> Tensor<B, 2> {
    kernels::<B>().linear_act(x, w, b, act)
}

/// `residual + x · w + b` (the residual and bias become the product's accumulator where the
/// backend can).
#[inline]
pub fn linear_add<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 1>>,
    residual: Tensor<B, 2>,
) -> Tensor<B, 2> {
    kernels::<B>().linear_add(x, w, b, residual)
}

/// See [`Kernels::self_attention`].
#[inline]
pub fn self_attention<B: Backend>(
    qkv: Tensor<B, 2>,
    shape: AttnShape,
    rope: Option<&Rope<B>>,
) -> Tensor<B, 2> {
    kernels::<B>().self_attention(qkv, shape, rope)
}

/// Layer norm over the last dimension of rows `[M, D]` (burn-flex's own is already a single
/// SIMD pass per row over the rayon pool).
#[inline]
pub fn layer_norm<B: Backend>(norm: &LayerNorm<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    norm.forward(x)
}

/// `x * scale` per column when the layer scale is a parameter of its own (unfolded, training).
pub fn scaled<B: Backend>(x: Tensor<B, 2>, scale: &Option<Param<Tensor<B, 1>>>) -> Tensor<B, 2> {
    match scale {
        Some(s) => x * s.val().unsqueeze::<2>(),
        None => x,
    }
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
