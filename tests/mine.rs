//! `sv72 mine-hard`: k-centre greedy, hard-case selection, and the binary end to end on demo
//! images with the tiny DINOv2 fixture.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;

use image::RgbImage;
use sv72::config::MineHardConfig;
use sv72::cycle::mine::{
    self, k_center_greedy, select_eval, select_serve, Criteria, Distance, Origin, Reason,
    ServeInput, Settings,
};
use sv72::data::decode::DecodeLimits;
use sv72::data::manifest::{read_manifest, ManifestRow, SourceKind, Split};
use sv72::eval::{read_predictions, write_predictions, EvalPrediction};
use sv72::infer::Predictor;
use sv72::serve::predlog::read_prediction_log;

fn criteria() -> Criteria {
    Criteria::from_config(&MineHardConfig::default()).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

mod kcenter {
    use super::*;

    fn square() -> Vec<Vec<f32>> {
        vec![
            vec![0.0, 0.0],
            vec![0.1, 0.0],
            vec![10.0, 0.0],
            vec![0.0, 10.0],
            vec![10.0, 10.0],
            vec![5.0, 5.0],
        ]
    }

    #[test]
    fn picks_the_farthest_points_in_order() {
        // From (0,0): (10,10) is farthest; then (10,0) and (0,10) tie at 10 (lowest index
        // wins), then (0,10), then the centre (7.07), and the near-duplicate (0.1) last.
        let p = square();
        assert_eq!(k_center_greedy(&p, 4, 0, Distance::L2), [0, 4, 2, 3]);
        assert_eq!(
            k_center_greedy(&p, 100, 0, Distance::L2),
            [0, 4, 2, 3, 5, 1]
        );
        assert_eq!(k_center_greedy(&p, 2, 5, Distance::L2), [5, 0]);
        assert!(k_center_greedy(&p, 0, 0, Distance::L2).is_empty());
        assert!(k_center_greedy(&p, 3, 6, Distance::L2).is_empty());
        assert!(k_center_greedy(&[], 3, 0, Distance::L2).is_empty());
    }

    #[test]
    fn cosine_ignores_scale_and_is_deterministic() {
        let p = vec![
            vec![1.0, 0.0],
            vec![2.0, 0.0],
            vec![0.0, 1.0],
            vec![-1.0, 0.0],
        ];
        // (2,0) is the same direction as the start: distance 0, chosen last.
        let a = k_center_greedy(&p, 4, 0, Distance::Cosine);
        assert_eq!(a, [0, 3, 2, 1]);
        assert_eq!(a, k_center_greedy(&p, 4, 0, Distance::Cosine));
        assert!((mine::distance(&p[0], &p[1], Distance::Cosine)).abs() < 1e-12);
        assert!((mine::distance(&p[0], &p[3], Distance::Cosine) - 2.0).abs() < 1e-12);
    }

    /// Timing at a realistic size (10k candidates, ViT-S `[CLS ; patch mean]` = 768 dims,
    /// 500 kept): `cargo test --test main mine:: -- --ignored --nocapture kcenter_timing`.
    #[test]
    #[ignore]
    fn kcenter_timing() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let pts: Vec<Vec<f32>> = (0..10_000)
            .map(|_| (0..768).map(|_| rng.random::<f32>() - 0.5).collect())
            .collect();
        for metric in [Distance::Cosine, Distance::L2] {
            let t = std::time::Instant::now();
            let pick = k_center_greedy(&pts, 500, 0, metric);
            assert_eq!(pick.len(), 500);
            println!(
                "k-centre {metric:?}: 10000 x 768 -> 500 in {:?}",
                t.elapsed()
            );
        }
    }

    #[test]
    fn respects_max_and_covers_clusters() {
        // Three tight clusters of 20 points; k = 3 must take one point of each.
        let mut pts = Vec::new();
        for c in 0..3 {
            for i in 0..20 {
                let j = i as f32 * 0.01;
                pts.push(vec![c as f32 * 100.0 + j, -j]);
            }
        }
        let pick = k_center_greedy(&pts, 3, 7, Distance::L2);
        assert_eq!(pick.len(), 3);
        let mut clusters: Vec<usize> = pick.iter().map(|i| i / 20).collect();
        clusters.sort();
        assert_eq!(clusters, [0, 1, 2]);
        assert_eq!(pick[0], 7);
    }
}

