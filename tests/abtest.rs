//! `sv72 ab-test`: paired statistics against known values, the decision rule clause by clause,
//! and the binary end to end on demo data.

use crate::common;

use sv72::config::AbTestConfig;
use sv72::data::manifest::SourceKind;
use sv72::eval::ab::{compare, decide, AbOptions, AbStats, Metric, PairedAnswer, Rule};
use sv72::metrics::stats::{group_bootstrap, mcnemar_exact, percentile_interval};

mod stats {
    use super::*;

    #[test]
    fn mcnemar_matches_exact_rational_reference() {
        // tests/fixtures/stats/mcnemar.json: tools/stats_reference.py (integer/Fraction arithmetic).
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/stats/mcnemar.json"
        ))
        .unwrap();
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 10);
        for c in cases {
            let (b, cc, want) = (
                c["b"].as_u64().unwrap(),
                c["c"].as_u64().unwrap(),
                c["p"].as_f64().unwrap(),
            );
            let got = mcnemar_exact(b, cc);
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "b={b} c={cc}: {got} vs {want}"
            );
        }
        // Textbook case by hand: 2·(C(10,0)+C(10,1))/2^10.
        assert_eq!(mcnemar_exact(1, 9), 22.0 / 1024.0);
    }

    fn mean_stat(values: &[f64]) -> impl FnMut(&[u32]) -> [Option<f64>; 1] + '_ {
        move |counts: &[u32]| {
            let n: u32 = counts.iter().sum();
            let s: f64 = counts
                .iter()
                .zip(values)
                .map(|(&k, v)| f64::from(k) * v)
                .sum();
            [Some(s / f64::from(n))]
        }
    }

    #[test]
    fn bootstrap_tiny_cases_are_exact() {
        // One group: every resample is the sample itself.
        let [r] = group_bootstrap(1, 50, 1, mean_stat(&[0.25]));
        let iv = percentile_interval(0.25, r, 0.95).unwrap();
        assert_eq!((iv.lo, iv.hi, iv.resamples), (0.25, 0.25, 50));
        // Two groups {0, 1}: resampled means are 0, 1/2, 1 with probability 1/4, 1/2, 1/4, so
        // with 400 resamples both tails hold far more than 2.5% and the interval is [0, 1].
        let [r] = group_bootstrap(2, 400, 2, mean_stat(&[0.0, 1.0]));
        assert!(r.iter().all(|v| [0.0, 0.5, 1.0].contains(v)));
        let half = r.iter().filter(|&&v| v == 0.5).count() as f64 / 400.0;
        assert!((half - 0.5).abs() < 0.1, "{half}");
        let iv = percentile_interval(0.5, r, 0.95).unwrap();
        assert_eq!((iv.lo, iv.hi), (0.0, 1.0));
        // Same seed, same replicates; another seed, others.
        let v: Vec<f64> = (0..30).map(|i| f64::from(i) / 7.0).collect();
        assert_eq!(
            group_bootstrap(30, 20, 9, mean_stat(&v)),
            group_bootstrap(30, 20, 9, mean_stat(&v))
        );
        assert_ne!(
            group_bootstrap(30, 20, 9, mean_stat(&v)),
            group_bootstrap(30, 20, 10, mean_stat(&v))
        );
    }

    #[test]
    fn bootstrap_interval_of_a_mean_matches_normal_theory() {
        // 400 paired differences in {-1, 0, 1} (a fixed pattern): mean 0.1, plug-in sd σ; the
        // percentile interval must be ≈ mean ± 1.96 σ / √n.
        let v: Vec<f64> = (0..400)
            .map(|i| match i % 10 {
                0..=2 => 1.0,
                3 | 4 => -1.0,
                _ => 0.0,
            })
            .collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let [r] = group_bootstrap(v.len(), 4000, 3, mean_stat(&v));
        let iv = percentile_interval(mean, r, 0.95).unwrap();
        let half = 1.96 * sd / n.sqrt();
        assert!(
            (iv.lo - (mean - half)).abs() < 0.12 * half,
            "{iv:?} vs ±{half}"
        );
        assert!(
            (iv.hi - (mean + half)).abs() < 0.12 * half,
            "{iv:?} vs ±{half}"
        );
    }

    #[test]
    fn bootstrap_interval_covers_the_true_mean_about_95_percent() {
        // Samples of 40 uniform(0,1) values (true mean 1/2) from a simple LCG.
        let mut state = 12345u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let trials = 300;
        let mut covered = 0;
        for t in 0..trials {
            let v: Vec<f64> = (0..40).map(|_| uniform()).collect();
            let mean = v.iter().sum::<f64>() / 40.0;
            let [r] = group_bootstrap(40, 400, t, mean_stat(&v));
            let iv = percentile_interval(mean, r, 0.95).unwrap();
            if iv.lo <= 0.5 && 0.5 <= iv.hi {
                covered += 1;
            }
        }
        let rate = f64::from(covered) / f64::from(trials as u32);
        assert!((0.89..=0.99).contains(&rate), "coverage {rate}");
    }
}

