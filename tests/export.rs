//! `sv72 export` and `sv72 deploy`: round trips through serve's loader for every form, the
//! transformers layout against the committed reference, hotkey checks, versions, atomicity,
//! deploy's symlink and checksum refusal, and `--push` without a token.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::Value;
use sv72::backend::Cpu;
use sv72::config::{Config, HeadType};
use sv72::export::{self, ExportRequest, Form, ModelCard, Target, Version};
use sv72::infer::{CheckpointPredictor, LoadOptions};
use sv72::keys::ss58_encode;
use sv72::model::preprocess::Preprocess;
use sv72::train::{checkpoint, FeatureSet};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn images() -> Vec<PathBuf> {
    vec![
        fixtures().join("images/rgb_224x224.jpg"),
        fixtures().join("images/gray_180x240.png"),
    ]
}

/// Fixture backbone, label, preprocess kind, target size, MLP hidden width, backbone width,
/// export target.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    u32,
    Option<usize>,
    usize,
    Target,
);

fn hotkey() -> String {
    ss58_encode(&[9; 32], 42)
}

fn config(root: &Path, preprocess: &str, size: u32, mlp: Option<usize>) -> Config {
    let mut cfg = Config::default();
    cfg.paths.checkpoints = root.join("checkpoints");
    cfg.paths.exports = root.join("exports");
    cfg.paths.feature_cache = root.join("features");
    cfg.augment.target_size = size;
    cfg.backbone.preprocess = preprocess.parse().unwrap();
    cfg.train.epochs = 3;
    cfg.train.batch_size = 64;
    cfg.train.patience = 3;
    if let Some(h) = mlp {
        cfg.head.kind = HeadType::Mlp;
        cfg.head.hidden = h;
    }
    cfg
}

fn blobs(n: usize, dim: usize, seed: u64) -> FeatureSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut fs = FeatureSet::default();
    for i in 0..n {
        let y = (i % 2) as u8;
        let shift = if y == 1 { 0.8 } else { -0.8 } / (dim as f32).sqrt();
        let v: Vec<f32> = (0..dim).map(|_| normal.sample(&mut rng) + shift).collect();
        fs.push(&v, y, false, 0).unwrap();
    }
    fs
}

/// Trains a tiny head for `snapshot` on random features and gives it a non-trivial calibration
/// (T = 1.7, threshold 0.35) so that folding is exercised.
fn train_checkpoint(cfg: &Config, snapshot: &Path, hidden: usize) -> PathBuf {
    let (train, val) = (blobs(120, 2 * hidden, 1), blobs(60, 2 * hidden, 2));
    let dir = common::train_on_features(cfg, snapshot, hidden, train, val);
    let run = dir.join(checkpoint::RUN_FILE);
    let mut info: checkpoint::RunInfo =
        serde_yaml::from_str(&std::fs::read_to_string(&run).unwrap()).unwrap();
    info.temperature = 1.7;
    info.threshold = 0.35;
    std::fs::write(&run, serde_yaml::to_string(&info).unwrap()).unwrap();
    dir
}

fn request(cfg: &Config, ck: Option<&Path>, version: Option<&str>) -> ExportRequest {
    request_for(cfg, ck, version, Target::Transformers)
}

fn request_for(
    cfg: &Config,
    ck: Option<&Path>,
    version: Option<&str>,
    target: Target,
) -> ExportRequest {
    ExportRequest {
        checkpoint: ck.map(Path::to_path_buf),
        checkpoints_root: cfg.paths.checkpoints.clone(),
        exports_root: cfg.paths.exports.clone(),
        model_name: cfg.export.model_name.clone(),
        description: cfg.export.description.clone(),
        license: cfg.export.license.clone(),
        hotkey: hotkey(),
        version: version.map(|v| v.parse().unwrap()),
        feature_cache: cfg.paths.feature_cache.clone(),
        target,
        fail_after: None,
    }
}

fn decode_all() -> Vec<image::RgbImage> {
    images()
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8())
        .collect()
}

/// Tensor names and shapes of a safetensors file.
fn shapes(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sv72() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sv72"));
    c.env("SV72_NO_PROGRESS", "1").env_remove("HF_TOKEN");
    c
}

fn write_config(cfg: &Config, root: &Path) -> PathBuf {
    let p = root.join("sv72.yaml");
    std::fs::write(&p, serde_yaml::to_string(cfg).unwrap()).unwrap();
    p
}

