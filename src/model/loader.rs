//! The weight loader every backbone family builds itself with (in the manner of candle's
//! `VarBuilder`): a root prefix detected once, a sub-path per block, legacy and renamed tensor
//! names, torch `[out, in]` → burn `[in, out]` transposes done on the host, and optional
//! layer-scale folding.
//!
//! When it does not fold, the loader also records a [`Binding`] for every parameter it creates:
//! which snapshot tensor it came from and how. That map is what lets a trained backbone be
//! written back in the snapshot's own names (fine-tuning checkpoints, exports) and what
//! layer-wise learning rates and freezing select on.

use std::cell::RefCell;
use std::path::Path;

use anyhow::Result;
use burn::module::{Param, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorCreationOptions, TensorData};

use super::linear::{PartInfo, Proj};
use super::weights::Weights;

/// How a backbone is built from its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Fold layer-scale vectors (and DINOv2's CLS position) into neighbouring weights: a little
    /// faster for inference, but the parameters then no longer match the snapshot's one to one,
    /// so a folded model cannot be trained or written back.
    pub fold: bool,
    /// Hold projection weights in bf16 on the CPU backend (`backbone.dtype: bf16`): their
    /// products then run on [`super::kernels::bf16`]; norms, attention, GELU and the
    /// accumulation stay f32. Inference only; other backends ignore it (CUDA picks its
    /// precision by backend type).
    pub bf16: bool,
}

impl LoadOptions {
    /// For inference: fold.
    pub const INFERENCE: Self = Self {
        fold: true,
        bf16: false,
    };
    /// For training and write-back: one parameter per snapshot tensor, as `transformers` has it.
    pub const TRAINING: Self = Self {
        fold: false,
        bf16: false,
    };

    /// Inference at `backbone.dtype`: bf16 projection weights when it is bf16 (taking effect
    /// on the CPU backend only, see [`Self::bf16`]).
    pub fn inference(dtype: crate::config::Dtype) -> Self {
        Self {
            bf16: dtype == crate::config::Dtype::Bf16,
            ..Self::INFERENCE
        }
    }
}

/// How one piece of a snapshot tensor sits in a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceKind {
    /// The parameter holds the values as they are (any shape with the same row-major order).
    Copy,
    /// The tensor `[len, in]` is the transpose of columns `offset..offset + len` of the
    /// parameter `[in, out]` (a torch linear weight in a burn, possibly fused, projection).
    Columns { offset: usize, len: usize },
}

/// One parameter's share of a snapshot tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub param: ParamId,
    pub kind: PieceKind,
}

/// A snapshot tensor and the parameters it lives in: its values are the pieces' values
/// concatenated in order (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Full name in the snapshot (prefix included), or an adapter name (`….lora_A.weight`).
    pub name: String,
    /// Shape in the snapshot.
    pub shape: Vec<usize>,
    pub pieces: Vec<Piece>,
    /// 0 = embeddings, `i + 1` = block `i`, `layers + 1` = the final norm.
    pub depth: usize,
    /// Whether weight decay applies (matrices yes; biases, norms, scales and tokens no).
    pub decay: bool,
}

/// Every binding of a model, in load order.
pub type Bindings = Vec<Binding>;

/// A view of a snapshot's weights at one sub-path (see the module docs).
pub struct Loader<'a, B: Backend> {
    weights: &'a Weights,
    dir: &'a Path,
    root: &'a str,
    path: String,
    device: &'a B::Device,
    opts: LoadOptions,
    depth: usize,
    bindings: &'a RefCell<Bindings>,
}

/// A layer-scale vector: folded into a projection's output columns, or a parameter of its own.
pub enum LayerScale<B: Backend> {
    Folded(Vec<f32>),
    Param(Param<Tensor<B, 1>>),
}

impl<B: Backend> LayerScale<B> {
    /// The values to fold into the projection before it, if folded.
    pub fn folded(&self) -> Option<&[f32]> {
        match self {
            Self::Folded(v) => Some(v),
            Self::Param(_) => None,
        }
    }

    /// The parameter to multiply by, if not folded.
    pub fn into_param(self) -> Option<Param<Tensor<B, 1>>> {
        match self {
            Self::Folded(_) => None,
            Self::Param(p) => Some(p),
        }
    }
}

