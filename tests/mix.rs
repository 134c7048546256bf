//! `synth-mix` arithmetic, sampling and CLI; the generated `demo-data` set.

use std::collections::{BTreeMap, HashSet};

use sv72::data::manifest::{ManifestRow, SourceKind, Split};
use sv72::data::mix::{
    build_mix, exact_capacity, plan_mix, synthetic_share, Balance, MixRequest, ShortfallPolicy,
    SourceCounts,
};

fn counts(pos: (usize, usize), neg: (usize, usize)) -> BTreeMap<u8, SourceCounts> {
    BTreeMap::from([
        (
            1,
            SourceCounts {
                real: pos.0,
                synthetic: pos.1,
            },
        ),
        (
            0,
            SourceCounts {
                real: neg.0,
                synthetic: neg.1,
            },
        ),
    ])
}

fn req(fraction: f64, balance: Balance) -> MixRequest {
    MixRequest {
        fraction,
        balance,
        policy: ShortfallPolicy::ExactRatio,
        per_label: None,
    }
}

fn sc(real: usize, synthetic: usize) -> SourceCounts {
    SourceCounts { real, synthetic }
}

fn row(id: &str, label: u8, source: SourceKind, split: Split) -> ManifestRow {
    ManifestRow {
        id: id.to_string(),
        path: format!("store/{id}.jpg"),
        label,
        source,
        generator: match source {
            SourceKind::Real => "photo".into(),
            SourceKind::Synthetic => "sdxl".into(),
        },
        width: 320,
        height: 240,
        format: "jpeg".into(),
        split,
        phash: 0,
        group: format!("g-{id}"),
        ingested_at: "2025-01-01T00:00:00Z".into(),
        origin: format!("/in/{id}.jpg"),
        variant_of: None,
        aug: None,
        group_key: None,
        parent: None,
    }
}

/// `n` rows per (label, source) in train plus `eval` per (label, source) in val and in test.
fn rows(prefix: &str, source: SourceKind, train: [usize; 2], eval: usize) -> Vec<ManifestRow> {
    let mut v = Vec::new();
    for label in [0u8, 1] {
        for i in 0..train[label as usize] {
            v.push(row(
                &format!("{prefix}-{label}-tr{i}"),
                label,
                source,
                Split::Train,
            ));
        }
        for split in [Split::Val, Split::Test] {
            for i in 0..eval {
                v.push(row(
                    &format!("{prefix}-{label}-{split}{i}"),
                    label,
                    source,
                    split,
                ));
            }
        }
    }
    v
}

fn train_counts(rows: &[ManifestRow]) -> BTreeMap<u8, SourceCounts> {
    sv72::data::mix::count_train(rows)
}

mod plan {
    use super::*;

    #[test]
    fn half_synthetic_balanced_keeps_minority_reals() {
        let p = plan_mix(&counts((100, 300), (200, 500)), &req(0.5, Balance::Equal)).unwrap();
        assert_eq!(p.label(1).unwrap().take, sc(100, 100));
        assert_eq!(p.label(0).unwrap().take, sc(100, 100));
        assert!(p.shortfalls.is_empty(), "{:?}", p.shortfalls);
        assert_eq!(p.label(1).unwrap().achieved_fraction, Some(0.5));
    }

    #[test]
    fn natural_counts_keep_every_real_image() {
        let p = plan_mix(&counts((70, 300), (140, 500)), &req(0.3, Balance::None)).unwrap();
        assert_eq!(p.label(1).unwrap().take, sc(70, 30));
        assert_eq!(p.label(0).unwrap().take, sc(140, 60));
        assert!(p.shortfalls.is_empty());
    }

    #[test]
    fn fraction_zero_and_one() {
        let c = counts((40, 90), (60, 80));
        let p = plan_mix(&c, &req(0.0, Balance::None)).unwrap();
        assert_eq!(p.label(1).unwrap().take, sc(40, 0));
        assert_eq!(p.label(0).unwrap().take, sc(60, 0));
        let p = plan_mix(&c, &req(0.0, Balance::Equal)).unwrap();
        assert_eq!(p.label(1).unwrap().take, sc(40, 0));
        assert_eq!(p.label(0).unwrap().take, sc(40, 0));
        let p = plan_mix(&c, &req(1.0, Balance::None)).unwrap();
        assert_eq!(p.label(1).unwrap().take, sc(0, 90));
        assert_eq!(p.label(0).unwrap().take, sc(0, 80));
        let p = plan_mix(&c, &req(1.0, Balance::Equal)).unwrap();
        assert_eq!(p.label(1).unwrap().take, sc(0, 80));
        assert_eq!(p.label(0).unwrap().take, sc(0, 80));
        assert!(p.shortfalls.is_empty());
    }

