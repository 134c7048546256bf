//! SigLIP 2 NaFlex vision tower: tiny random snapshots from `tools/backbone_fixtures_siglip2.py`
//! (four images of two orientations, at max_num_patches 24 and 48).

use std::path::{Path, PathBuf};

use crate::common::{max_abs_diff, values};
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use sv72::backend::Cpu;
use sv72::model::preprocess::{Preprocess, ResizeTo};
use sv72::model::weights::Weights;
use sv72::model::Backbone;

const TOL: f32 = 1e-4;
const MAX_PATCHES: [usize; 2] = [24, 48];
const P: usize = 8;
const PD: usize = 3 * P * P;
/// (file, rotated 90 degrees clockwise), as the fixture script feeds them.
const INPUTS: [(&str, bool); 4] = [
    ("gray_180x240.png", false),
    ("rgb_300x500.png", false),
    ("rgb_300x500.png", true),
    ("rgb_37x53.png", false),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones")
}

fn read(path: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    Weights::open_files(&[path.to_path_buf()])
        .unwrap()
        .f32_data(name)
        .unwrap()
}

/// The processor's padded batch at `max_num_patches = m`: `pixel_values` `[4, m, 192]`
/// (`(u8 - 127.5) / 127.5`, padding 0), the mask and the spatial shapes.
struct Inputs {
    pixels: Vec<f32>,
    mask: Vec<bool>,
    shapes: Vec<[usize; 2]>,
}

fn inputs(m: usize) -> Inputs {
    let path = fixtures().join(format!("siglip2-inputs/patches_u8_{m}.safetensors"));
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let n = INPUTS.len();
    let u8s = st.tensor("patches_u8").unwrap();
    assert_eq!((u8s.dtype(), u8s.shape()), (Dtype::U8, &[n, m, PD][..]));
    let mask = st.tensor("pixel_attention_mask").unwrap();
    assert_eq!(mask.dtype(), Dtype::I32);
    let mask: Vec<bool> = mask
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) != 0)
        .collect();
    let shapes = st.tensor("spatial_shapes").unwrap();
    assert_eq!(shapes.dtype(), Dtype::I64);
    let s: Vec<usize> = shapes
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    let pixels = u8s
        .data()
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if mask[i / PD] {
                (x as f32 - 127.5) / 127.5
            } else {
                0.0
            }
        })
        .collect();
    Inputs {
        pixels,
        mask,
        shapes: s.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
    }
}

/// Image `i` of a padded batch back as `[1, 3, H, W]` (patches are (row, col, channel)).
fn image(inp: &Inputs, m: usize, i: usize) -> Tensor<Cpu, 4> {
    let [rows, cols] = inp.shapes[i];
    let (h, w) = (rows * P, cols * P);
    let mut out = vec![0f32; 3 * h * w];
    for r in 0..rows {
        for c in 0..cols {
            let patch = &inp.pixels[(i * m + r * cols + c) * PD..][..PD];
            for (k, &v) in patch.iter().enumerate() {
                let (py, px, ch) = (k / (P * 3), (k / 3) % P, k % 3);
                out[ch * h * w + (r * P + py) * w + c * P + px] = v;
            }
        }
    }
    Tensor::from_data(TensorData::new(out, [1, 3, h, w]), &Default::default())
}

fn load(name: &str) -> Backbone<Cpu> {
    let m = Backbone::<Cpu>::load(&fixtures().join(name), &Default::default()).unwrap();
    assert!(matches!(m, Backbone::Siglip2(_)));
    m
}

fn check(what: &str, got: &[f32], want: &[f32]) {
    let d = max_abs_diff(got, want, what);
    eprintln!("{what}: max |Δ| = {d:.3e}");
    assert!(d <= TOL, "{what}: max |Δ| = {d:e} > {TOL:e}");
}