/// One output part of a projection: its weight (and bias) names, first the canonical spelling
/// (named in errors), then accepted aliases, and its output width.
pub struct PartSpec<'s> {
    pub weight: &'s [&'s str],
    /// `None`: the part has no bias.
    pub bias: Option<&'s [&'s str]>,
    pub d_out: usize,
    /// Snapshot shape of the weight when it is not `[d_out, d_in]` (a patch convolution).
    pub shape: Option<&'s [usize]>,
}

impl<'s> PartSpec<'s> {
    /// A part `[d_out, d_in]` with the given weight and bias names.
    pub fn new(weight: &'s [&'s str], bias: Option<&'s [&'s str]>, d_out: usize) -> Self {
        Self {
            weight,
            bias,
            d_out,
            shape: None,
        }
    }
}

impl<'a, B: Backend> Loader<'a, B> {
    /// A loader at `root` (a prefix detected with [`Weights::detect_prefix`]); `bindings` collects
    /// what is loaded when not folding. `dir` names the snapshot in errors.
    pub fn new(
        weights: &'a Weights,
        dir: &'a Path,
        root: &'a str,
        device: &'a B::Device,
        opts: LoadOptions,
        bindings: &'a RefCell<Bindings>,
    ) -> Self {
        Self {
            weights,
            dir,
            root,
            path: String::new(),
            device,
            opts,
            depth: 0,
            bindings,
        }
    }

    /// The same weights one level down (`pp("encoder.layer.3")`), as candle's `VarBuilder::pp`.
    pub fn pp(&self, sub: &str) -> Self {
        Self {
            path: format!("{}{sub}.", self.path),
            ..self.clone_view()
        }
    }

    /// The same view, with parameters recorded at `depth` (for layer-wise learning rates).
    pub fn at_depth(&self, depth: usize) -> Self {
        Self {
            depth,
            ..self.clone_view()
        }
    }

    fn clone_view(&self) -> Self {
        Self {
            weights: self.weights,
            dir: self.dir,
            root: self.root,
            path: self.path.clone(),
            device: self.device,
            opts: self.opts,
            depth: self.depth,
            bindings: self.bindings,
        }
    }

    /// The options the model is being built with.
    pub fn options(&self) -> LoadOptions {
        self.opts
    }

    /// The device tensors go to.
    pub fn device(&self) -> &B::Device {
        self.device
    }

    /// The snapshot folder (for errors).
    pub fn dir(&self) -> &Path {
        self.dir
    }

    /// The underlying weights.
    pub fn weights(&self) -> &Weights {
        self.weights
    }

    /// Full name of `rel` at this path.
    pub fn name(&self, rel: &str) -> String {
        format!("{}{}{rel}", self.root, self.path)
    }

    /// Whether `rel` exists at this path.
    pub fn has(&self, rel: &str) -> bool {
        self.weights.contains(&self.name(rel))
    }

