//! burn-flex's implementation of [`super::ops::Kernels`]: inference kernels over the host
//! `f32` buffers of burn-flex tensors (issue #11).
//!
//! burn composes a ViT block from many single-purpose ops, each its own pass with its own
//! allocation, several of them single-threaded: a bias add after every product, a copy for each
//! of q, k and v, a transpose copy of the attention output, a libm `erf` per GELU value. Here
//! - the bias (and, for the output projections, the residual) is the product's accumulator, so
//!   `residual + x·W + b` is one `gemm` call over a buffer already holding `residual + b`;
//! - GELU runs vectorised over the product's output in place, while it is still in cache;
//! - attention reads the fused q|k|v buffer in place and writes each head's context into its
//!   columns of the output (see [`attention`]).
//!
//! Every kernel falls back to burn's op for what it does not cover (non-f32 tensors, other
//! activations), so results never depend on which path ran beyond float rounding. The one
//! non-f32 input covered is a bf16 projection weight (`backbone.dtype: bf16`), whose product
//! runs on [`bf16`].

pub mod attention;
pub mod autodiff;
pub mod bf16;
pub mod gemm;
pub mod math;
#[cfg(test)]
pub(crate) mod testing;

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::activation::Activation;
use super::ops::{AttnShape, Kernels, Rope};
use gemm::{MatMut, MatRef};

/// The burn-flex kernels.
pub struct FlexKernels;

fn host<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

