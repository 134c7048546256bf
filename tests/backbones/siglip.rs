//! SigLIP vision tower: tiny random snapshots from `tools/backbone_fixtures_siglip.py`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::{max_abs_diff, values};
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sv72::backend::Cpu;
use sv72::model::preprocess::{Preprocess, ResizeTo};
use sv72::model::weights::Weights;
use sv72::model::{Backbone, FeatureExtractor};

const TOL: f32 = 1e-4;
const RESOLUTIONS: [(usize, usize); 2] = [(64, 64), (48, 80)];
const PNGS: [&str; 3] = ["gray_180x240.png", "rgb_300x500.png", "rgb_37x53.png"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones")
}

fn read(path: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    Weights::open_files(&[path.to_path_buf()])
        .unwrap()
        .f32_data(name)
        .unwrap()
}

/// The processor's uint8 image `[N, 3, h, w]` of the fixture PNGs.
fn pixel_u8(h: usize, w: usize) -> Vec<u8> {
    let path = fixtures().join(format!("siglip-inputs/pixel_u8_{h}x{w}.safetensors"));
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("pixel_u8").unwrap();
    assert_eq!(t.dtype(), Dtype::U8);
    assert_eq!(t.shape(), [PNGS.len(), 3, h, w]);
    t.data().to_vec()
}

/// `pixel_values = (u8 - 127.5) / 127.5`: the processor's fused rescale + normalise (mean and
/// std 0.5), bit-identical in f32.
fn pixels(h: usize, w: usize) -> Tensor<Cpu, 4> {
    let v: Vec<f32> = pixel_u8(h, w)
        .into_iter()
        .map(|x| (x as f32 - 127.5) / 127.5)
        .collect();
    Tensor::from_data(
        TensorData::new(v, [PNGS.len(), 3, h, w]),
        &Default::default(),
    )
}

fn check(snapshot: &Path, (h, w): (usize, usize)) {
    let model = Backbone::<Cpu>::load(snapshot, &Default::default()).unwrap();
    assert!(matches!(model, Backbone::Siglip(_)));
    assert_eq!((model.hidden_size(), model.patch_size()), (32, 8));
    let out = model.try_extract(pixels(h, w), true).unwrap();
    let reference = fixtures().join(format!("siglip-tiny/reference_{h}x{w}.safetensors"));
    let hidden = out.last_hidden_state.expect("asked for the hidden state");
    let (_, want_shape) = read(&reference, "last_hidden_state");
    assert_eq!(
        hidden.dims().to_vec(),
        want_shape,
        "last_hidden_state shape"
    );
    assert_eq!(want_shape, [3, (h / 8) * (w / 8), 32]);
    let pooler = values(out.pooler);
    assert_eq!(values(out.cls), pooler, "cls repeats the pooled output");
    for (name, got) in [
        ("last_hidden_state", values(hidden)),
        ("pooler_output", pooler),
        ("patch_mean", values(out.patch_mean)),
    ] {
        let want = read(&reference, name).0;
        let d = max_abs_diff(&got, &want, name);
        eprintln!("{} {h}x{w} {name}: max |Δ| = {d:.3e}", snapshot.display());
        assert!(
            d <= TOL,
            "{}: {name} at {h}x{w} max |Δ| = {d:e} > {TOL:e}",
            snapshot.display()
        );
    }
}

#[test]
fn matches_transformers_at_native_and_interpolated_resolution() {
    // The dual-tower SiglipModel checkpoint and the standalone SiglipVisionModel (no prefix)
    // must both reproduce transformers' vision tower.
    for m in ["siglip-tiny", "siglip-vision"] {
        for res in RESOLUTIONS {
            check(&fixtures().join(m), res);
        }
    }
}

