//! Tests of `sv72 train-head` / `sv72 eval` building blocks: metrics and the subnet score,
//! calibration, threshold choice, head training, checkpoints, and tracking outputs.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use sv72::config::{Config, HeadType};
use sv72::metrics::{self, MinerTracker, ScoreItem};
use sv72::train::{
    self, checkpoint, tensorboard, tracking, BackboneInfo, FeatureSet, RunInputs, RunOptions,
    TrainSettings,
};

type Ad = burn::backend::Autodiff<sv72::backend::Cpu>;

/// Two Gaussian blobs in `dim` dimensions, means ±`sep`/2 along every axis / sqrt(dim).
fn blobs(n: usize, dim: usize, sep: f32, seed: u64) -> FeatureSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut fs = FeatureSet::default();
    for i in 0..n {
        let y = (i % 2) as u8;
        let shift = if y == 1 { sep / 2.0 } else { -sep / 2.0 } / (dim as f32).sqrt();
        let v: Vec<f32> = (0..dim).map(|_| normal.sample(&mut rng) + shift).collect();
        fs.push(&v, y, rng.random::<bool>(), rng.random_range(0..4))
            .unwrap();
    }
    fs
}

fn test_config(root: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.paths.checkpoints = root.join("checkpoints");
    cfg.train.epochs = 8;
    cfg.train.batch_size = 64;
    cfg.train.lr = 1e-2;
    cfg.train.warmup_epochs = 1;
    cfg.train.patience = 0;
    cfg.eval.score_sequences = 100;
    cfg
}

fn inputs(dim: usize) -> RunInputs {
    let train = blobs(400, dim, 4.0, 1);
    let val = blobs(200, dim, 4.0, 2);
    common::mem_inputs(
        train,
        val,
        BackboneInfo {
            name: "test".into(),
            weights_hash: "w".into(),
            hidden_size: dim / 2,
            preprocess: "p".into(),
        },
    )
}

fn quiet_opts(cfg: &Config, warnings: Arc<Mutex<Vec<String>>>) -> RunOptions {
    RunOptions {
        checkpoints_root: cfg.paths.checkpoints.clone(),
        wandb: None,
        warn: Box::new(move |m| warnings.lock().unwrap().push(m.to_string())),
        on_epoch: None,
    }
}

mod score {
    use super::*;

    fn reward_seq(seq: &[(f64, u8)]) -> f64 {
        let mut t = MinerTracker::new();
        let mut r = 0.0;
        for &(p, y) in seq {
            r = t.reward(p, y);
        }
        r
    }