/// `n` images × `draws` answers each; `right_a(i)` / `right_b(i)`: is the model right on image i.
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

fn opts(resamples: usize) -> AbOptions {
    AbOptions {
        resamples,
        seed: 11,
        level_probs: [0.25; 4],
        score_sequences: 200,
        resample_sequences: 20,
    }
}

fn rule() -> Rule {
    Rule::from_config(&AbTestConfig::default()).unwrap()
}

mod paired {
    use super::*;

    #[test]
    fn hand_computed_counts_and_deltas() {
        // 10 images, 1 draw: A right on 0..6, B right on 2..10.
        let a = answers(10, 1, |i| i < 6, |i| i >= 2);
        let s = compare(&a, &opts(200)).unwrap();
        assert_eq!((s.images, s.answers), (10, 10));
        assert_eq!((s.mcnemar.b, s.mcnemar.c), (2, 4));
        assert!((s.mcnemar.p_value - mcnemar_exact(2, 4)).abs() < 1e-15);
        assert!((s.a.overall.accuracy - 0.6).abs() < 1e-12);
        assert!((s.b.overall.accuracy - 0.8).abs() < 1e-12);
        assert!((s.delta.accuracy.estimate - 0.2).abs() < 1e-12);
        assert!((s.delta.mcc.estimate - (s.b.overall.mcc - s.a.overall.mcc)).abs() < 1e-12);
        let d = s.delta.accuracy;
        assert!(d.lo <= d.estimate && d.estimate <= d.hi && d.lo < d.hi);
        assert_eq!(d.resamples, 200);
        let sc = s.delta.score.unwrap();
        let (sa, sb) = (s.a.expected_score.unwrap(), s.b.expected_score.unwrap());
        assert!((sc.estimate - (sb.mean - sa.mean)).abs() < 1e-12);
        assert!(sc.resamples > 150, "{sc:?}");
    }

    #[test]
    fn identical_models_keep_with_zero_deltas() {
        let a = answers(12, 4, |i| i % 3 != 0, |i| i % 3 != 0);
        let s = compare(&a, &opts(100)).unwrap();
        assert_eq!((s.mcnemar.b, s.mcnemar.c, s.mcnemar.p_value), (0, 0, 1.0));
        for iv in [
            &s.delta.accuracy,
            &s.delta.mcc,
            s.delta.score.as_ref().unwrap(),
        ] {
            assert_eq!((iv.estimate, iv.lo, iv.hi), (0.0, 0.0, 0.0));
        }
        // Even the most lenient rule keeps A.
        let lenient = Rule {
            metric: Metric::Accuracy,
            min_gain: -1.0,
            require_ci_above_zero: false,
            max_mcnemar_p: None,
        };
        let d = decide(&s, &lenient);
        assert!(!d.promote);
        assert_eq!(d.decision, "keep");
        assert!(d.reasons[0].contains("same answer"), "{:?}", d.reasons);
    }

