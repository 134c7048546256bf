//! `sv72 finetune` (issue #14): LoRA identities, one optimiser step against PyTorch + PEFT
//! (`tools/finetune_reference.py`), determinism and resume, and fine-tuned checkpoints loading
//! and exporting like head checkpoints.

use crate::common::values;

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sv72::backend::Cpu;
use sv72::config::{FinetuneConfig, FinetuneMode};
use sv72::model::weights::{Overlay, Weights};
use sv72::model::{Backbone, LoadOptions, NamedTensors};
use sv72::train::finetune::model::{self, FtModel};
use sv72::train::finetune::optim::AdamW;
use sv72::train::finetune::Trainer;
use sv72::train::head::HeadKind;

type Ad = Autodiff<Cpu>;

const FAMILIES: [&str; 3] = ["dinov2_s36", "dinov2_reg4_s36", "dinov3-tiny"];
/// The families above plus SigLIP and SigLIP 2 NaFlex, for the checks that need no PyTorch reference.
const LORA_FAMILIES: [&str; 5] = [
    "dinov2_s36",
    "dinov2_reg4_s36",
    "dinov3-tiny",
    "siglip-tiny",
    "siglip2-tiny",
];

fn backbone(name: &str) -> PathBuf {
    super::common::fixture("backbones").join(name)
}

