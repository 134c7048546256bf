//! `cargo bench --bench ab_bootstrap`: cost of the A/B test's paired bootstrap at a realistic
//! size (1000 images x 4 draws, 2000 resamples) by simulated score sequences per resample, and
//! the width of the Δscore interval each buys (what `ab_test.bootstrap_score_sequences` trades).

use sv72::data::manifest::SourceKind;
use sv72::eval::ab::{compare, AbOptions, PairedAnswer};

/// `n` images with `draws` draws each; A (B) answers image `i` right when `right_a(i)`
/// (`right_b(i)`).
fn answers(
    n: usize,
    draws: u32,
    right_a: impl Fn(usize) -> bool,
    right_b: impl Fn(usize) -> bool,
) -> Vec<PairedAnswer> {
    let mut v = Vec::new();
    for i in 0..n {
        let label = (i % 2) as u8;
        let p = |right: bool| if right == (label == 1) { 0.9 } else { 0.1 };
        for d in 0..draws {
            v.push(PairedAnswer {
                id: format!("img{i}"),
                label,
                source: if i % 4 < 2 {
                    SourceKind::Real
                } else {
                    SourceKind::Synthetic
                },
                generator: "g".into(),
                level: (d % 4) as u8,
                draw: d / 4,
                prob_a: p(right_a(i)),
                prob_b: p(right_b(i)),
            });
        }
    }
    v
}

fn main() {
    let a = answers(1000, 4, |i| i % 10 < 8, |i| i % 10 < 9 || i % 7 == 0);
    for (resamples, per) in [(2000, 0), (2000, 20), (2000, 50), (2000, 100), (2000, 200)] {
        let o = AbOptions {
            resamples,
            resample_sequences: per,
            score_sequences: 1000,
            seed: 11,
            level_probs: [0.25; 4],
        };
        let t = std::time::Instant::now();
        let s = compare(&a, &o).unwrap();
        let sc = s.delta.score.unwrap();
        println!(
            "1000 images x 4 draws, {resamples} resamples, {per} sequences/resample: {:.2} s; \
             Δscore {:+.4} [{:+.4}, {:+.4}] width {:.4}; ΔMCC [{:+.4}, {:+.4}]",
            t.elapsed().as_secs_f64(),
            sc.estimate,
            sc.lo,
            sc.hi,
            sc.hi - sc.lo,
            s.delta.mcc.lo,
            s.delta.mcc.hi
        );
    }
}
