//! MLP activations (`hidden_act`), as `transformers`' `ACT2FN` defines each name, with a host
//! fast path for exact GELU on burn-flex.

use anyhow::{anyhow, Result};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// One activation function of a ViT MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact, erf based.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: tanh approximation.
    GeluTanh,
    /// `quick_gelu`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `silu` / `swish`.
    Silu,
    /// `relu`.
    Relu,
}

/// The `hidden_act` names sv72 knows, for error messages.
pub const KNOWN: &str =
    "gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, silu, swish, relu";

impl Activation {
    /// The activation `transformers` maps `name` to.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "relu" => Self::Relu,
            _ => return None,
        })
    }

    /// [`Activation::parse`] with an error naming `file` and the field.
    pub fn from_config(name: &str, file: &std::path::Path) -> Result<Self> {
        Self::parse(name).ok_or_else(|| {
            anyhow!(
                "{}: hidden_act `{name}` is not supported ({KNOWN})",
                file.display()
            )
        })
    }

    /// Applies the activation elementwise.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Gelu => gelu_erf(x),
            Self::GeluTanh => activation::gelu_approximate(x),
            Self::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Self::Silu => activation::silu(x),
            Self::Relu => activation::relu(x),
        }
    }
}

/// Exact (erf) GELU, `x * Φ(x)`, as `transformers`' `gelu`.
///
/// On burn-flex the backend's `gelu` calls a scalar libm `erf` per value on one thread. There
/// the values are mapped in place by the vectorised kernel ([`super::kernels::math::gelu`]) in
/// one rayon-parallel pass, many times faster at ViT sizes. Other backends (CUDA, autodiff —
/// a host round trip would cut the graph) and non-f32 tensors use the backend's own `gelu`.
pub fn gelu_erf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !crate::backend::is_host_cpu::<B>() || x.dtype() != burn::tensor::DType::F32 {
        return activation::gelu(x);
    }
    let shape = x.shape();
    let device = x.device();
    let mut values = x
        .into_data()
        .into_vec::<f32>()
        .expect("an f32 tensor reads back as f32");
    use rayon::prelude::*;
    values
        .par_chunks_mut(1 << 14)
        .for_each(super::kernels::math::gelu_inplace);
    Tensor::from_data(TensorData::new(values, shape), &device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_gelu_matches_libm_erf_gelu() {
        use crate::backend::Cpu;
        let device = Default::default();
        // Dense over the range where erf varies, plus far tails.
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).collect();
        xs.extend([-30.0, -12.0, 12.0, 30.0, 1e-7, -1e-7, 0.0]);
        let n = xs.len();
        let x = Tensor::<Cpu, 1>::from_data(TensorData::new(xs.clone(), [n]), &device);
        let fast: Vec<f32> = gelu_erf(x.clone()).into_data().to_vec().unwrap();
        let exact: Vec<f32> = activation::gelu(x).into_data().to_vec().unwrap();
        for ((x, f), e) in xs.iter().zip(&fast).zip(&exact) {
            assert!(f.is_finite(), "gelu({x}) = {f}");
            assert!(
                (f - e).abs() <= 5e-7 * x.abs().max(1.0),
                "gelu({x}): {f} vs {e}"
            );
        }
    }

    #[test]
    fn names_map_like_act2fn() {
        assert_eq!(Activation::parse("gelu_fast"), Some(Activation::GeluTanh));
        assert_eq!(Activation::parse("swish"), Some(Activation::Silu));
        assert_eq!(Activation::parse("mish"), None);
        let e = Activation::from_config("mish", std::path::Path::new("s/config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s/config.json") && e.contains("`mish`"), "{e}");
    }
}