    #[test]
    fn rounding_is_half_away_from_zero_and_totals_are_maximal() {
        assert_eq!(synthetic_share(3, 0.5), 2);
        assert_eq!(synthetic_share(10, 0.25), 3); // 2.5 -> 3
        assert_eq!(synthetic_share(15, 1.0 / 3.0), 5);
        // One third of a label with 10 reals: 15 = 10 real + 5 synthetic; 16 would need 11 reals.
        let p = plan_mix(
            &counts((10, 100), (10, 100)),
            &req(1.0 / 3.0, Balance::None),
        )
        .unwrap();
        assert_eq!(p.label(1).unwrap().take, sc(10, 5));

        // Property over a grid: the capacity splits by the rounding rule, fits, uses the scarcer
        // source in full, and misses the target by less than half an image.
        for &f in &[
            0.0,
            0.1,
            0.25,
            1.0 / 3.0,
            0.37,
            0.5,
            0.6,
            0.75,
            0.9,
            0.99,
            1.0,
        ] {
            for real in [0usize, 1, 3, 7, 50, 101] {
                for synthetic in [0usize, 1, 2, 9, 40, 333] {
                    let avail = sc(real, synthetic);
                    let cap = exact_capacity(avail, f);
                    let t = cap.total();
                    assert_eq!(cap.synthetic, synthetic_share(t, f), "f={f} {avail:?}");
                    assert!(
                        cap.real <= real && cap.synthetic <= synthetic,
                        "f={f} {avail:?}"
                    );
                    let full_real = cap.real == real || f == 1.0;
                    let full_synth = cap.synthetic == synthetic || f == 0.0;
                    assert!(
                        full_real || full_synth,
                        "f={f} {avail:?} -> {cap:?} wastes both"
                    );
                    if t > 0 {
                        let achieved = cap.synthetic as f64 / t as f64;
                        assert!((achieved - f).abs() <= 0.5 / t as f64 + 1e-12);
                    }
                    for balance in [Balance::Equal, Balance::None] {
                        let p = plan_mix(
                            &counts((real, synthetic), (real, synthetic)),
                            &req(f, balance),
                        )
                        .unwrap();
                        let take = p.label(1).unwrap().take;
                        assert_eq!(take.synthetic, synthetic_share(take.total(), f));
                        assert!(take.real <= real && take.synthetic <= synthetic);
                    }
                }
            }
        }
    }

    #[test]
    fn too_few_synthetic_positives_shrinks_label_and_says_so() {
        let c = counts((100, 20), (100, 500));
        let p = plan_mix(&c, &req(0.5, Balance::Equal)).unwrap();
        assert_eq!(p.shortfalls.len(), 1, "{:?}", p.shortfalls);
        let s = &p.shortfalls[0];
        assert_eq!(
            (s.label, s.source, s.wanted, s.available),
            (1, SourceKind::Synthetic, 100, 20)
        );
        // Exact ratio: 20 synthetic + 20 real, and the negatives shrink to stay balanced.
        assert_eq!(p.label(1).unwrap().take, sc(20, 20));
        assert_eq!(p.label(0).unwrap().take, sc(20, 20));
        let text = p.notes.join("\n");
        assert!(
            text.contains("roadwork (label 1)") && text.contains("wanted 100 synthetic"),
            "{text}"
        );
        assert!(text.contains("only 20"), "{text}");
        assert!(text.contains("balanced"), "{text}");

        // Natural counts: only the short label shrinks.
        let p = plan_mix(&c, &req(0.5, Balance::None)).unwrap();
        assert_eq!(p.label(1).unwrap().take, sc(20, 20));
        assert_eq!(p.label(0).unwrap().take, sc(100, 100));

        // Allow the shortfall: all wanted reals stay, the ratio drops and is reported.
        let mut r = req(0.5, Balance::Equal);
        r.policy = ShortfallPolicy::AllowRatioShortfall;
        let p = plan_mix(&c, &r).unwrap();
        let l1 = p.label(1).unwrap();
        assert_eq!(l1.take, sc(100, 20));
        assert!((l1.achieved_fraction.unwrap() - 20.0 / 120.0).abs() < 1e-12);
        assert_eq!(l1.target_fraction, 0.5);
        assert_eq!(p.label(0).unwrap().take, sc(100, 100));
        let text = p.notes.join("\n");
        assert!(text.contains("16.7%") && text.contains("50.0%"), "{text}");
    }