/// Every tensor of a safetensors file as `(shape, values)`.
fn read_all(path: &Path) -> NamedTensors {
    let w = Weights::open_files(&[path.to_path_buf()]).unwrap();
    w.names()
        .into_iter()
        .map(|n| {
            let (v, s) = w.f32_data(n).unwrap();
            (n.to_string(), (s, v))
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

/// Random pixels `[n, 3, side, side]`.
fn pixels(n: usize, side: usize, seed: u64) -> Tensor<Cpu, 4> {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * side * side)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    Tensor::from_data(TensorData::new(v, [n, 3, side, side]), &Default::default())
}

fn lora_cfg(rank: usize, mlp: bool) -> FinetuneConfig {
    let mut c = FinetuneConfig {
        mode: FinetuneMode::Lora,
        ..Default::default()
    };
    c.lora.rank = rank;
    c.lora.alpha = 2.0 * rank as f64;
    c.lora.mlp = mlp;
    c
}

/// LoRA with B = 0 (PEFT's initialisation) changes nothing: the adapted model equals the base
/// model as `embed` runs it (folded for inference).
/// The CPU backend's RNG (`B::seed`) is one process-wide stream: every test that seeds it or
/// draws from it (a `Trainer::step` reseeds it per micro-batch) holds this lock, or two tests
/// would draw from each other's stream.
static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn lora_with_zero_b_equals_the_base_model() {
    for fam in LORA_FAMILIES {
        let dir = backbone(fam);
        let w = Weights::open(&dir).unwrap();
        let base = Backbone::<Cpu>::load(&dir, &Default::default()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (m, plan) = model::build::<Cpu>(
            &dir,
            &w,
            &lora_cfg(4, true),
            HeadKind::Linear,
            &NamedTensors::new(),
            &mut rng,
            &Default::default(),
        )
        .unwrap();
        assert!(!plan.lora_targets.is_empty());
        let x = pixels(2, 64, 1);
        let want = values(base.try_forward(x.clone()).unwrap());
        let got = values(m.backbone.try_forward(x).unwrap());
        let d = max_diff(&got, &want);
        eprintln!("{fam}: zero-B LoRA vs base max |Δ| {d:e}");
        assert!(d <= 1e-5, "{fam}: {d:e}");
    }
}

/// Adapter tensors `(name, shape, values)` with random non-zero A and B for every target.
fn random_adapters(m: &FtModel<Cpu>, seed: u64) -> NamedTensors {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    m.backbone
        .bindings()
        .iter()
        .filter(|b| b.name.contains(".lora_"))
        .map(|b| {
            let n: usize = b.shape.iter().product();
            let v = (0..n).map(|_| rng.random_range(-0.3..0.3)).collect();
            (b.name.clone(), (b.shape.clone(), v))
        })
        .collect()
}

/// Merging the adapters into the weights (how serve and export read a LoRA checkpoint) gives
/// the unmerged model's outputs.
#[test]
fn merged_lora_equals_unmerged() {
    for fam in LORA_FAMILIES {
        let dir = backbone(fam);
        let w = Weights::open(&dir).unwrap();
        let cfg = lora_cfg(3, true);
        let build = |init: &NamedTensors| {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            model::build::<Cpu>(
                &dir,
                &w,
                &cfg,
                HeadKind::Linear,
                init,
                &mut rng,
                &Default::default(),
            )
            .unwrap()
        };
        let (probe, _) = build(&NamedTensors::new());
        let adapters = random_adapters(&probe, 11);
        let (m, plan) = build(&adapters);
        // The adapters took the given values (write-back returns them unchanged).
        let saved: Vec<_> = plan.saved.iter().collect();
        for (name, shape, v) in sv72::model::loader::write_back(&m, &saved).unwrap() {
            assert_eq!(&adapters[&name], &(shape, v), "{fam}: {name}");
        }
        let merged_w = Weights::open(&dir)
            .unwrap()
            .with_overlay(
                Overlay::from_tensors(adapters, cfg.lora.alpha / cfg.lora.rank as f64).unwrap(),
            )
            .unwrap();
        let merged = Backbone::<Cpu>::from_weights(
            &dir,
            &merged_w,
            &Default::default(),
            LoadOptions::INFERENCE,
        )
        .unwrap();
        let x = pixels(2, 48, 2);
        let unmerged = values(m.backbone.try_forward(x.clone()).unwrap());
        let base = values(
            Backbone::<Cpu>::load(&dir, &Default::default())
                .unwrap()
                .try_forward(x.clone())
                .unwrap(),
        );
        let got = values(merged.try_forward(x).unwrap());
        let d = max_diff(&got, &unmerged);
        eprintln!("{fam}: merged vs unmerged max |Δ| {d:e}");
        assert!(d <= 1e-5, "{fam}: {d:e}");
        assert!(
            max_diff(&base, &unmerged) > 1e-3,
            "{fam}: the adapters changed nothing"
        );
    }
}

/// The hyper-parameters `tools/finetune_reference.py` used.
fn reference_config(mode: FinetuneMode) -> FinetuneConfig {
    let mut c = FinetuneConfig {
        mode,
        lr: 1e-3,
        head_lr: Some(2e-3),
        layer_decay: 0.7,
        weight_decay: 0.05,
        max_grad_norm: 1.0,
        label_smoothing: 0.1,
        ..Default::default()
    };
    c.lora.rank = 4;
    c.lora.alpha = 8.0;
    c.lora.dropout = 0.0;
    c.lora.mlp = false;
    c.partial_blocks = 1;
    c
}

/// One optimiser step from the reference's initial state; returns the loss and every trained
/// tensor after the step, by snapshot name (head as `classifier.*`).
fn step_like_reference(
    fam: &str,
    mode: FinetuneMode,
    fixture: &NamedTensors,
    micro_batches: usize,
) -> (f64, NamedTensors) {
    let dir = backbone(fam);
    let w = Weights::open(&dir).unwrap();
    let tag = match mode {
        FinetuneMode::Lora => "lora",
        FinetuneMode::Partial => "partial",
        FinetuneMode::Full => "full",
    };
    let init: NamedTensors = fixture
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(&format!("{tag}/init/"))
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    let cfg = reference_config(mode);
    let device = Default::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (model, plan) =
        model::build::<Ad>(&dir, &w, &cfg, HeadKind::Linear, &init, &mut rng, &device).unwrap();
    let cw = &fixture["class_weights"].1;
    let mut trainer = Trainer {
        model,
        plan,
        // The reference's ε (see tools/finetune_reference.py: why not PyTorch's 1e-8 here).
        opt: AdamW {
            eps: 1e-4,
            ..AdamW::new(cfg.weight_decay)
        },
        class_weights: [cw[0], cw[1]],
        label_smoothing: cfg.label_smoothing,
        max_grad_norm: cfg.max_grad_norm,
        head_dropout: 0.0,
        device,
    };
    let (ps, pv) = &fixture["pixel_values"];
    let labels: Vec<u8> = fixture["labels"].1.iter().map(|&y| y as u8).collect();
    let n = labels.len();
    let per = n / micro_batches;
    let plane = pv.len() / n;
    let micro = (0..micro_batches)
        .map(|j| {
            let x = Tensor::<Ad, 4>::from_data(
                TensorData::new(
                    pv[j * per * plane..(j + 1) * per * plane].to_vec(),
                    [per, ps[1], ps[2], ps[3]],
                ),
                &Default::default(),
            );
            (x, labels[j * per..(j + 1) * per].to_vec())
        })
        .collect();
    let stats = trainer.step(micro, cfg.lr, 0).unwrap();
    let valid = trainer.model.valid();
    let saved: Vec<_> = trainer.plan.saved.iter().collect();
    let mut after: NamedTensors = sv72::model::loader::write_back(&valid, &saved)
        .unwrap()
        .into_iter()
        .map(|(n, s, v)| (n, (s, v)))
        .collect();
    for (n, s, v) in valid.head.to_named_tensors().unwrap() {
        after.insert(n, (s, v));
    }
    (stats.loss, after)
}

/// One optimiser step on each tiny backbone in each mode equals PyTorch + PEFT's (loss, and
/// every trained tensor within 1e-5), with the batch in one forward pass or accumulated over
/// two.
#[test]
fn one_step_matches_pytorch_and_peft() {
    let _serial = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for fam in FAMILIES {
        let fixture =
            read_all(&super::common::fixture("finetune").join(format!("{fam}.safetensors")));
        for (mode, tag) in [
            (FinetuneMode::Lora, "lora"),
            (FinetuneMode::Partial, "partial"),
            (FinetuneMode::Full, "full"),
        ] {
            let want_loss = fixture[&format!("{tag}/loss")].1[0] as f64;
            let want: NamedTensors = fixture
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(&format!("{tag}/after/"))
                        .map(|n| (n.to_string(), v.clone()))
                })
                .collect();
            for micro in [1, 2] {
                let (loss, got) = step_like_reference(fam, mode, &fixture, micro);
                assert!(
                    (loss - want_loss).abs() <= 1e-5,
                    "{fam} {tag}: loss {loss} vs {want_loss}"
                );
                let mut names: Vec<&String> = want.keys().collect();
                names.sort();
                let got_names: std::collections::BTreeSet<&String> = got.keys().collect();
                assert_eq!(
                    got_names,
                    names.iter().copied().collect(),
                    "{fam} {tag}: trained tensors differ"
                );
                let mut worst = (0.0f32, String::new());
                for n in names {
                    let (ws, wv) = &want[n];
                    let (gs, gv) = &got[n];
                    assert_eq!(gs, ws, "{fam} {tag}: {n} shape");
                    let d = max_diff(gv, wv);
                    if d > worst.0 {
                        worst = (d, n.clone());
                    }
                }
                eprintln!(
                    "{fam} {tag} ({micro} micro-batch): loss Δ {:.1e}, worst tensor {} Δ {:.1e}",
                    (loss - want_loss).abs(),
                    worst.1,
                    worst.0
                );
                assert!(
                    worst.0 <= 1e-5,
                    "{fam} {tag}: {} max |Δ| {:e}",
                    worst.1,
                    worst.0
                );
            }
        }
    }
}

/// `sv72 finetune` end to end on a tiny demo mix: determinism, resume, and the checkpoint in
/// serve, eval and export.
mod e2e {
    use std::path::{Path, PathBuf};

    use sv72::config::Config;
    use sv72::infer::{CheckpointPredictor, ExportPredictor, LoadOptions, Predictor};
    use sv72::train::checkpoint::FINETUNE_FILE;
    use sv72::train::finetune::{self, FinetuneRequest};
    use sv72::train::RunOutcome;

    use super::*;

    fn config(root: &Path, mode: &str) -> Config {
        let bb = format!("backbone.model={}", backbone("dinov2_reg4_s36").display());
        let sets: Vec<String> = [
            bb.as_str(),
            "augment.target_size=64",
            "eval.score_sequences=40",
            "finetune.epochs=3",
            "finetune.batch_size=3",
            "finetune.grad_accum=2",
            "finetune.steps_per_epoch=2",
            "finetune.warmup_steps=2",
            "finetune.lr=0.01",
            "finetune.lora.dropout=0.1",
            "finetune.lora.mlp=true",
            "finetune.patience=0",
            "head.kind=mlp",
            "head.hidden=8",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("finetune.mode={mode}")])
        .collect();
        let mut cfg = Config::load(None, &sets).unwrap();
        cfg.paths.datasets = root.join("datasets");
        cfg.paths.checkpoints = root.join("checkpoints");
        cfg.paths.feature_cache = root.join("features");
        cfg.paths.exports = root.join("exports");
        cfg
    }

    use super::RNG_LOCK;

    fn request(resume: Option<PathBuf>, hook: Option<finetune::FtEpochHook>) -> FinetuneRequest {
        FinetuneRequest {
            manifest: "mix".into(),
            resume,
            device: sv72::config::Device::Cpu,
            wandb: None,
            warn: Box::new(|_| {}),
            on_epoch: hook,
        }
    }

    /// Everything a run learned: its backbone tensors and head, by name.
    fn learned(out: &RunOutcome) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut all: Vec<_> = ["head.safetensors", FINETUNE_FILE]
            .iter()
            .flat_map(|f| {
                let t = read_all(&out.dir.join(f));
                t.into_iter()
                    .map(move |(n, (s, v))| (format!("{f}:{n}"), s, v))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn same_seed_same_result_and_resume_equals_uninterrupted() {
        // The CPU backend's RNG (`B::seed`) is process-wide: two runs in parallel threads
        // would draw from each other's stream.
        let _serial = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        crate::common::demo_mix(root, 12);
        let cfg = config(root, "lora");
        let a = finetune::run(&cfg, request(None, None)).unwrap();
        let info = &a.info;
        let ft = info.finetune.as_ref().expect("a fine-tuning record");
        assert_eq!(ft.mode, "lora");
        assert!(ft.trainable_params > 0 && ft.trainable_params < ft.backbone_params);
        assert_eq!(ft.images_seen, 3 * 2 * 3 * 2);
        assert!(!ft.lora.as_ref().unwrap().targets.is_empty());
        assert_eq!(info.metrics.epochs_run, 3);
        assert!(info.features_key().starts_with(&info.backbone.weights_hash));
        assert!(
            !a.dir.join(finetune::STATE_DIR).exists(),
            "state is removed when done"
        );
        for f in [
            "metrics.jsonl",
            "run.yaml",
            "head.safetensors",
            FINETUNE_FILE,
        ] {
            assert!(a.dir.join(f).is_file(), "{f}");
        }

        // Same seed, same result.
        let c = finetune::run(&cfg, request(None, None)).unwrap();
        assert_ne!(a.run_id, c.run_id);
        assert_eq!(
            learned(&a),
            learned(&c),
            "a second run with the same seed differs"
        );

        // Interrupted after epoch 2, then resumed: the same weights as the uninterrupted run.
        let hook: finetune::FtEpochHook = Box::new(|rec| {
            if rec.epoch == 2 {
                anyhow::bail!("stop requested")
            }
            Ok(())
        });
        let err = finetune::run(&cfg, request(None, Some(hook))).unwrap_err();
        assert!(format!("{err:#}").contains("--resume"), "{err:#}");
        let run = finetune::newest_unfinished(&cfg.paths.checkpoints).unwrap();
        assert!(!run.join("head.safetensors").exists());
        // `latest` still names the last finished run.
        let latest = std::fs::read_to_string(cfg.paths.checkpoints.join("latest")).unwrap();
        assert_eq!(latest.trim(), c.run_id);
        let b = finetune::run(&cfg, request(Some(run.clone()), None)).unwrap();
        assert_eq!(b.dir, run);
        assert_eq!(
            learned(&a),
            learned(&b),
            "resumed run differs from the uninterrupted one"
        );
        assert_eq!(a.info.temperature, b.info.temperature);
        assert_eq!(a.info.threshold, b.info.threshold);
        assert_eq!(a.info.metrics.val, b.info.metrics.val);
    }

    #[test]
    fn finetuned_checkpoint_serves_evaluates_and_exports() {
        // The CPU backend's RNG (`B::seed`) is process-wide: two runs in parallel threads
        // would draw from each other's stream.
        let _serial = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        crate::common::demo_mix(root, 12);
        let imgs: Vec<image::RgbImage> = ["tests/fixtures/images"]
            .iter()
            .flat_map(|d| std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(d)).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "png" || x == "jpg"))
            .map(|p| image::open(p).unwrap().to_rgb8())
            .collect();
        assert!(imgs.len() >= 2);
        for mode in ["lora", "partial", "full"] {
            let mut cfg = config(root, mode);
            cfg.head.kind = sv72::config::HeadType::Linear;
            cfg.finetune.epochs = 1;
            let out = finetune::run(&cfg, request(None, None)).unwrap();

            // serve's loader applies the trained tensors: answers differ from the same head on
            // the base backbone, and a tampered file is refused.
            let opts = LoadOptions::from_config(&cfg);
            let mut ck =
                CheckpointPredictor::<Cpu>::load(&out.dir, &Default::default(), &opts).unwrap();
            let served = ck.predict(&imgs).unwrap();
            assert!(served.iter().all(|p| (0.0..=1.0).contains(p)));

            // Export merges the adapters into a plain transformers model; serve answers the same.
            let req = sv72::export::ExportRequest {
                checkpoint: Some(out.dir.clone()),
                checkpoints_root: cfg.paths.checkpoints.clone(),
                exports_root: cfg.paths.exports.clone(),
                model_name: format!("ft-{mode}"),
                description: cfg.export.description.clone(),
                license: cfg.export.license.clone(),
                hotkey: sv72::keys::ss58_encode(&[9; 32], 42),
                version: None,
                feature_cache: cfg.paths.feature_cache.clone(),
                target: sv72::export::hf::Target::Transformers,
                fail_after: None,
            };
            let ex = sv72::export::export_checkpoint(&req).unwrap();
            assert!(
                matches!(ex.form, sv72::export::hf::Form::Builtin(_)),
                "{mode}: {:?}",
                ex.form
            );
            let names = Weights::open(&ex.dir).unwrap();
            assert!(
                names.names().iter().all(|n| !n.contains("lora_")),
                "{mode}: adapters leaked into the export"
            );
            // Exactly the tensors transformers' built-in class saves (tools/export_reference.py):
            // the export loads there with no remote code, as a frozen one does.
            let reference: serde_json::Value = serde_json::from_slice(
                &std::fs::read(crate::common::fixture(
                    "export/reference_dinov2_with_registers.json",
                ))
                .unwrap(),
            )
            .unwrap();
            let want: std::collections::BTreeMap<String, Vec<usize>> =
                serde_json::from_value(reference["saved_tensors"].clone()).unwrap();
            let got: std::collections::BTreeMap<String, Vec<usize>> =
                names.shapes().unwrap().into_iter().collect();
            assert_eq!(
                got, want,
                "{mode}: tensor names/shapes differ from transformers"
            );
            let mut exp =
                ExportPredictor::<Cpu>::load(&ex.dir, &Default::default(), &opts).unwrap();
            let exported = exp.predict(&imgs).unwrap();
            let d = served
                .iter()
                .zip(&exported)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{mode}: export vs checkpoint max |Δ| {d:e}");
            assert!(
                d <= 1e-4,
                "{mode}: export {exported:?} vs checkpoint {served:?}"
            );

            // The export's backbone is the trained one, not the base snapshot.
            let base = Weights::open(&backbone("dinov2_reg4_s36")).unwrap();
            let changed = out.info.finetune.as_ref().unwrap().tensors;
            assert!(changed > 0);
            let probe = "dinov2_with_registers.encoder.layer.1.attention.attention.query.weight";
            let (e, _) = names.f32_data(probe).unwrap();
            let (b0, _) = base
                .f32_data("encoder.layer.1.attention.attention.query.weight")
                .unwrap();
            assert!(
                max_diff(&e, &b0) > 0.0,
                "{mode}: the exported block 1 query is the base one"
            );

            // A damaged fine-tuned file is refused, not silently replaced by the base backbone.
            let f = out.dir.join(FINETUNE_FILE);
            let mut bytes = std::fs::read(&f).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            std::fs::write(&f, bytes).unwrap();
            let err = CheckpointPredictor::<Cpu>::load(&out.dir, &Default::default(), &opts)
                .err()
                .unwrap();
            assert!(format!("{err:#}").contains("changed or damaged"), "{err:#}");
        }

        // eval reads a fine-tuned checkpoint through its own feature-cache key.
        let cfg = config(root, "lora");
        let out = finetune::run(&cfg, request(None, None)).unwrap();
        let bb = format!("backbone.model={}", backbone("dinov2_reg4_s36").display());
        let args = [
            "--set",
            &bb,
            "--set",
            "augment.target_size=64",
            "eval",
            "--checkpoint",
        ];
        let dir = out.dir.display().to_string();
        let all: Vec<&str> = args
            .iter()
            .copied()
            .chain([dir.as_str(), "--on", "mix:test", "--out", "report"])
            .collect();
        let table = crate::common::stdout_ok(&crate::common::sv72(root, &all), &all);
        assert!(table.contains("level 3"), "{table}");
        let keys: Vec<String> = std::fs::read_dir(root.join("datasets/.features"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            keys.iter().any(|k| k == &out.info.features_key()),
            "{keys:?}"
        );
    }
}

/// `sv72 bench --train` (issue #14's benchmark) runs real optimiser steps on the tiny fixture
/// and reports every field; LoRA trains exactly the attention adapters, `full` everything.
/// Timings are not checked (the machine is shared), only that they are consistent.
#[test]
fn bench_train_reports_each_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = backbone("dinov2_reg4_s36");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap.join("config.json")).unwrap()).unwrap();
    let (d, layers) = (
        cfg["hidden_size"].as_u64().unwrap() as usize,
        cfg["num_hidden_layers"].as_u64().unwrap() as usize,
    );
    let rank = FinetuneConfig::default().lora.rank;
    let mut full_params = 0;
    for mode in ["lora", "full"] {
        let json = tmp.path().join(format!("{mode}.json"));
        let args = [
            "bench",
            "--backbone",
            snap.to_str().unwrap(),
            "--train",
            mode,
            "--batch",
            "3",
            "--image-size",
            "28",
            "--warmup-steps",
            "1",
            "--steps",
            "2",
            "--json",
            json.to_str().unwrap(),
        ];
        let text = super::common::stdout_ok(&super::common::sv72(tmp.path(), &args), &args);
        assert!(text.contains(&format!("finetune {mode}")), "{text}");
        assert!(
            text.contains("images/s") && text.contains("peak host memory"),
            "{text}"
        );
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(r["mode"], mode);
        assert_eq!(r["batch"], 3);
        assert_eq!(r["steps"], 2);
        assert_eq!(r["warmup_steps"], 1);
        assert_eq!(r["device"], "cpu");
        let f = |k: &str| {
            r[k].as_f64()
                .unwrap_or_else(|| panic!("{k} missing in {r}"))
        };
        let ms = f("ms_per_step");
        assert!(ms > 0.0, "{r}");
        assert!(
            (f("images_per_s") - 3e3 / ms).abs() < 1e-6 * f("images_per_s"),
            "{r}"
        );
        assert!(f("cores_used") > 0.0 && f("peak_rss_mib") > 0.0, "{r}");
        assert!(f("last_loss").is_finite() && f("last_loss") > 0.0, "{r}");
        let trained = r["trainable_params"].as_u64().unwrap() as usize;
        let total = r["backbone_params"].as_u64().unwrap() as usize;
        if mode == "lora" {
            // A and B (rank × d and d × rank) on q, k, v and the output projection of each block.
            assert_eq!(trained, layers * 4 * 2 * rank * d, "{r}");
        } else {
            assert_eq!(trained, total, "{r}");
            full_params = total;
        }
    }
    assert!(full_params > 0);

    // One batch size only with --train, and no half precision on the CPU.
    for (extra, needle) in [
        (&["--batch", "2,4"][..], "one batch size"),
        (&["--dtype", "bf16"][..], "f32 only"),
    ] {
        let mut args = vec![
            "bench",
            "--backbone",
            snap.to_str().unwrap(),
            "--train",
            "lora",
            "--steps",
            "1",
        ];
        args.extend_from_slice(extra);
        let out = super::common::sv72(tmp.path(), &args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