    #[test]
    fn hand_worked_sequence() {
        // rounded [1,0,0,0] vs labels [1,0,1,0]: acc 0.75; tp=1 fn=1 tn=2 fp=0, MCC = 2/sqrt(12).
        let r = reward_seq(&[(0.9, 1), (0.2, 0), (0.3, 1), (0.4, 0)]);
        let mcc = 2.0 / 12f64.sqrt();
        let want = (0.5 * mcc + 0.5 * 0.75).powi(3);
        assert!((r - want).abs() < 1e-12, "{r} vs {want}");
        // A perfect miner with both classes seen gets 1.
        assert!((reward_seq(&[(0.9, 1), (0.1, 0), (1.0, 1), (0.0, 0)]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn degenerate_windows_follow_the_tracker() {
        // Constant answers: MCC forced to 0 even though labels vary; accuracy = share of 1s.
        let seq: Vec<(f64, u8)> = (0..10).map(|i| (0.9, u8::from(i % 5 != 0))).collect();
        assert!((reward_seq(&seq) - (0.5f64 * 0.8).powi(3)).abs() < 1e-12);
        // One class only: MCC 0 even with perfect answers.
        let seq: Vec<(f64, u8)> = (0..10).map(|_| (0.9, 1)).collect();
        assert!((reward_seq(&seq) - 0.125).abs() < 1e-12);
        // 0.5 rounds to 0 (half to even), so it answers "none".
        let mut t = MinerTracker::new();
        t.update(0.5, 0);
        t.update(0.9, 1);
        assert_eq!(t.metrics(100).accuracy, 1.0);
        // Anti-correlated answers: MCC floored at 0, not negative.
        let r = reward_seq(&[(0.9, 0), (0.1, 1), (0.9, 0), (0.1, 1)]);
        assert_eq!(r, 0.0);
    }

    #[test]
    fn invalid_answers() {
        // -1 earns 0 and is left out of the windows.
        let mut t = MinerTracker::new();
        t.reward(0.9, 1);
        t.reward(0.1, 0);
        assert_eq!(t.reward(-1.0, 1), 0.0);
        assert_eq!(t.metrics(10).accuracy, 1.0);
        // Out of [0, 1]: penalty makes the reward 0, but the answer stays in the history.
        let mut t = MinerTracker::new();
        t.reward(0.9, 1);
        assert_eq!(t.reward(1.2, 0), 0.0);
        assert_eq!(t.metrics(10).accuracy, 0.5);
    }

    #[test]
    fn windows_are_100_and_10() {
        // 10 wrong answers followed by 10 right ones: accuracy_10 = 1, accuracy_100 = 0.5.
        let mut t = MinerTracker::new();
        for i in 0..20 {
            let y = (i % 2) as u8;
            let p = if i < 10 {
                1.0 - f64::from(y)
            } else {
                f64::from(y)
            };
            t.update(p, y);
        }
        assert_eq!(t.metrics(10).accuracy, 1.0);
        assert_eq!(t.metrics(100).accuracy, 0.5);
        // Only the last 100 are kept.
        for _ in 0..100 {
            t.update(0.9, 1);
        }
        assert_eq!(t.metrics(1000).accuracy, 1.0);
    }

    #[test]
    fn simulation_is_deterministic_and_sensible() {
        let mut items = Vec::new();
        for i in 0..200 {
            let label = (i % 2) as u8;
            items.push(ScoreItem {
                label,
                synthetic: i % 4 < 2,
                level: (i % 4) as u8,
                prob: if label == 1 { 0.9 } else { 0.1 },
            });
        }
        let a = metrics::simulate_scores(&items, [0.25; 4], 50, 7).unwrap();
        let b = metrics::simulate_scores(&items, [0.25; 4], 50, 7).unwrap();
        assert_eq!(a, b);
        assert!(
            (a.mean - 1.0).abs() < 1e-12,
            "perfect answers score 1: {a:?}"
        );
        // Coin-flip answers score far lower.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for it in &mut items {
            it.prob = rng.random();
        }
        let c = metrics::simulate_scores(&items, [0.25; 4], 200, 7).unwrap();
        assert!(c.mean < 0.2 && c.p05 <= c.p50 && c.p50 <= c.p95, "{c:?}");
        // One label only cannot be simulated.
        let one: Vec<ScoreItem> = items.iter().copied().filter(|i| i.label == 1).collect();
        assert!(metrics::simulate_scores(&one, [0.25; 4], 10, 1).is_err());
    }

    #[test]
    fn threshold_search_finds_the_gap() {
        // Negatives in [0, 0.30], positives in [0.35, 0.60]: any threshold in (0.30, 0.35)
        // separates them perfectly; 0.5 would miss most positives.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut items = Vec::new();
        for i in 0..400 {
            let label = (i % 2) as u8;
            let prob = if label == 0 {
                rng.random_range(0.0..0.30)
            } else {
                rng.random_range(0.35..0.60)
            };
            items.push(ScoreItem {
                label,
                synthetic: rng.random(),
                level: rng.random_range(0..4),
                prob,
            });
        }
        let (t, s) = metrics::choose_threshold(&items, [0.25; 4], 100, 1).unwrap();
        assert!(t > 0.30 && t < 0.35, "threshold {t}");
        assert!((s.mean - 1.0).abs() < 1e-12, "{s:?}");
    }
}

mod calibration {
    use super::*;

    #[test]
    fn temperature_scaling_lowers_ece() {
        // True P(y=1|z) = sigmoid(z), but the model reports margins 4x too large.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (mut margins, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..5000 {
            let z: f64 = rng.random_range(-4.0..4.0);
            labels.push(u8::from(rng.random::<f64>() < metrics::sigmoid(z)));
            margins.push(4.0 * z);
        }
        let raw: Vec<f64> = margins.iter().map(|&m| metrics::sigmoid(m)).collect();
        let t = metrics::fit_temperature(&margins, &labels);
        let cal: Vec<f64> = margins.iter().map(|&m| metrics::sigmoid(m / t)).collect();
        let (e0, e1) = (
            metrics::ece(&labels, &raw, 15),
            metrics::ece(&labels, &cal, 15),
        );
        assert!((t - 4.0).abs() < 0.5, "t = {t}");
        assert!(e1 < e0 / 2.0, "ECE {e0} -> {e1}");
        assert!(metrics::brier(&labels, &cal) < metrics::brier(&labels, &raw));
    }
}

mod training {
    use super::*;

    #[test]
    fn linear_head_learns_blobs_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        let inp = inputs(64);
        let s = TrainSettings::from_config(&cfg).unwrap();
        let dev = Default::default();
        let a = train::train_head::<Ad>(&inp.train, &inp.val, &s, &dev, &mut |_| Ok(())).unwrap();
        assert!(a.val_metrics.mcc > 0.9, "val MCC {}", a.val_metrics.mcc);
        assert!(a.history.len() == 8 && a.best_epoch >= 1);
        let b = train::train_head::<Ad>(&inp.train, &inp.val, &s, &dev, &mut |_| Ok(())).unwrap();
        let ba = checkpoint::head_bytes(&a.head, a.temperature, a.threshold).unwrap();
        let bb = checkpoint::head_bytes(&b.head, b.temperature, b.threshold).unwrap();
        assert_eq!(
            ba, bb,
            "same seed and inputs must give identical head bytes"
        );
        // A different seed gives a different head.
        let mut s2 = s.clone();
        s2.train.seed = 99;
        let c = train::train_head::<Ad>(&inp.train, &inp.val, &s2, &dev, &mut |_| Ok(())).unwrap();
        assert_ne!(
            ba,
            checkpoint::head_bytes(&c.head, c.temperature, c.threshold).unwrap()
        );
    }

    #[test]
    fn mlp_head_learns_and_early_stopping_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        cfg.head.kind = HeadType::Mlp;
        cfg.head.hidden = 16;
        cfg.head.dropout = 0.2;
        cfg.train.epochs = 40;
        cfg.train.patience = 2;
        cfg.train.label_smoothing = 0.1;
        let inp = inputs(32);
        let s = TrainSettings::from_config(&cfg).unwrap();
        let t = train::train_head::<Ad>(&inp.train, &inp.val, &s, &Default::default(), &mut |_| {
            Ok(())
        })
        .unwrap();
        assert!(t.val_metrics.mcc > 0.9, "val MCC {}", t.val_metrics.mcc);
        assert!(t.history.len() < 40, "early stopping never fired");
        assert_eq!(t.history.len(), t.best_epoch + 2);
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        let s = TrainSettings::from_config(&cfg).unwrap();
        let inp = inputs(8);
        let mut one_class = inp.train.clone();
        one_class.labels.iter_mut().for_each(|y| *y = 1);
        let e = train::train_head::<Ad>(&one_class, &inp.val, &s, &Default::default(), &mut |_| {
            Ok(())
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("one class"), "{e:#}");
        let other = blobs(50, 6, 1.0, 3);
        let e =
            train::train_head::<Ad>(&inp.train, &other, &s, &Default::default(), &mut |_| Ok(()))
                .unwrap_err();
        assert!(format!("{e:#}").contains("width"), "{e:#}");
        // A head it cannot build is refused when the settings are made, an unknown kind when the
        // config is read (naming the key), a bad dropout when training starts.
        let mut bad = cfg.clone();
        bad.head.kind = HeadType::Mlp;
        bad.head.hidden = 0;
        let e = TrainSettings::from_config(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("head.hidden"), "{e:#}");
        let e = Config::load(None, &["head.kind=tree".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("head.kind"), "{e:#}");
        let s_bad = TrainSettings { dropout: 1.5, ..s };
        assert!(train::train_head::<Ad>(
            &inp.train,
            &inp.val,
            &s_bad,
            &Default::default(),
            &mut |_| Ok(())
        )
        .is_err());
    }
}

mod runs {
    use super::*;

    #[test]
    fn run_writes_checkpoint_and_interrupted_run_keeps_latest() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        let inp = inputs(16);
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let dev = Default::default();
        let out = train::run_training::<Ad>(&cfg, &inp, quiet_opts(&cfg, warnings.clone()), &dev)
            .unwrap();
        let root = &cfg.paths.checkpoints;
        for f in ["head.safetensors", "run.yaml", "metrics.jsonl"] {
            assert!(out.dir.join(f).is_file(), "{f} missing");
        }
        assert_eq!(
            std::fs::read_to_string(root.join("latest")).unwrap().trim(),
            out.run_id
        );
        let jsonl = std::fs::read_to_string(out.dir.join("metrics.jsonl")).unwrap();
        let epochs: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            epochs.iter().filter(|v| v.get("val/mcc").is_some()).count(),
            8
        );

        // Reload: served answers cross 0.5 exactly where calibrated probabilities cross the threshold.
        let ck_dir = sv72::infer::ModelRef::checkpoint(None, root).unwrap();
        assert_eq!(ck_dir, out.dir);
        let ck = train::Checkpoint::<sv72::backend::Cpu>::load(&ck_dir, &dev).unwrap();
        assert_eq!(ck.info.run_id, out.run_id);
        let served = ck.predict_proba(&inp.val.x, &dev).unwrap();
        let margins = ck.head.margins(&inp.val.x, &dev).unwrap();
        for (p, z) in served.iter().zip(&margins) {
            let q = metrics::sigmoid(z / ck.info.temperature);
            if (q - ck.info.threshold).abs() > 1e-9 {
                assert_eq!(*p > 0.5, q > ck.info.threshold);
            }
        }
        let m = metrics::BinaryMetrics::compute(&inp.val.labels, &served);
        assert!((m.mcc - ck.info.metrics.val.mcc).abs() < 1e-9);

        // A run that fails mid-training leaves `latest` alone and writes no head.
        let mut opts = quiet_opts(&cfg, warnings);
        opts.on_epoch = Some(Box::new(|r| {
            if r.epoch == 3 {
                anyhow::bail!("injected failure")
            }
            Ok(())
        }));
        std::thread::sleep(std::time::Duration::from_millis(1100)); // distinct run id second
        let err = train::run_training::<Ad>(&cfg, &inp, opts, &dev).unwrap_err();
        assert!(format!("{err:#}").contains("injected failure"));
        assert_eq!(
            std::fs::read_to_string(root.join("latest")).unwrap().trim(),
            out.run_id
        );
        let failed: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && *p != out.dir)
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(!failed[0].join("head.safetensors").exists());
        assert!(sv72::infer::ModelRef::checkpoint(Some(&failed[0]), root).is_err());
    }

    #[test]
    fn tensorboard_events_are_framed_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        let out = train::run_training::<Ad>(
            &cfg,
            &inputs(8),
            quiet_opts(&cfg, Default::default()),
            &Default::default(),
        )
        .unwrap();
        let ev = std::fs::read_dir(&out.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("events.out.tfevents.")
            })
            .expect("event file");
        let records = tensorboard::read_records(&ev).unwrap();
        assert!(String::from_utf8_lossy(&records[0]).contains("brain.Event:2"));
        let mut mcc_steps = Vec::new();
        for r in &records[1..] {
            let (step, vals) = tensorboard::decode_scalars(r).unwrap();
            for (tag, v) in vals {
                if tag == "val/mcc" {
                    assert!((-1.0..=1.0).contains(&v));
                    mcc_steps.push(step);
                }
            }
        }
        assert_eq!(mcc_steps, (1..=8).collect::<Vec<i64>>());
        // Flipping one byte breaks a CRC.
        let mut bytes = std::fs::read(&ev).unwrap();
        let k = bytes.len() - 6;
        bytes[k] ^= 0x40;
        let bad = dir.path().join("bad.tfevents");
        std::fs::write(&bad, bytes).unwrap();
        assert!(format!("{:#}", tensorboard::read_records(&bad).unwrap_err()).contains("CRC"));
    }
}