    #[test]
    fn too_few_reals_for_a_fixed_size() {
        let c = counts((30, 200), (200, 200));
        let mut r = req(0.5, Balance::Equal);
        r.per_label = Some(100);
        let p = plan_mix(&c, &r).unwrap();
        assert_eq!(p.shortfalls.len(), 1, "{:?}", p.shortfalls);
        let s = &p.shortfalls[0];
        assert_eq!(
            (s.label, s.source, s.wanted, s.available),
            (1, SourceKind::Real, 50, 30)
        );
        assert_eq!(p.label(1).unwrap().take, sc(30, 30));
        assert_eq!(p.label(0).unwrap().take, sc(30, 30));

        r.policy = ShortfallPolicy::AllowRatioShortfall;
        let p = plan_mix(&c, &r).unwrap();
        // The gap is filled with spare synthetic images so the label keeps its size.
        assert_eq!(p.label(1).unwrap().take, sc(30, 70));
        assert_eq!(p.label(0).unwrap().take, sc(50, 50));
        assert_eq!(p.label(1).unwrap().achieved_fraction, Some(0.7));
    }

    #[test]
    fn missing_label_and_bad_fraction() {
        let only_neg = BTreeMap::from([(0u8, sc(10, 10))]);
        let p = plan_mix(&only_neg, &req(0.5, Balance::Equal)).unwrap();
        assert_eq!(p.total_take(), 0);
        assert!(p.notes.join("\n").contains("no train images"));
        let p = plan_mix(&only_neg, &req(0.5, Balance::None)).unwrap();
        assert_eq!(p.label(0).unwrap().take, sc(10, 10));
        assert!(plan_mix(&only_neg, &req(1.5, Balance::None)).is_err());
        assert!(plan_mix(&only_neg, &req(f64::NAN, Balance::None)).is_err());
    }
}

mod build {
    use super::*;

    fn inputs() -> Vec<ManifestRow> {
        let mut v = rows("r", SourceKind::Real, [120, 60], 5);
        v.extend(rows("s", SourceKind::Synthetic, [300, 40], 4));
        v
    }

    fn eval_rows(rows: &[ManifestRow]) -> Vec<ManifestRow> {
        rows.iter()
            .filter(|r| r.split != Split::Train)
            .cloned()
            .collect()
    }

    fn ids(rows: &[ManifestRow]) -> Vec<String> {
        rows.iter().map(|r| r.id.clone()).collect()
    }

    #[test]
    fn train_counts_follow_the_plan_and_eval_is_untouched() {
        let input = inputs();
        for (f, bal) in [
            (0.0, Balance::Equal),
            (0.5, Balance::Equal),
            (0.5, Balance::None),
            (0.8, Balance::None),
            (1.0, Balance::Equal),
        ] {
            let out = build_mix(&input, &req(f, bal), 7).unwrap();
            assert_eq!(eval_rows(&out.rows), eval_rows(&input), "f={f} {bal:?}");
            let got = train_counts(&out.rows);
            for lp in &out.plan.labels {
                assert_eq!(
                    got.get(&lp.label).copied().unwrap_or_default(),
                    lp.take,
                    "f={f} {bal:?} label {}",
                    lp.label
                );
            }
            // Every output row is an input row, unchanged (split included).
            for r in &out.rows {
                assert!(input.contains(r), "{} was altered or invented", r.id);
            }
        }
    }

    #[test]
    fn same_seed_same_rows_other_seed_other_sample() {
        let input = inputs();
        let r = req(0.5, Balance::Equal);
        let a = build_mix(&input, &r, 1).unwrap();
        let b = build_mix(&input, &r, 1).unwrap();
        assert_eq!(a.rows, b.rows);
        let c = build_mix(&input, &r, 2).unwrap();
        assert_ne!(ids(&a.rows), ids(&c.rows));
        assert_eq!(a.rows.len(), c.rows.len());

        // Input order does not matter for which images are chosen.
        let mut rev = input.clone();
        rev.reverse();
        let d = build_mix(&rev, &r, 1).unwrap();
        let set = |rows: &[ManifestRow]| rows.iter().map(|r| r.id.clone()).collect::<HashSet<_>>();
        assert_eq!(set(&a.rows), set(&d.rows));
    }

