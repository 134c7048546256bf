//! `retrain-check`: the deployed submission's age under the decay schedule plus drift signals
//! from serve's prediction log, folded into one status and the `--json` object.
//!
//! The `--json` object (stable; new keys may be added, none removed or renamed):
//!
//! ```text
//! { "status": "ok" | "alert" | "retrain_due" | "expired",
//!   "exit_code": 0 | 3 | 4 | 5,
//!   "now": RFC 3339,
//!   "model": { "name", "version", "submitted_by", "submission_time": RFC 3339, "card": path },
//!   "days_since_submission": int (whole days), "age_days": float,
//!   "reward_factor": float in [0, 1],
//!   "next_alert_day": int | null,
//!   "retrain_due_in_days": int (≤ 0 = due), "expires_in_days": int (≤ 0 = expired),
//!   "signals": { "answers", "uncertain_share", "psi", "ks", "hard_cases", "baseline_answers",
//!                "window_days", "log", "baseline", "bad_log_lines" },   (null = n/a)
//!   "reasons": [string],   why the status is not ok
//!   "notes": [string] }    what could not be checked and why
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;

use super::schedule::{Position, Schedule, Status};
use super::signals::{self, Signals};
use crate::config::Config;
use crate::eval::{read_predictions, PREDICTIONS_FILE};
use crate::export::card::ModelCard;
use crate::serve::predlog::read_prediction_log;

/// Provenance file of an export folder; names the checkpoint the export came from.
pub use crate::export::PROVENANCE_FILE as EXPORT_PROVENANCE_FILE;

/// What the check needs besides the config.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The check's time (`--now`, else the clock).
    pub now: DateTime<Utc>,
    /// Eval predictions to compare the serve log with (`--baseline`); default: the deployed
    /// export's source checkpoint's `predictions.jsonl`.
    pub baseline: Option<PathBuf>,
}

/// The deployed model as its card names it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub submitted_by: String,
    pub submission_time: String,
    pub card: PathBuf,
}

/// Signals plus where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct SignalReport {
    #[serde(flatten)]
    pub values: Signals,
    pub window_days: u32,
    pub log: PathBuf,
    pub baseline: Option<PathBuf>,
    pub bad_log_lines: usize,
}

/// The outcome of one check (serialised as the `--json` object; see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub status: Status,
    pub exit_code: u8,
    pub now: String,
    pub model: ModelInfo,
    pub days_since_submission: i64,
    pub age_days: f64,
    pub reward_factor: f64,
    pub next_alert_day: Option<u32>,
    pub retrain_due_in_days: i64,
    pub expires_in_days: i64,
    pub signals: SignalReport,
    pub reasons: Vec<String>,
    pub notes: Vec<String>,
    #[serde(skip)]
    pub card: ModelCard,
    #[serde(skip)]
    pub schedule: Schedule,
}

/// Reads the deployed model card; a missing one is an error that says to deploy an export.
pub fn read_deployed_card(path: &Path) -> Result<ModelCard> {
    if !path.exists() {
        bail!(
            "no deployed model: {} (cycle.model_card) does not exist. Deploy an export first \
             (`sv72 deploy exports/<name>-<version>`), or point cycle.model_card at the \
             model_card.json of the model you submitted",
            path.display()
        );
    }
    ModelCard::read(path)
}

/// Locates the deployed model's last eval predictions: `--baseline`, else via the export's
/// provenance. `Ok(None)` with a note when there is none to find.
fn find_baseline(
    cfg: &Config,
    card_path: &Path,
    explicit: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--baseline {}: no such file", p.display());
        }
        return Ok(Some(p.to_path_buf()));
    }
    let export_dir = card_path.parent().unwrap_or(Path::new("."));
    let prov_path = export_dir.join(EXPORT_PROVENANCE_FILE);
    let text = match std::fs::read_to_string(&prov_path) {
        Ok(t) => t,
        Err(_) => {
            notes.push(format!(
                "no drift baseline: {} not found (pass --baseline checkpoints/<run>/{PREDICTIONS_FILE})",
                prov_path.display()
            ));
            return Ok(None);
        }
    };
    /// The one field of `export::Provenance` the check needs.
    #[derive(serde::Deserialize)]
    struct SourceRun {
        run_id: String,
    }
    let prov: SourceRun = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an sv72 export record (re-export, or pass --baseline)",
            prov_path.display()
        )
    })?;
    let run = prov.run_id;
    let p = cfg.paths.checkpoints.join(&run).join(PREDICTIONS_FILE);
    if !p.is_file() {
        notes.push(format!(
            "no drift baseline: {} not found (run `sv72 eval` on checkpoint {run}, or pass \
             --baseline)",
            p.display()
        ));
        return Ok(None);
    }
    Ok(Some(p))
}

