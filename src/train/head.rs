//! Classification heads on frozen backbone features.
//!
//! Input is `[CLS ; mean of patch tokens]` (width `2 · hidden`), the layout of transformers'
//! `Dinov2ForImageClassification`, and output is 2 logits (0 = None, 1 = Roadwork), so a linear
//! head exports directly as its `classifier` Linear. Weights are initialised from our own seeded
//! RNG (not the backend's global one) so a run is reproducible bit for bit.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{activation, backend::Backend, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

pub use crate::model::{NamedTensor, NamedTensors};

use crate::config::{HeadConfig, HeadType};

/// Number of output logits (transformers layout: `id2label = {0: None, 1: Roadwork}`).
pub const NUM_LABELS: usize = 2;

/// Which head to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Linear,
    Mlp { hidden: usize },
}

impl HeadKind {
    /// From `head.kind` / `head.hidden` of the config.
    pub fn from_config(cfg: &HeadConfig) -> Result<Self> {
        match cfg.kind {
            HeadType::Linear => Ok(HeadKind::Linear),
            HeadType::Mlp if cfg.hidden > 0 => Ok(HeadKind::Mlp { hidden: cfg.hidden }),
            HeadType::Mlp => bail!("head.hidden must be > 0 for head.kind = mlp"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            HeadKind::Linear => "linear",
            HeadKind::Mlp { .. } => "mlp",
        }
    }
}

/// A linear or one-hidden-layer MLP head.
#[derive(Module, Debug)]
pub struct Head<B: Backend> {
    /// MLP only: `Linear(in, hidden)` followed by GELU and dropout.
    pub hidden: Option<Linear<B>>,
    /// `Linear(in or hidden, 2)`.
    pub classifier: Linear<B>,
}

fn linear_from<B: Backend>(
    w: Vec<f32>,
    d_in: usize,
    d_out: usize,
    b: Vec<f32>,
    device: &B::Device,
) -> Linear<B> {
    // Burn keeps `[d_in, d_out]`; the transposition to PyTorch's `[d_out, d_in]` happens on save.
    Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device)),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [d_out]),
            device,
        ))),
    }
}

impl<B: Backend> Head<B> {
    /// A freshly initialised head: N(0, 0.02) weights and zero bias for the classifier (as
    /// transformers initialises it), Kaiming-uniform for the MLP's hidden layer.
    pub fn init(
        kind: HeadKind,
        input_dim: usize,
        rng: &mut ChaCha8Rng,
        device: &B::Device,
    ) -> Self {
        let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
        let (hidden, cls_in) = match kind {
            HeadKind::Linear => (None, input_dim),
            HeadKind::Mlp { hidden } => {
                let k = (6.0f32 / input_dim as f32).sqrt();
                let w: Vec<f32> = (0..input_dim * hidden)
                    .map(|_| rng.random_range(-k..k))
                    .collect();
                (
                    Some(linear_from(w, input_dim, hidden, vec![0.0; hidden], device)),
                    hidden,
                )
            }
        };
        let w: Vec<f32> = (0..cls_in * NUM_LABELS)
            .map(|_| normal.sample(rng))
            .collect();
        Head {
            hidden,
            classifier: linear_from(w, cls_in, NUM_LABELS, vec![0.0; NUM_LABELS], device),
        }
    }

    pub fn kind(&self) -> HeadKind {
        match &self.hidden {
            None => HeadKind::Linear,
            Some(h) => HeadKind::Mlp {
                hidden: h.weight.dims()[1],
            },
        }
    }

    pub fn input_dim(&self) -> usize {
        match &self.hidden {
            None => self.classifier.weight.dims()[0],
            Some(h) => h.weight.dims()[0],
        }
    }

    /// Logits `[N, 2]` from features `[N, input_dim]`; `dropout_mask` (MLP only) is a 0/scale
    /// mask `[N, hidden]` applied after the activation during training.
    pub fn forward_masked(
        &self,
        x: Tensor<B, 2>,
        dropout_mask: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        let x = match &self.hidden {
            None => x,
            Some(h) => {
                let a = activation::gelu(h.forward(x));
                match dropout_mask {
                    Some(m) => a * m,
                    None => a,
                }
            }
        };
        self.classifier.forward(x)
    }

