//! `sv72 retrain-check`: decay schedule, drift signals, exit codes, `--json`, the lock, `--run`
//! pipelines (failure, ab-test keep) and the calendar file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sv72::config::CycleConfig;
use sv72::cycle::lock::RunLock;
use sv72::cycle::pipeline::{run_pipeline, Outcome, PipelineOptions};
use sv72::cycle::schedule::{Schedule, Status};
use sv72::cycle::signals::{compute, ks, psi, PSI_EPSILON};
use sv72::data::manifest::SourceKind;
use sv72::eval::{write_predictions, EvalPrediction};
use sv72::serve::predlog::read_prediction_log;

/// 2026-01-01T00:00:00Z, the fake submission.
const SUBMITTED: i64 = 1_767_225_600;
const RUN_ID: &str = "run-a";

fn submitted() -> DateTime<Utc> {
    DateTime::from_timestamp(SUBMITTED, 0).unwrap()
}

fn day(n: i64) -> String {
    (submitted() + Duration::days(n)).to_rfc3339()
}

fn hotkey() -> String {
    sv72::keys::ss58_encode(&[7; 32], 42)
}

/// A miner folder: a hand-made deployed export (relative symlink), its source checkpoint's eval
/// predictions, and a config that points every path inside the folder.
struct Miner {
    dir: tempfile::TempDir,
}