    #[test]
    fn larger_sample_is_a_superset() {
        let input = inputs();
        let mut r = req(0.5, Balance::Equal);
        r.per_label = Some(20);
        let small = build_mix(&input, &r, 9).unwrap();
        r.per_label = Some(60);
        let big = build_mix(&input, &r, 9).unwrap();
        let big_ids: HashSet<_> = big.rows.iter().map(|r| &r.id).collect();
        assert!(small.rows.iter().all(|r| big_ids.contains(&r.id)));
    }

    #[test]
    fn duplicates_are_never_created() {
        let mut input = inputs();
        // The same image in both synthetic and real inputs, twice in train, and a train image
        // whose id is also a val image of another input.
        input.push(input[0].clone());
        let mut dup_as_synth = input[1].clone();
        dup_as_synth.source = SourceKind::Synthetic;
        input.push(dup_as_synth);
        let val_id = input
            .iter()
            .find(|r| r.split == Split::Val)
            .unwrap()
            .id
            .clone();
        input.push(row(&val_id, 1, SourceKind::Synthetic, Split::Train));
        let mut eval_dup = input
            .iter()
            .find(|r| r.split == Split::Test)
            .unwrap()
            .clone();
        eval_dup.origin = "/elsewhere.jpg".into();
        input.push(eval_dup);
        let mut variant = row("v1", 1, SourceKind::Real, Split::Train);
        variant.variant_of = Some(input[0].id.clone());
        input.push(variant);

        let out = build_mix(&input, &req(1.0, Balance::None), 3).unwrap();
        let mut seen = HashSet::new();
        for r in &out.rows {
            assert!(seen.insert(r.id.clone()), "{} emitted twice", r.id);
        }
        assert_eq!(out.dropped.duplicate_train, 2);
        assert_eq!(out.dropped.train_in_eval, 1);
        assert_eq!(out.dropped.duplicate_eval, 1);
        assert_eq!(out.dropped.variants, 1);
        assert!(out
            .rows
            .iter()
            .any(|r| r.id == val_id && r.split == Split::Val));
        // Even taking every synthetic image, the leaked id does not come back as train.
        assert!(!out
            .rows
            .iter()
            .any(|r| r.id == val_id && r.split == Split::Train));
    }

    #[test]
    fn shortfall_reaches_the_outcome() {
        // 40 synthetic positives cannot make half of 120 real positives.
        let input = inputs();
        let out = build_mix(&input, &req(0.5, Balance::None), 5).unwrap();
        let l1 = out.plan.label(1).unwrap();
        assert_eq!(l1.available, sc(60, 40));
        assert_eq!(l1.take, sc(40, 40));
        assert_eq!(out.plan.shortfalls.len(), 1);
        let c = train_counts(&out.rows);
        assert_eq!(c[&1], sc(40, 40));
        assert_eq!(c[&0], sc(120, 120));
    }
}

mod demo {
    use std::path::Path;

    use sv72::data::demo::{demo_jpeg, generate_demo, render_scene, DemoOptions, README_MARKER};

    use super::*;

    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        for src in ["real", "synthetic"] {
            for class in ["roadwork", "none"] {
                let d = dir.join(src).join(class);
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                    m.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        m
    }

    fn n_in(m: &BTreeMap<String, Vec<u8>>, prefix: &str) -> usize {
        m.keys().filter(|k| k.starts_with(prefix)).count()
    }

    #[test]
    fn layout_counts_determinism_and_planted_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("c"),
        );
        let opts = DemoOptions {
            seed: 5,
            count: 7,
            extras: true,
        };
        let summary = generate_demo(&a, &opts).unwrap();
        generate_demo(&b, &opts).unwrap();
        generate_demo(&c, &DemoOptions { seed: 6, ..opts }).unwrap();
        let (fa, fb, fc) = (files(&a), files(&b), files(&c));
        assert_eq!(fa, fb, "same seed must give the same bytes");
        assert_eq!(fa.keys().collect::<Vec<_>>(), fc.keys().collect::<Vec<_>>());
        let same = fa.iter().filter(|(k, v)| fc[*k] == **v).count();
        assert!(same <= 3, "{same} files identical across seeds"); // only the planted corrupt one may be

