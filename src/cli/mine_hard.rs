//! `sv72 mine-hard`: hard cases from serve logs and eval outputs, for labelling and generation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::args::{DeviceArg, ModelArg};
use super::Ctx;
use crate::cycle::mine::{run_mine_hard, write, MineRequest};

/// Flags of `sv72 mine-hard`.
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("model", |a| a.help("Checkpoint or export folder whose backbone embeds the candidates")),
    mut_arg("device", |a| a.help(
        "`cpu` or `cuda` for embeddings and --model-b (default: `backbone.device`)"
    ))
)]
pub struct Args {
    /// Output folder for hard_cases.{parquet,csv}, prompts.{txt,jsonl}, summary.{md,json} and
    /// contact_sheet.png; a previous mine-hard output there is replaced once the new one is
    /// complete. Required; optional for clap only so config errors are reported first.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// serve's prediction log (default: `serve.prediction_log` when no --eval is given).
    #[arg(long, value_name = "FILE")]
    pub serve_log: Option<PathBuf>,
    /// Only serve answers at or after this: RFC 3339 time, a date (`2026-11-01`), or an age
    /// (`7d`, `48h`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// An eval's output folder or its `predictions.jsonl`.
    #[arg(long, value_name = "DIR_OR_FILE")]
    pub eval: Option<PathBuf>,
    /// The manifest the eval ran on (default: `meta.manifest` of the `report.json` beside it).
    #[arg(long, value_name = "DATASET")]
    pub manifest: Option<String>,
    /// A second model's eval (folder or predictions.jsonl) on the same manifest: disagreements.
    #[arg(long, value_name = "DIR_OR_FILE")]
    pub compare: Option<PathBuf>,
    /// A second model (checkpoint or export folder) that scores the serve-log images.
    #[arg(long, value_name = "PATH")]
    pub model_b: Option<PathBuf>,
    /// Backbone for the diversity embeddings (default: the backbone of --checkpoint, else of
    /// the eval's checkpoint, `<paths.exports>/deployed` or `<paths.checkpoints>/latest`).
    #[arg(long, value_name = "MODEL")]
    pub backbone: Option<String>,
    #[command(flatten)]
    pub model: ModelArg,
    /// No embeddings: rank by hardness only (no diversity).
    #[arg(long)]
    pub no_embed: bool,
    /// Cases to keep (default: mine_hard.max_cases).
    #[arg(long, value_name = "N")]
    pub max_cases: Option<usize>,
    /// Ask the VLM judge (`judge:` in the config) about every candidate: disagreeing with the
    /// model is a hard-case reason, and its answer goes in the CSV as a suggested label
    /// (`judge_suggested_label`), never as the label.
    #[arg(long)]
    pub judge: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Runs `sv72 mine-hard`.
pub fn run(args: Args, ctx: &Ctx) -> Result<ExitCode> {
    let out = args.out.clone();
    let req = MineRequest {
        out: args.out,
        serve_log: args.serve_log,
        since: args.since,
        eval: args.eval,
        manifest: args.manifest,
        compare: args.compare,
        model_b: args.model_b,
        backbone: args.backbone,
        checkpoint: args.model.model,
        no_embed: args.no_embed,
        max_cases: args.max_cases,
        judge: args.judge,
        device: args.device.device,
    };
    let summary = run_mine_hard(&ctx.config, &req)?;
    let out = out.unwrap_or_default();
    for (k, v) in &summary.skipped {
        eprintln!("mine-hard: skipped {v}: {k}");
    }
    println!(
        "mine-hard: {} hard image(s), {} selected by {} -> {}",
        summary.candidates,
        summary.selected,
        summary.selection,
        out.display()
    );
    for (r, [c, s]) in &summary.by_reason {
        println!("  {r}: {c} found, {s} selected");
    }
    println!(
        "  label them in {} and re-ingest with `sv72 ingest --name <NAME> --csv {}`",
        out.join(write::CSV_FILE).display(),
        out.join(write::CSV_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}