    /// The first of `names` present, else the first, so that a missing-tensor error names the
    /// canonical spelling.
    pub fn pick(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| self.name(n))
            .find(|n| self.weights.contains(n))
            .unwrap_or_else(|| self.name(names[0]))
    }

    /// Host values of the first present of `names`, which must have exactly `shape`; returns the
    /// name read too.
    pub fn host(&self, names: &[&str], shape: &[usize]) -> Result<(String, Vec<f32>)> {
        let name = self.pick(names);
        let values = self.weights.f32_shaped(&name, shape)?;
        Ok((name, values))
    }

    /// A tensor from host values.
    pub fn tensor<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }

    /// A projection weight `[d_in, d_out]` from its row-major values: f32, or with
    /// [`LoadOptions::bf16`] on the CPU backend, bf16 held as its `[d_out, d_in]` transpose
    /// (rounded to nearest even once, here) viewed back as `[d_in, d_out]`, the layout the bf16
    /// product reads in place.
    fn weight_tensor(&self, w: Vec<f32>, d_in: usize, d_out: usize) -> Result<Tensor<B, 2>> {
        if !(self.opts.bf16 && crate::backend::is_host_cpu::<B>()) {
            return Ok(self.tensor(w, [d_in, d_out]));
        }
        if super::kernels::bf16::engine().is_none() {
            anyhow::bail!(super::kernels::bf16::UNAVAILABLE);
        }
        let t: Vec<half::bf16> = transpose(&w, d_in, d_out)
            .into_iter()
            .map(half::bf16::from_f32)
            .collect();
        let options = TensorCreationOptions::new(self.device.clone()).with_dtype(DType::BF16);
        Ok(Tensor::from_data(TensorData::new(t, [d_out, d_in]), options).transpose())
    }

    /// Records a binding (when not folding) at the current depth.
    pub fn record(&self, name: String, shape: &[usize], pieces: Vec<Piece>, decay: bool) {
        if self.opts.fold {
            return;
        }
        self.bindings.borrow_mut().push(Binding {
            name,
            shape: shape.to_vec(),
            pieces,
            depth: self.depth,
            decay,
        });
    }

    /// A parameter holding snapshot tensor `names` (`hf_shape` there) as `shape`.
    pub fn param<const D: usize>(
        &self,
        names: &[&str],
        hf_shape: &[usize],
        shape: [usize; D],
        decay: bool,
    ) -> Result<Param<Tensor<B, D>>> {
        let (name, v) = self.host(names, hf_shape)?;
        let p = Param::from_tensor(self.tensor(v, shape));
        self.record(
            name,
            hf_shape,
            vec![Piece {
                param: p.id,
                kind: PieceKind::Copy,
            }],
            decay,
        );
        Ok(p)
    }

    /// `name.weight` and `name.bias` as a layer norm of width `d`.
    pub fn layer_norm(&self, name: &str, d: usize, eps: f64) -> Result<LayerNorm<B>> {
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(self.device);
        ln.gamma = self.param(&[&format!("{name}.weight")], &[d], [d], false)?;
        ln.beta = Some(self.param(&[&format!("{name}.bias")], &[d], [d], false)?);
        Ok(ln)
    }

    /// A layer-scale vector `name` `[d]`: folded when the options say so.
    pub fn layer_scale(&self, name: &str, d: usize) -> Result<LayerScale<B>> {
        if self.opts.fold {
            Ok(LayerScale::Folded(self.host(&[name], &[d])?.1))
        } else {
            Ok(LayerScale::Param(self.param(&[name], &[d], [d], false)?))
        }
    }

    /// A projection from `d_in` to the parts' outputs side by side, from torch `[out, in]`
    /// weights; `scale` multiplies every output column (layer-scale folding).
    pub fn proj(
        &self,
        parts: &[PartSpec<'_>],
        d_in: usize,
        scale: Option<&[f32]>,
    ) -> Result<Proj<B>> {
        let d_out: usize = parts.iter().map(|p| p.d_out).sum();
        let mut w = vec![0f32; d_in * d_out];
        let mut biases = Vec::with_capacity(parts.len());
        let mut infos = Vec::with_capacity(parts.len());
        let mut bias_pieces = Vec::new();
        let mut offset = 0;
        for part in parts {
            let default_shape = [part.d_out, d_in];
            let shape = part.shape.unwrap_or(&default_shape);
            let (wname, v) = self.host(part.weight, shape)?;
            let t = transpose(&v, part.d_out, d_in);
            drop(v);
            for r in 0..d_in {
                w[r * d_out + offset..r * d_out + offset + part.d_out]
                    .copy_from_slice(&t[r * part.d_out..(r + 1) * part.d_out]);
            }
            let bias = match part.bias {
                Some(names) => Some(self.host(names, &[part.d_out])?),
                None => None,
            };
            let bias = bias.map(|(bname, mut b)| {
                if let Some(s) = scale {
                    b.iter_mut()
                        .zip(&s[offset..offset + part.d_out])
                        .for_each(|(x, s)| *x *= s);
                }
                let p = Param::from_tensor(self.tensor(b, [part.d_out]));
                bias_pieces.push((bname, part.d_out, p.id));
                p
            });
            biases.push(bias);
            infos.push(PartInfo {
                name: wname.strip_suffix(".weight").unwrap_or(&wname).to_string(),
                d_in,
                d_out: part.d_out,
                depth: self.depth,
                shape: shape.to_vec(),
            });
            offset += part.d_out;
        }
        if let Some(s) = scale {
            for row in w.chunks_exact_mut(d_out) {
                row.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
            }
        }
        let weight = Param::from_tensor(self.weight_tensor(w, d_in, d_out)?);
        let mut offset = 0;
        for info in &infos {
            self.record(
                format!("{}.weight", info.name),
                &info.shape,
                vec![Piece {
                    param: weight.id,
                    kind: PieceKind::Columns {
                        offset,
                        len: info.d_out,
                    },
                }],
                true,
            );
            offset += info.d_out;
        }
        for (bname, d, id) in bias_pieces {
            self.record(
                bname,
                &[d],
                vec![Piece {
                    param: id,
                    kind: PieceKind::Copy,
                }],
                false,
            );
        }
        Ok(Proj::new(weight, biases, infos))
    }
}