/// Every form: the export loads through serve's loader and answers what the checkpoint answers;
/// the built-in forms match transformers' key names, shapes and config fields.
#[test]
fn round_trip_every_form() {
    let keep = std::env::var_os("SV72_KEEP_EXPORTS").map(PathBuf::from);
    let (sub, tr) = (Target::Subnet, Target::Transformers);
    let cases: [Case; 6] = [
        ("dinov2_s36", "dinov2", "processor", 224, None, 36, sub),
        (
            "dinov2_swiglu_s42",
            "dinov2_swiglu",
            "validator",
            112,
            None,
            42,
            sub,
        ),
        (
            "dinov2_reg4_s36",
            "dinov2_with_registers",
            "validator",
            112,
            None,
            36,
            tr,
        ),
        ("dinov3-tiny", "dinov3_vit", "validator", 112, None, 48, tr),
        (
            "dinov2_reg4_s36",
            "dinov2_with_registers_mlp",
            "validator",
            112,
            Some(16),
            36,
            tr,
        ),
        (
            "dinov2_s36",
            "dinov2_mlp",
            "validator",
            112,
            Some(16),
            36,
            tr,
        ),
    ];
    let imgs = decode_all();
    for (fixture, label, pre, size, mlp, hidden, target) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), pre, size, mlp);
        let snap = fixtures().join("backbones").join(fixture);
        let ck = train_checkpoint(&cfg, &snap, hidden);
        let out = export::export_checkpoint(&request_for(&cfg, None, None, target)).unwrap();
        assert_eq!(out.version.to_string(), "1.0.0");
        let dir = &out.dir;
        assert_eq!(
            std::fs::read_to_string(cfg.paths.exports.join("latest"))
                .unwrap()
                .trim(),
            "sv72-roadwork-1.0.0"
        );
        export::verify_export(dir).unwrap();

        // Same answers as the checkpoint, through serve's loader (export and pointer).
        let opts = LoadOptions::from_config(&cfg);
        let mut want = CheckpointPredictor::<Cpu>::load(&ck, &Default::default(), &opts).unwrap();
        let want = sv72::infer::Predictor::predict(&mut want, &imgs).unwrap();
        let loader = sv72::infer::model_loader(&cfg, sv72::config::Device::Cpu).unwrap();
        for path in [dir.clone(), cfg.paths.exports.join("latest")] {
            let mut p = loader(&path).unwrap();
            assert!(
                p.version().starts_with("sv72-roadwork-1.0.0-"),
                "{}",
                p.version()
            );
            let got = p.predict(&imgs).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5,
                    "{label}: export {g} vs checkpoint {w}"
                );
            }
        }
        // Calibration is folded in: the bare classifier differs from the checkpoint's.
        assert!(want.iter().all(|p| (0.0..=1.0).contains(p)));

        let config = read_json(&dir.join("config.json"));
        assert_eq!(config["id2label"]["0"], "None");
        assert_eq!(config["id2label"]["1"], "Roadwork");
        let st = shapes(&dir.join("model.safetensors"));
        match out.form {
            Form::Builtin(class) => {
                assert!(mlp.is_none() && label != "dinov3_vit");
                let reference =
                    read_json(&fixtures().join(format!("export/reference_{label}.json")));
                assert_eq!(reference["architecture"], class);
                let ref_st: BTreeMap<String, Vec<usize>> =
                    serde_json::from_value(reference["saved_tensors"].clone()).unwrap();
                assert_eq!(
                    st, ref_st,
                    "{label}: tensor names/shapes differ from transformers"
                );
                for (k, v) in reference["config"].as_object().unwrap() {
                    assert_eq!(config.get(k), Some(v), "{label}: config.json field {k}");
                }
                assert!(!dir.join("modeling_sv72.py").exists());
            }
            Form::Custom => {
                assert!(mlp.is_some() || label == "dinov3_vit");
                assert_eq!(
                    config["auto_map"]["AutoModelForImageClassification"],
                    "modeling_sv72.Sv72ForImageClassification"
                );
                assert!(dir.join("modeling_sv72.py").is_file());
                assert!(st.contains_key("classifier.weight"));
                assert_eq!(st.contains_key("hidden.weight"), mlp.is_some());
            }
        }
        // The exported processor reproduces the training recipe.
        let reread = Preprocess::from_snapshot(dir).unwrap();
        let trained = Preprocess::from_snapshot(&snap).unwrap();
        if pre == "processor" {
            assert_eq!(reread, trained);
        } else {
            let v = Preprocess::validator_for(&snap, size).unwrap();
            assert_eq!(
                (reread.resize, reread.crop, reread.normalize),
                (v.resize, v.crop, v.normalize)
            );
        }
        let card = ModelCard::read(&dir.join("model_card.json")).unwrap();
        assert_eq!(
            (card.version.as_str(), card.submitted_by.as_str()),
            ("1.0.0", hotkey().as_str())
        );
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        if label == "dinov3_vit" {
            assert!(readme.starts_with("---\nlicense: other\nlicense_name: dinov3-license\n"));
            assert!(!readme.contains("apache-2.0"), "{label}: {readme}");
        } else {
            assert!(readme.starts_with("---\nlicense: apache-2.0\n"), "{label}");
        }
        assert!(readme.contains("library_name: transformers\n"));
        match mlp {
            Some(h) => assert!(readme.contains(&format!("- Head: MLP (hidden {h}, GELU)"))),
            None => assert!(readme.contains("- Head: linear on")),
        }
        // Both stacks named, with the answer this target gives.
        let subnet_ok = target == Target::Subnet;
        assert!(readme.contains("| transformers 4.45.2 + torch 2.6.0 + pillow 10.4.0 | "));
        assert_eq!(
            readme.contains("the subnet's reference miner loads it as is"),
            subnet_ok
        );
        assert!(readme.contains("pipeline_tag: image-classification"));
        assert_eq!(readme.contains("DINOv3 License"), label == "dinov3_vit");
        let prov = read_json(&dir.join("sv72_export.json"));
        assert_eq!(prov["temperature"], 1.7);
        assert_eq!(prov["target"], target.name());
        let miner_loads =
            prov["loads_in"][0]["loads"] == true && prov["loads_in"][0]["remote_code"] == false;
        assert_eq!(miner_loads, subnet_ok, "{label}");
        assert_eq!(prov["loads_in"][1]["loads"], true, "{label}");
        // 4.45.2's pipeline reads problem_type = single_label_classification as "sigmoid".
        assert!(config.get("problem_type").is_none(), "{label}");
        let pre_cfg = read_json(&dir.join("preprocessor_config.json"));
        match (target, pre) {
            // The subnet target leaves the processor to the model type (4.45.2's PIL
            // `BitImageProcessor`); a validator run must then say not to crop.
            (Target::Subnet, pre) => {
                assert!(pre_cfg.get("image_processor_type").is_none(), "{label}");
                if pre == "validator" {
                    assert_eq!(pre_cfg["do_center_crop"], false, "{label}");
                }
            }
            (_, "validator") => assert_eq!(pre_cfg["image_processor_type"], "ViTImageProcessor"),
            _ => {}
        }
        assert_eq!(prov["run_id"], ck.file_name().unwrap().to_str().unwrap());

        if let Some(keep) = &keep {
            let dst = keep.join(label);
            let _ = std::fs::remove_dir_all(&dst);
            std::fs::create_dir_all(&dst).unwrap();
            for f in std::fs::read_dir(dir).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), dst.join(f.file_name())).unwrap();
            }
            let rows: Vec<Value> = images()
                .iter()
                .zip(&want)
                .map(|(p, w)| serde_json::json!({"image": p, "export": w}))
                .collect();
            std::fs::write(
                keep.join(format!("{label}.probs.json")),
                serde_json::to_vec(&serde_json::json!({ "images": rows })).unwrap(),
            )
            .unwrap();
        }
    }
}

