//! DINOv2 and DINOv2 with registers: tiny random snapshots from `tools/backbone_fixtures.py`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use sv72::backend::Cpu;

/// f32 parity tolerance (max |Δ|) against the PyTorch float32 reference.
const TOL: f32 = 1e-4;

/// A named tensor as host values.
#[derive(Clone)]
struct HostTensor {
    values: Vec<f32>,
    shape: Vec<usize>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones")
}

/// Every tensor of a safetensors file; floats as f32, u8 widened to f32.
fn read_safetensors(path: &Path) -> HashMap<String, HostTensor> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::U8 => data.iter().map(|&b| b as f32).collect(),
                other => panic!(
                    "{}: `{name}` has unexpected dtype {other:?}",
                    path.display()
                ),
            };
            let shape = view.shape().to_vec();
            (name, HostTensor { values, shape })
        })
        .collect()
}

/// Writes f32 tensors as a safetensors file.
fn write_safetensors(path: &Path, tensors: &HashMap<String, HostTensor>) {
    let bufs: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bufs
        .iter()
        .map(|(n, b, s)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap();
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// `pixel_values` of `inputs_<res>.safetensors`: `(f32(u8) / 255 - mean) / std`, op by op in f32
/// exactly as the fixture script computes them.
pub(super) fn pixel_values(res: &str) -> Tensor<Cpu, 4> {
    let t = read_safetensors(&fixtures().join(format!("inputs_{res}.safetensors")));
    let u8s = &t["pixel_u8"];
    let (mean, std) = (&t["mean"].values, &t["std"].values);
    let plane: usize = u8s.shape[2] * u8s.shape[3];
    let values: Vec<f32> = u8s
        .values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane) % 3;
            (v / 255.0 - mean[c]) / std[c]
        })
        .collect();
    let shape: [usize; 4] = u8s.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Max |a - b| after checking shapes agree.
