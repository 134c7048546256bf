//! `sv72 retrain-check`: the deployed model's age and drift for cron; `--run` retrains.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::Ctx;
use crate::cycle::calendar::write_ics;
use crate::cycle::check::{run_check, CheckOptions};
use crate::cycle::deployed::DeployedSnapshot;
use crate::cycle::exit;
use crate::cycle::lock::{Acquired, LockHeld, RunLock};
use crate::cycle::pipeline::{run_pipeline, Outcome, PipelineOptions, RUNS_DIR};
use crate::cycle::schedule::Status;

/// Flags of `sv72 retrain-check`.
///
/// Exit status: 0 ok, 3 alert, 4 retrain due, 5 expired (precedence: expired > retrain due >
/// alert), 1 error. With `--run`: 0 pipeline done (or ab-test kept the current model), 6 a step
/// failed (deployed model untouched), 7 another run holds the lock.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as one JSON object (documented in the README) instead of a line.
    #[arg(long)]
    pub json: bool,
    /// Pretend it is this time (RFC 3339, e.g. 2026-03-01T00:00:00Z): for tests and what-ifs.
    #[arg(long, value_name = "RFC3339", value_parser = parse_now)]
    pub now: Option<DateTime<Utc>>,
    /// Eval predictions to measure drift against (default: the deployed export's source
    /// checkpoint's predictions.jsonl, found through its sv72_export.json).
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Also write the alert, retrain and expiry days as an iCalendar file.
    #[arg(long, value_name = "FILE.ics")]
    pub calendar: Option<PathBuf>,
    /// Run the retraining pipeline (cycle.pipeline) when retraining is due or the model expired.
    #[arg(long)]
    pub run: bool,
    /// With --run: run the pipeline whatever the check says.
    #[arg(long, requires = "run")]
    pub force: bool,
}

fn parse_now(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-03-01T00:00:00Z ({e})"))
}

/// Runs `sv72 retrain-check`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let cfg = &ctx.config;
    // The lock comes first so that two overlapping cron runs never both decide to retrain.
    let _lock = if args.run {
        match RunLock::acquire(&cfg.cycle.lock_file) {
            Ok((lock, Acquired::Fresh)) => Some(lock),
            Ok((lock, Acquired::TookOverStale { pid, started })) => {
                eprintln!(
                    "warning: took over the stale lock {} of pid {pid} (started {started}; that \
                     process is gone)",
                    lock.path().display()
                );
                Some(lock)
            }
            Err(e) => {
                if let Some(held) = e.downcast_ref::<LockHeld>() {
                    eprintln!("error: {held}");
                    return Ok(ExitCode::from(exit::LOCKED));
                }
                return Err(e);
            }
        }
    } else {
        None
    };

    let opts = CheckOptions {
        now: args.now.unwrap_or_else(Utc::now),
        baseline: args.baseline.clone(),
    };
    let report = run_check(cfg, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.human_line());
        for n in &report.notes {
            println!("  note: {n}");
        }
    }
    if let Some(ics) = &args.calendar {
        write_ics(ics, &report.card, &report.schedule, opts.now)
            .with_context(|| format!("cannot write the calendar {}", ics.display()))?;
        note(args.json, &format!("wrote {}", ics.display()));
    }
    if !args.run {
        return Ok(ExitCode::from(report.exit_code));
    }

    let due = matches!(report.status, Status::RetrainDue | Status::Expired);
    if !due && !args.force {
        note(
            args.json,
            &format!(
                "retrain-check --run: not due (status {}); nothing run (--force runs anyway)",
                report.status.as_str()
            ),
        );
        return Ok(ExitCode::from(report.exit_code));
    }
    let mut global_args = Vec::new();
    if let Some(p) = &ctx.config_path {
        global_args.push("--config".to_string());
        global_args.push(p.to_string_lossy().into_owned());
    }
    for s in &ctx.overrides {
        global_args.push("--set".to_string());
        global_args.push(s.clone());
    }
    let exe = std::env::current_exe().context("cannot find the sv72 binary to run the steps")?;
    let popts = PipelineOptions {
        exe,
        global_args,
        now: opts.now,
        log_dir: cfg.paths.checkpoints.join(RUNS_DIR),
        stdout_to_stderr: args.json,
    };
    let deployed_link = cfg
        .cycle
        .model_card
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let snapshot = DeployedSnapshot::take(&deployed_link);
    let rep = run_pipeline(&cfg.cycle.pipeline, &popts)?;
    match rep.outcome {
        Outcome::Completed { steps } => {
            note(
                args.json,
                &format!(
                    "retrain-check --run: all {steps} step(s) succeeded; log {}",
                    rep.log.display()
                ),
            );
            Ok(ExitCode::from(exit::OK))
        }
        Outcome::Kept { step, skipped } => {
            note(
                args.json,
                &format!(
                    "retrain-check --run: kept current model (ab-test at step {step} chose A; \
                     {skipped} later step(s) skipped, nothing deployed); log {}",
                    rep.log.display()
                ),
            );
            Ok(ExitCode::from(exit::OK))
        }
        Outcome::Failed {
            step,
            command,
            code,
            stderr_tail,
        } => {
            let restored = match &snapshot {
                Some(s) => s.restore_if_changed()?,
                None => false,
            };
            let how = code.map_or_else(
                || "was killed by a signal".into(),
                |c| format!("failed with exit code {c}"),
            );
            let mut msg = format!(
                "error: step {step}/{} `sv72 {command}` {how}; the deployed model is untouched",
                cfg.cycle.pipeline.len()
            );
            if restored {
                if let Some(s) = &snapshot {
                    msg.push_str(&format!(
                        " (restored {} → {})",
                        s.link().display(),
                        s.target().display()
                    ));
                }
            }
            msg.push_str(&format!("; log {}", rep.log.display()));
            if !stderr_tail.is_empty() {
                msg.push_str("\nits last stderr lines:");
                for l in &stderr_tail {
                    msg.push_str("\n  | ");
                    msg.push_str(l);
                }
            }
            eprintln!("{msg}");
            Ok(ExitCode::from(exit::RUN_FAILED))
        }
    }
}

/// A status line: stdout normally, stderr under `--json` so stdout stays one JSON object.
fn note(json: bool, msg: &str) {
    if json {
        eprintln!("{msg}");
    } else {
        println!("{msg}");
    }
}
