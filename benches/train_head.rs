//! Head training speed: 10,000 cached feature vectors of ViT-L width ([CLS ; patch mean] =
//! 2 × 1024) through the full default-style schedule (linear head, 30 epochs, batch 256, warm-up,
//! cosine, early stopping off), plus temperature and threshold fitting. Target: < 10 s on 2 cores.
//!
//! Run: `cargo bench --bench train_head` (`SV72_BENCH_EPOCHS` / `SV72_BENCH_ROWS` override).

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use sv72::config::Config;
use sv72::train::{train_head, FeatureSet, TrainSettings};

type Ad = burn::backend::Autodiff<sv72::backend::Cpu>;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Two overlapping classes in `dim` dimensions (not linearly separable, like real features).
fn data(n: usize, dim: usize, seed: u64) -> FeatureSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut fs = FeatureSet::default();
    let mut v = vec![0f32; dim];
    for i in 0..n {
        let y = (i % 2) as u8;
        let shift = if y == 1 { 0.05 } else { -0.05 };
        for x in v.iter_mut() {
            *x = normal.sample(&mut rng) + shift;
        }
        fs.push(&v, y, rng.random::<bool>(), rng.random_range(0..4))
            .unwrap();
    }
    fs
}

fn main() {
    let rows = env_usize("SV72_BENCH_ROWS", 10_000);
    let epochs = env_usize("SV72_BENCH_EPOCHS", 30);
    let dim = 2 * 1024;
    let train = data(rows, dim, 1);
    let val = data(rows / 10, dim, 2);
    let mut cfg = Config::default();
    cfg.train.epochs = epochs;
    cfg.train.patience = 0;
    let s = TrainSettings::from_config(&cfg).expect("settings");
    println!(
        "train_head: {rows} x {dim} train rows, {} val rows, linear head, {epochs} epochs, batch {}, {} threads",
        val.len(),
        s.train.batch_size,
        rayon::current_num_threads()
    );
    let t0 = Instant::now();
    let mut epoch_secs = Vec::new();
    let out = train_head::<Ad>(&train, &val, &s, &Default::default(), &mut |r| {
        epoch_secs.push(r.seconds);
        Ok(())
    })
    .expect("training");
    let total = t0.elapsed().as_secs_f64();
    let train_secs: f64 = epoch_secs.iter().sum();
    println!(
        "train_head: total {total:.2} s (epochs {train_secs:.2} s = {:.3} s/epoch; calibration + threshold {:.2} s); val MCC {:.3}, T {:.3}, threshold {:.3}",
        train_secs / epoch_secs.len() as f64,
        total - train_secs,
        out.val_metrics.mcc,
        out.temperature,
        out.threshold
    );
    println!(
        "train_head: target < 10 s: {}",
        if total < 10.0 { "met" } else { "NOT met" }
    );
}