#[test]
fn siglip_image_processor_is_reproduced_on_image_files() {
    let dir = fixtures().join("siglip-tiny");
    let base = Preprocess::from_snapshot(&dir).unwrap();
    assert_eq!(base.output_size(500, 300), (64, 64), "resize to `size`");
    assert!(base.crop.is_none(), "SiglipImageProcessor does not crop");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images");
    for (h, w) in RESOLUTIONS {
        let mut pre = base.clone();
        let (_, filter) = pre.resize.expect("SigLIP processors resize");
        pre.resize = Some((
            ResizeTo::Exact {
                height: h as u32,
                width: w as u32,
            },
            filter,
        ));
        let want = values(pixels(h, w));
        let n = 3 * h * w;
        for (i, name) in PNGS.iter().enumerate() {
            let img = image::open(images.join(name)).unwrap();
            let px = pre.pixel_values(&img).unwrap();
            let d = max_abs_diff(&px, &want[i * n..(i + 1) * n], name);
            // One uint8 level is 2/255 after normalisation; the resize must match exactly.
            assert!(d <= 1e-6, "{name} at {h}x{w}: pixel_values differ by {d:e}");
        }
    }
}

/// A copy of `siglip-tiny` whose text-tower tensors are stored as int64: any attempt to read
/// them as floats fails, so loading proves the text tower is never read.
#[test]
fn text_tower_is_never_read() {
    let src = fixtures().join("siglip-tiny");
    let w = Weights::open(&src).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<u8>, Vec<usize>)> = Vec::new();
    for name in w.names() {
        let (v, s) = w.f32_data(name).unwrap();
        if name.starts_with("text_model.") {
            let bytes = v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect();
            tensors.push((name.to_string(), Dtype::I64, bytes, s));
        } else {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((name.to_string(), Dtype::F32, bytes, s));
        }
    }
    assert!(tensors.iter().any(|t| t.1 == Dtype::I64));
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(n, d, b, s)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let reopened = Weights::open(dir.path()).unwrap();
    assert!(
        reopened
            .f32_data("text_model.final_layer_norm.weight")
            .is_err(),
        "an int64 tensor must not read as f32 (else this test proves nothing)"
    );
    let model = Backbone::<Cpu>::load(dir.path(), &Default::default()).unwrap();
    let want = read(
        &fixtures().join("siglip-tiny/reference_64x64.safetensors"),
        "pooler_output",
    )
    .0;
    let got = values(model.try_extract(pixels(64, 64), false).unwrap().pooler);
    assert!(max_abs_diff(&got, &want, "pooler") <= TOL);
}

#[test]
fn bad_siglip_snapshots_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("siglip-tiny");
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let cfg = dir.path().join("config.json");
    let load = || {
        format!(
            "{:#}",
            Backbone::<Cpu>::load(dir.path(), &Default::default()).unwrap_err()
        )
    };
    // A NaFlex config goes to the NaFlex tower, whose linear patch embedding does not fit
    // this checkpoint's convolution.
    std::fs::write(&cfg, r#"{"model_type": "siglip2", "vision_config": {}}"#).unwrap();
    let e = load();
    assert!(e.contains("patch_embedding"), "{e}");
    // A config with more layers than the weights names the missing tensor.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    v["vision_config"]["num_hidden_layers"] = 3.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let e = load();
    assert!(e.contains("vision_model.encoder.layers.2"), "{e}");
    // Fewer: the extra block is reported.
    v["vision_config"]["num_hidden_layers"] = 1.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let e = load();
    assert!(e.contains("disagree"), "{e}");
    // A wrong position table size (image_size) names the tensor and both shapes.
    v["vision_config"]["num_hidden_layers"] = 2.into();
    v["vision_config"]["image_size"] = 96.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let e = load();
    assert!(e.contains("position_embedding"), "{e}");
    // Malformed inputs are errors, not panics.
    v["vision_config"]["image_size"] = 64.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let m = Backbone::<Cpu>::load(dir.path(), &Default::default()).unwrap();
    let small = Tensor::<Cpu, 4>::zeros([1, 3, 4, 40], &Default::default());
    let e = m.try_extract(small, false).unwrap_err().to_string();
    assert!(e.contains("smaller than one"), "{e}");
    let grey = Tensor::<Cpu, 4>::zeros([1, 1, 64, 64], &Default::default());
    let e = m.try_extract(grey, false).unwrap_err().to_string();
    assert!(e.contains("channels"), "{e}");
}