mod selection {
    use super::*;

    fn pred(id: &str, label: u8, level: u8, draw: u32, prob: f64) -> EvalPrediction {
        EvalPrediction {
            id: id.into(),
            label,
            source: SourceKind::Real,
            generator: "g".into(),
            level,
            draw,
            prob,
        }
    }

    fn row(id: &str, label: u8) -> ManifestRow {
        ManifestRow {
            id: id.into(),
            path: format!("img/{id}.jpg"),
            label,
            source: SourceKind::Real,
            generator: "g".into(),
            width: 8,
            height: 8,
            format: "jpeg".into(),
            split: Split::Test,
            phash: 0,
            group: id.into(),
            ingested_at: "2026-11-01T00:00:00Z".into(),
            origin: "x".into(),
            variant_of: None,
            aug: None,
            group_key: None,
            parent: None,
        }
    }

    #[test]
    fn eval_reasons_ranking_and_merging() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec![
            pred("fn", 1, 0, 0, 0.10),     // confidently wrong: false negative
            pred("fp", 0, 2, 0, 0.70),     // wrong, less confident; also in the band
            pred("unsure", 1, 0, 0, 0.55), // right side, uncertain
            pred("sure", 1, 0, 0, 0.95),   // easy: not hard
            pred("dis", 1, 0, 0, 0.80),    // right, but B says 0.2
            pred("close", 0, 0, 0, 0.20),  // B says 0.35: same side, not a disagreement
            pred("multi", 1, 0, 0, 0.60),  // uncertain at level 0 ...
            pred("multi", 1, 3, 1, 0.25),  // ... misclassified at level 3
            pred("ghost", 1, 0, 0, 0.05),  // not in the manifest
            pred("lonely", 0, 1, 0, 0.99), // B has no answer for it; misclassified
        ];
        let b = vec![
            pred("fn", 1, 0, 0, 0.12),
            pred("fp", 0, 2, 0, 0.69),
            pred("unsure", 1, 0, 0, 0.50),
            pred("sure", 1, 0, 0, 0.9),
            pred("dis", 1, 0, 0, 0.20),
            pred("close", 0, 0, 0, 0.35),
            pred("multi", 1, 0, 0, 0.6),
            pred("multi", 1, 3, 1, 0.3),
            pred("ghost", 1, 0, 0, 0.05),
        ];
        // Through the eval's own file format.
        let pa = dir.path().join("a.jsonl");
        write_predictions(&pa, &a).unwrap();
        let a = read_predictions(&pa).unwrap();
        let manifest: Vec<ManifestRow> = [
            ("fn", 1),
            ("fp", 0),
            ("unsure", 1),
            ("sure", 1),
            ("dis", 1),
            ("close", 0),
            ("multi", 1),
            ("lonely", 0),
        ]
        .iter()
        .map(|(i, l)| row(i, *l))
        .collect();
        let root = Path::new("/data");
        let sel = select_eval(&a, Some(&b), &manifest, root, &criteria());
        let ids: Vec<&str> = sel.cases.iter().map(|c| c.id.as_str()).collect();
        // Misclassified by confidence of the wrong answer, then disagreement, then uncertain.
        assert_eq!(ids, ["lonely", "fn", "multi", "fp", "dis", "unsure"]);
        assert_eq!(sel.answers, 10);
        assert_eq!(sel.hard_answers, 8, "sure and close are not hard");
        assert_eq!(sel.unmatched, 1);
        assert_eq!(sel.not_in_manifest, 1);
        let case = |id: &str| sel.cases.iter().find(|c| c.id == id).unwrap();
        assert_eq!(case("fn").reasons, [Reason::Misclassified]);
        assert_eq!(case("fn").false_positive(), Some(false));
        assert_eq!(
            case("fp").reasons,
            [Reason::Misclassified, Reason::Uncertain]
        );
        assert_eq!(case("fp").false_positive(), Some(true));
        assert_eq!(case("dis").reasons, [Reason::Disagreement]);
        assert_eq!(case("dis").p_b, Some(0.20));
        assert_eq!(case("unsure").reasons, [Reason::Uncertain]);
        assert_eq!(case("unsure").false_positive(), None);
        let m = case("multi");
        assert_eq!(m.reasons, [Reason::Misclassified, Reason::Uncertain]);
        assert_eq!(
            (m.p_a, m.level, m.draw, m.hard_answers),
            (0.25, Some(3), Some(1), 2)
        );
        assert_eq!(m.path, root.join("img/multi.jpg"));
        assert_eq!(m.origin, Origin::Eval);
        assert_eq!(m.suggested_label(), 1);
        // Without a second model there are no disagreements.
        let solo = select_eval(&a, None, &manifest, root, &criteria());
        assert!(solo
            .cases
            .iter()
            .all(|c| !c.reasons.contains(&Reason::Disagreement)));
        assert!(!solo.cases.iter().any(|c| c.id == "dis"));
        assert_eq!(solo.unmatched, 0);
    }

    #[test]
    fn serve_log_cases_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let low = dir.path().join("low_confidence");
        std::fs::create_dir_all(&low).unwrap();
        std::fs::copy(fixture("images/rgb_224x224.jpg"), low.join("aa.img")).unwrap();
        std::fs::copy(fixture("images/rgb_300x500.png"), low.join("bb.img")).unwrap();
        let log = dir.path().join("predictions.jsonl");
        // `saved_image` as serve wrote it from another working folder: found beside the log.
        let line = |t: &str, h: &str, p: f64, scored: bool, saved: Option<&str>| {
            serde_json::json!({"time": t, "validator": "5V", "image_hash": h, "prediction": p,
                "scored": scored, "latency_ms": 3.0, "model": "m",
                "saved_image": saved.map(|s| format!("/elsewhere/low_confidence/{s}"))})
            .to_string()
        };
        let lines = [
            line("2026-11-20T00:00:00Z", "aa", 0.45, true, Some("aa.img")),
            line("2026-11-20T00:01:00Z", "aa", 0.52, true, Some("aa.img")), // same image again
            line("2026-11-20T00:02:00Z", "bb", 0.58, true, Some("bb.img")),
            line("2026-11-20T00:03:00Z", "cc", 0.35, true, None), // in band, nothing saved
            line("2026-11-20T00:04:00Z", "dd", 0.50, false, None), // fallback
            line("2026-11-20T00:05:00Z", "ee", 0.41, true, Some("gone.img")),
            line("2026-11-20T00:06:00Z", "ff", 0.99, true, None), // confident
            line("2026-10-01T00:00:00Z", "old", 0.5, true, Some("aa.img")),
        ];
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let read =
            read_prediction_log(&log, Some("2026-11-01T00:00:00Z".parse().unwrap())).unwrap();
        assert_eq!(read.older, 1);
        let sel = select_serve(&read.records, &log, &criteria());
        assert_eq!(sel.records, 7);
        assert_eq!(sel.unscored, 1);
        assert_eq!(sel.without_image, 1);
        assert_eq!(sel.missing_files, 1);
        assert_eq!(sel.cases.len(), 2, "aa twice is one case");
        let aa_id = sv72::util::hash::file_hash(&low.join("aa.img")).unwrap();
        let aa = sel.cases.iter().find(|c| c.id == aa_id).unwrap();
        assert_eq!(aa.hard_answers, 2);
        assert_eq!(aa.p_a, 0.52, "the answer closest to 0.5 is kept");
        assert_eq!(aa.reasons, [Reason::Uncertain]);
        assert_eq!(aa.known_label, None);
        assert_eq!(aa.suggested_label(), 1);
        assert_eq!(sel.cases[0].id, aa_id, "0.52 is harder than 0.58");
        assert!(sel.cases.iter().all(|c| c.origin == Origin::Serve));
    }

    /// Answers 0.9 for wide images, 0.1 for others: disagrees with serve on some.
    struct ByShape;
    impl Predictor for ByShape {
        fn predict(&mut self, images: &[RgbImage]) -> anyhow::Result<Vec<f32>> {
            Ok(images
                .iter()
                .map(|i| if i.width() >= i.height() { 0.9 } else { 0.1 })
                .collect())
        }
        fn version(&self) -> String {
            "by-shape".into()
        }
    }

    #[test]
    fn model_b_on_serve_images_and_no_embed_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let low = dir.path().join("low_confidence");
        std::fs::create_dir_all(&low).unwrap();
        // 224x224 (B: 0.9 vs serve 0.45 → disagreement), 300x500 (B: 0.1 vs 0.58 → too),
        // 640x480 (B: 0.9 vs 0.55 → same side), and a corrupt file.
        std::fs::copy(fixture("images/rgb_224x224.jpg"), low.join("a.img")).unwrap();
        std::fs::copy(fixture("images/rgb_300x500.png"), low.join("b.img")).unwrap();
        std::fs::copy(fixture("images/rgb_640x480.jpg"), low.join("c.img")).unwrap();
        std::fs::write(low.join("d.img"), b"\xff\xd8\xff not really a jpeg").unwrap();
        let log = dir.path().join("p.jsonl");
        let mut text = String::new();
        for (h, p) in [("a", 0.45), ("b", 0.58), ("c", 0.55), ("d", 0.5)] {
            text += &serde_json::json!({"time": "2026-11-20T00:00:00Z", "image_hash": h,
                "prediction": p, "saved_image": low.join(format!("{h}.img")).display().to_string()})
            .to_string();
            text.push('\n');
        }
        std::fs::write(&log, text).unwrap();
        let settings = Settings {
            criteria: criteria(),
            max_cases: 10,
            seed: 72,
            distance: Distance::Cosine,
            contact_sheet_max: 64,
            datasets_root: dir.path().join("datasets"),
            limits: DecodeLimits {
                max_pixels: 50_000_000,
                max_file_bytes: 50_000_000,
            },
            judge: None,
        };
        let serve = ServeInput {
            log: log.clone(),
            read: read_prediction_log(&log, None).unwrap(),
        };
        let out = dir.path().join("hard");
        let mut b = ByShape;
        let s = mine::mine(
            Some(serve),
            None,
            Some(("by-shape".into(), &mut b)),
            None,
            "--no-embed",
            &settings,
            &out,
        )
        .unwrap();
        assert_eq!(s.candidates, 4);
        assert_eq!(s.selected, 3, "the corrupt image is skipped");
        assert_eq!(s.skipped.get("unreadable images"), Some(&1));
        assert_eq!(s.skipped.get("model B: images it could not read"), Some(&1));
        assert_eq!(s.by_reason["disagreement"], [2, 2]);
        assert!(s.selection.contains("--no-embed"), "{}", s.selection);
        let mut rdr = csv::Reader::from_path(out.join("hard_cases.csv")).unwrap();
        let head = rdr.headers().unwrap().clone();
        assert_eq!(
            head.iter().take(4).collect::<Vec<_>>(),
            ["path", "label", "source", "generator"]
        );
        let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 3);
        // Disagreements outrank plain uncertainty; the larger gap (0.58 vs 0.1) first.
        assert_eq!(&rows[0][6], "disagreement;uncertain");
        assert_eq!(&rows[0][7], "0.580000");
        assert_eq!(&rows[0][8], "0.100000");
        assert_eq!(&rows[1][7], "0.450000");
        assert_eq!(&rows[1][8], "0.900000");
        assert_eq!(&rows[2][6], "uncertain");
        assert_eq!(&rows[0][5], "serve");
        let manifest = read_manifest(&out.join("hard_cases.parquet")).unwrap();
        assert_eq!(manifest.len(), 3);
        assert_eq!((manifest[0].width, manifest[0].height), (300, 500));
        assert_eq!(manifest[0].generator, mine::SERVE_GENERATOR);
        // Re-running into the same folder replaces the previous output whole.
        let serve = ServeInput {
            log: log.clone(),
            read: read_prediction_log(&log, None).unwrap(),
        };
        let s2 = mine::mine(Some(serve), None, None, None, "--no-embed", &settings, &out).unwrap();
        assert!(!s2.by_reason.contains_key("disagreement"));
        let csv2 = std::fs::read_to_string(out.join("hard_cases.csv")).unwrap();
        assert!(!csv2.contains("disagreement"), "{csv2}");
        // A folder that is not a mine-hard output is never replaced.
        let other = dir.path().join("datasets-of-someone");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("keep.txt"), "x").unwrap();
        let serve = ServeInput {
            log: log.clone(),
            read: read_prediction_log(&log, None).unwrap(),
        };
        let err = mine::mine(Some(serve), None, None, None, "x", &settings, &other).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a previous mine-hard output"),
            "{err:#}"
        );
        assert!(other.join("keep.txt").is_file());
    }
}

