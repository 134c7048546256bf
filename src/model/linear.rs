//! Projections: a linear map whose output may be several snapshot tensors side by side (fused
//! q|k|v, SwiGLU gate|up), with an optional LoRA adapter per part.
//!
//! The fused weight keeps inference at one matmul per projection; per-part biases and adapters
//! keep training exact: a part without a bias in the snapshot (DINOv3's key) has none here
//! either, so it is never trained away from zero.

use anyhow::{bail, Result};
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::activation::Activation;
use super::loader::{Binding, Bindings, Piece, PieceKind};
use super::ops;

/// Where one output part of a projection comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    /// Snapshot name of the part's weight without `.weight` (`…attention.attention.query`).
    pub name: String,
    pub d_in: usize,
    pub d_out: usize,
    /// Depth of the block it belongs to (see [`Binding::depth`]).
    pub depth: usize,
    /// Shape of the weight in the snapshot.
    pub shape: Vec<usize>,
}

/// A low-rank adapter `Δ(x) = scale · dropout(x) · A · B` on one projection part (PEFT's
/// `lora_A`, `lora_B`, `scaling = alpha / r`).
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[in, r]` (PEFT's `lora_A.weight` transposed).
    pub a: Param<Tensor<B, 2>>,
    /// `[r, out]` (PEFT's `lora_B.weight` transposed).
    pub b: Param<Tensor<B, 2>>,
    pub scale: f64,
    pub dropout: f64,
}

impl<B: Backend> Lora<B> {
    /// The adapter's contribution for rows `x` `[M, in]`. Dropout (on the adapter's input, as
    /// PEFT does) only while autodiff is recording.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = if self.dropout > 0.0 && B::ad_enabled(&x.device()) {
            let keep = 1.0 - self.dropout;
            let mask = x.random_like(Distribution::Bernoulli(keep));
            x * mask / keep
        } else {
            x
        };
        ops::linear(x, self.a.val(), None).matmul(self.b.val()) * self.scale
    }
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
}

impl LoraSpec {
    /// PEFT's `scaling`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// A linear projection (see the module docs).
#[derive(Module, Debug)]
pub struct Proj<B: Backend> {
    /// `[in, out]`, the parts' columns side by side.
    pub weight: Param<Tensor<B, 2>>,
    /// Per part: its bias, when the snapshot has one.
    pub bias: Vec<Option<Param<Tensor<B, 1>>>>,
    /// Per part: its adapter; empty when none is attached.
    pub lora: Vec<Option<Lora<B>>>,
    #[module(skip)]
    pub parts: Vec<PartInfo>,
}

impl<B: Backend> Proj<B> {
    pub fn new(
        weight: Param<Tensor<B, 2>>,
        bias: Vec<Option<Param<Tensor<B, 1>>>>,
        parts: Vec<PartInfo>,
    ) -> Self {
        Self {
            weight,
            bias,
            lora: Vec::new(),
            parts,
        }
    }

    /// Output width.
    pub fn d_out(&self) -> usize {
        self.parts.iter().map(|p| p.d_out).sum()
    }

    /// The bias over all outputs: `None` when no part has one; zeros for parts without.
    fn full_bias(&self) -> Option<Tensor<B, 1>> {
        if self.bias.iter().all(Option::is_none) {
            return None;
        }
        if let [Some(b)] = self.bias.as_slice() {
            return Some(b.val());
        }
        let device = self.weight.device();
        let parts = self
            .bias
            .iter()
            .zip(&self.parts)
            .map(|(b, p)| match b {
                Some(b) => b.val(),
                None => Tensor::zeros([p.d_out], &device),
            })
            .collect();
        Some(Tensor::cat(parts, 0))
    }

    /// `x W + b (+ adapters)` for rows `x` `[M, in]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        if !self.has_lora() {
            return ops::linear(x, self.weight.val(), self.full_bias());
        }
        let y = ops::linear(x.clone(), self.weight.val(), self.full_bias());
        let [m, _] = x.dims();
        let device = x.device();
        let mut deltas: Vec<Tensor<B, 2>> = self
            .lora
            .iter()
            .zip(&self.parts)
            .map(|(l, p)| match l {
                Some(l) => l.forward(x.clone()),
                None => Tensor::zeros([m, p.d_out], &device),
            })
            .collect();
        let delta = if deltas.len() == 1 {
            deltas.pop().expect("one part")
        } else {
            Tensor::cat(deltas, 1)
        };
        y + delta
    }

    fn has_lora(&self) -> bool {
        self.lora.iter().any(Option::is_some)
    }

    /// `act(x W + b (+ adapters))`, bias and activation fused into the product when there are
    /// no adapters.
    pub fn forward_act(&self, x: Tensor<B, 2>, act: Activation) -> Tensor<B, 2> {
        if self.has_lora() {
            return act.apply(self.forward(x));
        }
        ops::linear_act(x, self.weight.val(), self.full_bias(), act)
    }

    /// `residual + scale * (x W + b (+ adapters))`, with `scale` a layer-scale parameter when
    /// unfolded; the residual is the product's accumulator when there is neither.
    pub fn forward_add(
        &self,
        x: Tensor<B, 2>,
        residual: Tensor<B, 2>,
        scale: &Option<Param<Tensor<B, 1>>>,
    ) -> Tensor<B, 2> {
        if self.has_lora() || scale.is_some() {
            return residual + ops::scaled(self.forward(x), scale);
        }
        ops::linear_add(x, self.weight.val(), self.full_bias(), residual)
    }

    /// Attaches an adapter to every part: `A` from `init` when it holds the part's
    /// `lora_A.weight` (`[r, in]`, PEFT layout) else Kaiming-uniform as PEFT initialises it
    /// (`U(±1/√in)`), `B` from `init` else zeros (so the adapted model starts equal to the base).
    /// The adapters' bindings are appended to `bindings`.
    pub fn attach_lora(
        &mut self,
        spec: &LoraSpec,
        init: &super::NamedTensors,
        rng: &mut ChaCha8Rng,
        bindings: &mut Bindings,
    ) -> Result<()> {
        let device = self.weight.device();
        let r = spec.rank;
        let mut adapters = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            let (a_name, b_name) = lora_names(&part.name);
            let a_hf = match init.get(&a_name) {
                Some((shape, v)) => {
                    check_shape(&a_name, shape, &[r, part.d_in])?;
                    v.clone()
                }
                None => {
                    let bound = 1.0 / (part.d_in as f32).sqrt();
                    (0..r * part.d_in)
                        .map(|_| rng.random_range(-bound..bound))
                        .collect()
                }
            };
            let b_hf = match init.get(&b_name) {
                Some((shape, v)) => {
                    check_shape(&b_name, shape, &[part.d_out, r])?;
                    v.clone()
                }
                None => vec![0.0; part.d_out * r],
            };
            let a = super::loader::transpose(&a_hf, r, part.d_in);
            let b = super::loader::transpose(&b_hf, part.d_out, r);
            let a = Param::from_tensor(Tensor::from_data(
                TensorData::new(a, [part.d_in, r]),
                &device,
            ));
            let b = Param::from_tensor(Tensor::from_data(
                TensorData::new(b, [r, part.d_out]),
                &device,
            ));
            for (name, shape, id, len) in [
                (a_name, vec![r, part.d_in], a.id, r),
                (b_name, vec![part.d_out, r], b.id, part.d_out),
            ] {
                bindings.push(Binding {
                    name,
                    shape,
                    pieces: vec![Piece {
                        param: id,
                        kind: PieceKind::Columns { offset: 0, len },
                    }],
                    depth: part.depth,
                    decay: true,
                });
            }
            adapters.push(Some(Lora {
                a,
                b,
                scale: spec.scale(),
                dropout: spec.dropout,
            }));
        }
        self.lora = adapters;
        Ok(())
    }
}

/// PEFT's names of the adapter on weight `base` (`….query` → `….query.lora_A.weight`).
pub fn lora_names(base: &str) -> (String, String) {
    (
        format!("{base}.lora_A.weight"),
        format!("{base}.lora_B.weight"),
    )
}

fn check_shape(name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        bail!("adapter tensor `{name}` has shape {got:?}, expected {want:?}");
    }
    Ok(())
}