        // 4 roadwork + 3 none per source, plus 2 duplicates and 1 corrupt file in real.
        assert_eq!(n_in(&fa, "real/roadwork/"), 4 + 1);
        assert_eq!(n_in(&fa, "real/none/"), 3 + 2);
        assert_eq!(n_in(&fa, "synthetic/roadwork/"), 4);
        assert_eq!(n_in(&fa, "synthetic/none/"), 3);
        assert_eq!(summary.duplicates.len(), 2);
        for d in &summary.duplicates {
            let bytes = &fa[d];
            let copies = fa.values().filter(|v| *v == bytes).count();
            assert_eq!(copies, 2, "{d} is not an exact copy of one other file");
        }

        let mut decoded = 0;
        for (name, bytes) in &fa {
            let img = image::load_from_memory(bytes);
            if summary.corrupt.contains(name) {
                assert!(img.is_err(), "{name} should not decode");
            } else {
                let img = img.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!((img.width(), img.height()), (320, 240), "{name}");
                decoded += 1;
            }
        }
        assert_eq!(decoded, 16);
        let readme = std::fs::read_to_string(a.join("README.txt")).unwrap();
        assert!(readme.starts_with(README_MARKER));
        assert!(readme.contains("NOT REAL DATA") && readme.contains("corrupt"));

        // Re-running over a demo set replaces it; a foreign folder is refused.
        generate_demo(&a, &DemoOptions { seed: 6, ..opts }).unwrap();
        assert_eq!(files(&a), fc);
        let foreign = tmp.path().join("photos");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("holiday.jpg"), b"x").unwrap();
        let err = generate_demo(&foreign, &opts).unwrap_err().to_string();
        assert!(err.contains("not an sv72 demo set"), "{err}");
        assert!(foreign.join("holiday.jpg").exists());
        assert!(generate_demo(&tmp.path().join("d"), &DemoOptions { count: 1, ..opts }).is_err());
    }

    /// Saturated orange by hue, so it holds under the scenes' lighting changes.
    fn is_cone_orange(p: &image::Rgb<u8>) -> bool {
        let [r, g, b] = p.0.map(f32::from);
        let (mx, mn) = (r.max(g).max(b), r.min(g).min(b));
        if mx != r || mx < 90.0 || mx - mn < 0.7 * mx {
            return false;
        }
        let hue = 60.0 * (g - b) / (mx - mn);
        (10.0..=40.0).contains(&hue)
    }

    #[test]
    fn roadwork_scenes_carry_roadwork_colours() {
        let n = 30;
        let mut pos = Vec::new();
        let mut neg = Vec::new();
        for i in 0..n {
            for source in [SourceKind::Real, SourceKind::Synthetic] {
                for (roadwork, out) in [(true, &mut pos), (false, &mut neg)] {
                    let img = render_scene(1000 + i, roadwork, source);
                    out.push(img.pixels().filter(|p| is_cone_orange(p)).count());
                }
            }
        }
        pos.sort_unstable();
        neg.sort_unstable();
        let (mp, mn) = (pos[pos.len() / 2], neg[neg.len() / 2]);
        assert!(
            mp >= 5 * mn.max(10),
            "median orange pixels: positives {mp}, negatives {mn}"
        );
        let with = pos.iter().filter(|&&c| c >= 50).count();
        assert!(
            with * 10 >= pos.len() * 9,
            "only {with}/{} positives show orange",
            pos.len()
        );
        // Not trivially separable by colour: some negatives carry orange distractors too.
        assert!(
            neg.iter().any(|&c| c >= 50),
            "no negative has orange distractors"
        );
    }

    #[test]
    fn real_style_is_noisier_than_synthetic() {
        // Mean absolute difference of horizontal neighbours: sensor noise vs smooth rendering.
        let rough = |img: &image::RgbImage| {
            let mut s = 0u64;
            for y in 0..img.height() {
                for x in 1..img.width() {
                    let (a, b) = (img.get_pixel(x - 1, y).0, img.get_pixel(x, y).0);
                    s += (0..3).map(|k| a[k].abs_diff(b[k]) as u64).sum::<u64>();
                }
            }
            s as f64 / (img.width() * img.height()) as f64
        };
        let mut real_rougher = 0;
        for i in 0..10 {
            let r =
                image::load_from_memory(&demo_jpeg(3, SourceKind::Real, i % 2 == 0, i).unwrap())
                    .unwrap()
                    .to_rgb8();
            let s = image::load_from_memory(
                &demo_jpeg(3, SourceKind::Synthetic, i % 2 == 0, i).unwrap(),
            )
            .unwrap()
            .to_rgb8();
            if rough(&r) > rough(&s) {
                real_rougher += 1;
            }
        }
        assert!(
            real_rougher >= 9,
            "only {real_rougher}/10 real images are rougher"
        );
    }
}