mod wandb {
    use super::*;

    /// Requests seen by the stand-in: `(path, headers, body)`.
    type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

    /// A stand-in W&B server: records `(path, headers, body)` of each request; answers 500 to
    /// everything when `fail` is set.
    fn stand_in(fail: bool) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut headers = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    headers.push_str(&line);
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                seen2.lock().unwrap().push((
                    path.clone(),
                    headers,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                let (status, reply) = if fail {
                    ("500 Internal Server Error", "{}".to_string())
                } else if path == "/graphql" {
                    ("200 OK", r#"{"data":{"upsertBucket":{"bucket":{"id":"x","name":"r","project":{"name":"p","entity":{"name":"team"}}}}}}"#.to_string())
                } else {
                    ("200 OK", "{}".to_string())
                };
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len());
            }
        });
        (url, seen)
    }

    fn settings(url: &str, key: &str) -> tracking::WandbSettings {
        tracking::WandbSettings {
            base_url: url.into(),
            api_key: tracking::Secret::new(key),
            project: "sv72-test".into(),
            entity: None,
        }
    }

    fn all_text_under(dir: &Path) -> String {
        let mut s = String::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                s.push_str(&all_text_under(&p));
            } else {
                s.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
            }
        }
        s
    }

    #[test]
    fn stand_in_receives_metrics_and_key_stays_secret() {
        const KEY: &str = "local-0123456789abcdef0123456789abcdef01234567";
        let (url, seen) = stand_in(false);
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let mut opts = quiet_opts(&cfg, warnings.clone());
        opts.wandb = Some(settings(&url, KEY));
        train::run_training::<Ad>(&cfg, &inputs(8), opts, &Default::default()).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].0, "/graphql");
        assert!(seen[0].2.contains("sv72-test"));
        let stream: Vec<_> = seen
            .iter()
            .filter(|r| r.0.starts_with("/files/team/sv72-test/") && r.0.ends_with("/file_stream"))
            .collect();
        let history: String = stream.iter().map(|r| r.2.clone()).collect();
        assert_eq!(history.matches("val/mcc").count(), 8, "{history}");
        assert!(stream.last().unwrap().2.contains("\"complete\":true"));
        // The key is sent only as HTTP basic auth.
        assert!(seen
            .iter()
            .all(|r| r.1.to_ascii_lowercase().contains("authorization: basic ")));
        assert!(seen
            .iter()
            .all(|r| !r.0.contains(KEY) && !r.2.contains(KEY)));
        assert!(
            warnings.lock().unwrap().is_empty(),
            "{:?}",
            warnings.lock().unwrap()
        );
        assert!(!all_text_under(dir.path()).contains(KEY));
    }

    #[test]
    fn wandb_outage_does_not_fail_training() {
        const KEY: &str = "local-fedcba9876543210fedcba9876543210fedcba98";
        // Connection refused: bind then drop to get a closed port.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (failing, _) = stand_in(true);
        for url in [closed, failing] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = test_config(dir.path());
            let warnings = Arc::new(Mutex::new(Vec::new()));
            let mut opts = quiet_opts(&cfg, warnings.clone());
            opts.wandb = Some(settings(&url, KEY));
            let out =
                train::run_training::<Ad>(&cfg, &inputs(8), opts, &Default::default()).unwrap();
            assert!(out.dir.join("head.safetensors").is_file());
            let w = warnings.lock().unwrap();
            assert_eq!(w.len(), 1, "warn exactly once: {w:?}");
            assert!(w.iter().all(|m| !m.contains(KEY)));
            assert!(!all_text_under(dir.path()).contains(KEY));
        }
    }
}