/// The binary end to end.
mod cli_e2e {
    use super::*;

    fn backbone() -> String {
        fixture("backbones/dinov2_s36").display().to_string()
    }

    fn sv72(dir: &Path, args: &[&str]) -> Output {
        super::common::sv72(dir, args)
    }

    fn ok(dir: &Path, args: &[&str]) -> String {
        super::common::stdout_ok(&sv72(dir, args), args)
    }

    #[test]
    fn eval_and_serve_log_to_manifest_csv_and_prompts() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // A small labelled set through the real ingest.
        for (class, roadwork) in [("roadwork", true), ("none", false)] {
            let dir = d.join("raw").join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..6 {
                let jpg = sv72::data::demo::demo_jpeg(7, SourceKind::Real, roadwork, i).unwrap();
                std::fs::write(dir.join(format!("{i}.jpg")), jpg).unwrap();
            }
        }
        ok(
            d,
            &[
                "ingest",
                "--name",
                "ds",
                "--folder",
                "raw",
                "--source",
                "real",
                "--generator",
                "demo-photo",
            ],
        );
        let rows = read_manifest(&d.join("datasets/ds/manifest.parquet")).unwrap();
        assert_eq!(rows.len(), 12);
        // An eval's predictions: every roadwork image answered 0.2 (false negatives), every
        // none image 0.1 except one at 0.9 (a false positive), two draws each.
        let fp_id = rows.iter().find(|r| r.label == 0).unwrap().id.clone();
        let mut preds = Vec::new();
        for r in &rows {
            for draw in 0..2 {
                let prob = match r.label {
                    1 => 0.2,
                    _ if r.id == fp_id => 0.9,
                    _ => 0.1,
                };
                preds.push(EvalPrediction {
                    id: r.id.clone(),
                    label: r.label,
                    source: r.source,
                    generator: r.generator.clone(),
                    level: draw as u8,
                    draw,
                    prob,
                });
            }
        }
        let ev = d.join("eval");
        std::fs::create_dir_all(&ev).unwrap();
        write_predictions(&ev.join("predictions.jsonl"), &preds).unwrap();
        let manifest = d.join("datasets/ds/manifest.parquet");
        std::fs::write(
            ev.join("report.json"),
            serde_json::json!({"meta": {"manifest": manifest.display().to_string(),
                "checkpoint": d.join("no-such-checkpoint").display().to_string()}})
            .to_string(),
        )
        .unwrap();
        // A serve log with one saved low-confidence image and a corrupt one.
        std::fs::create_dir_all(d.join("logs/low_confidence")).unwrap();
        std::fs::copy(
            fixture("images/rgb_640x480.jpg"),
            d.join("logs/low_confidence/s1.img"),
        )
        .unwrap();
        std::fs::write(d.join("logs/low_confidence/s2.img"), b"garbage").unwrap();
        let log = [("s1", 0.48), ("s2", 0.5)]
            .iter()
            .map(|(h, p)| {
                serde_json::json!({"time": chrono::Utc::now().to_rfc3339(), "image_hash": h,
                    "prediction": p, "saved_image": format!("logs/low_confidence/{h}.img")})
                .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(d.join("logs/predictions.jsonl"), log).unwrap();

        let stdout = ok(
            d,
            &[
                "mine-hard",
                "--eval",
                "eval",
                "--serve-log",
                "logs/predictions.jsonl",
                "--since",
                "1d",
                "--backbone",
                &backbone(),
                "--max-cases",
                "5",
                "--out",
                "hard",
            ],
        );
        // 6 false negatives + 1 false positive from the eval, 2 saved serve images.
        assert!(stdout.contains("9 hard image(s), 5 selected"), "{stdout}");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("hard/summary.json")).unwrap()).unwrap();
        let selection = summary["selection"].as_str().unwrap();
        assert!(selection.contains("k-centre greedy"), "{selection}");
        assert_eq!(summary["skipped"]["unreadable images"], 1);
        let hard = read_manifest(&d.join("hard/hard_cases.parquet")).unwrap();
        assert_eq!(hard.len(), 5);
        // The hardest case (the confident false positive) seeds the selection.
        assert_eq!(hard[0].id, fp_id);
        assert_eq!(hard[0].label, 0);
        for h in &hard {
            match rows.iter().find(|r| r.id == h.id) {
                Some(r) => assert_eq!(h.label, r.label, "eval cases keep the known label"),
                None => assert_eq!(h.generator, mine::SERVE_GENERATOR),
            }
        }
        let mut ids: Vec<&str> = hard.iter().map(|h| h.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5, "one row per image");