/// Runs the check (read-only).
pub fn run_check(cfg: &Config, opts: &CheckOptions) -> Result<CheckReport> {
    let c = &cfg.cycle;
    let schedule = Schedule::from_config(c)?;
    let [lo, hi] = c.uncertain_band;
    if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
        bail!("cycle.uncertain_band = [{lo}, {hi}] must be two probabilities, low first");
    }
    let card_path = c.model_card.clone();
    let card = read_deployed_card(&card_path)?;
    let submitted = card.submitted_at()?;
    let pos: Position = schedule.position_at(submitted, opts.now);
    let mut notes = Vec::new();
    if pos.age_days < 0.0 {
        notes.push(format!(
            "the model card's submission_time {} is after the check's time",
            submitted.to_rfc3339()
        ));
    }

    let log_path = cfg.serve.prediction_log.clone();
    let since = opts.now - Duration::days(i64::from(c.window_days));
    let (window, bad_lines) = if log_path.exists() {
        let read = read_prediction_log(&log_path, Some(since))?;
        let rows: Vec<_> = read
            .records
            .into_iter()
            .filter(|r| r.time <= opts.now)
            .collect();
        (Some(rows), read.bad_lines)
    } else {
        notes.push(format!(
            "no serve log at {} (serve.prediction_log): signals n/a",
            log_path.display()
        ));
        (None, 0)
    };
    let baseline_path = find_baseline(cfg, &card_path, opts.baseline.as_deref(), &mut notes)?;
    let baseline: Option<Vec<f64>> = match &baseline_path {
        Some(p) => Some(read_predictions(p)?.into_iter().map(|x| x.prob).collect()),
        None => None,
    };
    let values = signals::compute(window.as_deref(), baseline.as_deref(), c.uncertain_band);

    let mut status = pos.status;
    let mut reasons = Vec::new();
    match pos.status {
        Status::Expired => reasons.push(format!(
            "expired: the reward factor is 0 from day {} (valid {} + decay {} days); submit a new \
             model",
            schedule.expiry_day(),
            schedule.valid_days,
            schedule.decay_days
        )),
        Status::RetrainDue => reasons.push(format!(
            "retraining due since day {} (day {} now, reward factor {:.3})",
            schedule.retrain_day, pos.day, pos.reward_factor
        )),
        _ => {}
    }
    if let Some(d) = pos.last_alert_day {
        reasons.push(format!("alert day {d} reached (day {} now)", pos.day));
    }
    let enough = values.answers.unwrap_or(0) >= c.min_answers;
    let mut signal_fired = false;
    if let Some(u) = values
        .uncertain_share
        .filter(|u| *u > c.max_uncertain_share)
    {
        if enough {
            signal_fired = true;
            reasons.push(format!(
                "uncertain share {:.1}% > cycle.max_uncertain_share {:.1}%",
                u * 100.0,
                c.max_uncertain_share * 100.0
            ));
        }
    }
    if let Some(p) = values.psi.filter(|p| *p > c.max_psi) {
        if enough {
            signal_fired = true;
            reasons.push(format!(
                "prediction drift: PSI {p:.3} > cycle.max_psi {}",
                c.max_psi
            ));
        }
    }
    if let Some(h) = values.hard_cases.filter(|h| *h > c.max_hard_cases) {
        signal_fired = true;
        reasons.push(format!(
            "{h} new hard cases > cycle.max_hard_cases {} (see `sv72 mine-hard`)",
            c.max_hard_cases
        ));
    }
    if values.answers.is_some_and(|n| n > 0 && n < c.min_answers) {
        notes.push(format!(
            "only {} answers in the window (< cycle.min_answers {}): uncertain share and PSI \
             do not raise alerts",
            values.answers.unwrap_or(0),
            c.min_answers
        ));
    }
    if signal_fired {
        status = status.max(Status::Alert);
    }
    Ok(CheckReport {
        status,
        exit_code: status.exit_code(),
        now: opts.now.to_rfc3339_opts(SecondsFormat::Secs, true),
        model: ModelInfo {
            name: card.model_name.clone(),
            version: card.version.clone(),
            submitted_by: card.submitted_by.clone(),
            submission_time: submitted.to_rfc3339_opts(SecondsFormat::Secs, true),
            card: card_path,
        },
        days_since_submission: pos.day,
        age_days: pos.age_days,
        reward_factor: pos.reward_factor,
        next_alert_day: pos.next_alert_day,
        retrain_due_in_days: pos.retrain_due_in_days,
        expires_in_days: pos.expires_in_days,
        signals: SignalReport {
            values,
            window_days: c.window_days,
            log: log_path,
            baseline: baseline_path,
            bad_log_lines: bad_lines,
        },
        reasons,
        notes,
        card,
        schedule,
    })
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "n/a".to_string(), f)
}

impl CheckReport {
    /// The one human line.
    pub fn human_line(&self) -> String {
        let label = match self.status {
            Status::Ok => "OK",
            Status::Alert => "ALERT",
            Status::RetrainDue => "RETRAIN DUE",
            Status::Expired => "EXPIRED",
        };
        let s = &self.signals.values;
        let mut line = format!(
            "retrain-check: {label}: {} {} day {} (reward factor {:.3}, next alert {}, retrain {}, \
             expires {}); serve log {} d: {} answers, uncertain {}, PSI {}, KS {}, {} hard cases",
            self.model.name,
            self.model.version,
            self.days_since_submission,
            self.reward_factor,
            opt(self.next_alert_day, |d| format!("day {d}")),
            relative(self.retrain_due_in_days, "due"),
            relative(self.expires_in_days, "passed"),
            self.signals.window_days,
            opt(s.answers, |n| n.to_string()),
            opt(s.uncertain_share, |u| format!("{:.1}%", u * 100.0)),
            opt(s.psi, |p| format!("{p:.3}")),
            opt(s.ks, |k| format!("{k:.3}")),
            opt(s.hard_cases, |h| h.to_string()),
        );
        if !self.reasons.is_empty() {
            line.push_str(" — ");
            line.push_str(&self.reasons.join("; "));
        }
        line
    }
}

fn relative(days: i64, past: &str) -> String {
    if days > 0 {
        format!("in {days} d")
    } else if days == 0 {
        format!("{past} today")
    } else {
        format!("{past} {} d ago", -days)
    }
}
