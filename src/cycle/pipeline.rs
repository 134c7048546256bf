//! `retrain-check --run`: the configured retraining pipeline (`cycle.pipeline`), each step a
//! child process of the same sv72 binary.
//!
//! Each step is an sv72 argument list that starts with the subcommand name, e.g.
//! `[train-head, --mix, new-{date}]`. Before anything runs, every argument is expanded:
//! `{date}` → the run's date `YYYYMMDD` (UTC), `{now}` → its time in RFC 3339 (`…T…Z`),
//! `{stamp}` → `YYYYMMDDTHHMMSSZ` (safe in file names), and `${VAR}` → the environment
//! variable `VAR` (unset = an error naming the step; `$$` is a literal `$`). Expanded variable
//! values are never printed: progress lines and the run log show the step as configured, and
//! any expanded value found in a child's output is replaced by `***`.
//!
//! Steps run in order and the first failure stops the pipeline (the steps after it, such as
//! `deploy`, never run, so the deployed model stays as it was). An `ab-test` step that exits 3
//! (keep A) ends the pipeline successfully without running the rest. Each run writes a log
//! `<paths.checkpoints>/.retrain-runs/<timestamp>.log` with every step, its exit status and
//! the tail of its stderr.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};

use crate::util::{fsx, progress};

/// Folder under `paths.checkpoints` holding one log per `--run`.
pub const RUNS_DIR: &str = ".retrain-runs";
/// Lines of each step's stderr kept in the run log.
const LOG_TAIL_LINES: usize = 80;
/// Lines of the failed step's stderr repeated in the error message.
const ERROR_TAIL_LINES: usize = 8;
/// Expanded values shorter than this are not redacted (they would mangle ordinary text).
const MIN_SECRET_LEN: usize = 4;

/// How to run the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The sv72 binary (normally `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Global flags passed before every step: the parent's `--config FILE` and `--set K=V`s.
    pub global_args: Vec<String>,
    /// The run's time, for `{date}`, `{now}` and `{stamp}`.
    pub now: DateTime<Utc>,
    /// Where the run log goes (`<paths.checkpoints>/.retrain-runs`).
    pub log_dir: PathBuf,
    /// Forward the children's stdout to our stderr (keeps our stdout clean for `--json`).
    pub stdout_to_stderr: bool,
}

/// How the pipeline ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every step succeeded.
    Completed { steps: usize },
    /// `ab-test` said keep A (exit 3) at this step (1-based); later steps were skipped.
    Kept { step: usize, skipped: usize },
    /// This step (1-based) failed; later steps were skipped.
    Failed {
        step: usize,
        /// The step as configured (unexpanded).
        command: String,
        /// Exit status, or `None` when killed by a signal.
        code: Option<i32>,
        /// Last lines of its stderr (secrets redacted).
        stderr_tail: Vec<String>,
    },
}

/// The pipeline's result and where its log is.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    pub outcome: Outcome,
    pub log: PathBuf,
}

/// A step with its placeholders expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandedStep {
    /// As configured, for display and logs.
    pub template: Vec<String>,
    pub args: Vec<String>,
    /// Values substituted from environment variables (redacted from output).
    pub secrets: Vec<String>,
}

