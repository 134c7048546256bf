//! Every backbone fixture on CUDA (f32) against the CPU forward, which the other modules check
//! against `transformers`. Ignored by default (CI has no GPU); `tools/gpu_check.sh` runs them
//! with `--ignored` on a GPU machine.

use std::path::PathBuf;

use burn::backend::Cuda;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use sv72::backend::Cpu;
use sv72::model::Backbone;

const FIXTURES: &[(&str, usize, usize)] = &[
    ("dinov2_s36", 224, 224),
    ("dinov2_swiglu_s42", 98, 98),
    ("dinov2_reg4_s36", 70, 112),
    ("dinov3-tiny", 112, 112),
    ("dinov3-gated", 80, 128),
];

fn hidden<B: Backend>(dir: &PathBuf, (h, w): (usize, usize), dev: &B::Device) -> Vec<f32> {
    let model = Backbone::<B>::load(dir, dev).expect("fixture loads");
    let n = 2 * 3 * h * w;
    let pixels: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 997) as f32 / 498.5 - 1.0)
        .collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [2, 3, h, w]), dev);
    let out = model.try_forward(x).expect("forward");
    out.into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 values")
}

#[test]
#[ignore = "needs a CUDA device; run by tools/gpu_check.sh"]
fn cuda_f32_matches_cpu_on_every_fixture() {
    // A bundled test binary (tools/gpu_check.sh) runs away from the source tree.
    let root = std::env::var_os("SV72_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
        .join("backbones");
    for &(name, h, w) in FIXTURES {
        let dir = root.join(name);
        let cpu = hidden::<Cpu>(&dir, (h, w), &Default::default());
        let gpu = hidden::<Cuda<f32>>(&dir, (h, w), &Default::default());
        assert_eq!(cpu.len(), gpu.len(), "{name}: output sizes");
        let max = cpu
            .iter()
            .zip(&gpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{name} {h}x{w}: max |cuda - cpu| = {max:.2e}");
        assert!(
            max <= 1e-4,
            "{name} {h}x{w}: CUDA f32 differs from CPU by {max:.2e} (> 1e-4)"
        );
    }
}
