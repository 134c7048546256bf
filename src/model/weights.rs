//! Memory-mapped safetensors checkpoints (single file or sharded with an index).
//!
//! Tensors are converted to f32 one at a time straight from the mapping, so loading peaks at the
//! model's size plus one tensor, not twice the checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

/// File names of a Hugging Face snapshot's weights.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A snapshot's weights: one or more mapped safetensors files and where each tensor lives,
/// optionally overlaid with fine-tuned tensors.
pub struct Weights {
    files: Vec<(PathBuf, Mmap)>,
    location: HashMap<String, usize>,
    overlay: Option<Overlay>,
}

/// A LoRA adapter on one weight, in PEFT's layout: `W' = W + scale · B · A`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraDelta {
    /// `lora_A.weight` `[r, in]`.
    pub a: Vec<f32>,
    /// `lora_B.weight` `[out, r]`.
    pub b: Vec<f32>,
    pub rank: usize,
    pub scale: f64,
}

/// Fine-tuned tensors over a snapshot (see [`Weights::with_overlay`]): whole tensors replaced
/// by name, and LoRA adapters merged into their weight when it is read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Full snapshot name → `(shape, values)`.
    pub replace: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// Full snapshot name of the adapted weight (`….weight`) → adapter.
    pub lora: HashMap<String, LoraDelta>,
}

impl Overlay {
    /// Sorts `tensors` into replacements and adapters: a pair `X.lora_A.weight` /
    /// `X.lora_B.weight` adapts `X.weight` with `scale`; every other tensor replaces its name.
    pub fn from_tensors(
        mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
        scale: f64,
    ) -> Result<Self> {
        let a_names: Vec<String> = tensors
            .keys()
            .filter(|n| n.ends_with(".lora_A.weight"))
            .cloned()
            .collect();
        let mut lora = HashMap::new();
        for a_name in a_names {
            let base = a_name.trim_end_matches(".lora_A.weight");
            let b_name = format!("{base}.lora_B.weight");
            let (a_shape, a) = tensors.remove(&a_name).expect("listed");
            let Some((b_shape, b)) = tensors.remove(&b_name) else {
                bail!("adapter `{a_name}` has no `{b_name}`");
            };
            if a_shape.len() != 2 || b_shape.len() != 2 || a_shape[0] != b_shape[1] {
                bail!("adapter `{base}`: lora_A {a_shape:?} and lora_B {b_shape:?} do not fit");
            }
            lora.insert(
                format!("{base}.weight"),
                LoraDelta {
                    a,
                    b,
                    rank: a_shape[0],
                    scale,
                },
            );
        }
        if let Some(b) = tensors.keys().find(|n| n.ends_with(".lora_B.weight")) {
            bail!("adapter `{b}` has no lora_A");
        }
        Ok(Self {
            replace: tensors,
            lora,
        })
    }

    /// Number of tensors it changes.
    pub fn len(&self) -> usize {
        self.replace.len() + self.lora.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `w [out, in] += scale · b [out, r] · a [r, in]`, accumulated in f64 and rounded once.
fn merge_lora(w: &mut [f32], d: &LoraDelta, out: usize, inp: usize) {
    let r = d.rank;
    for o in 0..out {
        let brow = &d.b[o * r..(o + 1) * r];
        let wrow = &mut w[o * inp..(o + 1) * inp];
        for (i, wv) in wrow.iter_mut().enumerate() {
            let mut acc = 0f64;
            for (k, &bv) in brow.iter().enumerate() {
                acc += f64::from(bv) * f64::from(d.a[k * inp + i]);
            }
            *wv = (f64::from(*wv) + d.scale * acc) as f32;
        }
    }
}

impl Weights {
    /// Opens `dir/model.safetensors`, or the shards listed in `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        let shard_files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("cannot read {}", index.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", index.display()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .with_context(|| format!("{} has no `weight_map` object", index.display()))?;
            let mut uniq: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            uniq.sort();
            uniq.dedup();
            uniq.into_iter().map(|f| dir.join(f)).collect()
        } else {
            bail!(
                "no weights in {}: expected {SINGLE_FILE} or {INDEX_FILE} (download the snapshot with `sv72 fetch-backbone`)",
                dir.display()
            );
        };
        Self::open_files(&shard_files)
    }