/// What CI can check without Python: the default-target `config.json` and
/// `preprocessor_config.json` sv72 writes are exactly the ones `make compat` loaded in the
/// subnet's transformers 4.45.2 and in current transformers (`tools/export_compat.py
/// --write-references` stores them under `tests/fixtures/export/subnet/<fixture>_<preprocess>`).
#[test]
fn subnet_configs_are_the_ones_make_compat_verified() {
    let refs = fixtures().join("export/subnet");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&refs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "{dirs:?}");
    for d in dirs {
        let name = d.file_name().unwrap().to_str().unwrap().to_string();
        let (fixture, pre) = name.rsplit_once('_').unwrap();
        let snap = fixtures().join("backbones").join(fixture);
        let hidden = read_json(&snap.join("config.json"))["hidden_size"]
            .as_u64()
            .unwrap() as usize;
        let tmp = tempfile::tempdir().unwrap();
        // make compat exports with the default target size.
        let cfg = config(tmp.path(), pre, Config::default().augment.target_size, None);
        train_checkpoint(&cfg, &snap, hidden);
        let out =
            export::export_checkpoint(&request_for(&cfg, None, None, Target::Subnet)).unwrap();
        for file in ["config.json", "preprocessor_config.json"] {
            assert_eq!(
                read_json(&out.dir.join(file)),
                read_json(&d.join(file)),
                "{name}/{file} differs from what make compat verified"
            );
        }
    }
}