    #[test]
    fn swapping_a_and_b_negates_every_delta() {
        let a = answers(40, 4, |i| i % 5 != 0, |i| i % 7 != 0);
        let swapped: Vec<PairedAnswer> = a
            .iter()
            .cloned()
            .map(|mut x| {
                std::mem::swap(&mut x.prob_a, &mut x.prob_b);
                x
            })
            .collect();
        let s = compare(&a, &opts(300)).unwrap();
        let t = compare(&swapped, &opts(300)).unwrap();
        assert_eq!((s.mcnemar.b, s.mcnemar.c), (t.mcnemar.c, t.mcnemar.b));
        assert_eq!(s.mcnemar.p_value, t.mcnemar.p_value);
        for (x, y) in [
            (s.delta.accuracy, t.delta.accuracy),
            (s.delta.mcc, t.delta.mcc),
            (s.delta.score.unwrap(), t.delta.score.unwrap()),
        ] {
            assert!(x.estimate != 0.0);
            assert!((x.estimate + y.estimate).abs() < 1e-12, "{x:?} {y:?}");
            assert!(
                (x.lo + y.hi).abs() < 1e-12 && (x.hi + y.lo).abs() < 1e-12,
                "{x:?} {y:?}"
            );
        }
    }

    #[test]
    fn bootstrap_resamples_images_not_draws() {
        // Four perfectly correlated draws per image: resampling images gives a wider interval
        // than pretending each draw is its own image.
        let grouped = answers(40, 4, |i| i % 4 != 0, |i| i % 3 != 0);
        let mut ungrouped = grouped.clone();
        for (k, x) in ungrouped.iter_mut().enumerate() {
            x.id = format!("draw{k}");
        }
        let g = compare(&grouped, &opts(1000)).unwrap();
        let u = compare(&ungrouped, &opts(1000)).unwrap();
        assert_eq!((g.images, u.images), (40, 160));
        assert_eq!(g.delta.accuracy.estimate, u.delta.accuracy.estimate);
        let wg = g.delta.accuracy.hi - g.delta.accuracy.lo;
        let wu = u.delta.accuracy.hi - u.delta.accuracy.lo;
        // Theory: twice as wide (√4); allow bootstrap noise.
        assert!(wg > 1.6 * wu, "grouped {wg} vs ungrouped {wu}");
    }

    #[test]
    fn single_class_split_warns_and_has_no_score() {
        let mut a = answers(10, 4, |i| i < 6, |i| i >= 2);
        a.retain(|x| x.label == 1);
        let s = compare(&a, &opts(50)).unwrap();
        assert_eq!(s.a.overall.mcc, 0.0);
        assert_eq!(s.b.overall.mcc, 0.0);
        assert!(s.delta.score.is_none() && s.a.expected_score.is_none());
        assert!(
            s.warnings.iter().any(|w| w.contains("label 1 only")),
            "{:?}",
            s.warnings
        );
        let d = decide(
            &s,
            &Rule {
                metric: Metric::Score,
                ..rule()
            },
        );
        assert!(!d.promote);
        assert!(
            d.reasons.iter().any(|r| r.contains("undefined")),
            "{:?}",
            d.reasons
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(compare(&[], &opts(10)).is_err());
        let mut a = answers(4, 1, |_| true, |_| false);
        a[2].prob_b = f64::NAN;
        let e = compare(&a, &opts(10)).unwrap_err().to_string();
        assert!(e.contains("img2"), "{e}");
    }
}

mod rule {
    use super::*;

    /// B clearly better: right on 95% of 200 images vs A's 70%.
    fn better_b() -> AbStats {
        compare(
            &answers(200, 4, |i| i % 10 < 7, |i| i % 20 != 0),
            &opts(500),
        )
        .unwrap()
    }

    #[test]
    fn default_rule_promotes_a_clearly_better_b() {
        let s = better_b();
        assert!(s.delta.mcc.lo > 0.0, "{:?}", s.delta.mcc);
        let d = decide(&s, &rule());
        assert!(d.promote, "{:?}", d.reasons);
        assert_eq!(d.decision, "promote");
        assert!(d.reasons.is_empty());
        assert!(d.clauses.iter().all(|c| c.passed));
    }