    /// Logits `[N, 2]` (no dropout).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_masked(x, None)
    }

    /// Logit margins `logit_roadwork - logit_none` for row-major features `[n, input_dim]`,
    /// computed in chunks to bound memory.
    pub fn margins(&self, features: &[f32], device: &B::Device) -> Result<Vec<f64>> {
        let d = self.input_dim();
        if d == 0 || !features.len().is_multiple_of(d) {
            bail!(
                "features have {} values, not a multiple of the head's input width {d}: \
                 the cached features come from a different backbone than this head",
                features.len()
            );
        }
        let mut out = Vec::with_capacity(features.len() / d);
        for chunk in features.chunks(4096 * d) {
            let n = chunk.len() / d;
            let x = Tensor::<B, 2>::from_data(TensorData::new(chunk.to_vec(), [n, d]), device);
            let logits = self.forward(x);
            let v: Vec<f32> = logits
                .into_data()
                .to_vec()
                .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
            out.extend(
                v.chunks(NUM_LABELS)
                    .map(|l| f64::from(l[1]) - f64::from(l[0])),
            );
        }
        Ok(out)
    }

    /// Named tensors in PyTorch layout (`[out, in]` weights) for safetensors:
    /// `classifier.{weight,bias}` and, for the MLP, `hidden.{weight,bias}`.
    pub fn to_named_tensors(&self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        let mut push = |name: &str, l: &Linear<B>| -> Result<()> {
            let [d_in, d_out] = l.weight.dims();
            let w: Vec<f32> = l
                .weight
                .val()
                .transpose()
                .into_data()
                .to_vec()
                .map_err(|e| anyhow::anyhow!("reading {name}.weight: {e:?}"))?;
            out.push((format!("{name}.weight"), vec![d_out, d_in], w));
            if let Some(b) = &l.bias {
                let b: Vec<f32> = b
                    .val()
                    .into_data()
                    .to_vec()
                    .map_err(|e| anyhow::anyhow!("reading {name}.bias: {e:?}"))?;
                out.push((format!("{name}.bias"), vec![d_out], b));
            }
            Ok(())
        };
        if let Some(h) = &self.hidden {
            push("hidden", h)?;
        }
        push("classifier", &self.classifier)?;
        Ok(out)
    }

    /// Rebuilds a head from tensors written by [`Head::to_named_tensors`].
    pub fn from_named_tensors(
        tensors: &NamedTensors,
        origin: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        let get = |name: &str| -> Result<Linear<B>> {
            let (ws, w) = tensors.get(&format!("{name}.weight")).with_context(|| {
                format!(
                    "{} has no tensor {name}.weight: not an sv72 head file",
                    origin.display()
                )
            })?;
            let (bs, b) = tensors.get(&format!("{name}.bias")).with_context(|| {
                format!(
                    "{} has no tensor {name}.bias: not an sv72 head file",
                    origin.display()
                )
            })?;
            if ws.len() != 2 || bs.len() != 1 || bs[0] != ws[0] {
                bail!(
                    "{}: {name} has inconsistent shapes {ws:?} / {bs:?}",
                    origin.display()
                );
            }
            let (d_out, d_in) = (ws[0], ws[1]);
            // Transpose PyTorch `[out, in]` back to Burn's `[in, out]`.
            let mut t = vec![0f32; w.len()];
            for o in 0..d_out {
                for i in 0..d_in {
                    t[i * d_out + o] = w[o * d_in + i];
                }
            }
            Ok(linear_from(t, d_in, d_out, b.clone(), device))
        };
        let hidden = if tensors.contains_key("hidden.weight") {
            Some(get("hidden")?)
        } else {
            None
        };
        let classifier = get("classifier")?;
        if classifier.weight.dims()[1] != NUM_LABELS {
            bail!(
                "{}: classifier has {} outputs, expected {NUM_LABELS}",
                origin.display(),
                classifier.weight.dims()[1]
            );
        }
        if let Some(h) = &hidden {
            if h.weight.dims()[1] != classifier.weight.dims()[0] {
                bail!(
                    "{}: hidden and classifier widths disagree",
                    origin.display()
                );
            }
        }
        Ok(Head { hidden, classifier })
    }
}

/// Maps a head's logit margin to the served probability: `sigmoid(z / T - logit(threshold))`.
///
/// Temperature `T` calibrates; the threshold (chosen on calibrated probabilities) is folded in as a
/// logit shift so the served value crosses 0.5 exactly where the calibrated probability crosses the
/// threshold — validators round the answer at 0.5. For export, the same map is a change of the
/// classifier: divide weight and bias by `T`, then add `-logit(t)/2` to the Roadwork bias and
/// `+logit(t)/2` to the None bias (softmax over two logits is the sigmoid of their difference).
pub fn served_probability(margin: f64, temperature: f64, threshold: f64) -> f64 {
    crate::metrics::sigmoid(margin / temperature - logit(threshold))
}

/// `ln(p / (1 - p))`, clamped away from 0 and 1.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}
