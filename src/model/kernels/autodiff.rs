//! [`Kernels`] for burn-flex under autodiff (`sv72 finetune` on the CPU, issue #11): the
//! linear ops are custom autodiff ops whose forward is the fused host kernel of
//! [`super::linear_host`] and whose backward runs on the same `gemm`:
//! `dX = dY·Wᵀ`, `dW = Xᵀ·dY`, `db = Σrows dY`, `dR = dY`, each only for an input that
//! requires a gradient (a frozen weight gets no `dW`), and GELU's derivative applied to `dY`
//! first for `linear_act`. Self-attention likewise runs the fused forward of
//! [`attention::self_attention`] and a backward over the fused `qkv`
//! ([`attention::self_attention_backward`]). burn's composition runs the same products on
//! burn-flex's generic matmul, which kept about 1.3 of 2 cores busy, plus a pass per bias add,
//! GELU, head split and transpose.
//!
//! What a backward needs is kept in the op's state (the tensors, not checkpoint ids), so the op
//! behaves the same under every checkpoint strategy: it is compute bound and never recomputed.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::BackendTypes;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::super::activation::Activation;
use super::super::ops::{AttnShape, Kernels, Rope};
use super::attention;
use super::gemm::{self, MatMut, MatRef};
use super::{contiguous, f32_slice, linear_host, math, owned, Epilogue, CHUNK};

/// burn-flex under autodiff with checkpoint strategy `C`.
type Ad<C> = Autodiff<Flex, C>;
/// Its tensor primitive (burn-autodiff's `AutodiffTensor<Flex>`: a host tensor and its node).
type AdPrim<C> = <Ad<C> as BackendTypes>::FloatTensorPrimitive;

/// The autodiff kernels, for every checkpoint strategy.
pub struct AutodiffKernels;

fn prim<C: CheckpointStrategy, const D: usize>(t: Tensor<Ad<C>, D>) -> AdPrim<C> {
    t.into_primitive().tensor()
}

fn tensor<C: CheckpointStrategy, const D: usize>(t: AdPrim<C>) -> Tensor<Ad<C>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// What the backward of one linear op needs; tensors only where a gradient needs them.
#[derive(Clone, Debug)]
struct LinearState {
    /// The input (possibly a strided view), kept when the weight requires a gradient.
    x: Option<FlexTensor>,
    /// The weight `[in, out]`, contiguous, kept when the input requires a gradient.
    w: Option<FlexTensor>,
    /// Pre-activations `x·w + b` for GELU's derivative (`linear_act` only).
    z: Option<FlexTensor>,
    /// Whether parents hold a bias slot (after `x`, `w`) and a residual slot (last).
    bias: bool,
    residual: bool,
}

