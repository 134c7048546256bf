//! `cargo bench --bench backbone [--features ndarray,candle]`
//!
//! ViT-S/14 with 4 registers (the real `facebook/dinov2-with-registers-small` config: hidden 384,
//! 6 heads, 12 layers, MLP 1536, 518px position grid resampled to 16x16) with random weights,
//! forward at 224x224 in f32 on 2 threads, batch 1 and 8, one line per backend x batch.
//! Compare with `tools/bench_torch_vit.py` (PyTorch eager, same config).
//!
//! `SV72_BENCH_SECS` (default 6) sets the measuring time per line.

use std::path::Path;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use sv72::model::activation::gelu_erf;
use sv72::model::dinov2::Dinov2Model;
use sv72::model::FeatureExtractor;

fn bench<B: Backend>(label: &str, dir: &Path, device: B::Device, secs: f64) {
    let model: Dinov2Model<B> = Dinov2Model::load(dir, &device).expect("load ViT-S/14-reg4");
    for batch in [1usize, 8] {
        let x = Tensor::<B, 4>::random(
            [batch, 3, 224, 224],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let run = || {
            let out = model.extract(x.clone(), false);
            let v = out.cls.into_data().to_vec::<f32>().expect("f32 output");
            assert!(v.iter().all(|x| x.is_finite()), "non-finite output");
        };
        run();
        run();
        let start = Instant::now();
        let mut iters = 0usize;
        while iters < 3 || start.elapsed() < Duration::from_secs_f64(secs) {
            run();
            iters += 1;
        }
        let dt = start.elapsed().as_secs_f64();
        println!(
            "{label:<8} batch {batch}: {:8.1} ms/batch  {:7.2} images/s  ({iters} iters)",
            dt * 1e3 / iters as f64,
            (batch * iters) as f64 / dt
        );
    }
}

/// Mean milliseconds of `f` over `secs` (at least 3 runs, after one warm-up).
fn time_ms(secs: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut iters = 0usize;
    while iters < 3 || start.elapsed() < Duration::from_secs_f64(secs) {
        f();
        iters += 1;
    }
    start.elapsed().as_secs_f64() * 1e3 / iters as f64
}

/// Per-op timings at the batch-1 ViT-S/14 shapes (261 tokens), to see where a layer's time goes
/// and which formulation each backend runs fastest (`SV72_BENCH_OPS=1`).
// One push per measured op reads as a table; a `vec![]` literal would hide the timing calls.
#[allow(clippy::vec_init_then_push)]
fn bench_ops<B: Backend>(label: &str, device: B::Device, secs: f64) {
    use burn::tensor::activation;
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    let (t, d, h, hd, mlp) = (261usize, 384usize, 6usize, 64usize, 1536usize);
    let sync = |x: Tensor<B, 2>| {
        let _ = x.into_data();
    };
    let x = Tensor::<B, 2>::random([t, d], Distribution::Normal(0.0, 1.0), &device);
    let hid = Tensor::<B, 2>::random([t, mlp], Distribution::Normal(0.0, 1.0), &device);
    let w1 = Tensor::<B, 2>::random([d, mlp], Distribution::Normal(0.0, 0.05), &device);
    let wqkv = Tensor::<B, 2>::random([d, 3 * d], Distribution::Normal(0.0, 0.05), &device);
    let q4 = || Tensor::<B, 4>::random([1, h, t, hd], Distribution::Normal(0.0, 1.0), &device);
    let (q, k, v) = (q4(), q4(), q4());
    let mut rows: Vec<(&str, f64)> = Vec::new();
    rows.push((
        "matmul 261x384 @ 384x1152 (qkv)",
        time_ms(secs, || sync(x.clone().matmul(wqkv.clone()))),
    ));
    rows.push((
        "matmul 261x384 @ 384x1536 (fc1)",
        time_ms(secs, || sync(x.clone().matmul(w1.clone()))),
    ));
    rows.push((
        "gelu (backend erf) 261x1536",
        time_ms(secs, || sync(activation::gelu(hid.clone()))),
    ));
    rows.push((
        "gelu_erf (host map) 261x1536",
        time_ms(secs, || sync(gelu_erf(hid.clone()))),
    ));
    rows.push((
        "add bias row-broadcast 261x1536",
        time_ms(secs, || sync(hid.clone() + w1.clone().narrow(0, 0, 1))),
    ));
    let norm = burn::nn::LayerNormConfig::new(d).init::<B>(&device);
    rows.push((
        "layer_norm 261x384",
        time_ms(secs, || sync(norm.forward(x.clone()))),
    ));
    let opts = AttentionModuleOptions {
        scale: Some(0.125),
        softcap: None,
        is_causal: false,
    };
    rows.push((
        "attention fused 1x6x261x64",
        time_ms(secs, || {
            let _ = attention(q.clone(), k.clone(), v.clone(), None, None, opts).into_data();
        }),
    ));
    rows.push((
        "attention unfused 1x6x261x64",
        time_ms(secs, || {
            let _ = {
                let s = (q.clone() * 0.125).matmul(k.clone().swap_dims(2, 3));
                activation::softmax(s, 3).matmul(v.clone()).into_data()
            };
        }),
    ));
    for (what, ms) in rows {
        println!("{label:<8} op {what:<36} {ms:8.3} ms");
    }
}

fn main() {
    // Every backend here parallelises through rayon (flex/candle gemm, ndarray's matrixmultiply
    // aside); pin the pool to the 2 threads the comparison is about.
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .expect("rayon pool");
    let secs: f64 = std::env::var("SV72_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6.0);
    let dir = tempfile::tempdir().expect("temp dir");
    // The same random ViT-S/14-reg4 snapshot `sv72 bench --backbone vits14-reg` loads.
    sv72::bench::write_random_snapshot("vits14-reg", dir.path()).expect("write snapshot");
    if std::env::var("SV72_BENCH_OPS").is_ok_and(|v| v == "1") {
        bench_ops::<burn::backend::Flex>("flex", Default::default(), secs / 4.0);
        #[cfg(feature = "ndarray")]
        bench_ops::<burn::backend::NdArray>("ndarray", Default::default(), secs / 4.0);
        #[cfg(feature = "candle")]
        #[allow(deprecated)]
        bench_ops::<burn::backend::Candle>("candle", Default::default(), secs / 4.0);
    }
    println!("ViT-S/14 + 4 registers, 224x224, f32, 2 threads, random weights");
    bench::<burn::backend::Flex>("flex", dir.path(), Default::default(), secs);
    #[cfg(feature = "ndarray")]
    bench::<burn::backend::NdArray>("ndarray", dir.path(), Default::default(), secs);
    // Deprecated upstream in burn 0.21 but still the comparison the lead asked for.
    #[cfg(feature = "candle")]
    #[allow(deprecated)]
    bench::<burn::backend::Candle>("candle", dir.path(), Default::default(), secs);
}