        // Prompts: one per case, the right label, a negative prompt, deterministic.
        let prompts: Vec<serde_json::Value> = std::fs::read_to_string(d.join("hard/prompts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(prompts.len(), 5);
        let txt = std::fs::read_to_string(d.join("hard/prompts.txt")).unwrap();
        assert_eq!(txt.lines().count(), 5);
        for (p, h) in prompts.iter().zip(&hard) {
            assert_eq!(p["id"], h.id.as_str());
            let text = p["prompt"].as_str().unwrap();
            let neg = p["negative_prompt"].as_str().unwrap();
            if h.label == 1 {
                assert_eq!(p["label"], "roadwork");
                assert!(
                    text.contains("roadwork") && !text.contains("no roadwork"),
                    "{text}"
                );
            } else {
                assert_eq!(p["label"], "none");
                assert!(
                    text.contains("no roadwork") || text.contains("no construction"),
                    "{text}"
                );
                assert!(neg.contains("traffic cones"), "{neg}");
            }
        }
        assert_eq!(prompts[0]["error"], "false_positive");
        assert!(prompts[0]["prompt"].as_str().unwrap().contains("resemble"));

        // The labeller's CSV goes straight back into ingest.
        let out = ok(
            d,
            &[
                "ingest",
                "--name",
                "relabelled",
                "--csv",
                "hard/hard_cases.csv",
            ],
        );
        let back = read_manifest(&d.join("datasets/relabelled/manifest.parquet")).unwrap();
        assert_eq!(back.len(), 5, "{out}");
        for h in &hard {
            let b = back.iter().find(|b| b.id == h.id).expect("same content id");
            assert_eq!(b.label, h.label);
        }
        let sheet = image::open(d.join("hard/contact_sheet.png"))
            .unwrap()
            .to_rgb8();
        let (w, h) = sheet.dimensions();
        assert!(w >= sv72::cycle::mine::write::MIN_SHEET_W, "{w}");
        let legend_text = (h - sv72::cycle::mine::write::LEGEND_H..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| sheet.get_pixel(x, y).0.iter().all(|&c| c > 180))
            .count();
        assert!(
            legend_text > 200,
            "no legend text under the contact sheet ({legend_text})"
        );
        let md = std::fs::read_to_string(d.join("hard/summary.md")).unwrap();
        assert!(
            md.contains("| misclassified |") && md.contains("sv72 ingest"),
            "{md}"
        );

        // A second model's eval on the same manifest: it says 0.9 on every roadwork image,
        // where A said 0.2, so all six disagree.
        let b: Vec<EvalPrediction> = preds
            .iter()
            .map(|p| EvalPrediction {
                prob: if p.label == 1 { 0.9 } else { p.prob },
                ..p.clone()
            })
            .collect();
        std::fs::create_dir_all(d.join("eval-b")).unwrap();
        write_predictions(&d.join("eval-b/predictions.jsonl"), &b).unwrap();
        ok(
            d,
            &[
                "mine-hard",
                "--eval",
                "eval",
                "--compare",
                "eval-b",
                "--no-embed",
                "--out",
                "hard-ab",
            ],
        );
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("hard-ab/summary.json")).unwrap())
                .unwrap();
        assert_eq!(s["by_reason"]["disagreement"], serde_json::json!([6, 6]));
        assert_eq!(s["by_reason"]["misclassified"], serde_json::json!([7, 7]));

