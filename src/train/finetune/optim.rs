//! AdamW as PyTorch's `torch.optim.AdamW` computes it, over parameter groups: a learning-rate
//! scale per parameter (layer-wise decay, head rate), decoupled weight decay only where the
//! group says, and clipping by the global gradient norm (`clip_grad_norm_`) first.
//!
//! Written here rather than using burn-optim's `AdamW` because that one has one learning rate
//! and one weight decay per optimiser, clips each tensor on its own and defaults to ε = 1e-5; a
//! step here matches PyTorch + PEFT to float rounding, and its state is plain tensors that the
//! resume checkpoint stores.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};

use super::model::ParamGroup;

/// First and second moments of one parameter (flattened) and its step count.
#[derive(Debug, Clone)]
pub struct Moment<B: Backend> {
    pub m: Tensor<B, 1>,
    pub v: Tensor<B, 1>,
    pub t: u64,
}

/// The optimiser and its state (on the inner, non-autodiff backend).
#[derive(Debug)]
pub struct AdamW<B: Backend> {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub moments: HashMap<ParamId, Moment<B>>,
}

impl<IB: Backend> AdamW<IB> {
    /// PyTorch's defaults (β = 0.9, 0.999; ε = 1e-8) with `weight_decay`.
    pub fn new(weight_decay: f64) -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            moments: HashMap::new(),
        }
    }

    /// Global L2 norm of the gradients of the parameters in `groups`.
    pub fn grad_norm<B, M>(
        model: &M,
        grads: &GradientsParams,
        groups: &HashMap<ParamId, ParamGroup>,
    ) -> f64
    where
        B: AutodiffBackend<InnerBackend = IB>,
        M: AutodiffModule<B>,
    {
        struct Norm<'a, IB: Backend> {
            grads: &'a GradientsParams,
            groups: &'a HashMap<ParamId, ParamGroup>,
            sum: Option<Tensor<IB, 1>>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Norm<'_, B::InnerBackend> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                if !self.groups.contains_key(&p.id) {
                    return;
                }
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(p.id) {
                    let s = (g.clone() * g).sum();
                    self.sum = Some(match self.sum.take() {
                        Some(acc) => acc + s,
                        None => s,
                    });
                }
            }
        }
        let mut n = Norm::<IB> {
            grads,
            groups,
            sum: None,
        };
        model.visit(&mut n);
        n.sum
            .map(|s| s.into_scalar().elem::<f64>().sqrt())
            .unwrap_or(0.0)
    }

    /// One step at learning rate `lr` (before each group's scale); gradients are multiplied by
    /// `grad_scale` first (the clip factor). Parameters without a group or a gradient are left
    /// as they are.
    pub fn step<B, M>(
        &mut self,
        model: M,
        grads: GradientsParams,
        lr: f64,
        groups: &HashMap<ParamId, ParamGroup>,
        grad_scale: f64,
    ) -> M
    where
        B: AutodiffBackend<InnerBackend = IB>,
        M: AutodiffModule<B>,
    {
        struct Step<'a, IB: Backend> {
            opt: &'a mut AdamW<IB>,
            grads: GradientsParams,
            lr: f64,
            groups: &'a HashMap<ParamId, ParamGroup>,
            grad_scale: f64,
        }
        impl<B: AutodiffBackend> ModuleMapper<B> for Step<'_, B::InnerBackend> {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
                let Some(group) = self.groups.get(&p.id).copied() else {
                    return p;
                };
                let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id) else {
                    return p;
                };
                let (id, t, mapper) = p.consume();
                let x = t.inner();
                let shape = x.shape();
                let n = shape.num_elements();
                let mut g = g.reshape([n]);
                if self.grad_scale != 1.0 {
                    g = g * self.grad_scale;
                }
                let o = &mut *self.opt;
                let (b1, b2) = (o.beta1, o.beta2);
                let prev = o.moments.remove(&id).unwrap_or_else(|| Moment {
                    m: Tensor::zeros([n], &g.device()),
                    v: Tensor::zeros([n], &g.device()),
                    t: 0,
                });
                let step = prev.t + 1;
                // torch: exp_avg.lerp_(g, 1 - β1); exp_avg_sq.mul_(β2).addcmul_(g, g, 1 - β2).
                let m = prev.m.clone() + (g.clone() - prev.m) * (1.0 - b1);
                let v = prev.v * b2 + g.clone() * g * (1.0 - b2);
                let lr = self.lr * group.lr_scale;
                let mut x = x.reshape([n]);
                if group.decay && o.weight_decay > 0.0 {
                    x = x * (1.0 - lr * o.weight_decay);
                }
                let bc1 = 1.0 - b1.powi(step as i32);
                let bc2 = 1.0 - b2.powi(step as i32);
                let denom = v.clone().sqrt() / bc2.sqrt() + o.eps;
                let x = x - (m.clone() / denom) * (lr / bc1);
                o.moments.insert(id, Moment { m, v, t: step });
                let new = Tensor::<B, D>::from_inner(x.reshape(shape)).require_grad();
                Param::from_mapped_value(id, new, mapper)
            }
        }
        let mut s = Step {
            opt: self,
            grads,
            lr,
            groups,
            grad_scale,
        };
        model.map(&mut s)
    }

    /// The state of the parameters `order` lists, as host values `(m, v, t)` (zeros for a
    /// parameter not stepped yet).
    pub fn export(&self, order: &[(ParamId, usize)]) -> Vec<(Vec<f32>, Vec<f32>, u64)> {
        order
            .iter()
            .map(|(id, n)| match self.moments.get(id) {
                Some(mo) => (host(&mo.m), host(&mo.v), mo.t),
                None => (vec![0.0; *n], vec![0.0; *n], 0),
            })
            .collect()
    }

    /// Restores what [`AdamW::export`] wrote, for the parameters `order` lists.
    pub fn import(
        &mut self,
        order: &[(ParamId, usize)],
        state: Vec<(Vec<f32>, Vec<f32>, u64)>,
        device: &IB::Device,
    ) {
        self.moments.clear();
        for ((id, n), (m, v, t)) in order.iter().zip(state) {
            if t == 0 {
                continue;
            }
            let mk = |x: Vec<f32>| Tensor::<IB, 1>::from_data(TensorData::new(x, [*n]), device);
            self.moments.insert(
                *id,
                Moment {
                    m: mk(m),
                    v: mk(v),
                    t,
                },
            );
        }
    }
}

fn host<B: Backend>(t: &Tensor<B, 1>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32")
}

/// The trained parameters of `model` in visit order, with their element counts: a stable
/// order for saving per-parameter state (the same architecture visits in the same order).
pub fn param_order<B: Backend, M: burn::module::Module<B>>(
    model: &M,
    groups: &HashMap<ParamId, ParamGroup>,
) -> Vec<(ParamId, usize)> {
    struct Order<'a>(&'a HashMap<ParamId, ParamGroup>, Vec<(ParamId, usize)>);
    impl<B: Backend> ModuleVisitor<B> for Order<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if self.0.contains_key(&p.id) {
                self.1.push((p.id, p.shape().num_elements()));
            }
        }
    }
    let mut o = Order(groups, Vec::new());
    model.visit(&mut o);
    o.1
}