impl Miner {
    fn new(extra_yaml: &str) -> Miner {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let export = root.join("exports/sv72-roadwork-1.0.0");
        std::fs::create_dir_all(&export).unwrap();
        let card = serde_json::json!({
            "model_name": "sv72-roadwork",
            "description": "test model",
            "version": "1.0.0",
            "submitted_by": hotkey(),
            "submission_time": SUBMITTED,
        });
        std::fs::write(export.join("model_card.json"), card.to_string()).unwrap();
        std::fs::write(
            export.join("sv72_export.json"),
            serde_json::json!({"run_id": RUN_ID}).to_string(),
        )
        .unwrap();
        std::fs::write(export.join("model.safetensors"), b"weights").unwrap();
        std::os::unix::fs::symlink("sv72-roadwork-1.0.0", root.join("exports/deployed")).unwrap();
        std::fs::write(
            root.join("cfg.yaml"),
            format!(
                "paths:\n  checkpoints: checkpoints\n  datasets: datasets\n\
                 cycle:\n  lock_file: checkpoints/.retrain.lock\n  min_answers: 4\n{extra_yaml}"
            ),
        )
        .unwrap();
        Miner { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Baseline eval answers of the deployed model's source checkpoint.
    fn write_baseline(&self, probs: &[f64]) {
        let preds: Vec<EvalPrediction> = probs
            .iter()
            .enumerate()
            .map(|(i, p)| EvalPrediction {
                id: format!("img{i}"),
                label: u8::from(*p > 0.5),
                source: SourceKind::Real,
                generator: "natix".into(),
                level: 0,
                draw: 0,
                prob: *p,
            })
            .collect();
        let p = self
            .root()
            .join("checkpoints")
            .join(RUN_ID)
            .join("predictions.jsonl");
        write_predictions(&p, &preds).unwrap();
    }

    /// Serve log lines `(time, image_hash, prediction, scored)`.
    fn write_log(&self, rows: &[(String, &str, f64, bool)]) {
        let mut text = String::new();
        for (t, h, p, scored) in rows {
            text.push_str(
                &serde_json::json!({
                    "time": t, "validator": hotkey(), "image_hash": h, "prediction": p,
                    "scored": scored, "latency_ms": 3.0, "model": "sv72-roadwork-1.0.0",
                    "saved_image": null,
                })
                .to_string(),
            );
            text.push('\n');
        }
        let p = self.root().join("logs/predictions.jsonl");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn sv72(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sv72"))
            .current_dir(self.root())
            .env("SV72_NO_PROGRESS", "1")
            .args(["--config", "cfg.yaml"])
            .args(args)
            .output()
            .unwrap()
    }

    fn deployed_state(&self) -> (PathBuf, Vec<u8>) {
        let link = self.root().join("exports/deployed");
        (
            std::fs::read_link(&link).unwrap(),
            std::fs::read(link.join("model_card.json")).unwrap(),
        )
    }

    fn run_logs(&self) -> Vec<String> {
        let dir = self.root().join("checkpoints/.retrain-runs");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

#[test]
fn decay_schedule_on_boundary_days() {
    let sched = |decay| {
        Schedule::from_config(&CycleConfig {
            decay_days: decay,
            ..CycleConfig::default()
        })
        .unwrap()
    };
    use Status::*;
    let s0 = sched(0);
    for (d, factor, status, next_alert) in [
        (44, 1.0, Ok, Some(45)),
        (45, 1.0, Alert, Some(60)),
        (59, 1.0, Alert, Some(60)),
        (60, 1.0, RetrainDue, Some(75)),
        (89, 1.0, RetrainDue, Some(90)),
        (90, 0.0, Expired, None),
        (91, 0.0, Expired, None),
    ] {
        let p = s0.position_at(submitted(), submitted() + Duration::days(d));
        assert_eq!(p.day, d);
        assert_eq!(p.reward_factor, factor, "decay 0, day {d}");
        assert_eq!(p.status, status, "decay 0, day {d}");
        assert_eq!(p.next_alert_day, next_alert, "decay 0, day {d}");
        assert_eq!(p.retrain_due_in_days, 60 - d);
        assert_eq!(p.expires_in_days, 90 - d);
    }
    let s30 = sched(30);
    for (d, factor, status) in [
        (44, 1.0, Ok),
        (45, 1.0, Alert),
        (59, 1.0, Alert),
        (60, 1.0, RetrainDue),
        (89, 1.0, RetrainDue),
        (90, 1.0, RetrainDue),
        (91, 29.0 / 30.0, RetrainDue),
        (105, 0.5, RetrainDue),
        (119, 1.0 / 30.0, RetrainDue),
        (120, 0.0, Expired),
        (400, 0.0, Expired),
    ] {
        let p = s30.position(d as f64);
        assert!(
            (p.reward_factor - factor).abs() < 1e-12,
            "decay 30, day {d}: {} != {factor}",
            p.reward_factor
        );
        assert_eq!(p.status, status, "decay 30, day {d}");
        assert_eq!(p.expires_in_days, 120 - d);
    }
    // Half a day into the decay: the factor falls continuously, not per whole day.
    assert!((s30.reward_factor(90.5) - (1.0 - 0.5 / 30.0)).abs() < 1e-12);
}

#[test]
fn psi_and_ks_on_known_distributions() {
    let same = [0.05, 0.15, 0.55, 0.95];
    assert_eq!(psi(&same, &same), Some(0.0));
    assert_eq!(ks(&same, &same), Some(0.0));
    // Half in bin 0 and half in bin 9, against a quarter / three quarters:
    // PSI = (0.25-0.5)·ln(0.25/0.5) + (0.75-0.5)·ln(0.75/0.5) = 0.25·ln 3.
    let expected = [0.05, 0.05, 0.95, 0.95];
    let actual = [0.05, 0.95, 0.95, 0.95];
    let p = psi(&expected, &actual).unwrap();
    assert!((p - 0.25 * 3f64.ln()).abs() < 1e-12, "{p}");
    assert!((ks(&expected, &actual).unwrap() - 0.25).abs() < 1e-12);
    // Everything moved from the lowest to the highest bin: the empty bins use epsilon.
    let p = psi(&[0.01; 10], &[0.99; 10]).unwrap();
    let want = 2.0 * (1.0 - PSI_EPSILON) * (1.0 / PSI_EPSILON).ln();
    assert!((p - want).abs() < 1e-9, "{p} vs {want}");
    assert_eq!(ks(&[0.01; 10], &[0.99; 10]), Some(1.0));
    // Shifted grids: F_e(0.2) = 0.5 while F_a(0.2) = 0 → D = 0.5.
    assert_eq!(ks(&[0.1, 0.2, 0.3, 0.4], &[0.3, 0.4, 0.5, 0.6]), Some(0.5));
    assert_eq!(psi(&[], &[0.5]), None);
}

#[test]
fn signals_from_a_synthetic_log() {
    let m = Miner::new("");
    let t = day(10);
    m.write_log(&[
        (day(1), "old", 0.5, true), // outside a 7-day window ending on day 10
        (t.clone(), "a", 0.45, true),
        (t.clone(), "a", 0.45, true), // same image again: one hard case
        (t.clone(), "b", 0.6, true),  // band edge counts
        (t.clone(), "c", 0.9, true),
        (t.clone(), "d", 0.1, true),
        (t.clone(), "e", 0.5, false), // fallback: no model answered
    ]);
    let since = submitted() + Duration::days(3);
    let read = read_prediction_log(&m.root().join("logs/predictions.jsonl"), Some(since)).unwrap();
    assert_eq!(read.older, 1);
    let baseline = [0.1, 0.9, 0.9, 0.1];
    let s = compute(Some(&read.records), Some(&baseline), [0.4, 0.6]);
    assert_eq!(s.answers, Some(5));
    assert_eq!(s.uncertain_share, Some(3.0 / 5.0));
    assert_eq!(s.hard_cases, Some(2));
    let served = [0.45, 0.45, 0.6, 0.9, 0.1];
    assert_eq!(s.psi, psi(&baseline, &served));
    assert_eq!(s.ks, ks(&baseline, &served));
    let none = compute(None, Some(&baseline), [0.4, 0.6]);
    assert_eq!(
        (none.answers, none.psi, none.hard_cases),
        (None, None, None)
    );
}

#[test]
fn json_object_and_signal_alert_via_the_binary() {
    let m = Miner::new("");
    m.write_baseline(&[0.1, 0.1, 0.9, 0.9]);
    let t = day(10);
    m.write_log(&[
        (t.clone(), "a", 0.45, true),
        (t.clone(), "b", 0.55, true),
        (t.clone(), "c", 0.5, true),
        (t.clone(), "d", 0.95, true),
    ]);
    let o = m.sv72(&["retrain-check", "--json", "--now", &day(10)]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(v["status"], "alert");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["days_since_submission"], 10);
    assert_eq!(v["reward_factor"], 1.0);
    assert_eq!(v["next_alert_day"], 45);
    assert_eq!(v["retrain_due_in_days"], 50);
    assert_eq!(v["expires_in_days"], 80);
    assert_eq!(v["model"]["version"], "1.0.0");
    let s = &v["signals"];
    assert_eq!(s["answers"], 4);
    assert_eq!(s["uncertain_share"], 0.75);
    assert_eq!(s["hard_cases"], 3);
    let want_psi = psi(&[0.1, 0.1, 0.9, 0.9], &[0.45, 0.55, 0.5, 0.95]).unwrap();
    assert!((s["psi"].as_f64().unwrap() - want_psi).abs() < 1e-12);
    assert_eq!(s["ks"], 0.5);
    assert!(s["baseline"]
        .as_str()
        .unwrap()
        .ends_with("run-a/predictions.jsonl"));
    let reasons: Vec<String> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("uncertain share 75.0%")));
    assert!(reasons.iter().any(|r| r.contains("PSI")));
    // Raising the thresholds silences the signals: back to ok.
    let o = m.sv72(&[
        "--set",
        "cycle.max_uncertain_share=0.9",
        "--set",
        "cycle.max_psi=100",
        "retrain-check",
        "--now",
        &day(10),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(line.starts_with("retrain-check: OK"), "{line}");
    assert!(line.contains("4 answers") && line.contains("uncertain 75.0%"));
}

#[test]
fn every_exit_code_via_the_binary() {
    let m = Miner::new("");
    // No serve log and no baseline: signals n/a, the schedule decides.
    for (d, code, status) in [
        (10, 0, "ok"),
        (50, 3, "alert"),
        (70, 4, "retrain_due"),
        (95, 5, "expired"),
    ] {
        let o = m.sv72(&["retrain-check", "--json", "--now", &day(d)]);
        assert_eq!(o.status.code(), Some(code), "day {d}: {}", text(&o));
        let v = json(&o);
        assert_eq!(v["status"], status);
        assert!(v["signals"]["answers"].is_null());
        assert!(v["signals"]["psi"].is_null());
    }
    // Expired beats retrain due beats alert: the reasons list all, the status the worst.
    let v = json(&m.sv72(&["retrain-check", "--json", "--now", &day(95)]));
    assert_eq!(v["reasons"].as_array().unwrap().len(), 2, "{v}");
    // Human line for n/a signals.
    let o = m.sv72(&["retrain-check", "--now", &day(70)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("RETRAIN DUE") && out.contains("n/a answers"),
        "{out}"
    );
    // A missing model card is an error that says to deploy.
    std::fs::remove_file(m.root().join("exports/deployed")).unwrap();
    let o = m.sv72(&["retrain-check", "--now", &day(10)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error:") && err.contains("sv72 deploy"),
        "{err}"
    );
    // A bad --now is a usage error.
    let o = m.sv72(&["retrain-check", "--now", "yesterday"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn calendar_file_parses_back() {
    let m = Miner::new("");
    let o = m.sv72(&[
        "retrain-check",
        "--now",
        &day(10),
        "--calendar",
        "cal/sv72.ics",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let raw = std::fs::read_to_string(m.root().join("cal/sv72.ics")).unwrap();
    assert!(raw.ends_with("\r\n"));
    assert_eq!(raw.matches('\n').count(), raw.matches("\r\n").count());
    for l in raw.split("\r\n") {
        assert!(l.len() <= 75, "line of {} octets: {l:?}", l.len());
    }
    let unfolded = raw.replace("\r\n ", "");
    assert!(raw.len() > unfolded.len(), "long descriptions should fold");
    let lines: Vec<&str> = unfolded.split("\r\n").collect();
    assert_eq!(lines[0], "BEGIN:VCALENDAR");
    let mut events = Vec::new();
    let mut cur: Option<Vec<(String, String)>> = None;
    for l in &lines {
        match *l {
            "BEGIN:VEVENT" => cur = Some(Vec::new()),
            "END:VEVENT" => events.push(cur.take().unwrap()),
            _ => {
                if let (Some(ev), Some((k, v))) = (cur.as_mut(), l.split_once(':')) {
                    ev.push((k.to_string(), v.to_string()));
                }
            }
        }
    }
    let get = |ev: &Vec<(String, String)>, k: &str| {
        ev.iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let dates: Vec<String> = events
        .iter()
        .map(|e| get(e, "DTSTART;VALUE=DATE"))
        .collect();
    let want: Vec<String> = [45, 60, 75, 90]
        .iter()
        .map(|d| {
            (NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Duration::days(*d))
                .format("%Y%m%d")
                .to_string()
        })
        .collect();
    assert_eq!(dates, want);
    assert_eq!(dates[0], "20260215");
    let summaries: Vec<String> = events.iter().map(|e| get(e, "SUMMARY")).collect();
    assert!(
        summaries[1].contains("alert\\, retrain due"),
        "{summaries:?}"
    );
    assert!(summaries[3].contains("expires"), "{summaries:?}");
    assert_eq!(get(&events[0], "DTEND;VALUE=DATE"), "20260216");
    assert_eq!(get(&events[0], "DTSTAMP"), "20260111T000000Z");
    let uids: Vec<String> = events.iter().map(|e| get(e, "UID")).collect();
    assert_eq!(uids[0], "sv72-sv72-roadwork-1.0.0-day45@sv72");

    // Re-written later and with a decay period: same UIDs for the same days, new DTSTAMP,
    // extra decay-start (merged into day 90) and expiry (day 120) events.
    let o = m.sv72(&[
        "--set",
        "cycle.decay_days=30",
        "retrain-check",
        "--now",
        &day(20),
        "--calendar",
        "cal/sv72.ics",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let raw2 = std::fs::read_to_string(m.root().join("cal/sv72.ics"))
        .unwrap()
        .replace("\r\n ", "");
    let uids2: Vec<&str> = raw2
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("UID:"))
        .collect();
    assert_eq!(uids2.len(), 5);
    assert_eq!(
        uids2[..4],
        uids.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert!(uids2[4].ends_with("day120@sv72"));
    assert!(raw2.contains("DTSTART;VALUE=DATE:20260501"));
    assert!(raw2.contains("DTSTAMP:20260121T000000Z"));
    assert!(raw2.contains("reward decay starts"));
}

#[test]
fn lock_held_exits_7_and_stale_lock_is_taken_over() {
    let m = Miner::new(
        "  pipeline:\n    - [demo-data, --out, \"demo-{date}\", --count, \"2\", --no-extras]\n",
    );
    let lock_path = m.root().join("checkpoints/.retrain.lock");
    {
        let (_held, _) = RunLock::acquire(&lock_path).unwrap();
        let o = m.sv72(&["retrain-check", "--run", "--force", "--now", &day(70)]);
        assert_eq!(o.status.code(), Some(7), "{}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("holds the lock"));
        assert!(!m.root().join("demo-20260312").exists(), "nothing may run");
        assert!(lock_path.exists(), "the holder's lock must stay");
    }
    assert!(!lock_path.exists());
    // A lock whose process is gone: taken over with a warning, then removed.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(&lock_path, format!("{dead}\n2026-01-01T00:00:00Z\n")).unwrap();
    let o = m.sv72(&["retrain-check", "--run", "--now", &day(70)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stale lock"),
        "{}",
        text(&o)
    );
    assert!(m.root().join("demo-20260312/real").is_dir(), "{}", text(&o));
    assert!(!lock_path.exists(), "lock removed after the run");
    assert!(m.run_logs()[0].contains("all 1 step(s) succeeded"));
}

#[test]
fn failed_middle_step_leaves_deployed_model_untouched() {
    let m = Miner::new(
        "  pipeline:\n\
         \x20   - [demo-data, --out, \"demo-{date}\", --count, \"2\", --no-extras]\n\
         \x20   - [ingest, --name, fresh, --folder, \"${SV72_TEST_INBOX}/missing\"]\n\
         \x20   - [demo-data, --out, \"never-{date}\", --count, \"2\"]\n",
    );
    let before = m.deployed_state();
    // Not due on day 10: --run does nothing without --force.
    let o = m.sv72(&["retrain-check", "--run", "--now", &day(10)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("not due"));
    assert!(!m.root().join("demo-20260111").exists());

    let secret = "inbox-s3cret-path-value";
    let o = Command::new(env!("CARGO_BIN_EXE_sv72"))
        .current_dir(m.root())
        .env("SV72_NO_PROGRESS", "1")
        .env("SV72_TEST_INBOX", secret)
        .args(["--config", "cfg.yaml", "retrain-check", "--run"])
        .args(["--now", &day(95)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains("step 2/3") && all.contains("exit code 1"),
        "{all}"
    );
    assert!(all.contains("untouched"), "{all}");
    assert!(!all.contains(secret), "an expanded variable leaked: {all}");
    assert!(m.root().join("demo-20260406/real").is_dir(), "step 1 ran");
    assert!(
        !m.root().join("never-20260406").exists(),
        "step 3 must not run"
    );
    assert_eq!(m.deployed_state(), before);
    assert!(!m.root().join("checkpoints/.retrain.lock").exists());
    let logs = m.run_logs();
    assert_eq!(logs.len(), 1);
    assert!(logs[0].contains("[2/3] sv72 ingest"), "{}", logs[0]);
    assert!(logs[0].contains("exit 1"), "{}", logs[0]);
    assert!(
        logs[0].contains("| error:"),
        "stderr tail kept: {}",
        logs[0]
    );
    assert!(logs[0].contains("${SV72_TEST_INBOX}") && !logs[0].contains(secret));
}

#[test]
fn run_passes_config_and_overrides_to_every_step() {
    let m = Miner::new(
        "  pipeline:\n\
         \x20   - [demo-data, --out, demo, --count, \"2\", --no-extras]\n\
         \x20   - [ingest, --name, \"fresh-{date}\", --folder, demo/real, --source, real, --generator, demo]\n",
    );
    let o = m.sv72(&[
        "--set",
        "paths.datasets=alt-datasets",
        "retrain-check",
        "--run",
        "--json",
        "--now",
        &day(61),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // stdout stays one JSON object even though the steps print.
    assert_eq!(json(&o)["status"], "retrain_due");
    assert!(m
        .root()
        .join("alt-datasets/fresh-20260303/manifest.parquet")
        .is_file());
}

/// A stand-in sv72 for the pipeline runner: records its arguments, exits 3 for `ab-test`.
fn fake_sv72(dir: &Path, ab_code: i32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("fake-sv72.sh");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$*\" >> \"{}\"\nfor a in \"$@\"; do [ \"$a\" = ab-test ] && exit {ab_code}; done\nexit 0\n",
            dir.join("calls.txt").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn ab_test_keep_ends_the_pipeline_without_deploying() {
    let dir = tempfile::tempdir().unwrap();
    let steps: Vec<Vec<String>> = [
        vec!["train-head", "--run-id", "r-{date}"],
        vec!["ab-test", "exports/deployed", "checkpoints/latest"],
        vec!["export", "checkpoints/latest"],
        vec!["deploy", "exports/latest"],
    ]
    .iter()
    .map(|s| s.iter().map(|a| a.to_string()).collect())
    .collect();
    let opts = |exe| PipelineOptions {
        exe,
        global_args: vec!["--config".into(), "my.yaml".into()],
        now: submitted(),
        log_dir: dir.path().join("runs"),
        stdout_to_stderr: true,
    };
    let rep = run_pipeline(&steps, &opts(fake_sv72(dir.path(), 3))).unwrap();
    assert_eq!(
        rep.outcome,
        Outcome::Kept {
            step: 2,
            skipped: 2
        }
    );
    let calls = std::fs::read_to_string(dir.path().join("calls.txt")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "--config my.yaml train-head --run-id r-20260101",
            "--config my.yaml ab-test exports/deployed checkpoints/latest"
        ]
    );
    assert!(std::fs::read_to_string(&rep.log)
        .unwrap()
        .contains("kept the current model"));

    // ab-test promoting (0) runs everything; an ab-test error (1) is a failure.
    std::fs::remove_file(dir.path().join("calls.txt")).unwrap();
    let rep = run_pipeline(&steps, &opts(fake_sv72(dir.path(), 0))).unwrap();
    assert_eq!(rep.outcome, Outcome::Completed { steps: 4 });
    let rep = run_pipeline(&steps, &opts(fake_sv72(dir.path(), 1))).unwrap();
    assert!(matches!(
        rep.outcome,
        Outcome::Failed {
            step: 2,
            code: Some(1),
            ..
        }
    ));
}

#[test]
fn failed_run_restores_a_switched_deployed_link() {
    let m = Miner::new("");
    let root = m.root();
    std::fs::create_dir_all(root.join("exports/sv72-roadwork-1.0.1")).unwrap();
    let link = root.join("exports/deployed");
    let snap = sv72::cycle::deployed::DeployedSnapshot::take(&link).unwrap();
    assert!(!snap.restore_if_changed().unwrap());
    // A `deploy` step switched the link, then a later step failed.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("sv72-roadwork-1.0.1", &link).unwrap();
    assert!(snap.restore_if_changed().unwrap());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("sv72-roadwork-1.0.0")
    );
    assert!(link.join("model_card.json").is_file());
}

#[test]
fn example_config_loads_and_expands() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cycle-example.yaml");
    let cfg = sv72::config::Config::load(Some(&path), &[]).unwrap();
    let mut cycle = cfg.cycle.clone();
    // The whole loop, in order.
    let names: Vec<&str> = cycle.pipeline.iter().map(|s| s[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "mine-hard",
            "generate",
            "ingest",
            "ingest",
            "synth-mix",
            "train-head",
            "eval",
            "ab-test",
            "export",
            "register",
            "deploy"
        ]
    );
    assert!(cycle.pipeline[8].iter().any(|a| a == "--push"));
    assert_eq!(cycle.pipeline[10], ["deploy", "exports/latest"]);
    cycle.pipeline.clear();
    assert_eq!(
        cycle,
        CycleConfig::default(),
        "example schedule drifted from the defaults"
    );
    let env = |k: &str| match k {
        "SV72_UID" => Some("72".to_string()),
        _ => Some(format!("value-of-{k}")),
    };
    let steps =
        sv72::cycle::pipeline::expand_steps(&cfg.cycle.pipeline, submitted(), &env).unwrap();
    assert_eq!(steps[0].args.last().unwrap(), "hard/20260101");
    assert_eq!(steps[2].args[2], "natix-20260101");
    assert_eq!(steps[3].args[4], "generated/20260101/generated.csv");
    assert_eq!(steps[8].args[3], "value-of-SV72_HOTKEY_SS58");
    assert_eq!(steps[8].template[3], "${SV72_HOTKEY_SS58}");
    // generate writes where the ingest step after it reads.
    let out = &steps[1].args[steps[1].args.iter().position(|a| a == "--out").unwrap() + 1];
    assert_eq!(
        format!("{out}/{}", sv72::generate::CSV_FILE),
        steps[3].args[4]
    );
    // The commented-out finetune alternative of the training step.
    let text = std::fs::read_to_string(&path).unwrap();
    let alt = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("#  - [finetune"))
        .expect("the finetune alternative is in the example");
    let alt: Vec<Vec<String>> =
        serde_yaml::from_str(&format!("- [finetune{alt}")).expect("it is a YAML step");
    let mut steps = steps;
    steps.extend(sv72::cycle::pipeline::expand_steps(&alt, submitted(), &env).unwrap());
    assert_eq!(steps.last().unwrap().args[2], "mix-20260101");
    // Every step must be a command line this binary accepts, so the example cannot rot when a
    // subcommand's flags change.
    use clap::Parser;
    for s in &steps {
        let argv = std::iter::once("sv72".to_string()).chain(s.args.iter().cloned());
        if let Err(e) = sv72::cli::Cli::try_parse_from(argv) {
            panic!("example step {:?} does not parse: {e}", s.template);
        }
    }
}

/// `retrain-check --run` runs the synthetic half of the loop through the binary: photos ingested,
/// a stand-in A1111 on 127.0.0.1 makes t2i images and i2i variants of two ingested photos, its
/// CSV ingests as it is (children in their parent's split), and synth-mix mixes both sets.
#[test]
fn run_generates_ingests_and_mixes_against_a_standin_server() {
    use crate::common::http::{self as standin, resp_json, Req};
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use serde_json::{json, Value};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use sv72::data::manifest::read_manifest;

    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(1));
    let log = calls.clone();
    let base = standin::start(Arc::new(move |r: &Req| {
        let v = r.json();
        let n = v["batch_size"].as_u64().unwrap_or(1).clamp(1, 4);
        let seed = v["seed"].as_u64().unwrap_or(0);
        let (w, h) = (
            v["width"].as_u64().unwrap_or(64) as u32,
            v["height"].as_u64().unwrap_or(64) as u32,
        );
        // Noise, so that no two answers are pHash near duplicates.
        let images: Vec<String> = (0..n)
            .map(|_| {
                use rand::{Rng, SeedableRng};
                let mut rng =
                    rand_chacha::ChaCha8Rng::seed_from_u64(next.fetch_add(1, Ordering::SeqCst));
                let img = image::RgbImage::from_fn(w, h, |_, _| {
                    image::Rgb([rng.random(), rng.random(), rng.random()])
                });
                let mut out = std::io::Cursor::new(Vec::new());
                img.write_to(&mut out, image::ImageFormat::Png).unwrap();
                B64.encode(out.into_inner())
            })
            .collect();
        let info = json!({
            "all_seeds": (0..n).map(|k| seed + k).collect::<Vec<_>>(),
            "sd_model_name": "sdxl-standin",
        });
        log.lock().unwrap().push((r.path.clone(), v));
        resp_json(
            200,
            json!({"images": images, "parameters": {}, "info": info.to_string()}),
        )
    }));

    let m = Miner::new(&format!(
        "  pipeline:\n\
         \x20   - [ingest, --name, natix, --folder, demo/real, --source, real, --generator, demo]\n\
         \x20   - [generate, --prompts, prompts.jsonl, --out, \"generated/{{date}}\"]\n\
         \x20   - [ingest, --name, synthetic, --csv, \"generated/{{date}}/generated.csv\"]\n\
         \x20   - [synth-mix, --name, \"mix-{{date}}\", --real, natix, --synthetic, synthetic]\n\
         generate:\n  backend: a1111\n  endpoint: {base}\n  width: 64\n  height: 64\n  steps: 4\n\
         \x20 images_per_prompt: 2\n  batch: 2\n  timeout_s: 20\n  attempts: 2\n  backoff_ms: 10\n"
    ));
    let o = m.sv72(&["demo-data", "--out", "demo", "--count", "16", "--no-extras"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = |class: &str| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(m.root().join("demo/real").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v[0].clone()
    };
    let (src_road, src_none) = (first("roadwork"), first("none"));
    let prompts = [
        json!({"id": "t-road", "prompt": "a road with orange cones", "label": "roadwork", "seed": 5}),
        json!({"id": "t-none", "prompt": "an empty street", "label": "none", "seed": 6}),
        json!({"id": "i-road", "prompt": "the same scene at dusk", "label": "roadwork",
               "image": src_road, "strength": 0.4}),
        json!({"id": "i-none", "prompt": "the same scene in fog", "label": "none",
               "image": src_none}),
    ]
    .map(|p| p.to_string() + "\n")
    .concat();
    std::fs::write(m.root().join("prompts.jsonl"), prompts).unwrap();

    let o = m.sv72(&["retrain-check", "--run", "--json", "--now", &day(61)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json(&o)["status"], "retrain_due");

    // One request per prompt (2 images each); img2img carried the photo itself.
    let calls = calls.lock().unwrap();
    let routes: Vec<&str> = calls.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(routes.len(), 4, "{routes:?}");
    assert_eq!(
        routes.iter().filter(|r| **r == "/sdapi/v1/img2img").count(),
        2
    );
    for (route, v) in calls.iter() {
        if route == "/sdapi/v1/img2img" {
            let init = B64.decode(v["init_images"][0].as_str().unwrap()).unwrap();
            assert!(
                init == std::fs::read(&src_road).unwrap()
                    || init == std::fs::read(&src_none).unwrap()
            );
        }
    }

    let datasets = m.root().join("datasets");
    let real = read_manifest(&datasets.join("natix/manifest.parquet")).unwrap();
    let synth = read_manifest(&datasets.join("synthetic/manifest.parquet")).unwrap();
    assert_eq!(synth.len(), 8);
    let mut parents = std::collections::BTreeSet::new();
    for r in &synth {
        assert_eq!(r.source, SourceKind::Synthetic);
        assert_eq!(r.generator, "a1111/sdxl-standin");
        if let Some(p) = &r.parent {
            let parent = real.iter().find(|x| &x.id == p).expect("parent ingested");
            assert_eq!(
                (r.split, r.group.as_str()),
                (parent.split, parent.group.as_str())
            );
            assert_eq!(r.label, parent.label);
            parents.insert(p.clone());
        }
    }
    let id = |p: &Path| sv72::util::hash::content_hash(&std::fs::read(p).unwrap());
    assert_eq!(
        parents,
        [id(&src_road), id(&src_none)].into_iter().collect()
    );
    let mix = read_manifest(&datasets.join("mix-20260303/manifest.parquet")).unwrap();
    assert!(mix.iter().any(|r| r.source == SourceKind::Synthetic));
    assert!(mix.iter().any(|r| r.source == SourceKind::Real));
}
