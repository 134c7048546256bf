//! Model specs with test-time views end to end: a spec is a model wherever a model is taken
//! (`ab-test`, `serve`'s loader), an identity-only spec answers exactly as its base model,
//! `calibrate` fits and stores the views' temperature and threshold, and the ab-test report
//! carries both models' latencies.

use std::path::Path;

use sv72::infer::{ModelSpec, Predictor};

use super::common::decision;

/// Runs sv72 on the fixture backbone (200 bootstrap resamples); exit status must be `want`.
fn code(dir: &Path, args: &[&str], want: i32) -> String {
    super::common::code_on_fixture(dir, 200, args, want)
}

#[test]
fn specs_with_views_run_through_ab_test_calibrate_and_the_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    super::common::demo_mix(d, 16);
    code(d, &crate::common::QUICK_HEAD, 0);

    // Identity only: the spec answers exactly as its base model.
    std::fs::write(d.join("plain.yaml"), "model: checkpoints/latest\n").unwrap();
    code(
        d,
        &[
            "ab-test",
            "checkpoints/latest",
            "plain.yaml",
            "--on",
            "mix:test",
            "--out",
            "plain",
        ],
        3,
    );
    let plain = decision(&d.join("plain"));
    assert_eq!(plain.mode, "images");
    assert_eq!(plain.b.kind, "spec");
    assert!(
        plain.b.id.ends_with("~identity/meanlogit"),
        "{}",
        plain.b.id
    );
    assert_eq!((plain.stats.mcnemar.b, plain.stats.mcnemar.c), (0, 0));
    assert_eq!(plain.stats.delta.accuracy.estimate, 0.0);
    let lat = plain.latency.as_ref().expect("latency in images mode");
    assert!(lat.a.samples > 0 && lat.a.samples == lat.b.samples);
    assert!(lat.a.p50_ms > 0.0 && lat.a.p99_ms >= lat.a.p50_ms);

    // Several views, calibrated on the validation split, then compared.
    std::fs::write(
        d.join("tta.yaml"),
        "model: checkpoints/latest\nviews: [identity, hflip, {grid: 2}]\naggregate: {top_k: 3}\n",
    )
    .unwrap();
    let out = code(d, &["calibrate", "tta.yaml", "--on", "mix"], 0);
    assert!(
        out.contains("temperature") && out.contains("threshold"),
        "{out}"
    );
    let spec = ModelSpec::read(&d.join("tta.yaml")).unwrap();
    assert!(
        spec.calibrated_on.as_deref().unwrap().contains("val"),
        "{spec:?}"
    );
    assert!(spec.calibration.temperature > 0.0);
    assert_eq!(spec.view_spec().per_image(), 6);
    let md = code(
        d,
        &[
            "ab-test",
            "checkpoints/latest",
            "tta.yaml",
            "--on",
            "mix:test",
            "--out",
            "tta",
            "--set",
            "ab_test.min_gain=-2",
            "--set",
            "ab_test.require_ci_above_zero=false",
        ],
        0,
    );
    assert!(md.contains("latency per answer"), "{md}");
    let tta = decision(&d.join("tta"));
    assert_eq!(tta.stats.answers, plain.stats.answers);
    assert!(
        tta.b.id.contains("identity+hflip+grid2/top3"),
        "{}",
        tta.b.id
    );
    let report = std::fs::read_to_string(d.join("tta/report.md")).unwrap();
    assert!(report.contains("latency per answer"), "{report}");

    // `eval` takes a spec: the identity spec (run end to end on the challenge images) scores
    // what the checkpoint (through the feature cache) scores on the same challenges.
    code(
        d,
        &[
            "eval",
            "--checkpoint",
            "checkpoints/latest",
            "--on",
            "mix:test",
            "--out",
            "ev-ck",
        ],
        0,
    );
    let out = code(
        d,
        &["eval", "--checkpoint", "plain.yaml", "--on", "mix:test"],
        0,
    );
    assert!(out.contains("plain-eval"), "{out}");
    let read = |p: &Path| -> sv72::eval::EvalReport {
        serde_json::from_slice(&std::fs::read(p.join("report.json")).unwrap()).unwrap()
    };
    let (ck, sp) = (read(&d.join("ev-ck")), read(&d.join("plain-eval")));
    assert_eq!(sp.images, ck.images);
    assert!(
        sp.meta.run_id.ends_with("~identity/meanlogit"),
        "{}",
        sp.meta.run_id
    );
    assert!(
        (sp.overall.accuracy - ck.overall.accuracy).abs() < 1e-9,
        "spec {} vs checkpoint {}",
        sp.overall.accuracy,
        ck.overall.accuracy
    );
    assert!(sp.latency.as_ref().is_some_and(|l| l.samples > 0));
    let e = code(d, &["eval", "--checkpoint", "tta.yaml"], 0);
    assert!(e.contains("tta-eval"), "{e}");

    // The loader serve uses takes a spec too; its answers are probabilities.
    let mut cfg = sv72::config::Config::load(None, &[]).unwrap();
    cfg.backbone.model = super::common::fixture("backbones/dinov2_reg4_s36")
        .display()
        .to_string();
    cfg.paths.feature_cache = d.join("cache");
    let loader = sv72::infer::model_loader(&cfg, sv72::config::Device::Cpu).unwrap();
    let mut p: Box<dyn Predictor> = loader(&d.join("tta.yaml")).unwrap();
    let im = image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 60]));
    let y = p.predict(&[im.clone(), im]).unwrap();
    assert_eq!(y.len(), 2);
    assert!(
        y.iter().all(|v| (0.0..=1.0).contains(v)) && y[0] == y[1],
        "{y:?}"
    );

    // A spec is not a checkpoint for commands that need one, with a clear error.
    let e = code(d, &["calibrate", "checkpoints/latest", "--on", "mix"], 1);
    assert!(e.contains("not a model spec"), "{e}");
}