mod eval_report {
    use super::*;
    use sv72::data::manifest::SourceKind;
    use sv72::eval::{build_report, write_report, EvalMeta, EvalPrediction, Latency};

    #[test]
    fn report_files_and_breakdowns() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut preds = Vec::new();
        for i in 0..120 {
            let label = (i % 2) as u8;
            let source = if i % 4 < 2 {
                SourceKind::Real
            } else {
                SourceKind::Synthetic
            };
            for level in 0..4u8 {
                // Harder levels are noisier.
                let noise = 0.1 + 0.15 * f64::from(level);
                let p = (if label == 1 { 0.75 } else { 0.25 } + rng.random_range(-noise..noise))
                    .clamp(0.0, 1.0);
                preds.push(EvalPrediction {
                    id: format!("img{i}"),
                    label,
                    source,
                    generator: if source == SourceKind::Real {
                        "cam".into()
                    } else {
                        "sdxl".into()
                    },
                    level,
                    draw: 0,
                    prob: p,
                });
            }
        }
        let meta = EvalMeta {
            checkpoint: "ck".into(),
            run_id: "run".into(),
            manifest: "m.parquet".into(),
            manifest_hash: "abc".into(),
            split: "test".into(),
            seed: 72,
            draws_per_image: 1,
            level_probs: [0.25; 4],
            score_sequences: 200,
        };
        let lat = Latency::from_samples("cpu", (1..=100).map(f64::from).collect());
        assert_eq!(
            lat.as_ref().map(|l| (l.p50_ms, l.p99_ms)),
            Some((50.0, 99.0))
        );
        let r = build_report(&preds, meta, lat).unwrap();
        assert_eq!(r.images, 120);
        assert_eq!(r.overall.n, 480);
        assert_eq!(r.by_level.len(), 4);
        assert_eq!(r.by_source.len(), 2);
        assert!(r.by_generator.contains_key("synthetic/sdxl"));
        assert!(r.by_level["0"].accuracy >= r.by_level["3"].accuracy);
        assert!(r.score_by_level["0"].mean >= r.score_by_level["3"].mean);
        assert!(
            r.expected_score.p05 <= r.expected_score.mean
                && r.expected_score.mean <= r.expected_score.p95
        );
        let dir = tempfile::tempdir().unwrap();
        let files = write_report(dir.path(), &r, &preds).unwrap();
        for f in &files {
            assert!(f.is_file(), "{}", f.display());
            if f.extension().unwrap() == "png" {
                let img = image::open(f).unwrap();
                assert_eq!(
                    (img.width(), img.height()),
                    (sv72::eval::plots::WIDTH, sv72::eval::plots::HEIGHT)
                );
            }
        }
        let back: sv72::eval::EvalReport =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(
            (back.images, back.overall.confusion, &back.meta),
            (r.images, r.overall.confusion, &r.meta)
        );
        assert!((back.expected_score.mean - r.expected_score.mean).abs() < 1e-12);
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("abc") && md.contains("seed 72") && md.contains("`ck`"));
    }
}

