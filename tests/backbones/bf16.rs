//! `backbone.dtype: bf16` on the CPU: the drift of CLS features against the f32 forward (and
//! against `transformers`' f32 reference) on the DINOv2 and DINOv3 fixtures. Skipped, with a
//! note, on a CPU without AMX-BF16 or AVX512-BF16.

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use sv72::backend::Cpu;
use sv72::config::Dtype;
use sv72::model::kernels::bf16;
use sv72::model::{Backbone, LoadOptions};

/// Lowest CLS cosine accepted against f32. bf16 keeps 8 significant bits, so each rounded
/// operand is off by at most 2^-9 relative and a product by about that much; over the
/// fixtures' 2-3 blocks that is a relative error of a few 1e-3, i.e. 1 - cosine ~ 1e-5.
/// 0.999 (a 4 % relative error) leaves room for unlucky inputs yet fails on any layout or
/// packing mistake (which decorrelates the output: cosine far below 0.9).
const MIN_COSINE: f64 = 0.999;
/// Largest CLS max |Δ| accepted, relative to the f32 CLS's largest magnitude.
const MAX_REL_DELTA: f64 = 0.05;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones")
}

fn cls(dir: &Path, opts: LoadOptions, pixels: Tensor<Cpu, 4>) -> (Vec<f32>, usize) {
    let model = Backbone::<Cpu>::load_with(dir, &Default::default(), opts)
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", dir.display()));
    let cls = model.try_extract(pixels, false).expect("forward").cls;
    let d = cls.dims()[1];
    (cls.into_data().to_vec::<f32>().unwrap(), d)
}

/// Per image: (cosine, max |Δ|); and the largest |value| of `want`.
fn drift(got: &[f32], want: &[f32], d: usize) -> (Vec<(f64, f64)>, f64) {
    let per = got
        .chunks(d)
        .zip(want.chunks(d))
        .map(|(g, w)| {
            let dot: f64 = g.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
            let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let max = g.iter().zip(w).map(|(a, b)| (a - b).abs() as f64);
            (dot / (norm(g) * norm(w)), max.fold(0.0, f64::max))
        })
        .collect();
    let scale = want.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
    (per, scale)
}

#[test]
fn bf16_cls_drift_against_f32_is_small_on_fixtures() {
    if bf16::engine().is_none() {
        eprintln!("note: no AMX-BF16 / AVX512-BF16 on this CPU; bf16 drift test skipped");
        return;
    }
    assert!(LoadOptions::inference(Dtype::Bf16).bf16);
    use super::{dinov2::pixel_values, dinov3::pixels};
    let dir = |name: &str| fixtures().join(name);
    check("dinov2_s36", &dir("dinov2_s36"), || pixel_values("224"));
    check("dinov2_reg4_s36", &dir("dinov2_reg4_s36"), || {
        pixel_values("70x112")
    });
    check("dinov2_swiglu_s42", &dir("dinov2_swiglu_s42"), || {
        pixel_values("98")
    });
    check("dinov3-tiny", &dir("dinov3-tiny"), || pixels(112, 112));
    check("dinov3-gated", &dir("dinov3-gated"), || pixels(80, 128));
}

/// CLS drift of `dir` on `pixels`, printed per image and checked against the bounds.
fn check(name: &str, dir: &Path, pixels: impl Fn() -> Tensor<Cpu, 4>) {
    let (want, d) = cls(dir, LoadOptions::INFERENCE, pixels());
    let (got, _) = cls(dir, LoadOptions::inference(Dtype::Bf16), pixels());
    let (per, scale) = drift(&got, &want, d);
    for (i, (cos, max)) in per.iter().enumerate() {
        eprintln!(
            "{name} image {i}: CLS cosine(bf16, f32) = {cos:.6}, max |Δ| = {max:.3e} \
             ({:.2} % of max |f32|)",
            100.0 * max / scale
        );
        assert!(
            *cos >= MIN_COSINE,
            "{name} image {i}: cosine {cos} < {MIN_COSINE}"
        );
        assert!(
            *max <= MAX_REL_DELTA * scale,
            "{name} image {i}: max |Δ| {max:e} > {MAX_REL_DELTA} x {scale:e}"
        );
    }
}

/// The same drift on a full-size random ViT-S/14 with registers (`sv72 bench`'s `vits14-reg`,
/// 12 blocks, K up to 1536) over the six 224×224 fixture images. Ignored by default (it writes
/// an 88 MB snapshot); run with `--ignored`.
#[test]
#[ignore = "writes a full-size random ViT-S; run with --ignored"]
fn bf16_cls_drift_on_a_random_vits14_reg() {
    if bf16::engine().is_none() {
        eprintln!("note: no AMX-BF16 / AVX512-BF16 on this CPU; bf16 drift test skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    sv72::bench::write_random_snapshot("vits14-reg", tmp.path()).unwrap();
    check("random vits14-reg", tmp.path(), || {
        super::dinov2::pixel_values("224")
    });
}

/// `sv72 bench --device cpu`: bf16 runs (reported as `cpu-bf16`) where the CPU has a bf16
/// engine and is refused, naming what is missing, where not; f16 is refused.
#[test]
fn bench_cpu_bf16_runs_or_is_refused_and_f16_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = fixtures().join("dinov2_s36");
    let run = |dtype: &str| {
        let args = [
            "bench",
            "--backbone",
            snap.to_str().unwrap(),
            "--batch",
            "1,3",
            "--image-size",
            "56",
            "--secs",
            "0.05",
            "--device",
            "cpu",
            "--dtype",
            dtype,
        ];
        let out = crate::common::sv72(tmp.path(), &args);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = run("bf16");
    if bf16::engine().is_some() {
        assert!(ok && text.contains("cpu-bf16"), "{text}");
    } else {
        assert!(!ok && text.contains("AMX-BF16 or AVX512-BF16"), "{text}");
    }
    let (ok, text) = run("f16");
    assert!(!ok && text.contains("f32 or bf16"), "{text}");
}
