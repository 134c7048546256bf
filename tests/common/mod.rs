//! Helpers shared by the integration tests (`mod common;` in each test file).
#![allow(dead_code)] // not every helper is used by every build (e.g. under `cuda`)

pub mod http;
pub mod node;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sv72::config::Config;
use sv72::model::preprocess::Preprocess;
use sv72::train::checkpoint::{BackboneInfo, ManifestInfo};
use sv72::train::{FeatureSet, RunInputs, RunOptions};

/// A path under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Runs the sv72 binary in `dir` without progress bars or live tracking.
pub fn sv72(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sv72"))
        .current_dir(dir)
        .env("SV72_NO_PROGRESS", "1")
        .env_remove("WANDB_API_KEY")
        .args(args)
        .output()
        .expect("spawn sv72")
}

/// The binary on the tiny DINOv2-with-registers fixture backbone with `bootstrap` A/B resamples
/// (the shared setup of the A/B and model-spec tests); returns stdout and stderr together after
/// asserting the exit status is `want`.
pub fn code_on_fixture(dir: &Path, bootstrap: usize, args: &[&str], want: i32) -> String {
    let bb = format!(
        "backbone.model={}",
        fixture("backbones/dinov2_reg4_s36").display()
    );
    let boot = format!("ab_test.bootstrap={bootstrap}");
    let fixed = ["--set", bb.as_str(), "--set", boot.as_str()];
    let all: Vec<&str> = fixed.into_iter().chain(args.iter().copied()).collect();
    let out = sv72(dir, &all);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(want), "sv72 {args:?}:\n{text}");
    text
}

/// The `decision.json` an A/B test wrote into `dir`.
pub fn decision(dir: &Path) -> sv72::eval::ab::AbReport {
    let path = dir.join("decision.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// stdout of a run that must succeed; the assertion shows both streams.
pub fn stdout_ok(out: &Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "sv72 {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Training inputs held in memory (no manifest behind them).
pub fn mem_inputs(train: FeatureSet, val: FeatureSet, backbone: BackboneInfo) -> RunInputs {
    RunInputs {
        manifest: ManifestInfo {
            path: "mem".into(),
            hash: "m".into(),
            train_images: train.len(),
            val_images: val.len(),
            train_rows: train.len(),
            val_rows: val.len(),
        },
        train,
        val,
        backbone,
    }
}

/// Run options that write checkpoints under `root` and drop warnings.
pub fn quiet_options(root: &Path) -> RunOptions {
    RunOptions {
        checkpoints_root: root.to_path_buf(),
        wandb: None,
        warn: Box::new(|_| {}),
        on_epoch: None,
    }
}

/// Trains a head for backbone `snapshot` (width `hidden`) on in-memory features and writes its
/// checkpoint under `cfg.paths.checkpoints` (moving `latest`); the run records the snapshot's
/// real weights hash and the `cfg.backbone.preprocess` recipe, so it loads and exports.
pub fn train_on_features(
    cfg: &Config,
    snapshot: &Path,
    hidden: usize,
    train: FeatureSet,
    val: FeatureSet,
) -> PathBuf {
    let pre =
        Preprocess::for_kind(cfg.backbone.preprocess, snapshot, cfg.augment.target_size).unwrap();
    let backbone = BackboneInfo {
        name: snapshot.display().to_string(),
        weights_hash: sv72::features::backbone_key(snapshot, &cfg.paths.feature_cache).unwrap(),
        hidden_size: hidden,
        preprocess: pre.id(),
    };
    let inputs = mem_inputs(train, val, backbone);
    let opts = quiet_options(&cfg.paths.checkpoints);
    type Ad = burn::backend::Autodiff<sv72::backend::Cpu>;
    sv72::train::run_training::<Ad>(cfg, &inputs, opts, &Default::default())
        .unwrap()
        .dir
}

/// The quick head most tests train first: `train-head` on [`demo_mix`]'s `mix`, 2 epochs, 1 view.
pub const QUICK_HEAD: [&str; 7] = [
    "train-head",
    "--manifest",
    "mix",
    "--epochs",
    "2",
    "--views",
    "1",
];

/// The run id `dir/checkpoints/latest` points at.
pub fn latest_run(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("checkpoints/latest"))
        .unwrap()
        .trim()
        .to_string()
}

/// A tiny demo mix under `dir/datasets/mix` (`count` generated images per source, ingested and
/// mixed by the binary as `make demo` does).
pub fn demo_mix(dir: &Path, count: usize) {
    let n = count.to_string();
    for args in [
        vec!["demo-data", "--out", "raw", "--count", n.as_str()],
        vec![
            "ingest",
            "--name",
            "real",
            "--folder",
            "raw/real",
            "--source",
            "real",
            "--generator",
            "demo-photo",
        ],
        vec![
            "ingest",
            "--name",
            "synth",
            "--folder",
            "raw/synthetic",
            "--source",
            "synthetic",
            "--generator",
            "demo-sdxl",
        ],
        vec![
            "synth-mix",
            "--real",
            "real",
            "--synthetic",
            "synth",
            "--name",
            "mix",
        ],
    ] {
        stdout_ok(&sv72(dir, &args), &args);
    }
}

/// Largest |got − want| (infinite if any difference is NaN); asserts equal lengths.
pub fn max_abs_diff(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(
            0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

/// A tensor's values as f32, row-major.
pub fn values<const D: usize, B: burn::tensor::backend::Backend>(
    t: burn::tensor::Tensor<B, D>,
) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}