/// The default (subnet) target refuses registers, DINOv3 and MLP heads before any work: nothing
/// is written, the error names `--target transformers` and the 4.45.2 pin.
#[test]
fn subnet_target_refuses_what_4_45_cannot_load() {
    for (fixture, mlp, hidden) in [
        ("dinov2_reg4_s36", None, 36),
        ("dinov3-tiny", None, 48),
        ("dinov2_s36", Some(8), 36),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), "validator", 112, mlp);
        let snap = fixtures().join("backbones").join(fixture);
        train_checkpoint(&cfg, &snap, hidden);
        let err =
            export::export_checkpoint(&request_for(&cfg, None, None, Target::Subnet)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("--target transformers"), "{fixture}: {msg}");
        assert!(
            msg.contains("4.45.2") && msg.contains("Nothing was written"),
            "{msg}"
        );
        assert!(
            !cfg.paths.exports.exists(),
            "{fixture}: something was written"
        );
    }
}

/// Versions bump, `--version` is honoured, existing versions are refused; an injected failure
/// leaves no folder and no pointer change; deploy switches the relative symlink and refuses a
/// tampered export.
#[test]
fn versions_atomicity_and_deploy() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "validator", 112, None);
    let snap = fixtures().join("backbones/dinov2_reg4_s36");
    train_checkpoint(&cfg, &snap, 36);
    let exports = cfg.paths.exports.clone();
    let latest = || std::fs::read_to_string(exports.join("latest")).unwrap();

    let a = export::export_checkpoint(&request(&cfg, None, None)).unwrap();
    let b = export::export_checkpoint(&request(&cfg, None, None)).unwrap();
    assert_eq!(
        (a.version.to_string(), b.version.to_string()),
        ("1.0.0".into(), "1.0.1".into())
    );
    let c = export::export_checkpoint(&request(&cfg, None, Some("2.0.0"))).unwrap();
    assert_eq!(latest().trim(), "sv72-roadwork-2.0.0");
    let d = export::export_checkpoint(&request(&cfg, None, None)).unwrap();
    assert_eq!(
        d.version,
        Version {
            major: 2,
            minor: 0,
            patch: 1
        }
    );
    let e = format!(
        "{:#}",
        export::export_checkpoint(&request(&cfg, None, Some("1.0.1"))).unwrap_err()
    );
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(latest().trim(), "sv72-roadwork-2.0.1");

    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(&exports)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    for point in ["config.json", "model.safetensors", "SHA256SUMS"] {
        let mut r = request(&cfg, None, None);
        r.fail_after = Some(point.into());
        let e = format!("{:#}", export::export_checkpoint(&r).unwrap_err());
        assert!(e.contains("injected failure"), "{e}");
        assert_eq!(
            listing(),
            before,
            "failure after {point} left something behind"
        );
        assert_eq!(latest().trim(), "sv72-roadwork-2.0.1");
    }

    // Deploy: first deploy has no previous target; the link is relative.
    assert_eq!(
        export::deploy(&exports, &exports.join("latest")).unwrap(),
        None
    );
    let link = exports.join("deployed");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("sv72-roadwork-2.0.1")
    );
    let prev = export::deploy(&exports, &a.dir).unwrap();
    assert_eq!(prev, Some(d.dir.clone()));
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("sv72-roadwork-1.0.0")
    );
    // Through the link, serve's loader and the card reader work.
    ModelCard::read(&link.join("model_card.json")).unwrap();
    let loader = sv72::infer::model_loader(&cfg, sv72::config::Device::Cpu).unwrap();
    assert!(loader(&link)
        .unwrap()
        .version()
        .starts_with("sv72-roadwork-1.0.0"));

    // A tampered export is refused and the link stays.
    let readme = c.dir.join("README.md");
    std::fs::write(&readme, "tampered").unwrap();
    let e = format!("{:#}", export::deploy(&exports, &c.dir).unwrap_err());
    assert!(
        e.contains("checksum mismatch") && e.contains("README.md"),
        "{e}"
    );
    std::fs::write(b.dir.join("extra.bin"), "x").unwrap();
    let e = format!("{:#}", export::deploy(&exports, &b.dir).unwrap_err());
    assert!(e.contains("not listed"), "{e}");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("sv72-roadwork-1.0.0")
    );
    // Outside the exports folder: refused.
    let outside = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    for f in std::fs::read_dir(&d.dir).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), outside.join(f.file_name())).unwrap();
    }
    let e = format!("{:#}", export::deploy(&exports, &outside).unwrap_err());
    assert!(e.contains("not inside"), "{e}");

    // The CLI: deploy prints old -> new and switches.
    let conf = write_config(&cfg, tmp.path());
    let o = sv72()
        .args(["--config", conf.to_str().unwrap(), "deploy"])
        .arg(&d.dir)
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{so} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        so.contains("sv72-roadwork-1.0.0 ->") && so.contains("sv72-roadwork-2.0.1"),
        "{so}"
    );
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("sv72-roadwork-2.0.1")
    );
    let o = sv72()
        .args(["--config", conf.to_str().unwrap(), "deploy"])
        .arg(&c.dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("checksum mismatch"));
}