/// Expands `{date}`, `{now}`, `{stamp}` and `${VAR}` in one argument. `env` looks variables up.
pub fn expand_arg(
    arg: &str,
    now: DateTime<Utc>,
    env: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find(['{', '$']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .with_context(|| format!("argument {arg:?}: `${{` without a closing `}}`"))?;
            let name = &r[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                bail!("argument {arg:?}: ${{{name}}} is not a valid environment variable name");
            }
            let value = env(name).with_context(|| {
                format!("argument {arg:?}: environment variable {name} is not set")
            })?;
            if value.len() >= MIN_SECRET_LEN {
                secrets.push(value.clone());
            }
            out.push_str(&value);
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix("{date}") {
            out.push_str(&now.format("%Y%m%d").to_string());
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{now}") {
            out.push_str(&now.to_rfc3339_opts(SecondsFormat::Secs, true));
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{stamp}") {
            out.push_str(&now.format("%Y%m%dT%H%M%SZ").to_string());
            rest = r;
        } else {
            // A brace or dollar that is not a placeholder stays as it is.
            out.push_str(&rest[..1]);
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands every step, so a bad placeholder fails before anything has run.
pub fn expand_steps(
    steps: &[Vec<String>],
    now: DateTime<Utc>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ExpandedStep>> {
    if steps.is_empty() {
        bail!(
            "cycle.pipeline is empty: nothing to run. List the sv72 steps in your config \
             (see configs/cycle-example.yaml)"
        );
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            if step.is_empty() || step[0].trim().is_empty() {
                bail!(
                    "cycle.pipeline step {} is empty; each step starts with an sv72 subcommand",
                    i + 1
                );
            }
            let mut secrets = Vec::new();
            let args = step
                .iter()
                .map(|a| expand_arg(a, now, env, &mut secrets))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("cycle.pipeline step {} ({})", i + 1, step[0]))?;
            Ok(ExpandedStep {
                template: step.clone(),
                args,
                secrets,
            })
        })
        .collect()
}

fn redact(line: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(line.to_string(), |l, s| l.replace(s.as_str(), "***"))
}

/// Picks `<dir>/<YYYYMMDDTHHMMSSZ>.log`, adding `-2`, `-3`, … when taken.
fn log_path(dir: &Path) -> PathBuf {
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut p = dir.join(format!("{stamp}.log"));
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("{stamp}-{n}.log"));
        n += 1;
    }
    p
}

/// The run log, rewritten atomically after every step so a crash leaves the last full state.
struct RunLog {
    path: PathBuf,
    text: String,
}

impl RunLog {
    fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }
    fn flush(&self) -> Result<()> {
        fsx::write_atomic(&self.path, self.text.as_bytes())
    }
}

/// Forwards a child's stream line by line (redacted), keeping a bounded tail.
fn pump<R: Read + Send + 'static>(
    stream: R,
    to_stderr: bool,
    secrets: Vec<String>,
    pb: indicatif::ProgressBar,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let line = redact(&line, &secrets);
            pb.suspend(|| {
                if to_stderr {
                    eprintln!("  {line}");
                } else {
                    println!("  {line}");
                    let _ = std::io::stdout().flush();
                }
            });
            if let Some(t) = &tail {
                let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == LOG_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    })
}