    #[test]
    fn each_clause_flips_the_decision() {
        let s = better_b();
        let base = rule();
        // min_gain above the observed gain.
        let d = decide(
            &s,
            &Rule {
                min_gain: s.delta.mcc.estimate + 0.01,
                ..base
            },
        );
        assert!(!d.promote);
        assert_eq!(d.reasons.len(), 1);
        assert!(d.reasons[0].contains("< min_gain"), "{:?}", d.reasons);
        // McNemar limit: too strict keeps, loose promotes.
        let d = decide(
            &s,
            &Rule {
                max_mcnemar_p: Some(s.mcnemar.p_value / 2.0),
                ..base
            },
        );
        assert!(
            !d.promote && d.reasons[0].contains("McNemar"),
            "{:?}",
            d.reasons
        );
        assert!(
            decide(
                &s,
                &Rule {
                    max_mcnemar_p: Some(0.05),
                    ..base
                }
            )
            .promote
        );
        // Metric switch: B worse in accuracy than min_gain demands on that metric only.
        let d = decide(
            &s,
            &Rule {
                metric: Metric::Accuracy,
                min_gain: s.delta.accuracy.estimate + 1e-9,
                ..base
            },
        );
        assert!(
            !d.promote && d.reasons[0].contains("Δaccuracy"),
            "{:?}",
            d.reasons
        );

        // A small gain whose interval straddles 0: the CI clause alone decides.
        let weak = compare(&answers(20, 1, |i| i >= 2, |i| i >= 1), &opts(500)).unwrap();
        assert!(
            weak.delta.mcc.estimate > 0.0 && weak.delta.mcc.lo <= 0.0,
            "{:?}",
            weak.delta.mcc
        );
        let d = decide(&weak, &base);
        assert!(!d.promote);
        assert_eq!(d.reasons.len(), 1);
        assert!(d.reasons[0].contains("not above 0"), "{:?}", d.reasons);
        let d = decide(
            &weak,
            &Rule {
                require_ci_above_zero: false,
                ..base
            },
        );
        assert!(d.promote, "{:?}", d.reasons);
        // Score as the metric.
        let d = decide(
            &s,
            &Rule {
                metric: Metric::Score,
                ..base
            },
        );
        assert!(d.promote, "{:?} {:?}", d.reasons, s.delta.score);
    }

    #[test]
    fn no_bootstrap_means_no_interval_to_trust() {
        let s = compare(
            &answers(200, 4, |i| i % 10 < 7, |i| i % 20 != 0),
            &AbOptions {
                resamples: 0,
                ..opts(0)
            },
        )
        .unwrap();
        assert_eq!(s.delta.mcc.resamples, 0);
        let d = decide(&s, &rule());
        assert!(!d.promote);
        assert!(
            d.reasons[0].contains("no bootstrap interval"),
            "{:?}",
            d.reasons
        );
        let d = decide(
            &s,
            &Rule {
                require_ci_above_zero: false,
                ..rule()
            },
        );
        assert!(d.promote, "{:?}", d.reasons);
    }

    #[test]
    fn rule_config_errors_name_the_key() {
        let bad = AbTestConfig {
            metric: "f1".into(),
            ..Default::default()
        };
        let e = Rule::from_config(&bad).unwrap_err().to_string();
        assert!(e.contains("ab_test.metric") && e.contains("f1"), "{e}");
        let bad = AbTestConfig {
            max_mcnemar_p: Some(0.0),
            ..Default::default()
        };
        let e = Rule::from_config(&bad).unwrap_err().to_string();
        assert!(e.contains("ab_test.max_mcnemar_p"), "{e}");
    }
}

/// The binary end to end: demo data → ingest → synth-mix → train-head, then ab-test of the head
/// against a copy whose threshold answers differently.
mod cli_e2e {
    use std::path::Path;

    use super::common::decision;
    use sv72::train::RunInfo;