/// Two heads trained on one frozen backbone, as an ensemble: the backbone is loaded once and
/// runs once per batch (counted), and the stacked answers are exactly those of the members
/// loaded alone, each with its own backbone and forward.
#[test]
fn ensemble_heads_on_one_backbone_share_its_forward() {
    use sv72::backend::Cpu;
    use sv72::infer::{load_ensemble, CheckpointPredictor, EnsemblePredictor, LoadOptions};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    super::common::demo_mix(d, 16);
    let latest = || crate::common::latest_run(d);
    let train = crate::common::QUICK_HEAD;
    code(d, &train, 0);
    let a = latest();
    let mlp: Vec<&str> = train
        .into_iter()
        .chain(["--set", "head.kind=mlp"])
        .collect();
    code(d, &mlp, 0);
    let b = latest();
    assert_ne!(a, b);
    let spec_path = d.join("ens.yaml");
    std::fs::write(
        &spec_path,
        format!(
            "members: [checkpoints/{a}, checkpoints/{b}]\nstacking: {{weights: [0.7, 0.4], bias: 0.1}}\n"
        ),
    )
    .unwrap();
    let spec = ModelSpec::read(&spec_path).unwrap();
    let opts = LoadOptions {
        feature_cache: d.join("cache"),
        max_batch: 8,
        verify_weights: true,
        backbone: sv72::model::LoadOptions::INFERENCE,
    };
    let dev = Default::default();
    let images: Vec<image::RgbImage> = ["roadwork/roadwork_0000.jpg", "none/none_0000.jpg"]
        .iter()
        .chain(["roadwork/roadwork_0001.jpg", "none/none_0001.jpg"].iter())
        .map(|n| image::open(d.join("raw/real").join(n)).unwrap().to_rgb8())
        .collect();

    let mut shared = load_ensemble::<Cpu>(&spec_path, &spec, &dev, &opts).unwrap();
    assert_eq!(shared.forward_groups(), 1, "both heads on one backbone");
    let got = shared.predict(&images).unwrap();
    assert_eq!(shared.backbone_forwards(), 1, "one forward for the batch");
    let per = shared.member_probs(&images[..2]).unwrap();
    assert_eq!(shared.backbone_forwards(), 2);
    assert_ne!(per[0], per[1], "the members are different heads");

    let alone: Vec<Box<dyn Predictor>> = [&a, &b]
        .iter()
        .map(|r| {
            Box::new(
                CheckpointPredictor::<Cpu>::load(&d.join("checkpoints").join(r), &dev, &opts)
                    .unwrap(),
            ) as Box<dyn Predictor>
        })
        .collect();
    let mut alone = EnsemblePredictor::new(alone, spec.stacking.clone().unwrap()).unwrap();
    assert_eq!(alone.forward_groups(), 2);
    assert_eq!(got, alone.predict(&images).unwrap());
    assert_eq!(shared.version(), alone.version());
}