/// `[rows, cols]` row-major values as `[cols, rows]`, in cache-sized tiles (7B matrices are
/// 4096 x 8192).
pub fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = vec![0f32; v.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = v[r * cols + c];
                }
            }
        }
    }
    t
}

/// Host values `(dims, row-major values)` of the float parameters of `module` whose ids are in
/// `ids` (read as f32 whatever the backend's float type).
pub fn param_values<B: Backend, M: burn::module::Module<B>>(
    module: &M,
    ids: &std::collections::HashSet<ParamId>,
) -> std::collections::HashMap<ParamId, (Vec<usize>, Vec<f32>)> {
    struct Collect<'a> {
        ids: &'a std::collections::HashSet<ParamId>,
        out: std::collections::HashMap<ParamId, (Vec<usize>, Vec<f32>)>,
    }
    impl<B: Backend> burn::module::ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.ids.contains(&param.id) {
                let t = param.val();
                let dims = t.dims().to_vec();
                let values = t
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .expect("converted to f32");
                self.out.insert(param.id, (dims, values));
            }
        }
    }
    let mut c = Collect {
        ids,
        out: Default::default(),
    };
    module.visit(&mut c);
    c.out
}

/// The snapshot tensors `bindings` describe, `(name, shape, values)`, rebuilt from the current
/// values of `module`'s parameters: the inverse of loading (without folding).
pub fn write_back<B: Backend, M: burn::module::Module<B>>(
    module: &M,
    bindings: &[&Binding],
) -> Result<Vec<super::NamedTensor>> {
    let ids = bindings
        .iter()
        .flat_map(|b| b.pieces.iter().map(|p| p.param))
        .collect();
    let values = param_values(module, &ids);
    let mut out = Vec::with_capacity(bindings.len());
    for b in bindings {
        let mut v = Vec::with_capacity(b.shape.iter().product());
        for piece in &b.pieces {
            let Some((dims, pv)) = values.get(&piece.param) else {
                anyhow::bail!(
                    "tensor `{}`: its parameter is not part of the model",
                    b.name
                );
            };
            match piece.kind {
                PieceKind::Copy => v.extend_from_slice(pv),
                PieceKind::Columns { offset, len } => {
                    let (rows, cols) = (dims[0], dims[1]);
                    for c in offset..offset + len {
                        v.extend((0..rows).map(|r| pv[r * cols + c]));
                    }
                }
            }
        }
        if v.len() != b.shape.iter().product::<usize>() {
            anyhow::bail!(
                "tensor `{}`: {} values rebuilt for shape {:?}",
                b.name,
                v.len(),
                b.shape
            );
        }
        out.push((b.name.clone(), b.shape.clone(), v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::Backbone;

    /// Loading without folding and writing back reproduces every snapshot tensor of the
    /// backbone bit for bit, for each family and naming (the basis of fine-tuned checkpoints).
    #[test]
    fn write_back_reproduces_every_snapshot_tensor() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones");
        for name in [
            "dinov2_s36",
            "dinov2_swiglu_s42",
            "dinov2_reg4_s36",
            "dinov3-tiny",
            "dinov3-gated",
            "siglip-tiny",
            "siglip-vision",
            "siglip2-tiny",
            "siglip2-vision",
        ] {
            let dir = root.join(name);
            let w = Weights::open(&dir).unwrap();
            let m =
                Backbone::<Cpu>::from_weights(&dir, &w, &Default::default(), LoadOptions::TRAINING)
                    .unwrap();
            let all: Vec<&Binding> = m.bindings().iter().collect();
            let back = write_back(&m, &all).unwrap();
            let mut seen = std::collections::HashSet::new();
            for (n, shape, v) in back {
                let (want, want_shape) = w.f32_data(&n).unwrap();
                assert_eq!((name, &shape), (name, &want_shape), "{n}");
                assert!(v == want, "{name}: {n} differs after write-back");
                seen.insert(n);
            }
            // Everything but pre-training-only tensors (and SigLIP's text tower) is bound.
            for n in w.names() {
                let text = n.starts_with("text_model.") || n.starts_with("logit_");
                assert!(
                    seen.contains(n) != (n.contains("mask_token") || text),
                    "{name}: {n} bound or not as it should be"
                );
            }
            // A folded model records nothing.
            let f = Backbone::<Cpu>::from_weights(
                &dir,
                &w,
                &Default::default(),
                LoadOptions::INFERENCE,
            )
            .unwrap();
            assert!(f.bindings().is_empty());
        }
    }
}