fn wrap<const D: usize>(t: FlexTensor) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn owned(values: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A contiguous `f32` view of `t` (copying only when it is strided or offset).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.layout().contiguous_offsets().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn f32_slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

/// What happens to the product's output buffer besides `x · w`.
enum Epilogue {
    None,
    Act(Activation),
    Residual(FlexTensor),
}

/// Whether the kernels cover these tensors (f32 throughout); otherwise burn's ops run.
fn all_f32(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

/// Whether the kernels cover weight `w`: f32, or bf16 where the CPU runs [`bf16`] products
/// (`backbone.dtype: bf16`, inference only).
fn weight_covered(w: &FlexTensor) -> bool {
    w.dtype() == DType::F32 || w.dtype() == DType::BF16 && bf16::engine().is_some()
}

/// `out (+)= x · w` for a bf16 weight `w` `[K, N]`, read as the rows of its transpose: the
/// loader's `[out, in]` storage is used in place, any other layout is copied into it first.
///
/// # Safety
/// `x` valid for `m×k` at its strides, `out` an `m×n` buffer; [`bf16::engine`] is `Some`.
unsafe fn product_bf16(
    (m, n, k): (usize, usize, usize),
    out: &mut [f32],
    accumulate: bool,
    x: MatRef,
    w: FlexTensor,
) {
    let wt = contiguous(host(wrap::<2>(w).transpose()));
    let engine = bf16::engine().expect("bf16 weights only where a bf16 engine exists");
    let values = &wt.storage::<half::bf16>()[wt.layout().start_offset()..];
    let dst = MatMut {
        ptr: out.as_mut_ptr(),
        rs: n as isize,
    };
    // SAFETY: forwarded from the caller; `wt` is a contiguous `n×k` tensor.
    unsafe { bf16::matmul(engine, m, n, k, dst, accumulate, x, values, k) }
}

/// Elements per parallel task of an elementwise pass.
const CHUNK: usize = 1 << 14;

fn linear_host(
    x: FlexTensor,
    w: FlexTensor,
    b: Option<FlexTensor>,
    epilogue: Epilogue,
) -> FlexTensor {
    let (m, k, x_rs, x_cs) = x.layout().as_2d_strides().expect("linear input is 2D");
    let n = w.layout().shape()[1];
    assert_eq!(
        w.layout().shape()[0],
        k,
        "linear: weight rows vs input width"
    );
    let b = b.map(contiguous);
    let bias = b.as_ref().map(f32_slice);
    let (act, residual) = match epilogue {
        Epilogue::None => (None, None),
        Epilogue::Act(a) => (Some(a), None),
        Epilogue::Residual(r) => (None, Some(r)),
    };
    let (mut out, accumulate) = match residual {
        Some(r) => {
            assert_eq!(r.layout().shape().dims::<2>(), [m, n], "residual shape");
            // Reuse the residual's buffer when this is its only owner (the block's `x` once
            // its layer-norm clone is consumed); otherwise copy it.
            let r = contiguous(r);
            let mut values = if r.is_unique() && r.layout().start_offset() == 0 {
                r.into_data().into_vec::<f32>().expect("f32 residual")
            } else {
                f32_slice(&r).to_vec()
            };
            if let Some(bias) = bias {
                math::add_rows(&mut values, bias);
            }
            (values, true)
        }
        None => match bias {
            Some(bias) => {
                let mut values = vec![0f32; m * n];
                math::fill_rows(&mut values, bias);
                (values, true)
            }
            None => (vec![0f32; m * n], false),
        },
    };
    let xs: &[f32] = x.storage();
    let x_ref = MatRef {
        // SAFETY: the offset is inside `x`'s storage.
        ptr: unsafe { xs.as_ptr().add(x.layout().start_offset()) },
        rs: x_rs,
        cs: x_cs,
    };
    if w.dtype() == DType::BF16 {
        // SAFETY: `x` is m×k at `x_ref`, `out` a fresh (or uniquely owned) m×n buffer, and
        // `weight_covered` admitted the bf16 weight.
        unsafe { product_bf16((m, n, k), &mut out, accumulate, x_ref, w) };
    } else {
        let w = contiguous(w);
        // SAFETY: `x` is m×k at `x_ref`, `w` contiguous k×n, `out` a fresh (or uniquely owned)
        // m×n buffer.
        unsafe {
            gemm::matmul(
                m,
                n,
                k,
                MatMut {
                    ptr: out.as_mut_ptr(),
                    rs: n as isize,
                },
                accumulate,
                x_ref,
                MatRef {
                    ptr: f32_slice(&w).as_ptr(),
                    rs: n as isize,
                    cs: 1,
                },
                true,
            );
        }
    }
    match act {
        Some(Activation::Gelu) => {
            out.par_chunks_mut(CHUNK).for_each(math::gelu_inplace);
            owned(out, [m, n])
        }
        Some(act) => host(act.apply(wrap::<2>(owned(out, [m, n])))),
        None => owned(out, [m, n]),
    }
}

impl Kernels<Flex> for FlexKernels {
    fn linear(
        &self,
        x: Tensor<Flex, 2>,
        w: Tensor<Flex, 2>,
        b: Option<Tensor<Flex, 1>>,
    ) -> Tensor<Flex, 2> {
        let (x, w, b) = (host(x), host(w), b.map(host));
        if !all_f32(&[&x])
            || !weight_covered(&w)
            || b.as_ref().is_some_and(|b| b.dtype() != DType::F32)
        {
            return burn::tensor::module::linear(wrap(x), wrap(w), b.map(wrap));
        }
        wrap(linear_host(x, w, b, Epilogue::None))
    }

    fn linear_act(
        &self,
        x: Tensor<Flex, 2>,
        w: Tensor<Flex, 2>,
        b: Option<Tensor<Flex, 1>>,
        act: Activation,
    ) -> Tensor<Flex, 2> {
        let (x, w, b) = (host(x), host(w), b.map(host));
        if !all_f32(&[&x])
            || !weight_covered(&w)
            || b.as_ref().is_some_and(|b| b.dtype() != DType::F32)
        {
            return act.apply(burn::tensor::module::linear(wrap(x), wrap(w), b.map(wrap)));
        }
        wrap(linear_host(x, w, b, Epilogue::Act(act)))
    }

    fn linear_add(
        &self,
        x: Tensor<Flex, 2>,
        w: Tensor<Flex, 2>,
        b: Option<Tensor<Flex, 1>>,
        residual: Tensor<Flex, 2>,
    ) -> Tensor<Flex, 2> {
        let (x, w, b, r) = (host(x), host(w), b.map(host), host(residual));
        if !all_f32(&[&x, &r])
            || !weight_covered(&w)
            || b.as_ref().is_some_and(|b| b.dtype() != DType::F32)
        {
            return wrap::<2>(r) + burn::tensor::module::linear(wrap(x), wrap(w), b.map(wrap));
        }
        wrap(linear_host(x, w, b, Epilogue::Residual(r)))
    }

    fn self_attention(
        &self,
        qkv: Tensor<Flex, 2>,
        shape: AttnShape,
        rope: Option<&Rope<Flex>>,
    ) -> Tensor<Flex, 2> {
        let qkv = contiguous(host(qkv));
        let tables = rope.map(|r| {
            (
                contiguous(host(r.cos.clone())),
                contiguous(host(r.sin_signed.clone())),
            )
        });
        let f32_tables = tables.as_ref().is_none_or(|(c, s)| all_f32(&[c, s]));
        if qkv.dtype() != DType::F32 || !f32_tables {
            // The default composition, on burn's ops.
            struct Burn;
            impl Kernels<Flex> for Burn {}
            return Burn.self_attention(wrap(qkv), shape, rope);
        }
        let AttnShape { n, t, heads } = shape;
        let d = qkv.layout().shape()[1] / 3;
        let dims = attention::Dims {
            n,
            t,
            heads,
            head_dim: d / heads,
        };
        let rope_ref = match (&tables, rope) {
            (Some((c, s)), Some(r)) => Some(attention::RopeRef {
                cos: f32_slice(c),
                sin_signed: f32_slice(s),
                prefix: r.prefix,
            }),
            _ => None,
        };
        let mut out = vec![0f32; n * t * d];
        attention::self_attention(f32_slice(&qkv), dims, rope_ref.as_ref(), &mut out);
        wrap(owned(out, [n * t, d]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::{self, kernels};
    use burn::tensor::Distribution;

    struct Burn;
    impl Kernels<Flex> for Burn {}

    fn close(a: Tensor<Flex, 2>, b: Tensor<Flex, 2>, tol: f32) {
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.into_data().to_vec().unwrap(),
            b.into_data().to_vec().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    fn rand(shape: [usize; 2]) -> Tensor<Flex, 2> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    #[test]
    fn flex_kernels_match_burn_ops() {
        let dev = Default::default();
        let x = rand([37, 24]);
        let w = rand([24, 40]);
        let b = Tensor::<Flex, 1>::random([40], Distribution::Normal(0.0, 1.0), &dev);
        let r = rand([37, 40]);
        let fast = kernels::<Flex>();
        close(
            fast.linear(x.clone(), w.clone(), Some(b.clone())),
            Burn.linear(x.clone(), w.clone(), Some(b.clone())),
            1e-5,
        );
        close(
            fast.linear(x.clone(), w.clone(), None),
            Burn.linear(x.clone(), w.clone(), None),
            1e-5,
        );
        for act in [Activation::Gelu, Activation::Silu] {
            close(
                fast.linear_act(x.clone(), w.clone(), Some(b.clone()), act),
                Burn.linear_act(x.clone(), w.clone(), Some(b.clone()), act),
                1e-5,
            );
        }
        // A strided input (a transposed view) and a shared residual (must not be overwritten).
        let xt = rand([24, 37]).transpose();
        let kept = r.clone();
        close(
            fast.linear_add(xt.clone(), w.clone(), Some(b.clone()), r.clone()),
            Burn.linear_add(xt, w.clone(), Some(b.clone()), r.clone()),
            1e-5,
        );
        close(kept, r, 0.0);
        let shape = AttnShape {
            n: 2,
            t: 9,
            heads: 2,
        };
        let qkv = rand([18, 3 * 16]);
        close(
            fast.self_attention(qkv.clone(), shape, None),
            Burn.self_attention(qkv.clone(), shape, None),
            1e-5,
        );
        let rope = Rope {
            cos: rand([1, 7 * 8]),
            sin_signed: rand([1, 7 * 8]),
            prefix: 2,
        };
        close(
            fast.self_attention(qkv.clone(), shape, Some(&rope)),
            Burn.self_attention(qkv, shape, Some(&rope)),
            1e-5,
        );
        let _ = ops::linear::<Flex>;
    }

    #[test]
    fn autodiff_seam_keeps_the_graph() {
        type Ad = burn::backend::Autodiff<Flex>;
        // Gradients flow through the seam on an autodiff backend.
        let dev = Default::default();
        let x =
            Tensor::<Ad, 2>::random([5, 4], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let w =
            Tensor::<Ad, 2>::random([4, 6], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let y = ops::linear_act(x.clone(), w.clone(), None, Activation::Gelu);
        let y = ops::linear_add(
            y,
            Tensor::random([6, 6], Distribution::Default, &dev),
            None,
            Tensor::zeros([5, 6], &dev),
        );
        let grads = y.sum().backward();
        assert!(x.grad(&grads).is_some() && w.grad(&grads).is_some());
    }
}