    /// Runs sv72 on the fixture backbone (300 bootstrap resamples); exit status must be `want`.
    fn code(dir: &Path, args: &[&str], want: i32) -> String {
        super::common::code_on_fixture(dir, 300, args, want)
    }

    #[test]
    fn promote_keep_exit_codes_and_swap_symmetry() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        super::common::demo_mix(d, 16);
        code(d, &crate::common::QUICK_HEAD, 0);
        // B: the same head served with another threshold, so its answers differ from A's.
        let run_id = std::fs::read_to_string(d.join("checkpoints/latest")).unwrap();
        let a_dir = d.join("checkpoints").join(run_id.trim());
        let b_dir = d.join("checkpoints/B-run");
        std::fs::create_dir_all(&b_dir).unwrap();
        std::fs::copy(
            a_dir.join("head.safetensors"),
            b_dir.join("head.safetensors"),
        )
        .unwrap();
        let mut info: RunInfo =
            serde_yaml::from_str(&std::fs::read_to_string(a_dir.join("run.yaml")).unwrap())
                .unwrap();
        info.run_id = "B-run".into();
        info.threshold = 0.999;
        std::fs::write(
            b_dir.join("run.yaml"),
            serde_yaml::to_string(&info).unwrap(),
        )
        .unwrap();

        // A against itself: identical, keep (3).
        let table = code(
            d,
            &[
                "ab-test",
                "checkpoints/latest",
                a_dir.to_str().unwrap(),
                "--on",
                "mix:test",
                "--out",
                "same",
            ],
            3,
        );
        assert!(table.contains("KEEP A"), "{table}");
        let same = decision(&d.join("same"));
        assert_eq!(same.decision.decision, "keep");
        assert_eq!(same.exit_code, 3);
        assert_eq!((same.stats.mcnemar.b, same.stats.mcnemar.c), (0, 0));
        assert_eq!(same.stats.mcnemar.p_value, 1.0);
        assert_eq!(same.stats.delta.mcc.estimate, 0.0);
        assert_eq!(same.mode, "features");
        assert_eq!(same.a.kind, "checkpoint");
        assert_eq!(same.a.id, run_id.trim());
        // Paired n: every test image at levels 0-3, one draw each.
        assert!(same.stats.images > 0);
        assert_eq!(same.stats.answers, same.stats.images * 4);
        assert_eq!(same.stats.a.overall.n, same.stats.answers);
        assert_eq!(same.data.split, "test");
        assert_eq!(same.data.manifest_hash.len(), 64);

        // A vs B with a rule B can pass (it differs somewhere): promote (0).
        let lenient = [
            "--set",
            "ab_test.min_gain=-2",
            "--set",
            "ab_test.require_ci_above_zero=false",
        ];
        let mut args = vec![
            "ab-test",
            "checkpoints/latest",
            "checkpoints/B-run",
            "--on",
            "mix:test",
            "--out",
            "ab",
        ];
        args.extend(lenient);
        code(d, &args, 0);
        let ab = decision(&d.join("ab"));
        assert_eq!(ab.decision.decision, "promote");
        assert_eq!(ab.exit_code, 0);
        assert!(ab.stats.mcnemar.b + ab.stats.mcnemar.c > 0);
        assert_eq!(ab.b.id, "B-run");
        assert_eq!(ab.stats.answers, same.stats.answers);
        for f in ["report.md", "answers.jsonl", "accuracy_by_level.png"] {
            assert!(d.join("ab").join(f).is_file(), "{f}");
        }
        image::open(d.join("ab/accuracy_by_level.png")).unwrap();
        let md = std::fs::read_to_string(d.join("ab/report.md")).unwrap();
        assert!(md.contains("PROMOTE") && md.contains("B-run"), "{md}");