#[test]
fn naflex_matches_transformers_on_padded_batches_at_two_patch_budgets() {
    let mut padded = false;
    for snap in ["siglip2-tiny", "siglip2-vision"] {
        let Backbone::Siglip2(model) = load(snap) else {
            unreachable!()
        };
        for m in MAX_PATCHES {
            let inp = inputs(m);
            let n = INPUTS.len();
            // Both orientations are in each batch.
            assert!(
                inp.shapes.iter().any(|s| s[0] > s[1]) && inp.shapes.iter().any(|s| s[0] < s[1])
            );
            padded |= inp.mask.iter().any(|v| !v);
            let pv = Tensor::<Cpu, 3>::from_data(
                TensorData::new(inp.pixels.clone(), [n, m, PD]),
                &Default::default(),
            );
            let out = model
                .try_forward_naflex(pv, &inp.mask, &inp.shapes, true)
                .unwrap();
            let reference = fixtures().join(format!("siglip2-tiny/reference_{m}.safetensors"));
            check(
                &format!("{snap} m={m} pooler_output"),
                &values(out.pooler),
                &read(&reference, "pooler_output").0,
            );
            check(
                &format!("{snap} m={m} patch_mean"),
                &values(out.patch_mean),
                &read(&reference, "patch_mean").0,
            );
            // Valid rows only: transformers' padding rows are not meaningful.
            let hidden = values(out.last_hidden_state.unwrap());
            let want = read(&reference, "last_hidden_state").0;
            let keep = |v: &[f32]| -> Vec<f32> {
                v.chunks_exact(32)
                    .zip(&inp.mask)
                    .filter(|(_, &k)| k)
                    .flat_map(|(r, _)| r.to_vec())
                    .collect()
            };
            check(
                &format!("{snap} m={m} last_hidden_state"),
                &keep(&hidden),
                &keep(&want),
            );
        }
    }
    assert!(
        padded,
        "some batch must have padding for the mask to be tested"
    );
}

#[test]
fn unpadded_image_path_matches_transformers() {
    // The path the feature pipeline takes: one image size per batch, as [N, 3, H, W].
    let model = load("siglip2-tiny");
    for m in MAX_PATCHES {
        let inp = inputs(m);
        let reference = fixtures().join(format!("siglip2-tiny/reference_{m}.safetensors"));
        let (pool, mean) = (
            read(&reference, "pooler_output").0,
            read(&reference, "patch_mean").0,
        );
        for i in 0..INPUTS.len() {
            let out = model.try_extract(image(&inp, m, i), false).unwrap();
            let what = format!("image {i} m={m}");
            check(
                &format!("{what} pooler"),
                &values(out.pooler),
                &pool[i * 32..(i + 1) * 32],
            );
            check(
                &format!("{what} mean"),
                &values(out.patch_mean),
                &mean[i * 32..(i + 1) * 32],
            );
        }
    }
}

#[test]
fn siglip2_image_processor_is_reproduced_on_image_files() {
    let base = Preprocess::from_snapshot(&fixtures().join("siglip2-tiny")).unwrap();
    assert_eq!(
        base.resize.map(|r| r.0),
        Some(ResizeTo::MaxPatches {
            patch: 8,
            max_patches: 24
        })
    );
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    for m in MAX_PATCHES {
        let mut pre = base.clone();
        let (_, filter) = pre.resize.unwrap();
        pre.resize = Some((
            ResizeTo::MaxPatches {
                patch: 8,
                max_patches: m as u32,
            },
            filter,
        ));
        let inp = inputs(m);
        for (i, (name, rotate)) in INPUTS.iter().enumerate() {
            let mut img = image::open(images.join(name)).unwrap();
            if *rotate {
                img = img.rotate90();
            }
            let [rows, cols] = inp.shapes[i];
            let size = pre.output_size(img.width(), img.height());
            assert_eq!(
                size,
                ((rows * P) as u32, (cols * P) as u32),
                "{name} at {m}"
            );
            let got = pre.pixel_values(&img).unwrap();
            let want = values(image(&inp, m, i));
            let d = max_abs_diff(&got, &want, name);
            // One uint8 level is 2/255 after normalisation: the resize must match exactly.
            assert!(d <= 1e-6, "{name} at {m}: pixel_values differ by {d:e}");
        }
    }
}

#[test]
fn bad_naflex_inputs_and_snapshots_get_clear_errors() {
    let Backbone::Siglip2(model) = load("siglip2-tiny") else {
        unreachable!()
    };
    let z = |s: [usize; 4]| Tensor::<Cpu, 4>::zeros(s, &Default::default());
    let e = model
        .try_extract(z([1, 3, 20, 16]), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("whole number of 8x8 patches"), "{e}");
    let e = model
        .try_extract(z([1, 1, 16, 16]), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("channels"), "{e}");
    let pv = Tensor::<Cpu, 3>::zeros([1, 4, PD], &Default::default());
    let e = model
        .try_forward_naflex(pv.clone(), &[true, false, true, false], &[[1, 2]], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pixel_attention_mask"), "{e}");
    let e = model
        .try_forward_naflex(pv, &[true; 4], &[[3, 2]], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit"), "{e}");
    // A fixed-resolution SigLIP checkpoint's weights under a NaFlex config: the patch
    // embedding is a convolution there, and the error names the tensor.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("siglip-tiny/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "siglip2", "vision_config": {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 40, "num_hidden_layers": 2, "patch_size": 8, "num_patches": 64}}"#,
    )
    .unwrap();
    let e = format!(
        "{:#}",
        Backbone::<Cpu>::load(dir.path(), &Default::default()).unwrap_err()
    );
    assert!(e.contains("patch_embedding"), "{e}");
}