fn max_abs_diff<const D: usize>(what: &str, got: Tensor<Cpu, D>, want: &HostTensor) -> f32 {
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let got = got.into_data().to_vec::<f32>().unwrap();
    got.iter()
        .zip(&want.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn assert_close<const D: usize>(what: &str, got: Tensor<Cpu, D>, want: &HostTensor) {
    let d = max_abs_diff(what, got, want);
    eprintln!("{what}: {d:e}");
    assert!(d <= TOL, "{what}: max |Δ| = {d:e} > {TOL:e}");
}

mod parity {
    use super::*;
    use sv72::model::dinov2::{self, Dinov2Family, Dinov2Model};
    use sv72::model::FeatureExtractor;

    const RESOLUTIONS: [&str; 3] = ["224", "98", "70x112"];

    fn load(dir: &Path) -> Dinov2Model<Cpu> {
        dinov2::load::<Cpu>(dir, &Default::default())
            .unwrap_or_else(|e| panic!("loading {}: {e:#}", dir.display()))
    }

    /// Runs `model` on every fixture resolution and compares all four outputs.
    fn check_against_reference(model: &Dinov2Model<Cpu>, name: &str, resolutions: &[&str]) {
        for res in resolutions {
            let want = read_safetensors(
                &fixtures()
                    .join(name)
                    .join(format!("reference_{res}.safetensors")),
            );
            let out = model.extract(pixel_values(res), true);
            let tag = |o: &str| format!("{name} @ {res}: {o}");
            assert_close(
                &tag("last_hidden_state"),
                out.last_hidden_state.unwrap(),
                &want["last_hidden_state"],
            );
            assert_close(&tag("pooler"), out.pooler, &want["pooler_output"]);
            assert_close(&tag("cls"), out.cls, &want["cls"]);
            assert_close(&tag("patch_mean"), out.patch_mean, &want["patch_mean"]);
        }
    }

    #[test]
    fn plain_mlp_matches_transformers() {
        let model = load(&fixtures().join("dinov2_s36"));
        assert_eq!(model.config().family, Dinov2Family::Dinov2);
        assert_eq!((model.hidden_size(), model.patch_size()), (36, 14));
        check_against_reference(&model, "dinov2_s36", &RESOLUTIONS);
    }

    #[test]
    fn swiglu_matches_transformers() {
        let model = load(&fixtures().join("dinov2_swiglu_s42"));
        assert!(model.config().use_swiglu_ffn);
        assert_eq!(model.config().mlp_hidden(), 88);
        check_against_reference(&model, "dinov2_swiglu_s42", &RESOLUTIONS);
    }

    #[test]
    fn registers_match_transformers() {
        let model = load(&fixtures().join("dinov2_reg4_s36"));
        assert_eq!(model.config().family, Dinov2Family::WithRegisters);
        assert_eq!(model.num_prefix_tokens(), 5);
        check_against_reference(&model, "dinov2_reg4_s36", &RESOLUTIONS);
    }

    /// Copies a fixture snapshot into a temp dir, rewriting its tensors with `edit`.
    fn edited_snapshot(
        name: &str,
        edit: impl FnOnce(&mut HashMap<String, HostTensor>),
    ) -> tempfile::TempDir {
        let src = fixtures().join(name);
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
        let mut tensors = read_safetensors(&src.join("model.safetensors"));
        edit(&mut tensors);
        write_safetensors(&dir.path().join("model.safetensors"), &tensors);
        dir
    }

    /// transformers-5 runtime names (q_proj, o_proj, gate/up/down_proj) under a prefix.
    fn rename_v5(tensors: &mut HashMap<String, HostTensor>, prefix: &str) {
        let old = std::mem::take(tensors);
        for (name, t) in old {
            let renamed = name
                .replace("attention.attention.query", "attention.q_proj")
                .replace("attention.attention.key", "attention.k_proj")
                .replace("attention.attention.value", "attention.v_proj")
                .replace("attention.output.dense", "attention.o_proj")
                .replace("mlp.weights_out", "mlp.down_proj");
            if renamed.contains("mlp.weights_in") {
                // Chunk(dim=0): first half gate, second half up.
                let half = t.values.len() / 2;
                let mut shape = t.shape.clone();
                shape[0] /= 2;
                for (part, vals) in [
                    ("gate_proj", &t.values[..half]),
                    ("up_proj", &t.values[half..]),
                ] {
                    tensors.insert(
                        format!("{prefix}{}", renamed.replace("weights_in", part)),
                        HostTensor {
                            values: vals.to_vec(),
                            shape: shape.clone(),
                        },
                    );
                }
            } else {
                tensors.insert(format!("{prefix}{renamed}"), t);
            }
        }
    }

    #[test]
    fn prefixed_and_renamed_checkpoints_load() {
        for (name, prefix) in [
            ("dinov2_swiglu_s42", "dinov2."),
            ("dinov2_reg4_s36", "dinov2_with_registers."),
        ] {
            let dir = edited_snapshot(name, |t| {
                rename_v5(t, prefix);
                // A classifier head next to the backbone is ignored.
                t.insert(
                    "classifier.weight".into(),
                    HostTensor {
                        values: vec![0.0; 4],
                        shape: vec![2, 2],
                    },
                );
            });
            let model = load(dir.path());
            check_against_reference(&model, name, &["98"]);
        }
    }

    #[test]
    fn sharded_checkpoint_loads() {
        let name = "dinov2_s36";
        let dir = tempfile::tempdir().unwrap();
        let src = fixtures().join(name);
        std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
        let all = read_safetensors(&src.join("model.safetensors"));
        let (mut a, mut b) = (HashMap::new(), HashMap::new());
        let mut map = serde_json::Map::new();
        for (n, t) in all {
            let (shard, file) = if n.contains("layer.1.") {
                (&mut b, "model-00002-of-00002.safetensors")
            } else {
                (&mut a, "model-00001-of-00002.safetensors")
            };
            map.insert(n.clone(), file.into());
            shard.insert(n, t);
        }
        write_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), &a);
        write_safetensors(&dir.path().join("model-00002-of-00002.safetensors"), &b);
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        check_against_reference(&load(dir.path()), name, &["98"]);
    }

    fn load_err(dir: &Path) -> String {
        match dinov2::load::<Cpu>(dir, &Default::default()) {
            Ok(_) => panic!("{} loaded but should not", dir.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn missing_tensor_is_named_with_its_file() {
        let gone = "encoder.layer.1.mlp.fc1.weight";
        let dir = edited_snapshot("dinov2_s36", |t| {
            t.remove(gone).unwrap();
        });
        let e = load_err(dir.path());
        assert!(
            e.contains(&format!("`{gone}`"))
                && e.contains("model.safetensors")
                && e.contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn shape_mismatch_is_named_with_its_file() {
        let bad = "encoder.layer.0.attention.output.dense.weight";
        let dir = edited_snapshot("dinov2_reg4_s36", |t| {
            let w = t.get_mut(bad).unwrap();
            w.values.truncate(36 * 35);
            w.shape = vec![36, 35];
        });
        let e = load_err(dir.path());
        assert!(
            e.contains(&format!("`{bad}`"))
                && e.contains("model.safetensors")
                && e.contains("[36, 35]")
                && e.contains("[36, 36]"),
            "{e}"
        );
    }

    #[test]
    fn unknown_model_type_names_config_json() {
        let dir = edited_snapshot("dinov2_s36", |_| {});
        let cfg = dir.path().join("config.json");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("\"dinov2\"", "\"dinov3_vit\"");
        std::fs::write(&cfg, text).unwrap();
        let e = load_err(dir.path());
        assert!(
            e.contains("config.json") && e.contains("`dinov3_vit`"),
            "{e}"
        );

        std::fs::remove_file(&cfg).unwrap();
        let e = load_err(dir.path());
        assert!(e.contains("config.json"), "{e}");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let model = load(&fixtures().join("dinov2_s36"));
        let x = Tensor::<Cpu, 4>::zeros([1, 1, 28, 28], &Default::default());
        let e = model.try_extract(x, false).unwrap_err().to_string();
        assert!(e.contains("1 channels") && e.contains('3'), "{e}");
        let x = Tensor::<Cpu, 4>::zeros([1, 3, 10, 28], &Default::default());
        assert!(model.try_extract(x, false).is_err());
    }

    #[test]
    fn non_multiple_inputs_drop_the_remainder_like_a_strided_conv() {
        // A stride-14 convolution ignores the 5 extra rows/columns of a 103x103 input (still
        // square, so the position grid is resampled the same way): same output as 98x98.
        let model = load(&fixtures().join("dinov2_s36"));
        let x98 = pixel_values("98").narrow(0, 0, 2);
        let padded = Tensor::cat(
            vec![
                x98.clone(),
                Tensor::<Cpu, 4>::ones([2, 3, 98, 5], &Default::default()),
            ],
            3,
        );
        let padded = Tensor::cat(
            vec![
                padded,
                Tensor::<Cpu, 4>::ones([2, 3, 5, 103], &Default::default()),
            ],
            2,
        );
        let a = model.forward(x98).into_data().to_vec::<f32>().unwrap();
        let b = model.forward(padded).into_data().to_vec::<f32>().unwrap();
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(d <= 1e-6, "max |Δ| {d}");
    }
}