/// The binary end to end: demo data → ingest → synth-mix → train-head → eval, on the tiny
/// DINOv2-with-registers fixture.
mod cli_e2e {
    use std::path::Path;
    use std::process::Output;

    use sv72::eval::EvalReport;
    use sv72::train::RunInfo;

    fn backbone() -> String {
        super::common::fixture("backbones/dinov2_reg4_s36")
            .display()
            .to_string()
    }

    /// Runs `sv72 --set backbone.model=<fixture> ARGS` in `dir`.
    fn sv72(dir: &Path, args: &[&str]) -> Output {
        sv72_on(&backbone(), dir, args)
    }

    /// Runs `sv72 --set backbone.model=BB ARGS` in `dir`.
    fn sv72_on(bb: &str, dir: &Path, args: &[&str]) -> Output {
        let bb = format!("backbone.model={bb}");
        let all: Vec<&str> = ["--set", bb.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        super::common::sv72(dir, &all)
    }

    fn ok(dir: &Path, args: &[&str]) -> String {
        super::common::stdout_ok(&sv72(dir, args), args)
    }

    /// A SigLIP backbone end to end through the CLI: `embed` writes `[pooled ; patch mean]`
    /// features (cls = the MAP head's pooled output), `train-head` trains on them through the
    /// feature cache, and `eval` scores the checkpoint on the same backbone.
    #[test]
    fn siglip_backbone_embeds_trains_and_evaluates() {
        let bb = super::common::fixture("backbones/siglip-tiny")
            .display()
            .to_string();
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // The checkpoint's own processor (64x64), as a SigLIP user would run it.
        let run = |args: &[&str]| {
            let all: Vec<&str> = ["--set", "backbone.preprocess=processor"]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            super::common::stdout_ok(&sv72_on(&bb, d, &all), &all)
        };
        super::common::demo_mix(d, 16);
        let out = run(&[
            "embed",
            &bb,
            "--manifest",
            "mix",
            "--out",
            "feats.safetensors",
        ]);
        assert!(out.contains("embedded"), "{out}");
        let w = sv72::model::weights::Weights::open_files(&[d.join("feats.safetensors")]).unwrap();
        let (cls, shape) = w.f32_data("cls").unwrap();
        let (pooler, _) = w.f32_data("pooler").unwrap();
        let (mean, mshape) = w.f32_data("patch_mean").unwrap();
        assert_eq!(shape[1], 32, "siglip-tiny is 32 wide");
        assert_eq!(shape, mshape);
        assert!(shape[0] > 0);
        assert_eq!(cls, pooler, "SigLIP's cls is its pooled output");
        assert_ne!(
            pooler, mean,
            "pooled and mean features are different vectors"
        );
        assert!(pooler.iter().chain(&mean).all(|x| x.is_finite()));

        let stdout = run(&[
            "train-head",
            "--manifest",
            "mix",
            "--epochs",
            "3",
            "--views",
            "1",
        ]);
        let run_id = std::fs::read_to_string(d.join("checkpoints/latest")).unwrap();
        let run_id = run_id.trim();
        assert!(stdout.contains(run_id), "{stdout}");
        let info: RunInfo = serde_yaml::from_str(
            &std::fs::read_to_string(d.join("checkpoints").join(run_id).join("run.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(info.backbone.hidden_size, 32);
        assert_eq!(info.head.input_dim, 64, "[pooled ; patch mean]");
        assert!(info.manifest.train_rows > 0 && info.manifest.val_rows > 0);
        assert!((-1.0..=1.0).contains(&info.metrics.val.mcc));

        run(&["eval", "--out", "report"]);
        let r = report(&d.join("report/report.json"));
        assert_eq!(r.meta.run_id, run_id);
        assert!(r.images > 0);
        assert_eq!(r.overall.n, r.images * 4);
        assert!((0.0..=1.0).contains(&r.overall.accuracy));

        // A/B of the SigLIP head against a DINOv2 head on the same test split: each side
        // runs on its own backbone (decision: promote = exit 0, keep = exit 3).
        let siglip_run = d.join("checkpoints").join(run_id);
        let dino = ["--set", "backbone.preprocess=processor"];
        let args = [
            &dino[..],
            &["train-head", "--manifest", "mix", "--epochs", "2"],
        ]
        .concat();
        super::common::stdout_ok(&sv72_on(&backbone(), d, &args), &args);
        let dino_id = std::fs::read_to_string(d.join("checkpoints/latest")).unwrap();
        assert_ne!(dino_id.trim(), run_id);
        let siglip_run = siglip_run.display().to_string();
        let args = [
            "ab-test",
            "checkpoints/latest",
            siglip_run.as_str(),
            "--on",
            "mix:test",
            "--out",
            "ab",
        ];
        let out = super::common::sv72(d, &args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{args:?}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ab = super::common::decision(&d.join("ab"));
        assert_eq!(ab.a.id, dino_id.trim());
        assert_eq!(ab.b.id, run_id);
        assert!(ab.stats.answers > 0 && ab.stats.images > 0);

        // Export has no form for a SigLIP head yet: a clear error before anything is written.
        let hotkey = sv72::keys::ss58_encode(&[9; 32], 42);
        for target in ["subnet", "transformers"] {
            let args = [
                "export",
                siglip_run.as_str(),
                "--target",
                target,
                "--hotkey",
                hotkey.as_str(),
            ];
            let out = super::common::sv72(d, &args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{target}: {err}");
            assert!(err.contains("SigLIP backbones cannot be exported"), "{err}");
            assert!(
                !d.join("exports").exists()
                    || std::fs::read_dir(d.join("exports"))
                        .unwrap()
                        .next()
                        .is_none()
            );
        }
    }

    /// A SigLIP 2 NaFlex backbone through the CLI with its own processor (each image resized to
    /// its own patch grid, so batches are grouped by size): embed, train-head, eval, an A/B
    /// test against a DINOv2 head, and a clear refusal from export.
    #[test]
    fn naflex_backbone_embeds_trains_evaluates_and_refuses_export() {
        let bb = super::common::fixture("backbones/siglip2-tiny")
            .display()
            .to_string();
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let run = |args: &[&str]| {
            let all: Vec<&str> = ["--set", "backbone.preprocess=processor"]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            super::common::stdout_ok(&sv72_on(&bb, d, &all), &all)
        };
        super::common::demo_mix(d, 16);
        let args = [
            "embed",
            &bb,
            "--manifest",
            "mix",
            "--out",
            "feats.safetensors",
        ];
        assert!(run(&args).contains("embedded"));
        let w = sv72::model::weights::Weights::open_files(&[d.join("feats.safetensors")]).unwrap();
        let (pooler, shape) = w.f32_data("pooler").unwrap();
        let (mean, _) = w.f32_data("patch_mean").unwrap();
        assert_eq!(shape[1], 32, "siglip2-tiny is 32 wide");
        assert!(shape[0] > 0);
        assert_ne!(pooler, mean);
        assert!(pooler.iter().chain(&mean).all(|x| x.is_finite()));

        run(&[
            "train-head",
            "--manifest",
            "mix",
            "--epochs",
            "3",
            "--views",
            "1",
        ]);
        let run_id = std::fs::read_to_string(d.join("checkpoints/latest")).unwrap();
        let run_id = run_id.trim().to_string();
        let info: RunInfo = serde_yaml::from_str(
            &std::fs::read_to_string(d.join("checkpoints").join(&run_id).join("run.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(info.head.input_dim, 64, "[pooled ; patch mean]");
        run(&["eval", "--out", "report"]);
        let r = report(&d.join("report/report.json"));
        assert_eq!(r.meta.run_id, run_id);
        assert!(r.images > 0);

        // A/B against a DINOv2 head on the same test split, each on its own backbone.
        let ck = d.join("checkpoints").join(&run_id).display().to_string();
        let args = [
            "--set",
            "backbone.preprocess=processor",
            "train-head",
            "--manifest",
            "mix",
            "--epochs",
            "2",
        ];
        super::common::stdout_ok(&sv72_on(&backbone(), d, &args), &args);
        let dino_id = std::fs::read_to_string(d.join("checkpoints/latest")).unwrap();
        let args = [
            "ab-test",
            "checkpoints/latest",
            ck.as_str(),
            "--on",
            "mix:test",
            "--out",
            "ab",
        ];
        let out = super::common::sv72(d, &args);
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ab = super::common::decision(&d.join("ab"));
        assert_eq!(
            (ab.a.id.as_str(), ab.b.id.as_str()),
            (dino_id.trim(), run_id.as_str())
        );
        assert!(ab.stats.answers > 0 && ab.stats.images > 0);

        let hotkey = sv72::keys::ss58_encode(&[9; 32], 42);
        let args = [
            "export",
            ck.as_str(),
            "--target",
            "transformers",
            "--hotkey",
            hotkey.as_str(),
        ];
        let out = super::common::sv72(d, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("NaFlex") && err.contains("4.45.2"), "{err}");
    }

    /// An ensemble of a DINOv2-reg head and a SigLIP head (different backbones, widths 36 and
    /// 32, different preprocessing: the validator recipe with ImageNet mean/std vs SigLIP's own
    /// 64² processor with mean/std 0.5) through the CLI: `calibrate` fits and stores the
    /// stacking, `eval` and `ab-test` take the spec, and its answers are neither member's.
    #[test]
    fn dino_and_siglip_ensemble_calibrates_evaluates_and_ab_tests() {
        let siglip = super::common::fixture("backbones/siglip-tiny")
            .display()
            .to_string();
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        super::common::demo_mix(d, 16);
        let train = crate::common::QUICK_HEAD;
        ok(d, &train);
        let latest = || crate::common::latest_run(d);
        let dino_id = latest();
        let args = [&["--set", "backbone.preprocess=processor"][..], &train].concat();
        super::common::stdout_ok(&sv72_on(&siglip, d, &args), &args);
        let sig_id = latest();
        assert_ne!(dino_id, sig_id);
        let info = |id: &str| -> RunInfo {
            let p = d.join("checkpoints").join(id).join("run.yaml");
            serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let (di, si) = (info(&dino_id), info(&sig_id));
        assert_eq!((di.head.input_dim, si.head.input_dim), (72, 64));
        assert_ne!(
            di.backbone.preprocess, si.backbone.preprocess,
            "the members are preprocessed differently"
        );

        let spec = d.join("ens.yaml");
        std::fs::write(
            &spec,
            format!("members: [checkpoints/{dino_id}, checkpoints/{sig_id}]\n"),
        )
        .unwrap();
        let out = ok(d, &["calibrate", "ens.yaml", "--on", "mix"]);
        assert!(out.contains("temperature"), "{out}");
        let s = sv72::infer::ModelSpec::read(&spec).unwrap();
        let st = s.stacking.as_ref().expect("calibrate stores the stacking");
        assert_eq!(st.weights.len(), 2);
        assert!(st.bias.is_finite() && st.weights.iter().all(|w| w.is_finite()));
        assert_ne!(
            st,
            &sv72::infer::Stacking::equal(2),
            "fitted, not the default"
        );
        assert!(s.calibrated_on.as_deref().unwrap().contains("val"), "{s:?}");

        // `eval` with the spec, and with each member, on the same challenges.
        let eval = |model: &str, out: &str| {
            ok(
                d,
                &[
                    "eval",
                    "--checkpoint",
                    model,
                    "--on",
                    "mix:test",
                    "--out",
                    out,
                ],
            );
            let r = report(&d.join(out).join("report.json"));
            let preds =
                sv72::eval::read_predictions(&d.join(out).join(sv72::eval::PREDICTIONS_FILE))
                    .unwrap();
            assert!(r.images > 0);
            assert_eq!(r.overall.n, r.images * 4, "{out}: one answer per challenge");
            assert_eq!(preds.len(), r.overall.n, "{out}");
            assert!(preds.iter().all(|p| (0.0..=1.0).contains(&p.prob)), "{out}");
            let by_key: std::collections::BTreeMap<(String, u8, u32), f64> = preds
                .into_iter()
                .map(|p| ((p.id, p.level, p.draw), p.prob))
                .collect();
            (r, by_key)
        };
        let (er, ens) = eval("ens.yaml", "ev-ens");
        assert!(er.meta.run_id.contains("ensemble["), "{}", er.meta.run_id);
        // Without --on: the members' shared training manifest, report beside the spec.
        ok(d, &["eval", "--checkpoint", "ens.yaml"]);
        let again =
            sv72::eval::read_predictions(&d.join("ens-eval").join(sv72::eval::PREDICTIONS_FILE))
                .unwrap();
        assert_eq!(again.len(), ens.len());
        assert!(again
            .iter()
            .all(|p| ens[&(p.id.clone(), p.level, p.draw)] == p.prob));
        assert!(er.latency.as_ref().is_some_and(|l| l.samples > 0));
        for (id, out) in [(&dino_id, "ev-dino"), (&sig_id, "ev-sig")] {
            let (_, member) = eval(&format!("checkpoints/{id}"), out);
            assert_eq!(
                member.keys().collect::<Vec<_>>(),
                ens.keys().collect::<Vec<_>>(),
                "same challenges"
            );
            let differ = member
                .iter()
                .filter(|(k, p)| (ens[*k] - **p).abs() > 1e-4)
                .count();
            assert!(differ > 0, "the ensemble answers as {id} alone");
        }

        // A/B: the DINO head against the ensemble spec, on identical challenges.
        let args = [
            "ab-test",
            &format!("checkpoints/{dino_id}"),
            "ens.yaml",
            "--on",
            "mix:test",
            "--out",
            "ab",
            "--set",
            "ab_test.bootstrap=200",
        ]
        .map(|s| s.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sv72(d, &args);
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ab = super::common::decision(&d.join("ab"));
        assert_eq!(ab.a.id, dino_id);
        assert_eq!(ab.b.kind, "spec");
        assert_eq!(
            ab.mode, "images",
            "members on other backbones run end to end"
        );
        assert!(ab.b.id.contains("ensemble["), "{}", ab.b.id);
        assert_eq!(ab.stats.answers, er.overall.n);
        assert!(d.join("ab/report.md").is_file());
        let answers =
            std::fs::read_to_string(d.join("ab").join(sv72::eval::ab::ANSWERS_FILE)).unwrap();
        let paired: Vec<sv72::eval::ab::PairedAnswer> = answers
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(paired.len(), ab.stats.answers);
        assert!(
            paired.iter().any(|p| (p.prob_a - p.prob_b).abs() > 1e-4),
            "the ensemble answers as the DINO head"
        );
        assert!(ab.latency.as_ref().is_some_and(|l| l.b.samples > 0));

        // Through the loader `serve` uses: on one decoded batch of mixed sizes, the ensemble
        // answers the calibrated stacked logit of what each member, loaded alone with its own
        // preprocessing, answers for the same images.
        let mut cfg = sv72::config::Config::load(None, &[]).unwrap();
        cfg.paths.feature_cache = d.join("cache");
        let loader = sv72::infer::model_loader(&cfg, sv72::config::Device::Cpu).unwrap();
        let images: Vec<image::RgbImage> = [(64, 48), (300, 200), (97, 131)]
            .into_iter()
            .map(|(w, h)| {
                image::RgbImage::from_fn(w, h, |x, y| {
                    image::Rgb([
                        (x * 7 % 256) as u8,
                        (y * 5 % 256) as u8,
                        ((x + y) % 256) as u8,
                    ])
                })
            })
            .collect();
        let mut alone = Vec::new();
        for id in [&dino_id, &sig_id] {
            let mut m = loader(&d.join("checkpoints").join(id)).unwrap();
            alone.push(m.predict(&images).unwrap());
        }
        let got = loader(&spec).unwrap().predict(&images).unwrap();
        assert_eq!(got.len(), images.len());
        for (i, &g) in got.iter().enumerate() {
            let members = [f64::from(alone[0][i]), f64::from(alone[1][i])];
            let want = s.calibration.apply(st.logit(&members));
            assert!(
                (f64::from(g) - want).abs() < 1e-5,
                "image {i}: ensemble {g}, stacked members {want} ({members:?})"
            );
            assert!(
                members.iter().all(|&m| (f64::from(g) - m).abs() > 1e-6),
                "image {i}: ensemble {g} answers as a member {members:?}"
            );
        }
    }

    fn report(path: &Path) -> EvalReport {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn demo_set_trains_and_evaluates() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        super::common::demo_mix(d, 16);

        // Without the cuda feature, --device cuda is a clear error and writes nothing.
        if !cfg!(feature = "cuda") {
            let out = sv72(d, &["train-head", "--manifest", "mix", "--device", "cuda"]);
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("--features cuda"), "{err}");
            assert!(!d.join("checkpoints/latest").exists());
        }

        let stdout = ok(
            d,
            &[
                "train-head",
                "--manifest",
                "mix",
                "--epochs",
                "3",
                "--views",
                "1",
            ],
        );
        let latest = std::fs::read_to_string(d.join("checkpoints/latest")).unwrap();
        let run_id = latest.trim();
        assert!(stdout.contains(run_id), "{stdout}");
        let run = d.join("checkpoints").join(run_id);
        for f in ["head.safetensors", "run.yaml", "metrics.jsonl"] {
            assert!(run.join(f).is_file(), "{f} missing in {}", run.display());
        }
        let info: RunInfo =
            serde_yaml::from_str(&std::fs::read_to_string(run.join("run.yaml")).unwrap()).unwrap();
        let m = &info.manifest;
        assert!(m.train_images > 0 && m.val_images > 0);
        assert_eq!(m.train_rows, m.train_images * 2, "clean + 1 view per image");
        assert_eq!(m.val_rows, m.val_images * 4, "one challenge per level 0-3");
        assert_eq!(info.backbone.hidden_size, 36);
        assert_eq!(info.head.input_dim, 72);
        assert!(info.backbone.weights_hash.starts_with("bb-"));
        assert!(info.threshold > 0.0 && info.threshold < 1.0);
        assert!(info.temperature > 0.0 && info.temperature.is_finite());
        assert_eq!(info.metrics.epochs_run, 3);
        assert!((-1.0..=1.0).contains(&info.metrics.val.mcc));

        let table = ok(d, &["eval", "--out", "report"]);
        assert!(table.contains("level 3"), "{table}");
        let r = report(&d.join("report/report.json"));
        assert_eq!(r.meta.run_id, run_id);
        assert_eq!(r.meta.split, "test");
        assert!(r.images > 0);
        assert_eq!(r.overall.n, r.images * 4);
        let levels: Vec<&str> = r.by_level.keys().map(String::as_str).collect();
        assert_eq!(levels, ["0", "1", "2", "3"]);
        for m in std::iter::once(&r.overall).chain(r.by_level.values()) {
            assert!((0.0..=1.0).contains(&m.accuracy) && (-1.0..=1.0).contains(&m.mcc));
            assert!((0.0..=1.0).contains(&m.ece) && (0.0..=1.0).contains(&m.brier));
        }
        assert!((0.0..=1.0).contains(&r.expected_score.mean));
        let lat = r.latency.as_ref().expect("latency measured");
        assert_eq!(lat.device, "cpu");
        assert_eq!(lat.samples, sv72::eval::challenges::LATENCY_SAMPLES);
        assert!(lat.p50_ms > 0.0 && lat.p50_ms <= lat.p99_ms);
        for png in ["roc", "reliability", "score_by_level", "confusion"] {
            let p = d.join("report").join(format!("{png}.png"));
            image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        assert!(d.join("report/report.md").is_file());

        // Fixed seed and cached features: evaluating again (into the checkpoint folder, the
        // default) gives the same answers.
        ok(d, &["eval", "--checkpoint", "checkpoints/latest"]);
        let again = report(&run.join("report.json"));
        assert_eq!(again.overall, r.overall);
        assert_eq!(again.by_level, r.by_level);
    }
}