/// The backward of `[residual +] act(x·w [+ b])` with parents `[x, w, (b), (residual)]`.
#[derive(Debug)]
struct LinearBackward;

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    type State = LinearState;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let s = ops.state;
        let mut parents = ops.parents.into_iter();
        let px = parents.next().flatten();
        let pw = parents.next().flatten();
        let pb = if s.bias {
            parents.next().flatten()
        } else {
            None
        };
        let pr = if s.residual {
            parents.next().flatten()
        } else {
            None
        };
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let [m, n] = dy.layout().shape().dims::<2>();
        if let Some(r) = pr {
            grads.register::<Flex>(r.id, dy.clone());
        }
        // Gradient at the pre-activation.
        let dz = match &s.z {
            Some(z) => {
                let mut values = f32_slice(&dy).to_vec();
                values
                    .par_chunks_mut(CHUNK)
                    .zip(f32_slice(z).par_chunks(CHUNK))
                    .for_each(|(d, z)| math::gelu_backward(d, z));
                owned(values, [m, n])
            }
            None => dy,
        };
        let dzs = f32_slice(&dz);
        if let Some(b) = pb {
            grads.register::<Flex>(b.id, column_sums(dzs, m, n));
        }
        if let Some(x) = px {
            let w = s.w.as_ref().expect("weight kept for the input gradient");
            let k = w.layout().shape()[0];
            let mut dx = vec![0f32; m * k];
            // SAFETY: dz is contiguous m×n, w contiguous k×n (read as wᵀ, n×k), dx fresh m×k.
            unsafe {
                gemm::matmul(
                    m,
                    k,
                    n,
                    MatMut {
                        ptr: dx.as_mut_ptr(),
                        rs: k as isize,
                    },
                    false,
                    MatRef {
                        ptr: dzs.as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    },
                    MatRef {
                        ptr: f32_slice(w).as_ptr(),
                        rs: 1,
                        cs: n as isize,
                    },
                    true,
                );
            }
            grads.register::<Flex>(x.id, owned(dx, [m, k]));
        }
        if let Some(w) = pw {
            let x = s.x.as_ref().expect("input kept for the weight gradient");
            let (xm, k, x_rs, x_cs) = x.layout().as_2d_strides().expect("linear input is 2D");
            assert_eq!(xm, m, "linear backward: input rows vs gradient rows");
            let xs: &[f32] = x.storage();
            let mut dw = vec![0f32; k * n];
            // SAFETY: x is m×k at its offset and strides (read as xᵀ, k×m), dz contiguous m×n,
            // dw fresh k×n.
            unsafe {
                gemm::matmul(
                    k,
                    n,
                    m,
                    MatMut {
                        ptr: dw.as_mut_ptr(),
                        rs: n as isize,
                    },
                    false,
                    MatRef {
                        ptr: xs.as_ptr().add(x.layout().start_offset()),
                        rs: x_cs,
                        cs: x_rs,
                    },
                    MatRef {
                        ptr: dzs.as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    },
                    true,
                );
            }
            grads.register::<Flex>(w.id, owned(dw, [k, n]));
        }
    }
}

/// `Σ_rows` of a contiguous `m×n` matrix, as a `[n]` tensor (fixed row blocks summed in order,
/// so the result does not depend on the thread count).
fn column_sums(values: &[f32], m: usize, n: usize) -> FlexTensor {
    const ROWS: usize = 256;
    let partial: Vec<Vec<f32>> = values[..m * n]
        .par_chunks(ROWS * n)
        .map(|block| {
            let mut acc = vec![0f32; n];
            for row in block.chunks_exact(n) {
                math::add_rows(&mut acc, row);
            }
            acc
        })
        .collect();
    let mut sum = vec![0f32; n];
    for p in &partial {
        math::add_rows(&mut sum, p);
    }
    FlexTensor::from_data(burn::tensor::TensorData::new(sum, [n]))
}