    /// Maps the given safetensors files.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut location = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let f = File::open(path)
                .with_context(|| format!("cannot open weights file {}", path.display()))?;
            // SAFETY: the file is opened read-only; sv72 never writes a checkpoint it has mapped,
            // and a concurrent external truncation is the same hazard every safetensors reader takes.
            let mmap = unsafe { Mmap::map(&f) }
                .with_context(|| format!("cannot map weights file {}", path.display()))?;
            let st = SafeTensors::deserialize(&mmap).with_context(|| {
                format!(
                    "{} is not a valid safetensors file (truncated download?)",
                    path.display()
                )
            })?;
            for name in st.names() {
                location.insert(name.to_string(), i);
            }
            files.push((path.clone(), mmap));
        }
        Ok(Self {
            files,
            location,
            overlay: None,
        })
    }

    /// These weights with `overlay` applied on every read: each replacement must name an
    /// existing tensor of the same shape, each adapter an existing `[out, in]` weight it fits.
    pub fn with_overlay(mut self, overlay: Overlay) -> Result<Self> {
        for (name, (shape, v)) in &overlay.replace {
            let (view, path) = self.view(name).with_context(|| {
                format!("the fine-tuned tensor `{name}` is not in the base snapshot")
            })?;
            if view.shape() != shape.as_slice() || v.len() != shape.iter().product::<usize>() {
                bail!(
                    "the fine-tuned tensor `{name}` has shape {shape:?}, but {} has {:?}",
                    path.display(),
                    view.shape()
                );
            }
        }
        for (name, d) in &overlay.lora {
            let (view, path) = self.view(name).with_context(|| {
                format!("the adapted weight `{name}` is not in the base snapshot")
            })?;
            let shape = view.shape();
            if shape.len() != 2 || d.a.len() != d.rank * shape[1] || d.b.len() != shape[0] * d.rank
            {
                bail!(
                    "the adapter of `{name}` (rank {}) does not fit its weight {shape:?} in {}",
                    d.rank,
                    path.display()
                );
            }
        }
        self.overlay = Some(overlay);
        Ok(self)
    }

    /// The overlay applied on reads, if any.
    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The file holding tensor `name`, for error messages.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.location.get(name).map(|&i| self.files[i].0.as_path())
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.location.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Shape and dtype of every tensor, by name.
    pub fn shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        let mut out = BTreeMap::new();
        for name in self.location.keys() {
            let (view, _) = self.view(name)?;
            out.insert(name.clone(), view.shape().to_vec());
        }
        Ok(out)
    }

    fn view(&self, name: &str) -> Result<(safetensors::tensor::TensorView<'_>, &Path)> {
        let Some(&i) = self.location.get(name) else {
            let files: Vec<String> = self
                .files
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            bail!("tensor `{name}` is missing from {}", files.join(", "));
        };
        let (path, mmap) = &self.files[i];
        let st = SafeTensors::deserialize(mmap)
            .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
        let view = st
            .tensor(name)
            .with_context(|| format!("tensor `{name}` in {}", path.display()))?;
        Ok((view, path))
    }

    /// The tensor as f32 values with its shape (f16/bf16/f64 are converted), with the overlay
    /// applied.
    pub fn f32_data(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        if let Some((shape, v)) = self.overlay.as_ref().and_then(|o| o.replace.get(name)) {
            return Ok((v.clone(), shape.clone()));
        }
        let (mut values, shape) = self.file_f32_data(name)?;
        if let Some(d) = self.overlay.as_ref().and_then(|o| o.lora.get(name)) {
            merge_lora(&mut values, d, shape[0], shape[1]);
        }
        Ok((values, shape))
    }

    /// The tensor as stored in the files (no overlay).
    pub fn file_f32_data(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (view, path) = self.view(name)?;
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => bail!(
                "tensor `{name}` in {} has dtype {other:?}; expected a float type",
                path.display()
            ),
        };
        Ok((values, view.shape().to_vec()))
    }

    /// Loads tensor `name`, checking that its shape is exactly `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let (values, found) = self.f32_data(name)?;
        if found != shape {
            let (_, path) = self.view(name)?;
            bail!(
                "tensor `{name}` in {} has shape {found:?}, but the config implies {shape:?} (config.json and weights disagree)",
                path.display()
            );
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Tensor `name` as f32 values, checking that its shape is exactly `shape` (for callers that
    /// rearrange the values on the host before building a tensor).
    pub fn f32_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (values, found) = self.f32_data(name)?;
        if found != shape {
            let (_, path) = self.view(name)?;
            bail!(
                "tensor `{name}` in {} has shape {found:?}, but the config implies {shape:?} (config.json and weights disagree)",
                path.display()
            );
        }
        Ok(values)
    }

    /// Like [`Weights::tensor`] for an optional tensor: `None` when absent.
    pub fn tensor_opt<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Option<Tensor<B, D>>> {
        if self.contains(name) {
            self.tensor(name, shape, device).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The first prefix (e.g. `""`, `"dinov2."`) under which `probe` exists.
    pub fn detect_prefix<'a>(&self, probe: &str, candidates: &[&'a str]) -> Option<&'a str> {
        candidates
            .iter()
            .copied()
            .find(|p| self.contains(&format!("{p}{probe}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    type B = burn::backend::Flex;

    fn write_st(path: &Path, tensors: &[(&str, Vec<f32>, Vec<usize>)]) {
        let bufs: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, v, s)| {
                (
                    n.to_string(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    s.clone(),
                )
            })
            .collect();
        let views: HashMap<String, safetensors::tensor::TensorView<'_>> = bufs
            .iter()
            .map(|(n, b, s)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    #[test]
    fn loads_single_and_sharded_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        write_st(
            &dir.path().join("model.safetensors"),
            &[("a", vec![1.0, 2.0], vec![2])],
        );
        let w = Weights::open(dir.path()).unwrap();
        let t: Tensor<B, 1> = w.tensor("a", [2], &Default::default()).unwrap();
        assert_eq!(t.into_data().to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        let e = w
            .tensor::<B, 1>("a", [3], &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`a`") && e.contains("model.safetensors") && e.contains("[3]"),
            "{e}"
        );
        let e = w
            .tensor::<B, 1>("zz", [3], &Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`zz`") && e.contains("missing"), "{e}");

        let sh = tempfile::tempdir().unwrap();
        write_st(
            &sh.path().join("s1.safetensors"),
            &[("a", vec![1.0], vec![1])],
        );
        write_st(
            &sh.path().join("s2.safetensors"),
            &[("b", vec![2.0, 3.0], vec![1, 2])],
        );
        std::fs::write(
            sh.path().join(INDEX_FILE),
            r#"{"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#,
        )
        .unwrap();
        let w = Weights::open(sh.path()).unwrap();
        assert_eq!(w.names(), vec!["a", "b"]);
        assert_eq!(
            w.file_of("b"),
            Some(sh.path().join("s2.safetensors").as_path())
        );
        assert_eq!(w.file_of("zz"), None);
        let t: Tensor<B, 2> = w.tensor("b", [1, 2], &Default::default()).unwrap();
        assert_eq!(t.into_data().to_vec::<f32>().unwrap(), vec![2.0, 3.0]);

        let empty = tempfile::tempdir().unwrap();
        assert!(Weights::open(empty.path()).is_err());
    }
}
