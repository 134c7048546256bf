//! `sv72 retrain-check` as a library call: the check (age, reward factor, drift), the calendar,
//! and with `run` the retraining pipeline under the lock, restoring `exports/deployed` when a
//! step fails after switching it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::calendar::write_ics;
use super::check::{run_check, CheckOptions, CheckReport};
use super::deployed::DeployedSnapshot;
use super::lock::{Acquired, LockHeld, RunLock};
use super::pipeline::{run_pipeline, Outcome, PipelineOptions, RUNS_DIR};
use super::schedule::Status;
use crate::config::Config;
use crate::exit;

/// What `sv72 retrain-check` was asked.
#[derive(Debug, Clone)]
pub struct RetrainRequest {
    /// The time the check is made at.
    pub now: DateTime<Utc>,
    /// Eval predictions to measure drift against (default: found through the deployed export).
    pub baseline: Option<PathBuf>,
    /// Also write the schedule as an iCalendar file.
    pub calendar: Option<PathBuf>,
    /// Run `cycle.pipeline` when retraining is due or the model expired.
    pub run: bool,
    /// With `run`: run the pipeline whatever the check says.
    pub force: bool,
    /// Step output goes to stderr (stdout holds one JSON object).
    pub stdout_to_stderr: bool,
    /// What the pipeline's `sv72` children are given before their own arguments (`--config`,
    /// `--set`), so they read the same configuration.
    pub global_args: Vec<String>,
}

/// What the check has to say, in the order it happens.
#[derive(Debug)]
pub enum Said<'a> {
    /// The check's result (printed before any pipeline step runs).
    Report(&'a CheckReport),
    /// A status line.
    Note(String),
    /// Something the user should know that does not stop the run (always to stderr).
    Warning(String),
    /// Why the run stopped (`--run` only: a failed step, or the lock held by another run).
    Error(String),
}

/// Runs the check (and with `run`, the pipeline), telling `say` what happens as it happens;
/// returns the exit status (`crate::exit`).
pub fn retrain_check(
    cfg: &Config,
    req: &RetrainRequest,
    say: &mut dyn FnMut(Said<'_>) -> Result<()>,
) -> Result<u8> {
    // The lock comes first so that two overlapping cron runs never both decide to retrain.
    let _lock = if req.run {
        match RunLock::acquire(&cfg.cycle.lock_file) {
            Ok((lock, Acquired::Fresh)) => Some(lock),
            Ok((lock, Acquired::TookOverStale { pid, started })) => {
                say(Said::Warning(format!(
                    "took over the stale lock {} of pid {pid} (started {started}; that \
                     process is gone)",
                    lock.path().display()
                )))?;
                Some(lock)
            }
            Err(e) => {
                if let Some(held) = e.downcast_ref::<LockHeld>() {
                    say(Said::Error(held.to_string()))?;
                    return Ok(exit::LOCKED);
                }
                return Err(e);
            }
        }
    } else {
        None
    };

    let opts = CheckOptions {
        now: req.now,
        baseline: req.baseline.clone(),
    };
    let report = run_check(cfg, &opts)?;
    say(Said::Report(&report))?;
    if let Some(ics) = &req.calendar {
        write_ics(ics, &report.card, &report.schedule, opts.now)
            .with_context(|| format!("cannot write the calendar {}", ics.display()))?;
        say(Said::Note(format!("wrote {}", ics.display())))?;
    }
    if !req.run {
        return Ok(report.exit_code);
    }

    let due = matches!(report.status, Status::RetrainDue | Status::Expired);
    if !due && !req.force {
        say(Said::Note(format!(
            "retrain-check --run: not due (status {}); nothing run (--force runs anyway)",
            report.status.as_str()
        )))?;
        return Ok(report.exit_code);
    }
    let exe = std::env::current_exe().context("cannot find the sv72 binary to run the steps")?;
    let popts = PipelineOptions {
        exe,
        global_args: req.global_args.clone(),
        now: opts.now,
        log_dir: cfg.paths.checkpoints.join(RUNS_DIR),
        stdout_to_stderr: req.stdout_to_stderr,
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
            say(Said::Note(format!(
                "retrain-check --run: all {steps} step(s) succeeded; log {}",
                rep.log.display()
            )))?;
            Ok(exit::OK)
        }
        Outcome::Kept { step, skipped } => {
            say(Said::Note(format!(
                "retrain-check --run: kept current model (ab-test at step {step} chose A; \
                 {skipped} later step(s) skipped, nothing deployed); log {}",
                rep.log.display()
            )))?;
            Ok(exit::OK)
        }
        Outcome::Failed {
            step,
            command,
            code,
            stderr_tail,
        } => {
            // A failed run never leaves a half-finished model deployed: a `deploy` step that
            // already switched the link is undone.
            let restored = match &snapshot {
                Some(s) => s.restore_if_changed()?,
                None => false,
            };
            let how = code.map_or_else(
                || "was killed by a signal".into(),
                |c| format!("failed with exit code {c}"),
            );
            let mut msg = format!(
                "step {step}/{} `sv72 {command}` {how}; the deployed model is untouched",
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
            say(Said::Error(msg))?;
            Ok(exit::RUN_FAILED)
        }
    }
}
