//! `sv72 retrain-check`: the deployed model's age and drift for cron; `--run` retrains.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::Ctx;
use crate::cycle::retrain::{retrain_check, RetrainRequest, Said};

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
    let mut global_args = Vec::new();
    if let Some(p) = &ctx.config_path {
        global_args.push("--config".to_string());
        global_args.push(p.to_string_lossy().into_owned());
    }
    for s in &ctx.overrides {
        global_args.push("--set".to_string());
        global_args.push(s.clone());
    }
    let req = RetrainRequest {
        now: args.now.unwrap_or_else(Utc::now),
        baseline: args.baseline,
        calendar: args.calendar,
        run: args.run,
        force: args.force,
        stdout_to_stderr: args.json,
        global_args,
    };
    let json = args.json;
    let mut say = |s: Said<'_>| -> Result<()> {
        match s {
            Said::Report(report) if json => println!("{}", serde_json::to_string_pretty(report)?),
            Said::Report(report) => {
                println!("{}", report.human_line());
                for n in &report.notes {
                    println!("  note: {n}");
                }
            }
            // Status lines go to stderr under `--json` so stdout stays one JSON object.
            Said::Note(msg) if json => eprintln!("{msg}"),
            Said::Note(msg) => println!("{msg}"),
            Said::Warning(msg) => eprintln!("warning: {msg}"),
            Said::Error(msg) => eprintln!("error: {msg}"),
        }
        Ok(())
    };
    let code = retrain_check(&ctx.config, &req, &mut say)?;
    Ok(ExitCode::from(code))
}