/// Hotkey checks (library and CLI), a wallet mismatch, and `--push` without / with a token.
#[test]
fn hotkeys_wallets_and_push() {
    let good = hotkey();
    export::check_hotkey(&good, None).unwrap();
    export::check_hotkey(&good, Some(&good)).unwrap();
    // Bad checksum: change one character.
    let mut bad = good.clone();
    let c = if bad.ends_with('A') { "B" } else { "A" };
    bad.replace_range(bad.len() - 1.., c);
    let e = format!("{:#}", export::check_hotkey(&bad, None).unwrap_err());
    assert!(e.contains("not a valid SS58"), "{e}");
    let polkadot = ss58_encode(&[9; 32], 0);
    let e = format!("{:#}", export::check_hotkey(&polkadot, None).unwrap_err());
    assert!(e.contains("prefix 0"), "{e}");
    let other = ss58_encode(&[8; 32], 42);
    let e = format!(
        "{:#}",
        export::check_hotkey(&good, Some(&other)).unwrap_err()
    );
    assert!(e.contains("differs"), "{e}");

    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "validator", 112, None);
    let snap = fixtures().join("backbones/dinov2_reg4_s36");
    train_checkpoint(&cfg, &snap, 36);
    let conf = write_config(&cfg, tmp.path());
    let wallets = tmp.path().join("wallets");
    std::fs::create_dir_all(wallets.join("miner/hotkeys")).unwrap();
    std::fs::write(
        wallets.join("miner/hotkeys/hk"),
        serde_json::json!({"ss58Address": other, "secretSeed": "0xdeadbeef"}).to_string(),
    )
    .unwrap();
    let run = |args: &[&str], token: Option<&str>| {
        let mut c = sv72();
        c.args([
            "--config",
            conf.to_str().unwrap(),
            "export",
            "--target",
            "transformers",
        ])
        .args(args);
        if let Some(t) = token {
            c.env("HF_TOKEN", t);
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let exported = || cfg.paths.exports.join("sv72-roadwork-1.0.0").exists();
    for (args, want) in [
        (vec!["--hotkey", bad.as_str()], "not a valid SS58"),
        (vec!["--hotkey", polkadot.as_str()], "prefix 0"),
        (
            vec![
                "--hotkey",
                good.as_str(),
                "--wallet",
                "miner",
                "--wallet-hotkey",
                "hk",
            ],
            "differs from the wallet's hotkey",
        ),
        (
            vec!["--hotkey", good.as_str(), "--push", "org/repo"],
            "HF_TOKEN",
        ),
    ] {
        let (code, _, err) = run(
            &[&args[..], &["--wallets-path", wallets.to_str().unwrap()]].concat(),
            None,
        );
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("deadbeef"));
        assert!(!exported(), "{args:?} exported anyway");
    }
    // Matching wallet: exported.
    let (code, out, err) = run(
        &[
            "--hotkey",
            other.as_str(),
            "--wallet",
            "miner",
            "--wallet-hotkey",
            "hk",
            "--wallets-path",
            wallets.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("sv72-roadwork-1.0.0"), "{out}");
    // A push that fails keeps the export and never shows the token.
    let secret = "hf_SECRETtoken123456";
    let (code, out, err) = run(
        &["--hotkey", good.as_str(), "--push", "org/repo"],
        Some(secret),
    );
    assert_eq!(code, Some(1), "{out} {err}");
    assert!(err.contains("push to org/repo failed"), "{err}");
    assert!(!err.contains(secret) && !out.contains(secret));
    assert!(cfg
        .paths
        .exports
        .join("sv72-roadwork-1.0.1/model.safetensors")
        .is_file());
}