/// Records the op on the graph of `inputs` (`[x, w, (b), (residual)]`) with output `out`.
fn record<C: CheckpointStrategy, const N: usize>(
    inputs: [&AdPrim<C>; N],
    state: impl FnOnce() -> LinearState,
    out: FlexTensor,
) -> AdPrim<C> {
    match LinearBackward
        .prepare::<C>(inputs.map(|t| t.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state(), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// `[residual +] act(x·w [+ b])` as one autodiff op; `gelu`: the activation is exact GELU.
fn linear_ad<C: CheckpointStrategy>(
    x: Tensor<Ad<C>, 2>,
    w: Tensor<Ad<C>, 2>,
    b: Option<Tensor<Ad<C>, 1>>,
    residual: Option<Tensor<Ad<C>, 2>>,
    gelu: bool,
) -> Tensor<Ad<C>, 2> {
    let f32s = x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.as_ref().is_none_or(|b| b.dtype() == DType::F32)
        && residual.as_ref().is_none_or(|r| r.dtype() == DType::F32);
    if !f32s {
        // burn's composition (the trait's defaults).
        let y = burn::tensor::module::linear(x, w, b);
        let y = if gelu { Activation::Gelu.apply(y) } else { y };
        return match residual {
            Some(r) => r + y,
            None => y,
        };
    }
    let (x, w, b, r) = (prim(x), prim(w), b.map(prim), residual.map(prim));
    let tracked = x.is_tracked()
        || w.is_tracked()
        || b.as_ref().is_some_and(|b| b.is_tracked())
        || r.as_ref().is_some_and(|r| r.is_tracked());
    let w_host = contiguous(w.primitive.clone());
    let epilogue = match &r {
        Some(r) => Epilogue::Residual(r.primitive.clone()),
        None if gelu && !tracked => Epilogue::Act(Activation::Gelu),
        None => Epilogue::None,
    };
    let b_host = b.as_ref().map(|b| b.primitive.clone());
    let y = linear_host(x.primitive.clone(), w_host.clone(), b_host, epilogue);
    // GELU's backward needs the pre-activations: apply it to a copy.
    let (out, z) = if gelu && tracked {
        let mut values = f32_slice(&y).to_vec();
        values.par_chunks_mut(CHUNK).for_each(math::gelu_inplace);
        let shape = y.layout().shape().dims::<2>();
        (owned(values, shape), Some(y))
    } else {
        (y, None)
    };
    let state = || LinearState {
        x: w.is_tracked().then(|| x.primitive.clone()),
        w: x.is_tracked().then_some(w_host),
        z,
        bias: b.is_some(),
        residual: r.is_some(),
    };
    let out = match (&b, &r) {
        (None, None) => record::<C, 2>([&x, &w], state, out),
        (Some(b), None) => record::<C, 3>([&x, &w, b], state, out),
        (None, Some(r)) => record::<C, 3>([&x, &w, r], state, out),
        (Some(b), Some(r)) => record::<C, 4>([&x, &w, b, r], state, out),
    };
    tensor(out)
}

/// What the attention backward needs: the forward's input and the RoPE tables.
#[derive(Clone, Debug)]
struct AttentionState {
    qkv: FlexTensor,
    /// `cos`, `sin_signed` (contiguous) and the unrotated prefix length.
    rope: Option<(FlexTensor, FlexTensor, usize)>,
    shape: AttnShape,
}

/// The backward of [`Kernels::self_attention`] over the fused `qkv` (RoPE tables are
/// constants).
#[derive(Debug)]
struct AttentionBackward;

impl AttentionState {
    fn dims(&self) -> attention::Dims {
        let AttnShape { n, t, heads } = self.shape;
        let d = self.qkv.layout().shape()[1] / 3;
        attention::Dims {
            n,
            t,
            heads,
            head_dim: d / heads,
        }
    }

    fn rope_ref(&self) -> Option<attention::RopeRef<'_>> {
        self.rope.as_ref().map(|(c, s, prefix)| attention::RopeRef {
            cos: f32_slice(c),
            sin_signed: f32_slice(s),
            prefix: *prefix,
        })
    }
}

impl Backward<Flex, 1> for AttentionBackward {
    type State = AttentionState;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [parent] = ops.parents;
        let d_out = contiguous(grads.consume::<Flex>(&ops.node));
        let Some(parent) = parent else { return };
        let s = ops.state;
        let shape = s.qkv.layout().shape().dims::<2>();
        let mut d_qkv = vec![0f32; shape[0] * shape[1]];
        attention::self_attention_backward(
            f32_slice(&s.qkv),
            f32_slice(&d_out),
            s.dims(),
            s.rope_ref().as_ref(),
            &mut d_qkv,
        );
        grads.register::<Flex>(parent.id, owned(d_qkv, shape));
    }
}

impl<C: CheckpointStrategy> Kernels<Ad<C>> for AutodiffKernels {
    fn linear(
        &self,
        x: Tensor<Ad<C>, 2>,
        w: Tensor<Ad<C>, 2>,
        b: Option<Tensor<Ad<C>, 1>>,
    ) -> Tensor<Ad<C>, 2> {
        linear_ad(x, w, b, None, false)
    }

    fn linear_act(
        &self,
        x: Tensor<Ad<C>, 2>,
        w: Tensor<Ad<C>, 2>,
        b: Option<Tensor<Ad<C>, 1>>,
        act: Activation,
    ) -> Tensor<Ad<C>, 2> {
        match act {
            Activation::Gelu => linear_ad(x, w, b, None, true),
            act => act.apply(linear_ad(x, w, b, None, false)),
        }
    }

    fn linear_add(
        &self,
        x: Tensor<Ad<C>, 2>,
        w: Tensor<Ad<C>, 2>,
        b: Option<Tensor<Ad<C>, 1>>,
        residual: Tensor<Ad<C>, 2>,
    ) -> Tensor<Ad<C>, 2> {
        linear_ad(x, w, b, Some(residual), false)
    }

    fn self_attention(
        &self,
        qkv: Tensor<Ad<C>, 2>,
        shape: AttnShape,
        rope: Option<&Rope<Ad<C>>>,
    ) -> Tensor<Ad<C>, 2> {
        let tables = rope.map(|r| (prim(r.cos.clone()), prim(r.sin_signed.clone()), r.prefix));
        let covered = qkv.dtype() == DType::F32
            && tables.as_ref().is_none_or(|(c, s, _)| {
                c.primitive.dtype() == DType::F32
                    && s.primitive.dtype() == DType::F32
                    && !c.is_tracked()
                    && !s.is_tracked()
            });
        if !covered {
            // burn's composition (the trait's default), which also differentiates the tables.
            struct Burn;
            impl<C: CheckpointStrategy> Kernels<Ad<C>> for Burn {}
            return Burn.self_attention(qkv, shape, rope);
        }
        let qkv = prim(qkv);
        let state = AttentionState {
            qkv: contiguous(qkv.primitive.clone()),
            rope: tables.map(|(c, s, p)| (contiguous(c.primitive), contiguous(s.primitive), p)),
            shape,
        };
        let dims = state.dims();
        let mut out = vec![0f32; dims.n * dims.t * dims.heads * dims.head_dim];
        attention::self_attention(
            f32_slice(&state.qkv),
            dims,
            state.rope_ref().as_ref(),
            &mut out,
        );
        let out = owned(out, [dims.n * dims.t, dims.heads * dims.head_dim]);
        let out = match AttentionBackward
            .prepare::<C>([qkv.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        tensor(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::kernels;
    use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
    use burn::tensor::backend::Backend;
    use burn::tensor::Distribution;

    /// burn's ops on the same backend: the reference.
    struct Burn;
    impl<B: Backend> Kernels<B> for Burn {}

    fn close(what: &str, a: Vec<f32>, b: Vec<f32>) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-5 * scale,
                "{what}: {x} vs {y} (scale {scale})"
            );
        }
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// Every op, every subset of inputs requiring a gradient: output and gradients equal
    /// burn's composition's.
    fn gradients_match<C: CheckpointStrategy>() {
        let dev = Default::default();
        let rand = |shape: [usize; 2]| {
            Tensor::<Flex, 2>::random(shape, Distribution::Normal(0.0, 1.0), &dev)
        };
        let (x0, w0, r0) = (rand([37, 24]), rand([24, 40]), rand([37, 40]));
        let x0t = rand([24, 37]).transpose();
        let b0 = Tensor::<Flex, 1>::random([40], Distribution::Normal(0.0, 1.0), &dev);
        // A weight for the output gradient, so it is not all ones.
        let g = Tensor::<Ad<C>, 2>::from_inner(rand([37, 40]));
        let fast = kernels::<Ad<C>>();
        for op in 0..4 {
            for mask in 0..16u32 {
                let lift2 = |t: &Tensor<Flex, 2>, bit: u32| {
                    let t = Tensor::<Ad<C>, 2>::from_inner(t.clone());
                    if mask & (1 << bit) != 0 {
                        t.require_grad()
                    } else {
                        t
                    }
                };
                // op 3 runs on a strided (transposed) input.
                let x = if op == 3 {
                    lift2(&x0t, 0)
                } else {
                    lift2(&x0, 0)
                };
                let w = lift2(&w0, 1);
                let r = lift2(&r0, 3);
                let b = Tensor::<Ad<C>, 1>::from_inner(b0.clone());
                let b = if mask & 4 != 0 { b.require_grad() } else { b };
                let run = |k: &dyn Kernels<Ad<C>>| match op {
                    0 => k.linear(x.clone(), w.clone(), Some(b.clone())),
                    1 => k.linear_act(x.clone(), w.clone(), Some(b.clone()), Activation::Gelu),
                    2 => k.linear_add(x.clone(), w.clone(), Some(b.clone()), r.clone()),
                    _ => k.linear_act(x.clone(), w.clone(), None, Activation::Gelu),
                };
                let what = format!("op {op}, grad mask {mask:04b}");
                let (yf, yb) = (run(fast), run(&Burn));
                close(&what, values(yf.clone()), values(yb.clone()));
                if mask == 0 {
                    continue;
                }
                let gf = (yf * g.clone()).sum().backward();
                let gb = (yb * g.clone()).sum().backward();
                for (name, bit, a, b) in [
                    ("x", 0, x.grad(&gf), x.grad(&gb)),
                    ("w", 1, w.grad(&gf), w.grad(&gb)),
                    ("r", 3, r.grad(&gf), r.grad(&gb)),
                ] {
                    let wanted = mask & (1 << bit) != 0 && (bit != 3 || op == 2);
                    assert_eq!(a.is_some(), wanted, "{what}: d{name} present");
                    assert_eq!(b.is_some(), wanted, "{what}: burn d{name} present");
                    if let (Some(a), Some(b)) = (a, b) {
                        close(&format!("{what}: d{name}"), values(a), values(b));
                    }
                }
                let (a, bb) = (b.grad(&gf), b.grad(&gb));
                let wanted = mask & 4 != 0 && op != 3;
                assert_eq!(a.is_some(), wanted, "{what}: db present");
                if let (Some(a), Some(bb)) = (a, bb) {
                    close(&format!("{what}: db"), values(a), values(bb));
                }
            }
        }
    }

    /// Attention with and without RoPE: output and `qkv` gradient equal burn's composition's.
    fn attention_gradients_match<C: CheckpointStrategy>() {
        let dev = Default::default();
        let rand = |shape: [usize; 2]| {
            Tensor::<Flex, 2>::random(shape, Distribution::Normal(0.0, 1.0), &dev)
        };
        let shape = AttnShape {
            n: 2,
            t: 9,
            heads: 2,
        };
        let qkv0 = rand([18, 3 * 16]);
        let g = Tensor::<Ad<C>, 2>::from_inner(rand([18, 16]));
        // Tables of real rotations, as the models build them.
        let angles = rand([1, 7 * 4]);
        let angles = Tensor::cat(vec![angles.clone(), angles], 1);
        let sign =
            Tensor::<Flex, 1>::from_floats([[-1.0f32; 4], [1.0; 4]].concat().as_slice(), &dev)
                .reshape([1, 8])
                .repeat_dim(1, 7);
        let rope = Rope {
            cos: Tensor::<Ad<C>, 2>::from_inner(angles.clone().cos()),
            sin_signed: Tensor::<Ad<C>, 2>::from_inner(angles.sin() * sign),
            prefix: 2,
        };
        let fast = kernels::<Ad<C>>();
        for r in [None, Some(&rope)] {
            let what = format!("attention, rope {}", r.is_some());
            let qkv = Tensor::<Ad<C>, 2>::from_inner(qkv0.clone()).require_grad();
            let (yf, yb) = (
                fast.self_attention(qkv.clone(), shape, r),
                Burn.self_attention(qkv.clone(), shape, r),
            );
            close(&what, values(yf.clone()), values(yb.clone()));
            let gf = (yf * g.clone()).sum().backward();
            let gb = (yb * g.clone()).sum().backward();
            close(
                &format!("{what}: dqkv"),
                values(qkv.grad(&gf).expect("dqkv")),
                values(qkv.grad(&gb).expect("burn dqkv")),
            );
        }
        // Untracked input: no graph, same output.
        let qkv = Tensor::<Ad<C>, 2>::from_inner(qkv0);
        close(
            "attention, untracked",
            values(fast.self_attention(qkv.clone(), shape, Some(&rope))),
            values(Burn.self_attention(qkv, shape, Some(&rope))),
        );
    }

    #[test]
    fn custom_attention_gradients_match_burn_ops() {
        attention_gradients_match::<NoCheckpointing>();
        attention_gradients_match::<BalancedCheckpointing>();
    }

    #[test]
    fn custom_linear_gradients_match_burn_ops() {
        gradients_match::<NoCheckpointing>();
    }

    #[test]
    fn custom_linear_gradients_match_burn_ops_balanced_checkpointing() {
        gradients_match::<BalancedCheckpointing>();
    }
}