        // Same inputs, no embeddings: hardness ranking, said so; prompts are deterministic.
        let stdout = ok(
            d,
            &[
                "mine-hard",
                "--eval",
                "eval",
                "--no-embed",
                "--max-cases",
                "5",
                "--out",
                "hard2",
            ],
        );
        assert!(stdout.contains("hardness ranking"), "{stdout}");
        let again: Vec<serde_json::Value> = std::fs::read_to_string(d.join("hard2/prompts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let first = prompts.iter().find(|p| p["id"] == again[0]["id"]).unwrap();
        assert_eq!(first["prompt"], again[0]["prompt"]);
        assert_eq!(first["seed"], again[0]["seed"]);

        // Clear errors, nothing written.
        // With no input flag the default serve log is read (it exists here) ...
        let stdout = ok(d, &["mine-hard", "--no-embed", "--out", "hard-serve"]);
        assert!(stdout.contains("2 hard image(s), 1 selected"), "{stdout}");
        // ... and when it is missing that is the error.
        let out = sv72(
            d,
            &[
                "--set",
                "serve.prediction_log=logs/none.jsonl",
                "mine-hard",
                "--out",
                "hard3",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("serve.prediction_log") && err.contains("none.jsonl"),
            "{err}"
        );
        let out = sv72(
            d,
            &["mine-hard", "--eval", "eval/nope.jsonl", "--out", "hard3"],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("nope.jsonl"));
        assert!(!d.join("hard3").exists());
    }

    /// A model spec as the model: `--model-b` an ensemble of two heads with test-time views
    /// scores the serve-log images (its answers in `p_b`, exactly what the spec answers when
    /// loaded as `serve` loads it), and `--checkpoint` that spec embeds with its first member's
    /// backbone.
    #[test]
    fn model_spec_as_model_b_and_as_the_embedding_model() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let bb = fixture("backbones/dinov2_reg4_s36").display().to_string();
        let bb_set = format!("backbone.model={bb}");
        let with_bb = |args: &[&str]| -> String {
            let all: Vec<&str> = ["--set", bb_set.as_str()]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            ok(d, &all)
        };
        common::demo_mix(d, 16);
        let latest = || crate::common::latest_run(d);
        let train = crate::common::QUICK_HEAD;
        with_bb(&train);
        let a = latest();
        let mlp: Vec<&str> = train
            .into_iter()
            .chain(["--set", "head.kind=mlp"])
            .collect();
        with_bb(&mlp);
        let b = latest();
        std::fs::write(
            d.join("ens.yaml"),
            format!("members: [checkpoints/{a}, checkpoints/{b}]\nviews: [identity, hflip]\n"),
        )
        .unwrap();
        // A serve log of three saved low-confidence demo images.
        std::fs::create_dir_all(d.join("logs/low_confidence")).unwrap();
        let names = [
            "roadwork/roadwork_0000.jpg",
            "none/none_0000.jpg",
            "none/none_0001.jpg",
        ];
        let mut log = String::new();
        for (i, n) in names.iter().enumerate() {
            let saved = format!("logs/low_confidence/s{i}.img");
            std::fs::copy(d.join("raw/real").join(n), d.join(&saved)).unwrap();
            log += &serde_json::json!({"time": chrono::Utc::now().to_rfc3339(),
                "image_hash": format!("s{i}"), "prediction": 0.5, "saved_image": saved})
            .to_string();
            log.push('\n');
        }
        std::fs::write(d.join("logs/predictions.jsonl"), log).unwrap();
        let stdout = with_bb(&[
            "mine-hard",
            "--serve-log",
            "logs/predictions.jsonl",
            "--model-b",
            "ens.yaml",
            "--checkpoint",
            "ens.yaml",
            "--out",
            "hard",
        ]);
        assert!(stdout.contains("3 hard image(s)"), "{stdout}");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("hard/summary.json")).unwrap()).unwrap();
        let selection = summary["selection"].as_str().unwrap();
        assert!(selection.contains("k-centre greedy"), "{selection}");
        let mut rdr = csv::Reader::from_path(d.join("hard/hard_cases.csv")).unwrap();
        let head: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
        let col = |n: &str| head.iter().position(|h| h == n).unwrap();
        let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 3);
        // What the spec answers through serve's loader, image by image.
        let mut cfg = sv72::config::Config::load(None, &[]).unwrap();
        cfg.backbone.model = bb.clone();
        cfg.paths.feature_cache = d.join("cache");
        let loader = sv72::infer::model_loader(&cfg, sv72::config::Device::Cpu).unwrap();
        let mut spec: Box<dyn Predictor> = loader(&d.join("ens.yaml")).unwrap();
        for (i, n) in names.iter().enumerate() {
            let im = image::open(d.join("raw/real").join(n)).unwrap().to_rgb8();
            let want = spec.predict(&[im]).unwrap()[0];
            let row = rows
                .iter()
                .find(|r| {
                    r[col("path")].ends_with(&format!("s{i}.img"))
                        || r[col("id")].contains(&format!("s{i}"))
                })
                .unwrap_or_else(|| panic!("s{i} not in the CSV"));
            // Batched with the others in mine-hard, alone here: equal up to float reordering.
            let got: f32 = row[col("p_b")].parse().unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "s{i}: p_b {got} vs the spec's {want}"
            );
        }
    }
}