/// Runs `steps` in order (see the module docs for placeholders, `ab-test` keep and logs).
/// Errors only for problems before or around the steps (bad placeholders, an unwritable log,
/// a binary that cannot start); a step that fails is an [`Outcome::Failed`].
pub fn run_pipeline(steps: &[Vec<String>], opts: &PipelineOptions) -> Result<PipelineReport> {
    let env = |k: &str| std::env::var(k).ok();
    let steps = expand_steps(steps, opts.now, &env)?;
    std::fs::create_dir_all(&opts.log_dir)
        .with_context(|| format!("cannot create folder {}", opts.log_dir.display()))?;
    let mut log = RunLog {
        path: log_path(&opts.log_dir),
        text: String::new(),
    };
    log.push(&format!(
        "sv72 retrain-check --run: started {} (run time {})",
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        opts.now.to_rfc3339_opts(SecondsFormat::Secs, true)
    ));
    log.push(&format!("binary: {}", opts.exe.display()));
    if !opts.global_args.is_empty() {
        log.push(&format!("global flags: {}", opts.global_args.join(" ")));
    }
    log.flush()?;

    let n = steps.len();
    let pb = progress::bar(n as u64, "retrain");
    let say = |pb: &indicatif::ProgressBar, msg: &str| {
        pb.suspend(|| {
            if opts.stdout_to_stderr {
                eprintln!("{msg}");
            } else {
                println!("{msg}");
            }
        })
    };
    for (i, step) in steps.iter().enumerate() {
        let shown = step.template.join(" ");
        say(&pb, &format!("[{}/{n}] sv72 {shown}", i + 1));
        log.push(&format!("\n[{}/{n}] sv72 {shown}", i + 1));
        log.flush()?;
        let t0 = Instant::now();
        let mut child = Command::new(&opts.exe)
            .args(&opts.global_args)
            .args(&step.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {} for step {}", opts.exe.display(), i + 1))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let out = child.stdout.take().map(|s| {
            pump(
                s,
                opts.stdout_to_stderr,
                step.secrets.clone(),
                pb.clone(),
                None,
            )
        });
        let err = child.stderr.take().map(|s| {
            pump(
                s,
                true,
                step.secrets.clone(),
                pb.clone(),
                Some(tail.clone()),
            )
        });
        let status = child
            .wait()
            .with_context(|| format!("waiting for step {} ({shown})", i + 1))?;
        for h in [out, err].into_iter().flatten() {
            let _ = h.join();
        }
        let tail: Vec<String> = tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let secs = t0.elapsed().as_secs_f64();
        let code = status.code();
        log.push(&format!(
            "  exit {} after {secs:.1} s",
            code.map_or_else(|| "by signal".to_string(), |c| c.to_string())
        ));
        if !tail.is_empty() {
            log.push("  stderr (tail):");
            for l in &tail {
                log.push(&format!("  | {l}"));
            }
        }
        pb.inc(1);
        let is_ab_test = step.args.first().is_some_and(|a| a == "ab-test");
        if is_ab_test && code == Some(i32::from(super::exit::AB_KEEP)) {
            let skipped = n - i - 1;
            log.push(&format!(
                "\nresult: ab-test kept the current model; {skipped} later step(s) skipped, \
                 nothing deployed"
            ));
            log.flush()?;
            pb.finish_and_clear();
            return Ok(PipelineReport {
                outcome: Outcome::Kept {
                    step: i + 1,
                    skipped,
                },
                log: log.path,
            });
        }
        if !status.success() {
            log.push(&format!(
                "\nresult: step {}/{n} failed; {} later step(s) skipped; the deployed model is \
                 untouched",
                i + 1,
                n - i - 1
            ));
            log.flush()?;
            pb.finish_and_clear();
            let start = tail.len().saturating_sub(ERROR_TAIL_LINES);
            return Ok(PipelineReport {
                outcome: Outcome::Failed {
                    step: i + 1,
                    command: shown,
                    code,
                    stderr_tail: tail[start..].to_vec(),
                },
                log: log.path,
            });
        }
        log.flush()?;
    }
    log.push(&format!("\nresult: all {n} step(s) succeeded"));
    log.flush()?;
    pb.finish_and_clear();
    Ok(PipelineReport {
        outcome: Outcome::Completed { steps: n },
        log: log.path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_placeholders_and_env() {
        let now: DateTime<Utc> = "2026-03-04T05:06:07Z".parse().unwrap();
        let env = |k: &str| (k == "TOK").then(|| "s3cret".to_string());
        let mut secrets = Vec::new();
        let got = expand_arg(
            "a-{date}-{stamp}-${TOK}-$$x-{other}",
            now,
            &env,
            &mut secrets,
        );
        assert_eq!(
            got.unwrap(),
            "a-20260304-20260304T050607Z-s3cret-$x-{other}"
        );
        assert_eq!(secrets, vec!["s3cret".to_string()]);
        assert_eq!(
            expand_arg("{now}", now, &env, &mut secrets).unwrap(),
            "2026-03-04T05:06:07Z"
        );
        let e = expand_arg("${MISSING}", now, &env, &mut secrets).unwrap_err();
        assert!(e.to_string().contains("MISSING"), "{e}");
        assert!(expand_arg("${A", now, &env, &mut secrets).is_err());
        assert_eq!(redact("token=s3cret!", &secrets), "token=***!");
    }
}