mod cli {
    use std::path::Path;
    use std::process::{Command, Output};

    use sv72::data::manifest::{read_manifest, write_manifest};

    use super::*;

    fn sv72(datasets: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sv72"))
            .arg("--set")
            .arg(format!("paths.datasets={}", datasets.display()))
            .arg("synth-mix")
            .args(args)
            .env("SV72_NO_PROGRESS", "1")
            .output()
            .unwrap()
    }

    fn setup() -> (tempfile::TempDir, Vec<ManifestRow>) {
        let tmp = tempfile::tempdir().unwrap();
        let real = rows("r", SourceKind::Real, [50, 40], 3);
        let synth = rows("s", SourceKind::Synthetic, [80, 10], 2);
        let ds = tmp.path();
        write_manifest(&ds.join("r/manifest.parquet"), &real).unwrap();
        write_manifest(&ds.join("s/manifest.parquet"), &synth).unwrap();
        let mut all = real;
        all.extend(synth);
        (tmp, all)
    }

    #[test]
    fn writes_manifest_and_reports_with_the_shortfall() {
        let (tmp, all) = setup();
        let ds = tmp.path();
        let out = sv72(
            ds,
            &[
                "--real",
                "r",
                "--synthetic",
                "s",
                "--name",
                "m",
                "--seed",
                "4",
            ],
        );
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{so}\n{se}");
        assert!(se.contains("shortfall"), "{se}");
        let rows = read_manifest(&ds.join("m/manifest.parquet")).unwrap();
        // Label 1: 40 real, 10 synthetic -> exact 50% is 10 + 10; equal balance -> label 0 too.
        let c = train_counts(&rows);
        assert_eq!(c[&1], sc(10, 10));
        assert_eq!(c[&0], sc(10, 10));
        let eval_in: Vec<_> = all.iter().filter(|r| r.split != Split::Train).collect();
        let eval_out: Vec<_> = rows.iter().filter(|r| r.split != Split::Train).collect();
        assert_eq!(eval_in, eval_out);

        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(ds.join("m/mix_report.json")).unwrap()).unwrap();
        let sf = &report["plan"]["shortfalls"][0];
        assert_eq!(sf["label"], 1);
        assert_eq!(sf["source"], "synthetic");
        assert_eq!(sf["wanted"], 40);
        assert_eq!(sf["available"], 10);
        let md = std::fs::read_to_string(ds.join("m/mix_report.md")).unwrap();
        assert!(
            md.contains("wanted 40 synthetic images, 10 available"),
            "{md}"
        );

        // The same again keeps the counts but reports the achieved ratio.
        let out = sv72(
            ds,
            &[
                "--real",
                "r",
                "--synthetic",
                "s",
                "--name",
                "m2",
                "--allow-ratio-shortfall",
            ],
        );
        assert!(out.status.success());
        let rows = read_manifest(&ds.join("m2/manifest.parquet")).unwrap();
        let c = train_counts(&rows);
        assert_eq!(c[&1], sc(40, 10));
        let md = std::fs::read_to_string(ds.join("m2/mix_report.md")).unwrap();
        assert!(md.contains("| 20.0% |"), "{md}");
    }

    #[test]
    fn clear_errors_and_dry_run() {
        let (tmp, _) = setup();
        let ds = tmp.path();
        let out = sv72(ds, &["--real", "s", "--name", "m"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--real") && err.contains("different source"),
            "{err}"
        );

        let out = sv72(ds, &["--real", "nope", "--name", "m"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("nope") && err.contains("sv72 ingest"), "{err}");

        let out = sv72(ds, &["--real", "r", "--name", "r"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("overwrite"), "{err}");

        // No synthetic inputs at a 50% target: nothing to train on, said plainly.
        let out = sv72(ds, &["--real", "r", "--name", "m"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1));
        assert!(err.contains("no training images"), "{err}");
        assert!(!ds.join("m").exists());

        let out = sv72(
            ds,
            &[
                "--real",
                "r",
                "--synthetic",
                "s",
                "--name",
                "m",
                "--dry-run",
            ],
        );
        assert!(out.status.success());
        assert!(!ds.join("m").exists());
    }
}