        // Swapped, default rule: the deltas are negated exactly; an impossible gain keeps (3).
        code(
            d,
            &[
                "ab-test",
                "checkpoints/B-run",
                "checkpoints/latest",
                "--on",
                "mix:test",
                "--out",
                "ba",
                "--set",
                "ab_test.min_gain=2",
            ],
            3,
        );
        let ba = decision(&d.join("ba"));
        assert_eq!(
            (ab.stats.mcnemar.b, ab.stats.mcnemar.c),
            (ba.stats.mcnemar.c, ba.stats.mcnemar.b)
        );
        for (x, y) in [
            (&ab.stats.delta.accuracy, &ba.stats.delta.accuracy),
            (&ab.stats.delta.mcc, &ba.stats.delta.mcc),
        ] {
            assert!((x.estimate + y.estimate).abs() < 1e-12, "{x:?} {y:?}");
            assert!((x.lo + y.hi).abs() < 1e-12 && (x.hi + y.lo).abs() < 1e-12);
        }
        if let (Some(x), Some(y)) = (&ab.stats.delta.score, &ba.stats.delta.score) {
            assert!((x.estimate + y.estimate).abs() < 1e-12, "{x:?} {y:?}");
        }
        assert!(
            ba.decision.reasons.iter().any(|r| r.contains("min_gain 2")),
            "{:?}",
            ba.decision.reasons
        );

        // The images path (each model end to end, as serve loads it) sees the same challenges
        // and agrees with the shared-features path up to float rounding near 0.5.
        let mut args = vec![
            "ab-test",
            "checkpoints/latest",
            "checkpoints/B-run",
            "--on",
            "mix:test",
            "--out",
            "img",
            "--mode",
            "images",
        ];
        args.extend(lenient);
        code(d, &args, 0);
        let img = decision(&d.join("img"));
        assert_eq!(img.mode, "images");
        assert_eq!(img.stats.answers, ab.stats.answers);
        let n = ab.stats.answers as f64;
        assert!(
            (img.stats.a.overall.accuracy - ab.stats.a.overall.accuracy).abs() <= 1.0 / n + 1e-12
        );
        assert!(
            (img.stats.b.overall.accuracy - ab.stats.b.overall.accuracy).abs() <= 1.0 / n + 1e-12
        );

        // Default output folder under ab_test.out_dir.
        code(
            d,
            &[
                "ab-test",
                "checkpoints/latest",
                "checkpoints/latest",
                "--on",
                "mix:test",
            ],
            3,
        );
        let made: Vec<_> = std::fs::read_dir(d.join("abtests"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(made.len(), 1);
        let name = made[0].file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(&format!("{0}-vs-{0}", run_id.trim())),
            "{name}"
        );
        assert!(made[0].path().join("decision.json").is_file());

        // An existing --out folder keeps what else it holds (e.g. a checkpoint's files).
        std::fs::create_dir_all(d.join("keep")).unwrap();
        std::fs::write(d.join("keep/other.txt"), "x").unwrap();
        code(
            d,
            &[
                "ab-test",
                "checkpoints/latest",
                "checkpoints/latest",
                "--on",
                "mix:test",
                "--out",
                "keep",
            ],
            3,
        );
        assert!(d.join("keep/other.txt").is_file() && d.join("keep/decision.json").is_file());

        // Errors: exit 1 with a message naming the problem, nothing written.
        let e = code(
            d,
            &[
                "ab-test",
                "checkpoints/latest",
                "nope",
                "--on",
                "mix:test",
                "--out",
                "e1",
            ],
            1,
        );
        assert!(e.contains("error:") && e.contains("nope"), "{e}");
        let e = code(
            d,
            &[
                "ab-test",
                "checkpoints/latest",
                "checkpoints/B-run",
                "--on",
                "missing:test",
                "--out",
                "e2",
            ],
            1,
        );
        assert!(e.contains("missing"), "{e}");
        let e = code(
            d,
            &[
                "ab-test",
                "checkpoints/latest",
                "checkpoints/B-run",
                "--on",
                "mix",
                "--out",
                "e3",
                "--set",
                "ab_test.metric=f1",
            ],
            1,
        );
        assert!(e.contains("ab_test.metric"), "{e}");
        for o in ["e1", "e2", "e3"] {
            assert!(!d.join(o).exists());
        }
    }
}
