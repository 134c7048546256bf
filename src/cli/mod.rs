//! Command-line front end: one file per subcommand, each parsing its flags and calling library code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::Config;

pub mod ab_test;
pub mod args;
pub mod bench;
pub mod calibrate;
pub mod demo_data;
pub mod deploy;
pub mod econ;
pub mod embed;
pub mod eval;
pub mod export;
pub mod fetch_backbone;
pub mod finetune;
pub mod generate;
pub mod ingest;
pub mod metagraph;
pub mod mine_hard;
pub mod query;
pub mod register;
pub mod retrain_check;
pub mod serve;
pub mod synth_mix;
pub mod train_head;

/// sv72: run a NATIX StreetVision (Bittensor subnet 72) miner through its 60-day cycle.
#[derive(Debug, Parser)]
#[command(name = "sv72", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: the embedded configs/default.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one config value, e.g. `--set mix.synthetic_fraction=0.4` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The stages of the miner's life.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest images (class folders, HF Parquet, CSV) into a deduplicated, split manifest.
    Ingest(ingest::Args),
    /// Build a training mix at a target synthetic share; preview validator augmentations.
    SynthMix(synth_mix::Args),
    /// Train a classification head on cached backbone features.
    TrainHead(train_head::Args),
    /// Fine-tune the backbone itself (LoRA, last blocks, or full) with a head on augmented images.
    Finetune(finetune::Args),
    /// Evaluate a checkpoint as validators score it.
    Eval(eval::Args),
    /// Paired comparison of two checkpoints; decides promote or keep.
    AbTest(ab_test::Args),
    /// Fit a model spec's temperature and threshold with its own test-time views.
    Calibrate(calibrate::Args),
    /// Export a checkpoint in the Hugging Face format the subnet expects (and push it).
    Export(export::Args),
    /// Point exports/deployed at an export (what serve answers with and retrain-check reads).
    Deploy(deploy::Args),
    /// Register the miner and its model with NATIX (replaces the subnet's register.sh).
    Register(register::Args),
    /// Run the miner axon that answers validators.
    Serve(serve::Args),
    /// Send one signed ImageSynapse to an axon, as a validator does, and print the prediction.
    Query(query::Args),
    /// Read the subnet's validator set from a subtensor node (`metagraph sync`).
    Metagraph(metagraph::Args),
    /// Check the deployed model's age and drift (for cron); optionally run the retraining pipeline.
    RetrainCheck(retrain_check::Args),
    /// What mining earns by rank (chain figures) against your costs, and whether it pays.
    Econ(econ::Args),
    /// Pick hard cases from serve logs and eval outputs for labelling and generation.
    MineHard(mine_hard::Args),
    /// Generate synthetic images from prompts (mine-hard's or a list) on an image server.
    Generate(generate::Args),
    /// Compute backbone features for images, folders or a manifest into a safetensors file.
    Embed(embed::Args),
    /// Download a backbone snapshot from the Hugging Face Hub into the HF cache layout.
    FetchBackbone(fetch_backbone::Args),
    /// Generate the embedded demo data set (procedural road scenes).
    DemoData(demo_data::Args),
    /// Time the backbone forward (img/s, ms/batch, memory) and the decode + preprocess cost.
    Bench(bench::Args),
}

/// What every subcommand receives besides its own flags.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    /// The `--set` overrides as given (passed on to child processes).
    pub overrides: Vec<String>,
}

/// Parses the command line, runs the subcommand, and maps errors to a message and exit code 1.
pub fn main() -> ExitCode {
    crate::util::alloc::keep_freed_memory();
    let mut cli = Cli::parse();
    cli.overrides = all_overrides(std::env::args_os().skip(1));
    if !matches!(cli.command, Command::Serve(_)) {
        restore_default_sigpipe();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Every `--set` on the command line, in order. clap keeps only the occurrences after the
/// subcommand when `--set` is given on both sides of it (a global argument's value is taken from
/// the innermost level), which would silently drop `sv72 --set a=1 train-head --set b=2`'s `a=1`.
pub fn all_overrides<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        if a == "--" {
            break;
        }
        if a == "--set" {
            if let Some(v) = it.next() {
                out.push(v.to_string_lossy().into_owned());
            }
        } else if let Some(v) = a.strip_prefix("--set=") {
            out.push(v.to_string());
        }
    }
    out
}

/// Lets `sv72 ingest ... | head` end quietly instead of panicking on a closed stdout. Not for
/// `serve`: there a peer closing its socket must be an error on that connection, not a kill.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref(), &cli.overrides)?;
    let ctx = Ctx {
        config,
        config_path: cli.config,
        overrides: cli.overrides,
    };
    match cli.command {
        Command::Ingest(a) => ingest::run(a, &ctx),
        Command::SynthMix(a) => synth_mix::run(a, &ctx),
        Command::TrainHead(a) => train_head::run(a, &ctx),
        Command::Finetune(a) => finetune::run(a, &ctx),
        Command::Eval(a) => eval::run(a, &ctx),
        Command::AbTest(a) => ab_test::run(a, &ctx),
        Command::Calibrate(a) => calibrate::run(a, &ctx),
        Command::Export(a) => export::run(a, &ctx),
        Command::Deploy(a) => deploy::run(a, &ctx),
        Command::Register(a) => register::run(a, &ctx),
        Command::Serve(a) => serve::run(a, &ctx),
        Command::Query(a) => query::run(a, &ctx),
        Command::Metagraph(a) => metagraph::run(a, &ctx),
        Command::RetrainCheck(a) => retrain_check::run(a, &ctx),
        Command::Econ(a) => econ::run(a, &ctx),
        Command::MineHard(a) => mine_hard::run(a, &ctx),
        Command::Generate(a) => generate::run(a, &ctx),
        Command::Embed(a) => embed::run(a, &ctx),
        Command::FetchBackbone(a) => fetch_backbone::run(a, &ctx),
        Command::Bench(a) => bench::run(a, &ctx),
        Command::DemoData(a) => demo_data::run(a, &ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_on_both_sides_of_the_subcommand_are_all_kept() {
        let args = [
            "--set",
            "a=1",
            "train-head",
            "--set=b=2",
            "--set",
            "c=3",
            "--",
            "--set",
            "d",
        ];
        let got = all_overrides(args.iter().map(std::ffi::OsString::from));
        assert_eq!(got, ["a=1", "b=2", "c=3"]);
        // clap alone would keep only the inner ones; the merged list must be what parsing sees.
        let cli = Cli::parse_from(["sv72", "--set", "a=1", "eval", "--set", "b=2"]);
        assert_eq!(
            cli.overrides,
            ["b=2"],
            "clap behaviour changed; all_overrides may be moot"
        );
    }
}
